from __future__ import annotations

from celery import shared_task

from deployments.compliance import services


@shared_task(name="compliance.run_evidence_checks")
def run_evidence_checks() -> dict[str, bool]:
    """Every live check, hourly (see llmplatform/celery.py); each result is kept as an
    EvidenceCheck. Read-only checks, so a repeated or overlapping run only adds history."""
    rows = services.evidence_checks_run(trigger=services.Trigger.SCHEDULE)
    return {row.check_code: row.ok for row in rows}
