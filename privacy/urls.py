from __future__ import annotations

from django.urls import path

from privacy import views

app_name = "privacy"

urlpatterns = [
    path("request/", views.request_start, name="request"),
    path("request/<str:public_id>/", views.request_status, name="request-status"),
    path("request/<str:public_id>/verify/", views.request_verify, name="request-verify"),
    path("export/<str:token>/", views.export_download, name="export-download"),
]
