from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from llmplatform import health
from llmplatform.metrics_view import metrics

admin.site.site_header = "llmplatform governance"
admin.site.site_title = "llmplatform"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("portal/", include("gateway.portal.urls")),
    # social-auth's begin and complete routes, wrapped by the portal (rate limits, messages).
    path("oauth/", include("gateway.portal.oauth_urls", namespace="social")),
    path("privacy/", include("privacy.urls")),
    path("deployments/rollouts/", include("deployments.rollouts.urls")),
    path("deployments/compliance/", include("deployments.compliance.urls")),
    path("deployments/backups/", include("deployments.backups.urls")),
    path("api/schema/", include("gateway.api.schema_urls")),
    path("", include("gateway.api.urls")),
]
