"""The admin's permission matrix: every action of every registered ModelAdmin and every custom
admin view declares the permission it needs, and each principal (staff with no permission,
view-only, change, superuser) gets exactly the cells it should. A new action or view that
declares nothing fails here."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.test import Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver

from gateway import services
from gateway.models import ApiKey
from llmplatform.actors import Actor
from llmplatform.admin.permissions import required_permissions
from llmplatform.models import AuditEvent

KEY = re.compile(r"llmp_[A-Za-z0-9]{12}_[A-Za-z0-9]{40}")
STANDARD_MODEL_VIEWS = {
    "changelist_view",
    "add_view",
    "change_view",
    "delete_view",
    "history_view",
    "autocomplete_view",
}
# Admin site views every signed-in staff member may open (their content is filtered by
# permission), and the sign-in and enrolment views themselves.
SITE_VIEWS = {
    "index",
    "app_index",
    "login",
    "logout",
    "password_change",
    "password_change_done",
    "i18n_javascript",
    "shortcut",
    "catch_all_view",
    "autocomplete_view",
    "otp_setup",
    "RedirectView",
}
# Third-party custom views that check their permission in their own code (still walked by the
# refusal test below): Django's password change of another user needs change_user.
SELF_CHECKING = {"user_change_password"}


def _actions() -> Iterator[tuple[type, admin.ModelAdmin, str, object]]:
    for model, model_admin in admin.site._registry.items():
        for func, name, _ in model_admin._get_base_actions():
            yield model, model_admin, name, func


ACTIONS = sorted(((m._meta.label, name) for m, _, name, _ in _actions()))


def test_every_admin_action_declares_its_permissions():
    undeclared = [
        f"{model._meta.label}.{name}"
        for model, _, name, func in _actions()
        if not getattr(func, "allowed_permissions", None)
    ]
    assert undeclared == []


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Many staff users are made here; no test here is about passwords."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _user(django_user_model, name: str, *, perms: list[Permission] = (), superuser=False):
    user = django_user_model.objects.create_user(
        name, password=f"{name}-pass-12345", is_staff=True, is_superuser=superuser
    )
    user.user_permissions.set(perms)
    return django_user_model.objects.get(pk=user.pk)  # fresh permission cache


def _model_perms(model, *codenames: str) -> list[Permission]:
    content_type = ContentType.objects.get_for_model(model, for_concrete_model=False)
    return [
        Permission.objects.get(
            content_type=content_type, codename=f"{codename}_{model._meta.model_name}"
        )
        for codename in codenames
    ]


def _request(factory: RequestFactory, user):
    request = factory.get("/admin/")
    request.user = user
    return request


@pytest.mark.parametrize("kind", ["none", "view", "change"])
def test_the_action_matrix(db, django_user_model, kind):
    """Each principal is offered exactly the actions whose declared permissions it holds, among
    those the admin offers at all (the superuser's: a read-only admin refuses change and delete
    to everyone)."""
    factory = RequestFactory()
    boss = _user(django_user_model, "boss", superuser=True)
    held = {"none": set(), "view": {"view"}, "change": {"view", "change"}}[kind]
    wrong = []
    for number, (model, model_admin, name, func) in enumerate(_actions()):
        codenames = sorted(held)
        user = _user(
            django_user_model,
            f"{kind}-{number}",
            perms=_model_perms(model, *codenames) if codenames else [],
        )
        ceiling = name in model_admin.get_actions(_request(factory, boss))
        offered = name in model_admin.get_actions(_request(factory, user))
        expected = ceiling and set(func.allowed_permissions) <= held
        if offered != expected:
            wrong.append(f"{model._meta.label}.{name}: offered={offered}")
    assert wrong == []


# Actions that only read (an export, say) may be offered to view-only staff; none exists yet. A
# new one is added here on purpose, after a look at what it does.
READ_ONLY_ACTIONS: set[str] = set()


def test_view_only_staff_are_offered_only_actions_that_read():
    for_viewers = {
        f"{model._meta.label}.{name}"
        for model, _, name, func in _actions()
        if set(func.allowed_permissions) <= {"view"}
    }
    assert for_viewers == READ_ONLY_ACTIONS


# --- The probed hole: a view-only staff member and another tenant's key -------------------------


def _signed_in(user) -> Client:
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    client = Client()
    device = TOTPDevice.objects.create(user=user, name="test", confirmed=True)
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


@pytest.mark.parametrize("action", ["rotate", "revoke"])
def test_view_only_staff_cannot_rotate_or_revoke_a_key_but_change_staff_can(
    principals, django_user_model, action
):
    key, _ = services.api_key_create(
        actor=Actor.for_user(principals.charlie), tenant=principals.tenant_b, name="b-key"
    )
    viewer = _user(django_user_model, "viewer", perms=_model_perms(ApiKey, "view"))
    changer = _user(django_user_model, "changer", perms=_model_perms(ApiKey, "view", "change"))
    data = {"action": action, "_selected_action": [str(key.pk)], "index": "0"}

    page = _signed_in(viewer).post("/admin/gateway/apikey/", data, follow=True)

    assert page.status_code == 200
    key.refresh_from_db()
    assert key.revoked_at is None and ApiKey.objects.count() == 1
    assert not AuditEvent.objects.filter(action__in=["api_key.rotate", "api_key.revoke"]).exists()
    assert not KEY.search(page.content.decode())  # no new working key shown

    _signed_in(changer).post("/admin/gateway/apikey/", data, follow=True)
    key.refresh_from_db()
    assert AuditEvent.objects.filter(action=f"api_key.{action}").count() == 1
    if action == "revoke":
        assert key.revoked_at is not None
    else:
        assert ApiKey.objects.count() == 2


# --- Custom admin views -------------------------------------------------------------------------


def _walk(patterns, prefix: str = "") -> Iterator[tuple[str, object]]:
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route, pattern.callback


def _view_name(callback) -> str:
    inner = callback
    while getattr(inner, "__wrapped__", None) is not None:
        inner = inner.__wrapped__
    name = getattr(inner, "__name__", type(inner).__name__)
    return getattr(getattr(callback, "view_class", None), "__name__", None) or name


def _custom_admin_views() -> list[tuple[str, object]]:
    found = []
    for route, callback in _walk(get_resolver().url_patterns):
        if not route.startswith(("admin/", "deployments/compliance/")):
            continue
        if (
            required_permissions(callback) is None
            and _view_name(callback) in STANDARD_MODEL_VIEWS | SITE_VIEWS
        ):
            continue
        found.append((route, callback))
    return found


def _concrete(route: str) -> str:
    route = route.replace("act/<str:name>/", "act/rollback/")  # a real rollout action
    route = re.sub(r"<int:[^>]+>", "1", route)
    route = re.sub(r"<(str|slug|path):[^>]+>", "x", route)
    return "/" + route.lstrip("^").rstrip("$")


def test_every_custom_admin_view_declares_its_permissions():
    views = _custom_admin_views()
    assert len(views) >= 9  # plaintext, back up now, three rollout views, five compliance pages
    undeclared = [
        route
        for route, callback in views
        if required_permissions(callback) is None and _view_name(callback) not in SELF_CHECKING
    ]
    assert undeclared == []


@pytest.mark.parametrize("route", [route for route, _ in _custom_admin_views()])
def test_a_custom_admin_view_refuses_staff_without_its_permission(db, django_user_model, route):
    url = _concrete(route)
    nobody = _signed_in(_user(django_user_model, "nobody"))
    for method in ("get", "post"):
        assert getattr(nobody, method)(url).status_code == 403, (method, url)
    boss = _signed_in(_user(django_user_model, "boss", superuser=True))
    assert boss.get(url).status_code != 403 and boss.post(url).status_code != 403


def test_view_only_staff_are_refused_the_plaintext_reveal_and_the_back_up_button(
    db, django_user_model
):
    """Views that need more than view: holding view on the model is not enough."""
    from deployments.backups.models import Backup
    from privacy.models import Conversation

    viewer = _signed_in(
        _user(
            django_user_model,
            "viewer",
            perms=_model_perms(Conversation, "view") + _model_perms(Backup, "view"),
        )
    )
    assert viewer.post("/admin/privacy/conversation/1/plaintext/").status_code == 403
    assert viewer.post("/admin/backups/backup/back-up-now/").status_code == 403
    assert not AuditEvent.objects.filter(action__contains="plaintext").exists()


# --- External scanners: what a guardrail may point at is only an officer's to change ----------


@pytest.mark.parametrize("kind", ["none", "view"])
def test_staff_without_change_permission_cannot_add_change_or_switch_a_scanner(
    principals, django_user_model, kind
):
    from gateway.models import GuardrailScanner

    scanner = GuardrailScanner.objects.create(
        name="acme-guard", kind="http", url="https://scanner.example.com/scan"
    )
    perms = _model_perms(GuardrailScanner, "view") if kind == "view" else []
    staff = _signed_in(_user(django_user_model, f"{kind}-staff", perms=perms))
    form = {
        "name": "evil",
        "kind": "http",
        "enabled": "on",
        "pre_call": "on",
        "fail_mode": "open",
        "timeout_ms": "1000",
        "url": "https://evil.example.com/scan",
        "auth_header": "Authorization",
        "language": "en",
        "score_threshold": "0.5",
        "entities": "[]",
        "on_detect": "flag",
    }
    base = "/admin/gateway/guardrailscanner/"

    assert staff.post(f"{base}add/", form).status_code == 403
    assert staff.post(f"{base}{scanner.pk}/change/", form).status_code == 403
    assert staff.post(f"{base}{scanner.pk}/delete/", {"post": "yes"}).status_code == 403
    # Not offered to view-only staff (the list page again), refused to the rest: either way,
    # nothing changes.
    staff.post(base, {"action": "disable", "_selected_action": [str(scanner.pk)], "index": "0"})
    scanner.refresh_from_db()
    assert scanner.enabled and scanner.url == "https://scanner.example.com/scan"
    assert list(GuardrailScanner.objects.values_list("name", flat=True)) == ["acme-guard"]
    assert not AuditEvent.objects.filter(action__contains="guardrail").exists()
    # What view-only staff may do: look.
    expected = 200 if kind == "view" else 403
    assert staff.get(f"{base}{scanner.pk}/change/").status_code == expected

    changer = _signed_in(
        _user(
            django_user_model,
            f"{kind}-changer",
            perms=_model_perms(GuardrailScanner, "view", "change"),
        )
    )
    changer.post(base, {"action": "disable", "_selected_action": [str(scanner.pk)], "index": "0"})
    scanner.refresh_from_db()
    assert not scanner.enabled
    assert AuditEvent.objects.filter(action="guardrail_scanner.disable").count() == 1
