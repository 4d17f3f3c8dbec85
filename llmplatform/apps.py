from __future__ import annotations

import os
from pathlib import Path

from django.apps import AppConfig


class LlmplatformConfig(AppConfig):
    name = "llmplatform"
    verbose_name = "Platform"

    def ready(self) -> None:
        from llmplatform.local_model import STATUS_FILE_ENV

        status_file = os.environ.get(STATUS_FILE_ENV)
        if status_file:  # runplatform supervises a local model: /readyz reports on it
            from llmplatform.health import register_readiness_probe
            from llmplatform.local_model import readiness_from_status

            path = Path(status_file)

            async def local_model_ready() -> tuple[bool, str]:
                return readiness_from_status(path)

            register_readiness_probe("local_model", local_model_ready)
