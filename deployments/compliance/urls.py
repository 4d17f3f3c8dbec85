"""Compliance pages, served as admin pages (staff with the admin's second factor; see views)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from deployments.compliance import views

app_name = "compliance"


def _admin(view):
    return admin.site.admin_view(view)


urlpatterns = [
    path("", _admin(views.overview), name="overview"),
    path("record-of-processing/", _admin(views.record_of_processing), name="record_of_processing"),
    path("recheck/", _admin(views.recheck), name="recheck"),
    path(
        "attestations/<int:attestation_id>/file/",
        _admin(views.attestation_file),
        name="attestation_file",
    ),
    path("<slug:code>/", _admin(views.framework_report), name="report"),
]
