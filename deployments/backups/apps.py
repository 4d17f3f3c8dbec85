from __future__ import annotations

from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "deployments.backups"
    label = "backups"
    default_auto_field = "django.db.models.BigAutoField"
