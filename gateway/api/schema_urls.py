"""``/api/schema/``: the OpenAPI schema of the API (YAML; ``?format=json`` for JSON) and Swagger
UI at ``/api/schema/docs/``, from drf-spectacular-sidecar's files (no CDN). Swagger UI's start
script is a separate file (the split view), so the Content-Security-Policy allows no inline
script. What the schema says is in ``gateway.api.schema``."""

from __future__ import annotations

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

urlpatterns = [
    path("", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]
