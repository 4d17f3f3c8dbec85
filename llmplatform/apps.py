from __future__ import annotations

from django.apps import AppConfig


class LlmplatformConfig(AppConfig):
    name = "llmplatform"
    verbose_name = "Platform"
