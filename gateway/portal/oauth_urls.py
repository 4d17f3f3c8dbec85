"""social-auth's begin and complete routes under the ``social`` namespace that social-auth
reverses, wrapped by the portal: per-IP rate limits, enabled providers only, and refusals shown
on the login page. Disconnecting is not offered, so its routes are left out."""

from __future__ import annotations

from django.urls import path

from gateway.portal import views

app_name = "social"

urlpatterns = [
    path("login/<str:backend>/", views.provider_begin, name="begin"),
    path("complete/<str:backend>/", views.provider_complete, name="complete"),
]
