from __future__ import annotations

from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "deployments.backups"
    label = "backups"
    verbose_name = "Backups and restore"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from deployments.backups import checks, conf, ledger  # noqa: F401 - registers checks
        from privacy.signals import subject_erased

        conf.get()  # a misconfigured backup setting stops the start, with its name
        conf.pitr_get()
        subject_erased.connect(ledger.on_subject_erased, dispatch_uid="backups.erasure_ledger")
