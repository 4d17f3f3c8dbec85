"""Compliance checklists (GDPR, HIPAA, SOC 2, CCPA) whose items are evidenced either by a
person (an attestation: a note and/or a file, who, when, until when) or by a live check of the
running system (``deployments.evidence``), whose every run is kept (``EvidenceCheck``).

Attestations and evidence runs are history: nothing here edits or deletes them. An attestation
that no longer holds is withdrawn (who, when, why), and a newer one takes its place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models
from django.db.models import Q

if TYPE_CHECKING:
    from deployments.compliance.selectors import ItemStatus


class ComplianceFramework(models.Model):
    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    scope = models.CharField(
        max_length=200, blank=True, help_text="Who it applies to, e.g. 'EU users'."
    )
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["order", "name"]
        permissions = [
            ("view_compliance_report", "Can view compliance reports and the record of processing"),
            ("run_evidence_checks", "Can re-run the live compliance checks"),
        ]

    def __str__(self) -> str:
        return self.name


class ComplianceItem(models.Model):
    class Kind(models.TextChoices):
        # manual: attested by a person; live: checked on the running system.
        MANUAL = "manual", "manual"
        LIVE = "live", "live"

    framework = models.ForeignKey(
        ComplianceFramework, on_delete=models.CASCADE, related_name="items"
    )
    code = models.SlugField(max_length=64, help_text="Unique within the framework.")
    text = models.CharField(max_length=300)
    reference = models.CharField(
        max_length=100, blank=True, help_text="Where it comes from, e.g. 'GDPR Art. 17'."
    )
    guidance = models.TextField(blank=True, help_text="What evidence satisfies it.")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.MANUAL)
    check_code = models.CharField(
        max_length=100,
        blank=True,
        help_text="Live items: the code of the live check (see the evidence history).",
    )
    order = models.PositiveSmallIntegerField(default=0)

    if TYPE_CHECKING:
        #: Set by ``ComplianceItemAdmin`` on the items it shows; absent otherwise.
        compliance_status: ItemStatus | None

    class Meta:
        ordering = ["framework__order", "order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["framework", "code"], name="uniq_compliance_item"),
            models.CheckConstraint(
                condition=(Q(kind="live") & ~Q(check_code=""))
                | (Q(kind="manual") & Q(check_code="")),
                name="compliance_item_live_has_check",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.framework.name}: {self.text}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.kind == self.Kind.LIVE and not self.check_code:
            raise ValidationError({"check_code": "A live item names its check."})
        if self.kind == self.Kind.MANUAL and self.check_code:
            raise ValidationError({"check_code": "A manual item has no live check."})


class Attestation(models.Model):
    """A person's evidence for a manual item: a note, a file, or both. The newest one not
    withdrawn is the item's current evidence; it lapses at ``expires_at``. The file is kept in
    the database, so it is in the database backups and every web process can serve it."""

    item = models.ForeignKey(ComplianceItem, on_delete=models.PROTECT, related_name="attestations")
    note = models.TextField(blank=True)
    file_name = models.CharField(max_length=200, blank=True)
    file_content_type = models.CharField(max_length=100, blank=True)
    file_size = models.PositiveIntegerField(default=0)
    file_sha256 = models.CharField(max_length=64, blank=True)
    file_data = models.BinaryField(null=True, blank=True, editable=False)
    attested_by = models.CharField(max_length=200)
    attested_at = models.DateTimeField(db_index=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_by = models.CharField(max_length=200, blank=True)
    withdrawal_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-attested_at", "-id"]
        indexes = [models.Index(fields=["item", "-attested_at", "-id"])]

    def __str__(self) -> str:
        return f"attestation #{self.pk} of {self.item.code} by {self.attested_by}"


class EvidenceCheck(models.Model):
    """One run of a live check. Keyed by check code (several items may share a check); the
    newest run of a code is the current evidence of every item naming it."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "schedule (Celery beat)"
        COMMAND = "command", "manage.py run_compliance_checks"
        MANUAL = "manual", "re-check now (officer)"

    check_code = models.CharField(max_length=100)
    title = models.CharField(max_length=200, blank=True)
    ok = models.BooleanField()
    summary = models.CharField(max_length=500)
    details = models.JSONField(default=dict, blank=True)
    checked_at = models.DateTimeField(db_index=True)
    duration_ms = models.FloatField(default=0)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    actor = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-checked_at", "-id"]
        indexes = [models.Index(fields=["check_code", "-checked_at", "-id"])]
        verbose_name = "evidence check"

    def __str__(self) -> str:
        state = "ok" if self.ok else "FAILING"
        return f"{self.check_code} {state} at {self.checked_at:%Y-%m-%d %H:%M}"
