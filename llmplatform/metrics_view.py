"""``/metrics`` for Prometheus: this process's registry, or every worker's samples when
``PROMETHEUS_MULTIPROC_DIR`` is set. Only for callers ``llmplatform.observability`` allows."""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from llmplatform.observability import may_observe


def metrics(request: HttpRequest) -> HttpResponse:
    if not may_observe(request):
        return JsonResponse(
            {
                "error": "metrics need LLMP_OBSERVABILITY_TOKEN or a caller in "
                "LLMP_OBSERVABILITY_NETWORKS"
            },
            status=403,
        )
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        # prometheus_client leaves MultiProcessCollector's __init__ unannotated.
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
