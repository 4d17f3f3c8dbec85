from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmplatform.settings")

django_application = get_asgi_application()

from llmplatform import tracing  # noqa: E402 - needs Django set up first
from llmplatform.fastpath import PlatformApplication  # noqa: E402 - needs Django set up first

tracing.configure()  # OpenTelemetry traces, when an OTLP endpoint is configured
application = PlatformApplication(django_application)
