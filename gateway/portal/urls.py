from __future__ import annotations

from django.urls import path
from django.views.generic import RedirectView

from gateway.portal import views

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.PortalLoginView.as_view(), name="login"),
    path("logout/", views.portal_logout, name="logout"),
    path("account/security/", views.SecurityView.as_view(), name="security"),
    path("t/<slug:slug>/", RedirectView.as_view(pattern_name="portal:keys"), name="tenant"),
    path("t/<slug:slug>/keys/", views.KeyListView.as_view(), name="keys"),
    path("t/<slug:slug>/keys/new/", views.KeyCreateView.as_view(), name="key-create"),
    path(
        "t/<slug:slug>/keys/<int:key_id>/secret/", views.KeySecretView.as_view(), name="key-secret"
    ),
    path(
        "t/<slug:slug>/keys/<int:key_id>/rotate/", views.KeyRotateView.as_view(), name="key-rotate"
    ),
    path(
        "t/<slug:slug>/keys/<int:key_id>/revoke/", views.KeyRevokeView.as_view(), name="key-revoke"
    ),
    path("t/<slug:slug>/usage/", views.UsageView.as_view(), name="usage"),
    path("t/<slug:slug>/tier/", views.TierView.as_view(), name="tier"),
    path(
        "t/<slug:slug>/service-accounts/",
        views.ServiceAccountListView.as_view(),
        name="service-accounts",
    ),
    path(
        "t/<slug:slug>/service-accounts/<int:account_id>/disable/",
        views.ServiceAccountDisableView.as_view(),
        name="service-account-disable",
    ),
]
