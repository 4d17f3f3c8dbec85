from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from gateway.resilience.policy import (
    DEFAULT_DEGRADED_MESSAGE,
    DEFAULTS,
    LIMITS,
    validate_overrides,
)
from gateway.semantic_match import DEFAULT_THRESHOLD
from llmplatform.models import Tenant
from llmplatform.tenancy import TenantOwned

SEMANTIC_CACHE_DEFAULT_THRESHOLD = DEFAULT_THRESHOLD


def validate_similarity_threshold(value: float) -> None:
    """A cosine similarity threshold in (0, 1] (NaN and infinities refused)."""
    if not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValidationError("Enter a similarity above 0 and at most 1.")


def _bounded(key: str) -> list:
    _, low, high = LIMITS[key]
    return [MinValueValidator(low), MaxValueValidator(high)]


class ScreeningMode(models.TextChoices):
    BLOCK = "block", "block"
    FLAG = "flag", "flag"
    OFF = "off", "off"


class Tier(models.Model):
    """A service tier. Its limits are enforced on every request of the tenants on it."""

    name = models.SlugField(max_length=32, unique=True)
    description = models.CharField(max_length=200, blank=True)
    # Request limits per tenant (0 = unlimited).
    requests_per_minute = models.PositiveIntegerField(default=60)
    requests_per_hour = models.PositiveIntegerField(default=1000)
    requests_per_day = models.PositiveIntegerField(default=10000)
    # Request limits per API key (0 = unlimited).
    key_requests_per_minute = models.PositiveIntegerField(default=0)
    key_requests_per_hour = models.PositiveIntegerField(default=0)
    key_requests_per_day = models.PositiveIntegerField(default=0)
    # Request limits per end user, the request's ``user`` field (0 = unlimited).
    user_requests_per_minute = models.PositiveIntegerField(default=0)
    user_requests_per_hour = models.PositiveIntegerField(default=0)
    user_requests_per_day = models.PositiveIntegerField(default=0)
    # Token limits (0 = unlimited).
    tokens_per_minute = models.PositiveIntegerField(default=40000)
    tokens_per_day = models.PositiveIntegerField(default=1000000)
    # Spend budgets in USD (0 = unlimited).
    daily_budget = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("0"))
    monthly_budget = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("0"))
    # Largest prompt accepted, in characters over all messages.
    max_prompt_chars = models.PositiveIntegerField(default=32000, validators=[MinValueValidator(1)])
    # Cap on max_tokens a request may ask for (0 = the model's own limit).
    max_output_tokens = models.PositiveIntegerField(default=4096)
    max_choices = models.PositiveSmallIntegerField(
        default=4,
        validators=[MinValueValidator(1), MaxValueValidator(128)],
        help_text="The largest 'n' (choices per request) a request may ask for.",
    )
    max_media_parts = models.PositiveSmallIntegerField(
        default=8, help_text="Images, audio clips and files per request (0: none allowed)."
    )
    max_media_part_chars = models.PositiveIntegerField(
        default=3_000_000,
        help_text="Characters of one image, audio or file part (a data URL or base64 data).",
    )
    # Annotated: the stubs' plugin cannot type a relation to a model named by a string
    # (typeddjango/django-stubs#1802); the through model is Django's generated one.
    allowed_aliases: models.ManyToManyField[ModelAlias, models.Model] = models.ManyToManyField(
        "ModelAlias", blank=True, help_text="Empty means every enabled alias."
    )
    # Prompt-injection screening (a tenant's plan may override).
    screening_mode = models.CharField(
        max_length=8,
        choices=ScreeningMode.choices,
        default=ScreeningMode.BLOCK,
        help_text="block: refuse with 400 prompt_injection_detected; flag: serve and record a "
        "security event; off: no screening.",
    )
    screening_threshold = models.FloatField(
        default=0.5,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Score (0-1) from which a prompt is blocked or flagged.",
    )
    leak_mode = models.CharField(
        max_length=8,
        choices=ScreeningMode.choices,
        default=ScreeningMode.BLOCK,
        help_text="A reply that reveals the system prompt's canary: block, flag or off.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TenantPlan(TenantOwned):
    """The tier a tenant is on. Kept in the gateway so the kernel's Tenant knows nothing of
    tiers (imports point down: gateway -> llmplatform)."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="plan")
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="plans")
    cache_nonzero_temperature = models.BooleanField(
        default=False,
        help_text="Serve repeats from the response cache even for temperature > 0 "
        "(by default only deterministic, temperature 0, requests are cached).",
    )
    # Spend budgets of this tenant in USD; empty = the tier's (0 = unlimited).
    daily_budget = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    monthly_budget = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    # Screening overrides; empty = the tier's.
    screening_mode = models.CharField(max_length=8, choices=ScreeningMode.choices, blank=True)
    screening_threshold = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    leak_mode = models.CharField(max_length=8, choices=ScreeningMode.choices, blank=True)
    store_flagged_text = models.BooleanField(
        default=False,
        help_text="Keep the text of blocked or flagged prompts in security events (by default "
        "only a hash is kept).",
    )

    def __str__(self) -> str:
        return f"{self.tenant} on {self.tier}"


class ServiceAccount(TenantOwned):
    """An API-to-API principal of a tenant (not a person's key): a named machine identity that
    holds its own keys, so a service's access can be reviewed and cut off on its own."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="service_accounts")
    name = models.SlugField(max_length=64)
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="uniq_service_account_name")
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"


class ApiKey(TenantOwned):
    """A tenant API key: ``llmp_<lookup>_<secret>``. Only an HMAC of the secret is stored."""

    class Scope(models.TextChoices):
        CHAT = "chat", "chat"
        EMBEDDINGS = "embeddings", "embeddings"
        MODELS_READ = "models:read", "models:read"
        PRIVACY = "privacy", "privacy (consent and subject registration)"
        ADMIN = "admin", "admin"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    lookup = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    pepper_id = models.CharField(max_length=16)
    last_four = models.CharField(max_length=4)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    service_account = models.ForeignKey(
        ServiceAccount,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="api_keys",
        help_text="The service account holding this key; empty for a tenant key.",
    )
    allowed_ips = models.JSONField(
        default=list,
        blank=True,
        help_text="CIDR ranges (IPv4 or IPv6) the key may be used from; empty = anywhere.",
    )
    replaced_by = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="replaces",
        help_text="Set by rotation: the new key. This one keeps working until expires_at.",
    )
    # Spend budgets of this key in USD (empty = none of its own; the tenant's still apply).
    daily_budget = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    monthly_budget = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} (llmp_{self.lookup}_…{self.last_four})"

    @property
    def display(self) -> str:
        return f"llmp_{self.lookup}_…{self.last_four}"


class Provider(models.Model):
    """An upstream LLM service. Credentials are references resolved at run time (see
    ``gateway.secrets``), never stored here."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible HTTP"
        AZURE = "azure", "Azure OpenAI"
        BEDROCK = "bedrock", "AWS Bedrock"
        ANTHROPIC = "anthropic", "Anthropic"
        GEMINI = "gemini", "Google Gemini API"
        VERTEX = "vertex", "Google Vertex AI"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    base_url = models.URLField(max_length=500, blank=True)
    api_key_ref = models.CharField(
        max_length=300,
        blank=True,
        help_text="Secret reference: env:NAME, file:/path, or aws-sm:SECRET_ID[#json_key] "
        "(Vertex AI: to the service account's JSON key).",
    )
    api_version = models.CharField(
        max_length=32,
        blank=True,
        help_text="Azure OpenAI api-version; Anthropic's anthropic-version (default 2023-06-01); "
        "Gemini's or Vertex AI's API version (default v1beta / v1)",
    )
    region = models.CharField(
        max_length=32, blank=True, help_text="AWS region for Bedrock; location for Vertex AI"
    )
    connect_timeout = models.FloatField(null=True, blank=True)
    read_timeout = models.FloatField(null=True, blank=True)
    extra = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ProviderDeployment(models.Model):
    """A concrete model at a provider (an upstream model id, an Azure deployment, a Bedrock
    model id), with its prices."""

    name = models.SlugField(max_length=64, unique=True)
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="deployments")
    model = models.CharField(max_length=200, help_text="Upstream model id or Azure deployment")
    input_price_per_1k = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal("0"), help_text="USD per 1,000 tokens"
    )
    output_price_per_1k = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal("0"), help_text="USD per 1,000 tokens"
    )
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Resilience (see gateway.resilience.policy). Connect and read timeouts are the provider's.
    total_timeout = models.FloatField(
        default=DEFAULTS.total_timeout,
        validators=_bounded("total_timeout"),
        help_text="Seconds: the most one request may spend on this deployment, retries "
        "included (for a stream: until its first token).",
    )
    first_token_timeout = models.FloatField(
        default=DEFAULTS.first_token_timeout,
        validators=_bounded("first_token_timeout"),
        help_text="Seconds: streams, from sending the request to the first token.",
    )
    idle_timeout = models.FloatField(
        default=DEFAULTS.idle_timeout,
        validators=_bounded("idle_timeout"),
        help_text="Seconds: streams, the longest gap between two chunks.",
    )
    max_attempts = models.PositiveSmallIntegerField(
        default=DEFAULTS.max_attempts,
        validators=_bounded("max_attempts"),
        help_text="Calls per request, the first included; only connect errors, timeouts, "
        "429 and 5xx are retried.",
    )
    backoff_base = models.FloatField(
        default=DEFAULTS.backoff_base,
        validators=_bounded("backoff_base"),
        help_text="Seconds before the first retry; doubles each retry, plus jitter.",
    )
    backoff_max = models.FloatField(
        default=DEFAULTS.backoff_max,
        validators=_bounded("backoff_max"),
        help_text="Seconds: the longest backoff.",
    )
    retry_after_max = models.FloatField(
        default=DEFAULTS.retry_after_max,
        validators=_bounded("retry_after_max"),
        help_text="Seconds: the longest Retry-After waited for; a longer one moves on to the "
        "next deployment of the fallback chain.",
    )
    breaker_failure_threshold = models.PositiveSmallIntegerField(
        default=DEFAULTS.failure_threshold,
        validators=_bounded("failure_threshold"),
        help_text="Consecutive failures that open the circuit breaker.",
    )
    breaker_failure_rate = models.FloatField(
        default=DEFAULTS.failure_rate,
        validators=_bounded("failure_rate"),
        help_text="Failure rate (0-1) over the window that opens the breaker; 0 = off.",
    )
    breaker_window_seconds = models.FloatField(
        default=DEFAULTS.window_seconds,
        validators=_bounded("window_seconds"),
    )
    breaker_min_requests = models.PositiveIntegerField(
        default=DEFAULTS.min_requests,
        validators=_bounded("min_requests"),
        help_text="Requests in the window before the failure rate counts.",
    )
    breaker_recovery_seconds = models.FloatField(
        default=DEFAULTS.recovery_seconds,
        validators=_bounded("recovery_seconds"),
        help_text="Seconds an open breaker waits before letting one probe request through.",
    )

    class BreakerOverride(models.TextChoices):
        AUTO = "auto", "automatic"
        FORCED_OPEN = "forced_open", "forced open"
        FORCED_CLOSED = "forced_closed", "forced closed"

    breaker_override = models.CharField(
        max_length=16,
        choices=BreakerOverride.choices,
        default=BreakerOverride.AUTO,
        help_text="Set by an officer's breaker action (audited); not by the config file.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DeploymentBreaker(ProviderDeployment):
    """The circuit breaker of a deployment, for the admin (its state lives in Redis)."""

    class Meta:
        proxy = True
        verbose_name = "circuit breaker"


class ModelAlias(models.Model):
    """What tenants ask for (``default``, ``fast``); routed to one of its versions."""

    name = models.CharField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class DegradedMode(models.TextChoices):
        ERROR = "error", "an error (502/503/504)"
        MESSAGE = "message", "a degraded reply"

    degraded_mode = models.CharField(
        max_length=16,
        choices=DegradedMode.choices,
        default=DegradedMode.ERROR,
        help_text="What clients get when every deployment of the chain failed and no cached "
        "answer exists.",
    )
    degraded_message = models.CharField(
        max_length=500,
        default=DEFAULT_DEGRADED_MESSAGE,
        help_text="The reply in degraded mode (marked status: degraded).",
    )
    resilience = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_overrides],
        help_text="Overrides of the deployments' settings for this alias: total_timeout, "
        "first_token_timeout, idle_timeout, max_attempts, backoff_base, backoff_max, "
        "retry_after_max.",
    )

    # The semantic cache (``gateway.semantic_cache``): off unless an officer turns it on, for
    # aliases where a stored answer to a similar question is a safe answer (FAQ bots).
    semantic_cache = models.BooleanField(
        default=False,
        help_text="Answer a temperature-0 request without tools or personal data from a stored "
        "answer to a similar one (same system prompt and parameters).",
    )
    semantic_cache_embeddings = models.CharField(
        max_length=64,
        blank=True,
        help_text="The alias whose embeddings compare questions (an alias served by a provider "
        "that makes embeddings; metered to the tenant).",
    )
    semantic_cache_threshold = models.FloatField(
        default=SEMANTIC_CACHE_DEFAULT_THRESHOLD,
        validators=[validate_similarity_threshold],
        help_text="Cosine similarity (0-1] a stored question needs to answer a new one; higher "
        "is stricter.",
    )

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return self.name


class AliasFallback(models.Model):
    """A deployment tried, in ``position`` order, when the alias's routed one fails or its
    breaker is open. It answers with the routed version's system prompt and parameters."""

    alias = models.ForeignKey(ModelAlias, on_delete=models.CASCADE, related_name="fallbacks")
    deployment = models.ForeignKey(
        ProviderDeployment, on_delete=models.PROTECT, related_name="fallback_for"
    )
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["alias", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["alias", "deployment"], name="uniq_alias_fallback")
        ]

    def __str__(self) -> str:
        return f"{self.alias.name} -> {self.deployment.name}"


class ModelVersion(models.Model):
    """One version of an alias: a deployment plus parameters and a system prompt. Traffic is
    split over an alias's versions by ``weight``."""

    alias = models.ForeignKey(ModelAlias, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=64)
    deployment = models.ForeignKey(
        ProviderDeployment, on_delete=models.PROTECT, related_name="versions"
    )
    weight = models.PositiveIntegerField(default=100)
    system_prompt = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True, help_text="Default request parameters")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["alias", "version"]
        constraints = [
            models.UniqueConstraint(fields=["alias", "version"], name="uniq_alias_version")
        ]

    def __str__(self) -> str:
        return f"{self.alias.name}@{self.version}"


class UsageRecord(TenantOwned):
    """One API request, metered. Never holds message bodies."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="usage_records")
    api_key = models.ForeignKey(ApiKey, null=True, on_delete=models.SET_NULL, related_name="+")
    request_id = models.CharField(max_length=128)
    route = models.CharField(max_length=64)
    alias = models.CharField(max_length=64, blank=True)
    version = models.CharField(
        max_length=64,
        blank=True,
        help_text="The alias's model version routed to (rollouts compare versions by it).",
    )
    deployment = models.CharField(max_length=64, blank=True)
    status_code = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal("0"))
    latency_ms = models.FloatField(default=0)
    upstream_latency_ms = models.FloatField(default=0)
    streamed = models.BooleanField(default=False)
    cache_hit = models.BooleanField(default=False)
    upstream_attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Upstream calls made, retries and fallbacks included."
    )
    fallback_reason = models.CharField(
        max_length=64,
        blank=True,
        help_text="Why the alias's routed deployment did not answer (breaker_open, "
        "upstream_timeout...); empty when it did.",
    )
    degraded = models.BooleanField(default=False)
    tool_calls = models.PositiveIntegerField(
        default=0, help_text="Tool calls in the reply (all choices)."
    )
    content_kinds = models.CharField(
        max_length=100,
        blank=True,
        help_text="What the request carried, never its bodies: text, image_url, input_audio, "
        "file, tool_calls, tool_results, embeddings.",
    )
    pii_redactions = models.PositiveIntegerField(
        default=0,
        help_text="PII values masked or pseudonymised before the provider saw the prompt.",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "created_at"]),
            # Rollout guards and checklists measure one alias's versions over a window.
            models.Index(
                fields=["alias", "version", "created_at"], name="usage_alias_version_time"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.status_code}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class SecurityEvent(TenantOwned):
    """A prompt blocked or flagged by the injection screen or an external scanner, a reply that
    leaked the system prompt's canary or that a scanner refused, or a scanner that failed.
    Holds a hash of the text, the text itself only if the tenant opted in."""

    class Kind(models.TextChoices):
        PROMPT_INJECTION = "prompt_injection", "prompt injection"
        SYSTEM_PROMPT_LEAK = "system_prompt_leak", "system prompt leak"
        SCANNER = "scanner", "external scanner"
        SCANNER_ERROR = "scanner_error", "external scanner failed"

    class Action(models.TextChoices):
        BLOCKED = "blocked", "blocked"
        FLAGGED = "flagged", "flagged"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="security_events")
    api_key = models.ForeignKey(ApiKey, null=True, on_delete=models.SET_NULL, related_name="+")
    request_id = models.CharField(max_length=128, blank=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    action = models.CharField(max_length=16, choices=Action.choices)
    alias = models.CharField(max_length=64, blank=True)
    score = models.FloatField(default=0)
    reasons = models.JSONField(default=list, blank=True)
    text_sha256 = models.CharField(max_length=64, blank=True)
    # Only when the tenant opted in (store_flagged_text), and for LLMP_SECURITY_TEXT_DAYS: the
    # text encrypted with the data key of the request's end user (found and erased with the
    # subject's other data, gone when that key is destroyed), or, when the request named no
    # user, the text with its personal data redacted.
    text = models.TextField(blank=True, help_text="Redacted text (requests naming no user).")
    subject = models.ForeignKey(
        "privacy.DataSubject", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    text_ciphertext = models.BinaryField(null=True, blank=True, editable=False)
    text_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.action} ({self.score:.2f})"


class GuardrailScanner(TenantOwned):
    """An external scanner an officer added (``gateway.scanners``): checked before the call (on
    everything the client sent) and/or after it (on the reply), for one tenant or all of them,
    one alias or all of them. Read by the request path from the routing snapshot, never per
    request. Its auth header's value is a secret reference, never a secret."""

    class Kind(models.TextChoices):
        HTTP = "http", "HTTP scanner (the gateway's JSON contract)"
        BEDROCK = "bedrock", "AWS Bedrock Guardrails (ApplyGuardrail)"
        PRESIDIO = "presidio", "Presidio analyzer (POST /analyze)"

    class FailMode(models.TextChoices):
        OPEN = "open", "fail open: let the request through"
        CLOSED = "closed", "fail closed: refuse the request"

    class OnDetect(models.TextChoices):
        BLOCK = "block", "block"
        FLAG = "flag", "flag (record, let through)"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    tenant = models.ForeignKey(
        Tenant,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="guardrail_scanners",
        help_text="Empty: every tenant.",
    )
    alias = models.ForeignKey(
        "gateway.ModelAlias",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="guardrail_scanners",
        help_text="Empty: every alias.",
    )
    pre_call = models.BooleanField(
        default=True, help_text="Check what the client sends, before the provider is called."
    )
    post_call = models.BooleanField(
        default=False,
        help_text="Check the reply before the client gets it (a stream is held until checked).",
    )
    fail_mode = models.CharField(
        max_length=8,
        choices=FailMode.choices,
        default=FailMode.CLOSED,
        help_text="What a timeout or an error of the scanner does.",
    )
    timeout_ms = models.PositiveIntegerField(
        default=2000, validators=[MinValueValidator(50), MaxValueValidator(30_000)]
    )
    url = models.URLField(
        max_length=500,
        blank=True,
        help_text="HTTP: the scanner's URL. Presidio: the analyzer's base URL. Bedrock: an "
        "endpoint URL instead of AWS's (optional).",
    )
    auth_header = models.CharField(
        max_length=64, blank=True, default="Authorization", help_text="HTTP and Presidio."
    )
    auth_secret_ref = models.CharField(
        max_length=300,
        blank=True,
        help_text="The auth header's value, as a secret reference: env:NAME, file:/path or "
        "aws-sm:SECRET_ID[#json_key].",
    )
    guardrail_id = models.CharField(max_length=128, blank=True, help_text="Bedrock.")
    guardrail_version = models.CharField(
        max_length=16, blank=True, help_text="Bedrock: a number or DRAFT."
    )
    region = models.CharField(max_length=32, blank=True, help_text="Bedrock (default AWS_REGION).")
    language = models.CharField(max_length=8, default="en", help_text="Presidio.")
    score_threshold = models.FloatField(
        default=0.5,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Presidio: entities scored at least this count.",
    )
    entities = models.JSONField(
        default=list, blank=True, help_text="Presidio: entity types to look for ([] = all)."
    )
    on_detect = models.CharField(
        max_length=8,
        choices=OnDetect.choices,
        default=OnDetect.BLOCK,
        help_text="Presidio and Bedrock: what a finding does (an HTTP scanner says itself).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class BreakerEvent(models.Model):
    """A circuit breaker changing state, or an officer acting on one. Written only on those
    rare events, never per request; the recent failures themselves are kept in Redis."""

    class Kind(models.TextChoices):
        OPENED = "opened", "opened"
        HALF_OPEN = "half_open", "half-open (probing)"
        CLOSED = "closed", "closed"
        FORCED_OPEN = "forced_open", "forced open"
        FORCED_CLOSED = "forced_closed", "forced closed"
        AUTO = "auto", "override removed"
        RESET = "reset", "reset"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    deployment = models.CharField(max_length=64, db_index=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    error_code = models.CharField(max_length=64, blank=True)
    actor = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.deployment} {self.kind}"
