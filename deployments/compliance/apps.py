from __future__ import annotations

from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    name = "deployments.compliance"
    label = "compliance"
    verbose_name = "Compliance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers this app's live checks in deployments.evidence.
        from deployments.compliance import checks  # noqa: F401
