"""The gateway's configuration file: tiers, providers, deployments and model aliases declared in
YAML (LiteLLM-config-like), parsed and validated into typed dataclasses. Nothing here touches
the database; ``gateway.config_services.config_apply`` writes a parsed file, and
``manage.py apply_config FILE`` does both.

Shape (every section optional, but the file must not be empty)::

    tiers:
      - name: free                  # slug, unique
        description: ""
        requests_per_minute: 20     # request limits, 0 = unlimited
        requests_per_hour: 300
        requests_per_day: 2000
        key_requests_per_minute: 0  # per API key, 0 = unlimited (also _per_hour, _per_day)
        user_requests_per_minute: 0 # per end user (the request's `user`), likewise
        tokens_per_minute: 20000    # token limits, 0 = unlimited
        tokens_per_day: 200000
        daily_budget: 0             # USD, 0 = unlimited
        monthly_budget: 0
        max_prompt_chars: 8000      # >= 1
        max_output_tokens: 1024     # 0 = the model's own limit
        max_choices: 4              # the largest n a request may ask for (1-128)
        max_media_parts: 8          # images, audio and files per request (0 = none)
        max_media_part_chars: 3000000  # characters of one such part (a data URL)
        allowed_aliases: [default]  # aliases declared in this file; [] = every enabled alias
        screening_mode: block       # prompt-injection screen: block | flag | off
        screening_threshold: 0.5    # score 0-1 from which a prompt is blocked or flagged
        leak_mode: block            # system-prompt canary in a reply: block | flag | off
    providers:
      - name: local                 # slug, unique
        kind: openai                # openai | azure | bedrock | anthropic | gemini | vertex
        base_url: http://127.0.0.1:8081/v1   # required for openai and azure (anthropic, gemini,
                                             # vertex: Google's / Anthropic's own by default)
        api_key: env:LOCAL_MODEL_KEY         # optional: a secret REFERENCE, never the key
                                             # env:NAME | file:/path | aws-sm:ID[#json_key]
                                             # | azure-kv:VAULT/NAME[#version]
                                             # | gcp-sm:PROJECT/NAME[#version]
                                             # | vault:MOUNT/PATH#KEY
        api_version: "2024-10-21"   # required for azure; anthropic-version, Gemini's v1beta
        region: us-east-1           # bedrock (default: AWS_REGION); vertex: the location
        # vertex: api_key references the service account's JSON key; extra: {project: my-proj}
        # anthropic: extra: {default_max_tokens: 4096} when a request sets none
        timeouts: {connect: 5, read: 120}    # seconds, > 0; omitted = the gateway's defaults
        extra: {}                   # adapter-specific options (no credentials)
        enabled: true
    deployments:
      - name: gemma-3-270m          # slug, unique
        provider: local             # a provider declared in this file
        model: gemma-3-270m         # upstream model id / Azure deployment / Bedrock model id
        price: {input_per_1k: 0, output_per_1k: 0}   # USD per 1,000 tokens, >= 0
        enabled: true
        # Resilience (seconds; every key optional, omitted = the default shown):
        timeouts: {total: 180, first_token: 60, idle: 60}  # connect/read: the provider's
        retries: {max_attempts: 3, backoff_base: 0.5, backoff_max: 8, retry_after_max: 10}
        breaker: {failure_threshold: 5, failure_rate: 0.5, window: 60, min_requests: 20,
                  recovery: 60}             # failure_rate 0 = only consecutive failures
    model_aliases:
      - name: default               # unique
        description: The default model
        enabled: true
        fallbacks: [gpt-4o-mini]    # deployments declared in this file, tried in order when
                                    # the routed one fails or its breaker is open
        degraded: {mode: error}     # when all failed and nothing is cached: error (the last
                                    # failure's 502/503/504) or message (a 200 marked degraded,
                                    # with message: "...", default "I'm temporarily ...")
        resilience:                 # this alias's overrides of its deployments' numbers
          timeouts: {total: 30, first_token: 10, idle: 10}
          retries: {max_attempts: 2}
        semantic_cache:             # off unless given (docs/semantic-cache.md)
          embeddings: embed         # an alias declared in this file, served by providers
                                    # that make embeddings
          threshold: 0.995          # cosine similarity in (0, 1]; default 0.995
        versions:                   # an enabled alias needs a version with weight > 0
          - version: v1             # unique within the alias
            deployment: gemma-3-270m   # a deployment declared in this file
            weight: 100             # >= 0; traffic is split by weight
            system_prompt: ""
            params: {temperature: 0.7} # default request parameters
    scanners:                       # external scanners (docs/scanners.md)
      - name: acme-guard            # slug, unique
        kind: http                  # http | bedrock | presidio
        tenant: acme                # a tenant's slug (it must exist); omitted = every tenant
        alias: default              # an alias declared in this file; omitted = every alias
        phases: [pre_call]          # pre_call and/or post_call
        fail_mode: closed           # closed (refuse) | open (let through) on timeout or error
        timeout_ms: 2000            # 50-30000
        url: https://scanner.internal/scan  # http, presidio: required; bedrock: optional endpoint
        auth_header: Authorization  # http, presidio
        auth_secret_ref: env:PROVIDER_SCANNER_TOKEN  # the header's value, a secret REFERENCE
        guardrail_id: abc123        # bedrock (required), with guardrail_version: "1" | DRAFT
        region: eu-west-1           # bedrock (default: AWS_REGION)
        language: en                # presidio
        score_threshold: 0.5        # presidio: findings scored at least this count
        entities: [EMAIL_ADDRESS]   # presidio: [] = every entity type
        on_detect: block            # bedrock, presidio: block | flag
        enabled: true

Rules:
- Unknown keys and duplicate keys are errors, so a typo is never silently ignored.
- The file describes each object it names completely: an omitted field takes the model's
  default (an officer's admin edit of a named object is overwritten by the next apply).
  Objects the file does not name are left alone (``--prune`` disables aliases it does not name).
- References (``provider``, ``deployment``, ``fallbacks``, ``allowed_aliases``, a scanner's
  ``alias``) must name objects declared in the same file, so the file is self-contained; a
  scanner's ``tenant`` names an existing tenant (tenants are made in the admin).
- A deployment's ``breaker_override`` (an officer forcing its breaker) is not part of the
  file: applying never undoes a forced breaker.
- Errors name their place in the file: ``model_aliases[0].versions[1].deployment: unknown
  deployment 'x'``. They never repeat a value given for ``api_key``.
"""

from __future__ import annotations

import datetime
import difflib
import json
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.backends.base.operations import BaseDatabaseOperations

from gateway.egress import validate_upstream_url
from gateway.models import (
    GuardrailScanner,
    ModelAlias,
    ModelVersion,
    Provider,
    ProviderDeployment,
    ScreeningMode,
    Tier,
)
from gateway.providers.capabilities import check_declaration, unsupported_for
from gateway.providers.kind_settings import ProviderFieldError, ProviderFields, check_kind_fields
from gateway.resilience.policy import DEFAULT_DEGRADED_MESSAGE, DEFAULTS, number_error
from gateway.scanners.policy import TIMEOUT_MS_MAX, TIMEOUT_MS_MIN, check_scanner
from gateway.secrets import validate_provider_secret_ref
from gateway.semantic_match import DEFAULT_THRESHOLD

PROVIDER_KINDS = tuple(Provider.Kind.values)
DEGRADED_MODES = tuple(ModelAlias.DegradedMode.values)
SCREENING_MODES = tuple(ScreeningMode.values)
# ModelVersion.system_prompt is a TextField (no length in the model): the file's own cap.
SYSTEM_PROMPT_MAX_CHARS = 100_000
# The resilience sections: file key -> ResiliencePolicy key.
TIMEOUT_KEYS = {
    "total": "total_timeout",
    "first_token": "first_token_timeout",
    "idle": "idle_timeout",
}
RETRY_KEYS = {
    key: key for key in ("max_attempts", "backoff_base", "backoff_max", "retry_after_max")
}
BREAKER_KEYS = {
    "failure_threshold": "failure_threshold",
    "failure_rate": "failure_rate",
    "window": "window_seconds",
    "min_requests": "min_requests",
    "recovery": "recovery_seconds",
}
# ResiliencePolicy key -> ProviderDeployment field.
DEPLOYMENT_FIELDS = {
    **{key: key for key in (*TIMEOUT_KEYS.values(), *RETRY_KEYS.values())},
    **{key: f"breaker_{key}" for key in BREAKER_KEYS.values()},
}
_SLUG = re.compile(r"[-a-zA-Z0-9_]+")
# Keys in a provider's ``extra`` that would hold a credential: those belong in ``api_key``.
_CREDENTIAL_WORDS = (
    "api_key",
    "api-key",
    "apikey",
    "secret",
    "password",
    "authorization",
    "bearer",
    "access_key",
    "credential",
)


def _model_field(model: type[models.Model], name: str) -> models.Field:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field), f"{model.__name__}.{name} is not a column"
    return field


# The limits below are read from the model fields the file's values are written to, so the
# file cannot accept what the database (or the admin's validation) would refuse.


def _max_length(model: type[models.Model], name: str) -> int:
    """A character field's ``max_length``."""
    length = _model_field(model, name).max_length
    assert length is not None, f"{model.__name__}.{name} has no max_length"
    return length


def _int_range(model: type[models.Model], name: str) -> tuple[int, int]:
    """(least, most) an integer field accepts: its type's range on every supported database
    (``BaseDatabaseOperations.integer_field_ranges``; 0..2147483647 for a
    PositiveIntegerField), narrowed by its Min/MaxValueValidators."""
    field = _model_field(model, name)
    least, most = BaseDatabaseOperations.integer_field_ranges[field.get_internal_type()]
    for validator in field.validators:
        if isinstance(validator, MinValueValidator):
            least = max(least, validator.limit_value)
        elif isinstance(validator, MaxValueValidator):
            most = min(most, validator.limit_value)
    return least, most


def _decimal_shape(model: type[models.Model], name: str) -> tuple[int, int]:
    """A decimal field's (max_digits, decimal_places)."""
    field = _model_field(model, name)
    assert isinstance(field, models.DecimalField), f"{model.__name__}.{name} is not a decimal"
    assert field.max_digits is not None and field.decimal_places is not None
    return field.max_digits, field.decimal_places


class ConfigError(ValueError):
    """A configuration file that cannot be applied. ``errors`` lists every problem found, each
    prefixed with its path in the file."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass(frozen=True)
class TierSpec:
    name: str
    description: str = ""
    requests_per_minute: int = 60
    requests_per_hour: int = 1000
    requests_per_day: int = 10000
    tokens_per_minute: int = 40000
    tokens_per_day: int = 1000000
    key_requests_per_minute: int = 0
    key_requests_per_hour: int = 0
    key_requests_per_day: int = 0
    user_requests_per_minute: int = 0
    user_requests_per_hour: int = 0
    user_requests_per_day: int = 0
    screening_mode: str = "block"
    screening_threshold: float = 0.5
    leak_mode: str = "block"
    daily_budget: Decimal = Decimal("0")
    monthly_budget: Decimal = Decimal("0")
    max_prompt_chars: int = 32000
    max_output_tokens: int = 4096
    max_choices: int = 4
    max_media_parts: int = 8
    max_media_part_chars: int = 3_000_000
    allowed_aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    kind: str
    base_url: str = ""
    api_key_ref: str = ""
    api_version: str = ""
    region: str = ""
    connect_timeout: float | None = None
    read_timeout: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    provider: str
    model: str
    input_price_per_1k: Decimal = Decimal("0")
    output_price_per_1k: Decimal = Decimal("0")
    enabled: bool = True
    # ProviderDeployment field -> value, every resilience field (defaults filled in).
    resilience: dict[str, float | int] = field(
        default_factory=lambda: {f: getattr(DEFAULTS, k) for k, f in DEPLOYMENT_FIELDS.items()}
    )


@dataclass(frozen=True)
class VersionSpec:
    version: str
    deployment: str
    weight: int = 100
    system_prompt: str = ""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AliasSpec:
    name: str
    description: str = ""
    enabled: bool = True
    versions: tuple[VersionSpec, ...] = ()
    fallbacks: tuple[str, ...] = ()
    degraded_mode: str = "error"
    degraded_message: str = DEFAULT_DEGRADED_MESSAGE
    # ResiliencePolicy key -> value, only the overridden ones.
    resilience: dict[str, float | int] = field(default_factory=dict)
    # The semantic cache: the embeddings alias ("" = off) and the similarity threshold.
    semantic_embeddings: str = ""
    semantic_threshold: float = DEFAULT_THRESHOLD


@dataclass(frozen=True)
class ScannerSpec:
    name: str
    kind: str
    tenant: str = ""  # a tenant's slug; "" = every tenant
    alias: str = ""  # "" = every alias
    pre_call: bool = True
    post_call: bool = False
    fail_mode: str = "closed"
    timeout_ms: int = 2000
    url: str = ""
    auth_header: str = "Authorization"
    auth_secret_ref: str = ""
    guardrail_id: str = ""
    guardrail_version: str = ""
    region: str = ""
    language: str = "en"
    score_threshold: float = 0.5
    entities: tuple[str, ...] = ()
    on_detect: str = "block"
    enabled: bool = True


SCANNER_PHASES = ("pre_call", "post_call")


@dataclass(frozen=True)
class GatewayConfig:
    tiers: tuple[TierSpec, ...] = ()
    providers: tuple[ProviderSpec, ...] = ()
    deployments: tuple[DeploymentSpec, ...] = ()
    model_aliases: tuple[AliasSpec, ...] = ()
    scanners: tuple[ScannerSpec, ...] = ()


# ---------------------------------------------------------------------------------------------
# Loading


class _StrictLoader(yaml.SafeLoader):
    """``safe_load`` that rejects a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):
            continue  # construct_mapping reports it
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a configuration file. Raises ``ConfigError``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read {path}: {type(exc).__name__}"]) from None
    return parse_config_text(text)


def parse_config_text(text: str) -> GatewayConfig:
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        # Built by hand: str(exc) quotes the offending line, which may hold a pasted key.
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"invalid YAML{where}: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"invalid YAML: {type(exc).__name__}"]) from None
    return parse_config(data)


def parse_config(data: Any) -> GatewayConfig:
    """Validate already-loaded YAML data. Raises ``ConfigError`` listing every problem."""
    return _Parser().parse(data)


# ---------------------------------------------------------------------------------------------
# Validation


class _Invalid(Exception):
    """A field is wrong; the error is recorded, and parsing goes on to find the rest."""


_SLUG_HELP = "a slug (letters, digits, '-', '_')"


class _Parser:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, path: str, message: str) -> _Invalid:
        self.errors.append(f"{path}: {message}")
        return _Invalid()

    def fields(self, parsers: dict[str, Callable[[], Any]]) -> dict[str, Any]:
        """Run every parser (to report every error), then raise if any failed."""
        values: dict[str, Any] = {}
        failed = False
        for key, parse in parsers.items():
            try:
                values[key] = parse()
            except _Invalid:
                failed = True
        if failed:
            raise _Invalid
        return values

    # -- values --

    def mapping(self, value: Any, path: str, allowed: set[str], required: set[str]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping, not {_type_name(value)}")
        prefix = f"{path}." if path else ""
        ok = True
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"allowed: {', '.join(sorted(allowed))}"
                )
                self.fail(f"{prefix}{key}", f"unknown key ({hint})")
                ok = False
        for key in sorted(required - value.keys()):
            self.fail(f"{prefix}{key}", "is required")
            ok = False
        if not ok:
            raise _Invalid
        return value

    def items(self, value: Any, path: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list, not {_type_name(value)}")
        return value

    def text(
        self,
        data: dict,
        key: str,
        path: str,
        *,
        max_length: int,
        required: bool = False,
        slug: bool = False,
    ) -> str:
        value = data.get(key)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise self.fail(f"{path}.{key}", f"must be a string, not {_type_name(value)}")
        if len(value) > max_length:
            raise self.fail(f"{path}.{key}", f"is longer than {max_length} characters")
        if required and not value.strip():
            raise self.fail(f"{path}.{key}", "must not be empty")
        if slug and not _SLUG.fullmatch(value):
            raise self.fail(f"{path}.{key}", f"must be {_SLUG_HELP}")
        return value

    def integer(
        self,
        data: dict,
        key: str,
        path: str,
        default: int,
        *,
        bounds: tuple[int, int],
    ) -> int:
        """An integer within ``bounds`` (least, most), as ``_int_range`` reads from the model."""
        minimum, maximum = bounds
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{path}.{key}", f"must be an integer, not {_type_name(value)}")
        if value < minimum:
            raise self.fail(f"{path}.{key}", f"must be >= {minimum}")
        if value > maximum:
            raise self.fail(f"{path}.{key}", f"is too large (at most {maximum})")
        return value

    def decimal(self, data: dict, key: str, path: str, *, shape: tuple[int, int]) -> Decimal:
        """A decimal >= 0 that fits ``shape`` (max_digits, decimal_places)."""
        digits, places = shape
        value = data.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.fail(f"{path}.{key}", f"must be a number, not {_type_name(value)}")
        try:
            # Through str, so 0.15 is 0.15 and not the binary float's 0.1499999...
            number = Decimal(str(value))
        except InvalidOperation:
            raise self.fail(f"{path}.{key}", "must be a number") from None
        if not number.is_finite() or number < 0:
            raise self.fail(f"{path}.{key}", "must be a number >= 0")
        if number >= Decimal(10) ** (digits - places):
            raise self.fail(f"{path}.{key}", "is too large")
        if number != number.quantize(Decimal(1).scaleb(-places)):
            raise self.fail(f"{path}.{key}", f"has more than {places} decimal places")
        return number

    def boolean(self, data: dict, key: str, path: str) -> bool:
        value = data.get(key, True)
        if not isinstance(value, bool):
            raise self.fail(f"{path}.{key}", f"must be true or false, not {_type_name(value)}")
        return value

    def json_object(self, data: dict, key: str, path: str) -> dict[str, Any]:
        value = data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self.fail(f"{path}.{key}", "must be a mapping with string keys")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise self.fail(
                f"{path}.{key}", "must hold only JSON values (quote dates and times)"
            ) from None
        return value

    def names(self, data: dict, key: str, path: str) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{path}.{key}", "must be a list of names")
        if len(set(value)) != len(value):
            raise self.fail(f"{path}.{key}", "names an alias twice")
        return tuple(value)

    # -- lists of named entries --

    def entries(
        self, raw: list, path: str, key: str, what: str, parse_one: Callable[[Any, str], Any]
    ) -> list:
        """Parse each entry of a list, and report a name used twice."""
        parsed = []
        seen: set[str] = set()
        for index, value in enumerate(raw):
            item_path = f"{path}[{index}]"
            name = value.get(key) if isinstance(value, dict) else None
            if isinstance(name, str):
                if name in seen:
                    self.fail(f"{item_path}.{key}", f"duplicate {what} {name!r}")
                seen.add(name)
            try:
                parsed.append(parse_one(value, item_path))
            except _Invalid:
                continue
        return parsed

    # -- the file --

    def parse(self, data: Any) -> GatewayConfig:
        if data is None:
            raise ConfigError(["the file is empty"])
        try:
            self.mapping(
                data, "", {"tiers", "providers", "deployments", "model_aliases", "scanners"}, set()
            )
        except _Invalid:
            raise ConfigError(self.errors) from None

        def section(name: str, what: str, parse_one: Callable[[Any, str], Any]) -> list:
            try:
                raw = self.items(data.get(name), name)
            except _Invalid:
                return []
            return self.entries(raw, name, "name", what, parse_one)

        providers = section("providers", "provider", self.provider)
        deployments = section("deployments", "deployment", self.deployment)
        aliases = section("model_aliases", "alias", self.alias)
        tiers = section("tiers", "tier", self.tier)
        scanners = section("scanners", "scanner", self.scanner)
        self.check_references(data)
        if self.errors:
            raise ConfigError(self.errors)
        return GatewayConfig(
            tiers=tuple(tiers),
            providers=tuple(providers),
            deployments=tuple(deployments),
            model_aliases=tuple(aliases),
            scanners=tuple(scanners),
        )

    def scanner(self, raw: Any, path: str) -> ScannerSpec:
        texts = (
            "url",
            "auth_header",
            "auth_secret_ref",
            "guardrail_id",
            "guardrail_version",
            "region",
            "language",
        )
        allowed = {
            "name",
            "kind",
            "tenant",
            "alias",
            "phases",
            "fail_mode",
            "timeout_ms",
            "score_threshold",
            "entities",
            "on_detect",
            "enabled",
            *texts,
        }
        data = self.mapping(raw, path, allowed, {"name", "kind"})
        defaults = ScannerSpec(name="", kind="")
        values = self.fields(
            {
                "name": lambda: self.text(
                    data, "name", path, max_length=_max_length(GuardrailScanner, "name"), slug=True
                ),
                "kind": lambda: self.choice(
                    data, "kind", path, tuple(GuardrailScanner.Kind.values), None
                ),
                "tenant": lambda: self.text(data, "tenant", path, max_length=64, slug=False),
                "alias": lambda: self.text(data, "alias", path, max_length=64),
                "phases": lambda: self.phases(data, path),
                "fail_mode": lambda: self.choice(
                    data, "fail_mode", path, tuple(GuardrailScanner.FailMode.values), "closed"
                ),
                "on_detect": lambda: self.choice(
                    data, "on_detect", path, tuple(GuardrailScanner.OnDetect.values), "block"
                ),
                "timeout_ms": lambda: self.integer(
                    data,
                    "timeout_ms",
                    path,
                    defaults.timeout_ms,
                    bounds=(TIMEOUT_MS_MIN, TIMEOUT_MS_MAX),
                ),
                "score_threshold": lambda: self.fraction(
                    data, "score_threshold", path, defaults.score_threshold
                ),
                "entities": lambda: self.strings(data, "entities", path),
                "enabled": lambda: self.boolean(data, "enabled", path),
                **{
                    key: partial(
                        self.text, data, key, path, max_length=_max_length(GuardrailScanner, key)
                    )
                    for key in texts
                },
            }
        )
        if "auth_header" not in data:
            values["auth_header"] = defaults.auth_header
        if "language" not in data:
            values["language"] = defaults.language
        pre_call, post_call = values.pop("phases")
        try:
            check_scanner(
                kind=values["kind"],
                url=values["url"],
                timeout_ms=values["timeout_ms"],
                auth_header=values["auth_header"],
                auth_secret_ref=values["auth_secret_ref"],
                guardrail_id=values["guardrail_id"],
                guardrail_version=values["guardrail_version"],
                region=values["region"],
                language=values["language"],
                score_threshold=values["score_threshold"],
                entities=values["entities"],
                pre_call=pre_call,
                post_call=post_call,
            )
        except ValueError as exc:
            field_name, _, message = str(exc).partition(": ")
            if field_name == "pre_call":
                field_name = "phases"
            raise self.fail(f"{path}.{field_name}", message or str(exc)) from None
        return ScannerSpec(**values, pre_call=pre_call, post_call=post_call)

    def choice(
        self, data: dict, key: str, path: str, choices: tuple[str, ...], default: str | None
    ) -> str:
        value = data.get(key, default)
        if value not in choices:
            raise self.fail(f"{path}.{key}", f"must be one of {', '.join(choices)}")
        return str(value)

    def strings(self, data: dict, key: str, path: str) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{path}.{key}", "must be a list of strings")
        return tuple(value)

    def phases(self, data: dict, path: str) -> tuple[bool, bool]:
        value = data.get("phases", ["pre_call"])
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(p, str) and p in SCANNER_PHASES for p in value)
        ):
            raise self.fail(
                f"{path}.phases", f"must be a non-empty list of {', '.join(SCANNER_PHASES)}"
            )
        return "pre_call" in value, "post_call" in value

    def tier(self, raw: Any, path: str) -> TierSpec:
        counters = [
            "requests_per_minute",
            "requests_per_hour",
            "requests_per_day",
            "tokens_per_minute",
            "tokens_per_day",
            "max_output_tokens",
            *(
                f"{scope}_requests_per_{window}"
                for scope in ("key", "user")
                for window in ("minute", "hour", "day")
            ),
        ]
        allowed = {
            "name",
            "description",
            "screening_mode",
            "screening_threshold",
            "leak_mode",
            "daily_budget",
            "monthly_budget",
            "max_prompt_chars",
            "max_choices",
            "max_media_parts",
            "max_media_part_chars",
            "allowed_aliases",
            *counters,
        }
        data = self.mapping(raw, path, allowed, {"name"})
        defaults = TierSpec(name="")
        values = self.fields(
            {
                "name": lambda: self.text(
                    data, "name", path, max_length=_max_length(Tier, "name"), slug=True
                ),
                "description": lambda: self.text(
                    data, "description", path, max_length=_max_length(Tier, "description")
                ),
                **{
                    key: partial(
                        self.integer,
                        data,
                        key,
                        path,
                        getattr(defaults, key),
                        bounds=_int_range(Tier, key),
                    )
                    for key in (
                        *counters,
                        "max_prompt_chars",
                        "max_choices",
                        "max_media_parts",
                        "max_media_part_chars",
                    )
                },
                **{
                    key: partial(self.decimal, data, key, path, shape=_decimal_shape(Tier, key))
                    for key in ("daily_budget", "monthly_budget")
                },
                "allowed_aliases": lambda: self.names(data, "allowed_aliases", path),
                "screening_mode": lambda: self.mode(data, "screening_mode", path),
                "leak_mode": lambda: self.mode(data, "leak_mode", path),
                "screening_threshold": lambda: self.fraction(
                    data, "screening_threshold", path, defaults.screening_threshold
                ),
            }
        )
        return TierSpec(**values)

    def mode(self, data: dict, key: str, path: str) -> str:
        value = data.get(key, "block")
        if value not in SCREENING_MODES:
            raise self.fail(f"{path}.{key}", f"must be one of {', '.join(SCREENING_MODES)}")
        return value

    def fraction(self, data: dict, key: str, path: str, default: float) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise self.fail(f"{path}.{key}", "must be a number from 0 to 1")
        return float(value)

    def provider(self, raw: Any, path: str) -> ProviderSpec:
        allowed = {
            "name",
            "kind",
            "base_url",
            "api_key",
            "api_version",
            "region",
            "timeouts",
            "extra",
            "enabled",
        }
        data = self.mapping(raw, path, allowed, {"name", "kind"})
        if isinstance(data.get("api_version"), datetime.date):
            # YAML reads an unquoted 2024-10-21 as a date; it is the api-version string.
            data = {**data, "api_version": data["api_version"].isoformat()}
        values = self.fields(
            {
                "name": lambda: self.text(
                    data, "name", path, max_length=_max_length(Provider, "name"), slug=True
                ),
                "kind": lambda: self.kind(data, path),
                "base_url": lambda: self.url(data, path),
                "api_key_ref": lambda: self.secret_ref(data, path),
                **{
                    key: partial(self.text, data, key, path, max_length=_max_length(Provider, key))
                    for key in ("api_version", "region")
                },
                "timeouts": lambda: self.timeouts(data, path),
                "extra": lambda: self.extra(data, path),  # noqa: S610 - not QuerySet.extra
                "enabled": lambda: self.boolean(data, "enabled", path),
            }
        )
        kind = values["kind"]
        if kind in ("openai", "azure") and not values["base_url"]:
            raise self.fail(f"{path}.base_url", f"is required for kind {kind}")
        if kind == "azure" and not values["api_version"]:
            raise self.fail(f"{path}.api_version", "is required for kind azure")
        try:
            check_kind_fields(
                ProviderFields(
                    kind=kind,
                    base_url=values["base_url"],
                    api_key_ref=values["api_key_ref"],
                    api_version=values["api_version"],
                    region=values["region"],
                    extra=values["extra"],
                )
            )
        except ProviderFieldError as exc:
            name = "api_key" if exc.field == "api_key_ref" else exc.field
            raise self.fail(f"{path}.{name}", str(exc)) from None
        connect_timeout, read_timeout = values.pop("timeouts")
        return ProviderSpec(**values, connect_timeout=connect_timeout, read_timeout=read_timeout)

    def kind(self, data: dict, path: str) -> str:
        value = self.text(data, "kind", path, max_length=_max_length(Provider, "kind"))
        if value not in PROVIDER_KINDS:
            raise self.fail(
                f"{path}.kind", f"must be one of {', '.join(PROVIDER_KINDS)}, not {value!r}"
            )
        return value

    def url(self, data: dict, path: str) -> str:
        value = self.text(data, "base_url", path, max_length=_max_length(Provider, "base_url"))
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise self.fail(f"{path}.base_url", "must be an http:// or https:// URL")
            if parts.username or parts.password:
                # Not echoed: the userinfo part is a credential.
                raise self.fail(
                    f"{path}.base_url", "must not contain credentials (use api_key: a reference)"
                )
            try:
                validate_upstream_url(value)
            except ValueError as exc:
                raise self.fail(f"{path}.base_url", str(exc)) from None
        return value

    def secret_ref(self, data: dict, path: str) -> str:
        value = data.get("api_key")
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.fail(f"{path}.api_key", "must be a secret reference string")
        try:
            validate_provider_secret_ref(value)
        except ValueError as exc:
            # validate_provider_secret_ref's messages never repeat the value.
            raise self.fail(f"{path}.api_key", str(exc)) from None
        return value

    def timeouts(self, data: dict, path: str) -> tuple[float | None, float | None]:
        value = data.get("timeouts")
        if value is None:
            return None, None
        timeouts_path = f"{path}.timeouts"
        data = self.mapping(value, timeouts_path, {"connect", "read"}, set())
        values = self.fields(
            {key: partial(self.seconds, data, key, timeouts_path) for key in ("connect", "read")}
        )
        return values["connect"], values["read"]

    def seconds(self, data: dict, key: str, path: str) -> float | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{path}.{key}", f"must be seconds, not {_type_name(value)}")
        if not 0 < value <= 3600:
            raise self.fail(f"{path}.{key}", "must be > 0 and <= 3600 seconds")
        return float(value)

    def extra(self, data: dict, path: str) -> dict[str, Any]:
        value = self.json_object(data, "extra", path)
        for key in _walk_keys(value):
            if any(word in key.lower() for word in _CREDENTIAL_WORDS):
                raise self.fail(
                    f"{path}.extra.{key}",
                    "credentials are not accepted here: use api_key with a secret reference",
                )
        if "unsupported" in value:
            try:
                check_declaration(value["unsupported"])
            except ValueError as exc:
                raise self.fail(f"{path}.extra.unsupported", str(exc)) from None
        return value

    def deployment(self, raw: Any, path: str) -> DeploymentSpec:
        data = self.mapping(
            raw,
            path,
            {"name", "provider", "model", "price", "enabled", "timeouts", "retries", "breaker"},
            {"name", "provider", "model"},
        )
        values = self.fields(
            {
                "name": lambda: self.text(
                    data,
                    "name",
                    path,
                    max_length=_max_length(ProviderDeployment, "name"),
                    slug=True,
                ),
                "provider": lambda: self.text(
                    data, "provider", path, max_length=_max_length(Provider, "name"), required=True
                ),
                "model": lambda: self.text(
                    data,
                    "model",
                    path,
                    max_length=_max_length(ProviderDeployment, "model"),
                    required=True,
                ),
                "price": lambda: self.price(data, path),
                "enabled": lambda: self.boolean(data, "enabled", path),
                "timeouts": lambda: self.settings(data, "timeouts", path, TIMEOUT_KEYS),
                "retries": lambda: self.settings(data, "retries", path, RETRY_KEYS),
                "breaker": lambda: self.settings(data, "breaker", path, BREAKER_KEYS),
            }
        )
        input_price, output_price = values.pop("price")
        given = {**values.pop("timeouts"), **values.pop("retries"), **values.pop("breaker")}
        resilience = {
            field_name: given.get(key, getattr(DEFAULTS, key))
            for key, field_name in DEPLOYMENT_FIELDS.items()
        }
        return DeploymentSpec(
            **values,
            input_price_per_1k=input_price,
            output_price_per_1k=output_price,
            resilience=resilience,
        )

    def settings(
        self, data: dict, key: str, path: str, keys: dict[str, str]
    ) -> dict[str, float | int]:
        """A resilience section (``timeouts``, ``retries``, ``breaker``): policy key -> value,
        for the keys given."""
        value = data.get(key)
        if value is None:
            return {}
        section_path = f"{path}.{key}"
        section = self.mapping(value, section_path, set(keys), set())
        out: dict[str, float | int] = {}
        failed = False
        for name, item in section.items():
            policy_key = keys[name]
            problem = number_error(policy_key, item)
            if problem:
                self.fail(f"{section_path}.{name}", problem)
                failed = True
            else:
                out[policy_key] = float(item) if isinstance(item, float) else item
        if failed:
            raise _Invalid
        return out

    def degraded(self, data: dict, path: str) -> tuple[str, str]:
        value = data.get("degraded")
        if value is None:
            return "error", DEFAULT_DEGRADED_MESSAGE
        degraded_path = f"{path}.degraded"
        section = self.mapping(value, degraded_path, {"mode", "message"}, set())
        mode = section.get("mode", "error")
        if mode not in DEGRADED_MODES:
            raise self.fail(
                f"{degraded_path}.mode", f"must be one of {', '.join(DEGRADED_MODES)}, not {mode!r}"
            )
        message = (
            self.text(
                section,
                "message",
                degraded_path,
                max_length=_max_length(ModelAlias, "degraded_message"),
            )
            if section.get("message") is not None
            else DEFAULT_DEGRADED_MESSAGE
        )
        if not message.strip():
            raise self.fail(f"{degraded_path}.message", "must not be empty")
        return mode, message

    def overrides(self, data: dict, path: str) -> dict[str, float | int]:
        value = data.get("resilience")
        if value is None:
            return {}
        resilience_path = f"{path}.resilience"
        section = self.mapping(value, resilience_path, {"timeouts", "retries"}, set())
        values = self.fields(
            {
                "timeouts": lambda: self.settings(
                    section, "timeouts", resilience_path, TIMEOUT_KEYS
                ),
                "retries": lambda: self.settings(section, "retries", resilience_path, RETRY_KEYS),
            }
        )
        return {**values["timeouts"], **values["retries"]}

    def semantic(self, data: dict, path: str) -> tuple[str, float]:
        """``semantic_cache: {embeddings, threshold}``: the embeddings alias (checked with the
        other references) and a threshold in (0, 1]."""
        value = data.get("semantic_cache")
        if value is None:
            return "", DEFAULT_THRESHOLD
        section_path = f"{path}.semantic_cache"
        section = self.mapping(value, section_path, {"embeddings", "threshold"}, {"embeddings"})
        embeddings = self.text(section, "embeddings", section_path, max_length=64, required=True)
        threshold = section.get("threshold", DEFAULT_THRESHOLD)
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not 0 < threshold <= 1
        ):
            raise self.fail(f"{section_path}.threshold", "must be a number above 0 and at most 1")
        return embeddings, float(threshold)

    def fallbacks(self, data: dict, path: str) -> tuple[str, ...]:
        value = data.get("fallbacks")
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{path}.fallbacks", "must be a list of deployment names")
        if len(set(value)) != len(value):
            raise self.fail(f"{path}.fallbacks", "names a deployment twice")
        return tuple(value)

    def price(self, data: dict, path: str) -> tuple[Decimal, Decimal]:
        value = data.get("price")
        if value is None:
            return Decimal("0"), Decimal("0")
        price_path = f"{path}.price"
        data = self.mapping(value, price_path, {"input_per_1k", "output_per_1k"}, set())
        columns = {"input_per_1k": "input_price_per_1k", "output_per_1k": "output_price_per_1k"}
        values = self.fields(
            {
                key: partial(
                    self.decimal,
                    data,
                    key,
                    price_path,
                    shape=_decimal_shape(ProviderDeployment, column),
                )
                for key, column in columns.items()
            }
        )
        return values["input_per_1k"], values["output_per_1k"]

    def alias(self, raw: Any, path: str) -> AliasSpec:
        allowed = {
            "name",
            "description",
            "enabled",
            "versions",
            "fallbacks",
            "degraded",
            "resilience",
            "semantic_cache",
        }
        data = self.mapping(raw, path, allowed, {"name"})
        versions_path = f"{path}.versions"
        values = self.fields(
            {
                "name": lambda: self.text(
                    data, "name", path, max_length=_max_length(ModelAlias, "name"), required=True
                ),
                "description": lambda: self.text(
                    data, "description", path, max_length=_max_length(ModelAlias, "description")
                ),
                "enabled": lambda: self.boolean(data, "enabled", path),
                "versions": lambda: self.versions(data, versions_path),
                "fallbacks": lambda: self.fallbacks(data, path),
                "degraded": lambda: self.degraded(data, path),
                "resilience": lambda: self.overrides(data, path),
                "semantic": lambda: self.semantic(data, path),
            }
        )
        semantic_embeddings, semantic_threshold = values.pop("semantic")
        values["semantic_embeddings"] = semantic_embeddings
        values["semantic_threshold"] = semantic_threshold
        if values["enabled"] and not any(v.weight > 0 for v in values["versions"]):
            raise self.fail(versions_path, "an enabled alias needs a version with weight > 0")
        degraded_mode, degraded_message = values.pop("degraded")
        return AliasSpec(**values, degraded_mode=degraded_mode, degraded_message=degraded_message)

    def versions(self, data: dict, path: str) -> tuple[VersionSpec, ...]:
        raw = self.items(data.get("versions"), path)
        errors_before = len(self.errors)
        parsed = self.entries(raw, path, "version", "version", self.version)
        if len(self.errors) > errors_before:
            raise _Invalid
        return tuple(parsed)

    def version(self, raw: Any, path: str) -> VersionSpec:
        allowed = {"version", "deployment", "weight", "system_prompt", "params"}
        data = self.mapping(raw, path, allowed, {"version", "deployment"})
        values = self.fields(
            {
                "version": lambda: self.text(
                    data,
                    "version",
                    path,
                    max_length=_max_length(ModelVersion, "version"),
                    required=True,
                ),
                "deployment": lambda: self.text(
                    data,
                    "deployment",
                    path,
                    max_length=_max_length(ProviderDeployment, "name"),
                    required=True,
                ),
                "weight": lambda: self.integer(
                    data, "weight", path, 100, bounds=_int_range(ModelVersion, "weight")
                ),
                "system_prompt": lambda: self.text(
                    data, "system_prompt", path, max_length=SYSTEM_PROMPT_MAX_CHARS
                ),
                "params": lambda: self.json_object(data, "params", path),
            }
        )
        return VersionSpec(**values)

    # -- references --

    def check_references(self, data: dict) -> None:
        """Every reference names an entry of this file. Checked on the raw data, against every
        entry that has a name (valid or not), so one bad provider is reported once and not
        again by each deployment that refers to it."""
        providers = _names(data.get("providers"))
        deployments = _names(data.get("deployments"))
        aliases = _names(data.get("model_aliases"))

        for index, entry in _dicts(data.get("deployments")):
            ref = entry.get("provider")
            if isinstance(ref, str) and ref and ref not in providers:
                self.fail(f"deployments[{index}].provider", f"unknown provider {ref!r}")
        for index, entry in _dicts(data.get("model_aliases")):
            for v_index, version in _dicts(entry.get("versions")):
                ref = version.get("deployment")
                if isinstance(ref, str) and ref and ref not in deployments:
                    self.fail(
                        f"model_aliases[{index}].versions[{v_index}].deployment",
                        f"unknown deployment {ref!r}",
                    )
            refs = entry.get("fallbacks")
            if isinstance(refs, list):
                for ref in refs:
                    if isinstance(ref, str) and ref not in deployments:
                        self.fail(
                            f"model_aliases[{index}].fallbacks", f"unknown deployment {ref!r}"
                        )
        embeddings_capable = _embeddings_aliases(data)
        for index, entry in _dicts(data.get("model_aliases")):
            section = entry.get("semantic_cache")
            ref = section.get("embeddings") if isinstance(section, dict) else None
            if not isinstance(ref, str) or not ref:
                continue
            where = f"model_aliases[{index}].semantic_cache.embeddings"
            if ref not in aliases:
                self.fail(where, f"unknown alias {ref!r}")
            elif ref == entry.get("name") or ref not in embeddings_capable:
                self.fail(where, f"alias {ref!r} is not served by providers that make embeddings")
        for index, entry in _dicts(data.get("scanners")):
            ref = entry.get("alias")
            if isinstance(ref, str) and ref and ref not in aliases:
                self.fail(f"scanners[{index}].alias", f"unknown alias {ref!r}")
        for index, entry in _dicts(data.get("tiers")):
            refs = entry.get("allowed_aliases")
            if isinstance(refs, list):
                for ref in refs:
                    if isinstance(ref, str) and ref not in aliases:
                        self.fail(f"tiers[{index}].allowed_aliases", f"unknown alias {ref!r}")


def _dicts(value: Any) -> list[tuple[int, dict]]:
    if not isinstance(value, list):
        return []
    return [(index, item) for index, item in enumerate(value) if isinstance(item, dict)]


def _embeddings_aliases(data: dict) -> set[str]:
    """The aliases of the file whose every version's provider makes embeddings."""
    refused = {
        p["name"]: unsupported_for(p.get("kind"), p.get("extra") or {})
        for _, p in _dicts(data.get("providers"))
        if isinstance(p.get("name"), str) and isinstance(p.get("extra") or {}, dict)
    }
    providers = {
        d["name"]: d.get("provider")
        for _, d in _dicts(data.get("deployments"))
        if isinstance(d.get("name"), str)
    }

    def makes_embeddings(deployment: Any) -> bool:
        return "embeddings" not in refused.get(providers.get(deployment), {"embeddings"})

    capable = set()
    for _, alias in _dicts(data.get("model_aliases")):
        versions = _dicts(alias.get("versions"))
        if versions and all(makes_embeddings(v.get("deployment")) for _, v in versions):
            capable.add(alias.get("name"))
    return {name for name in capable if isinstance(name, str)}


def _names(value: Any) -> set[str]:
    return {item["name"] for _, item in _dicts(value) if isinstance(item.get("name"), str)}


def _walk_keys(value: Any) -> list[str]:
    keys: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            keys.append(str(key))
            keys.extend(_walk_keys(item))
    elif isinstance(value, list):
        for item in value:
            keys.extend(_walk_keys(item))
    return keys


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }
    return names.get(type(value), type(value).__name__)
