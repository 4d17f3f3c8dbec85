from __future__ import annotations

import os
from pathlib import Path

from django.apps import AppConfig


class LlmplatformConfig(AppConfig):
    name = "llmplatform"
    verbose_name = "Platform"

    def ready(self) -> None:
        from llmplatform import account_lockout, session_policy  # noqa: F401  (signal receivers)
        from llmplatform.health import register_readiness_probe
        from llmplatform.launcher import RUN_DIR_ENV
        from llmplatform.local_model import STATUS_FILE_ENV

        status_file = os.environ.get(STATUS_FILE_ENV)
        if status_file:  # runplatform supervises a local model: /readyz reports on it
            from llmplatform.local_model import readiness_from_status

            path = Path(status_file)

            async def local_model_ready() -> tuple[bool, str]:
                return readiness_from_status(path)

            register_readiness_probe("local_model", local_model_ready)

        run_dir = os.environ.get(RUN_DIR_ENV)
        if run_dir:  # runplatform supervises a Celery worker and beat: /readyz reports on them
            from llmplatform.health import celery_probe

            for name, slug in (("celery_worker", "celery-worker"), ("celery_beat", "celery-beat")):
                register_readiness_probe(name, celery_probe(Path(run_dir) / f"{slug}.json"))
