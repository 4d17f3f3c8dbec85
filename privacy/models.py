"""Privacy: data subjects, their consent, their encrypted conversation records, and their
requests (access, erasure, opt-out).

A data subject is an end user of a tenant's app, identified by (tenant, the request's ``user``
value). Everything that holds personal data is encrypted with the subject's own data key (see
``privacy.crypto``), so destroying that key makes every copy unreadable (crypto-shredding).
"""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from llmplatform.models import Tenant
from llmplatform.tenancy import TenantOwned


class PrivacyPolicy(TenantOwned):
    """A tenant's privacy settings."""

    class UpstreamPII(models.TextChoices):
        OFF = "off", "off: send prompts as they are"
        MASK = "mask", "mask: replace PII with <TYPE> before the provider sees it"
        PSEUDONYMIZE = "pseudonymize", "pseudonymise: <TYPE_n> placeholders, restored in replies"

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="privacy")
    store_conversations = models.BooleanField(
        default=True,
        help_text="Keep conversation records (encrypted, redacted) for subjects who consented.",
    )
    retention_days = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(3650)]
    )
    policy_version = models.CharField(
        max_length=32, default="1", help_text="The privacy-policy version consent is given to."
    )
    upstream_pii = models.CharField(
        max_length=16, choices=UpstreamPII.choices, default=UpstreamPII.OFF
    )
    block_pii_types = models.JSONField(
        default=list,
        blank=True,
        help_text="PII types (e.g. US_SSN, CREDIT_CARD) that make a prompt be refused.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "privacy policies"

    def __str__(self) -> str:
        return f"privacy policy of {self.tenant}"


class DataSubject(TenantOwned):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="data_subjects")
    external_id = models.CharField(max_length=256, help_text="The apps' `user` value")
    # The contact email, encrypted with the subject's data key; and a keyed hash (HMAC) of its
    # normalised form, to find the subject of a public request without decrypting every row.
    email_ciphertext = models.BinaryField(null=True, blank=True, editable=False)
    email_hmac = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    do_not_sell = models.BooleanField(default=False, help_text="CCPA opt-out of sale/sharing")
    created_at = models.DateTimeField(auto_now_add=True)
    erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "external_id"], name="uniq_subject")
        ]

    def __str__(self) -> str:
        return f"subject #{self.pk} of {self.tenant.slug}"


class SubjectKey(models.Model):
    """A subject's data key (AES-256-GCM), wrapped by a master key. Destroying it
    (crypto-shredding) makes every record encrypted with it unreadable, backups included."""

    subject = models.OneToOneField(DataSubject, on_delete=models.CASCADE, related_name="key")
    wrapped_key = models.BinaryField(null=True, editable=False)
    master_key_id = models.CharField(max_length=300, help_text="Which master key wrapped it")
    created_at = models.DateTimeField(auto_now_add=True)
    rewrapped_at = models.DateTimeField(null=True, blank=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"data key of {self.subject}"


class ConsentRecord(models.Model):
    """One consent decision; the full history is kept as proof (GDPR Art. 7(1)). The current
    state of a purpose is its newest record."""

    class Purpose(models.TextChoices):
        STORE_CONVERSATIONS = "store_conversations", "store conversations"
        ANALYTICS = "analytics", "analytics"
        SALE_SHARING = "sale_sharing", "sale or sharing of personal information (CCPA)"

    class Source(models.TextChoices):
        API = "api", "API"
        PORTAL = "portal", "portal"
        PUBLIC_PAGE = "public_page", "public page"
        GPC = "gpc", "Global Privacy Control signal"
        ADMIN = "admin", "admin"

    subject = models.ForeignKey(DataSubject, on_delete=models.CASCADE, related_name="consents")
    purpose = models.CharField(max_length=32, choices=Purpose.choices)
    granted = models.BooleanField()
    policy_version = models.CharField(max_length=32)
    source = models.CharField(max_length=16, choices=Source.choices)
    actor = models.CharField(max_length=200, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["subject", "purpose", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.purpose} {'granted' if self.granted else 'withdrawn'}"


class Conversation(TenantOwned):
    """One stored exchange: redacted prompt and response, encrypted with the subject's key."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="conversations")
    subject = models.ForeignKey(DataSubject, on_delete=models.CASCADE, related_name="conversations")
    alias = models.CharField(max_length=64)
    request_id = models.CharField(max_length=128, blank=True)
    prompt_ciphertext = models.BinaryField(editable=False)
    response_ciphertext = models.BinaryField(editable=False)
    key_id = models.CharField(max_length=64, help_text="The data key that encrypted it")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("read_conversation_plaintext", "Can read conversation plaintext")]

    def __str__(self) -> str:
        return f"conversation #{self.pk}"


class PurgeRun(models.Model):
    """One run of the retention purge."""

    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deleted = models.PositiveIntegerField(default=0)
    batches = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"purge {self.started_at:%Y-%m-%d %H:%M} ({self.deleted} deleted)"


class SubjectRequest(TenantOwned):
    """A data-subject request (GDPR Art. 15, 17, 20; CCPA)."""

    class Kind(models.TextChoices):
        ACCESS = "access", "access (export)"
        ERASURE = "erasure", "erasure"
        OPT_OUT = "opt_out", "opt-out of sale/sharing"

    class Law(models.TextChoices):
        GDPR = "gdpr", "GDPR"
        CCPA = "ccpa", "CCPA"

    class State(models.TextChoices):
        RECEIVED = "received", "received"
        VERIFIED = "verified", "identity verified"
        APPROVED = "approved", "approved"
        IN_PROGRESS = "in_progress", "in progress"
        COMPLETED = "completed", "completed"
        REJECTED = "rejected", "rejected"
        FAILED = "failed", "failed"

    class Source(models.TextChoices):
        API = "api", "API (the tenant's app)"
        PUBLIC_PAGE = "public_page", "public page"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="subject_requests")
    subject = models.ForeignKey(
        DataSubject, null=True, blank=True, on_delete=models.SET_NULL, related_name="requests"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    law = models.CharField(max_length=8, choices=Law.choices, default=Law.GDPR)
    source = models.CharField(max_length=16, choices=Source.choices)
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.RECEIVED, db_index=True
    )
    # Identity proof for public requests: a one-time code sent to the registered email.
    email_hmac = models.CharField(max_length=64, blank=True, editable=False)
    code_hash = models.CharField(max_length=64, blank=True, editable=False)
    code_expires_at = models.DateTimeField(null=True, blank=True)
    code_attempts = models.PositiveSmallIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    acknowledge_by = models.DateTimeField(null=True, blank=True, help_text="CCPA: 10 business days")
    due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    extended_due_at = models.DateTimeField(null=True, blank=True)
    extension_reason = models.TextField(blank=True)
    decided_by = models.CharField(max_length=200, blank=True)
    rejection_reason = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    # Access requests: the export, encrypted with the subject's key, downloadable once.
    export_ciphertext = models.BinaryField(null=True, blank=True, editable=False)
    export_downloaded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} request #{self.pk} ({self.state})"


class ErasureReceipt(TenantOwned):
    """Proof that an erasure ran: counts and times, no personal data."""

    request = models.OneToOneField(SubjectRequest, on_delete=models.PROTECT, related_name="receipt")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    subject_ref = models.CharField(max_length=64, help_text="Keyed hash of the subject id")
    counts = models.JSONField(default=dict)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"erasure receipt for request #{self.request_id}"
