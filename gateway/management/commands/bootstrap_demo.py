"""Set up the demo: tiers, the ``demo`` tenant, the local model behind the ``default`` alias (chat)
and the ``embed`` alias (embeddings), an ``admin`` superuser and a demo API key. Safe to run on
every start.

Rows that already exist are left as they are (an operator may have tuned a tier in the admin),
with one exception: the ``local`` provider's URL follows ``LLMP_LOCAL_MODEL_URL``, because the
launcher starts the model server there. Secrets (the admin password, the API key) are shown only
when they are created; only the key's HMAC is stored, so it cannot be shown again.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import models, transaction
from django.utils import timezone

from gateway import services
from gateway.models import ApiKey, ModelAlias, ModelVersion, Provider, ProviderDeployment, Tier
from gateway.providers.capabilities import (
    LOCAL_MODEL_UNSUPPORTED,
    LOCAL_MODEL_UNSUPPORTED_BEFORE_EMBEDDINGS,
)
from llmplatform.actors import Actor
from llmplatform.audit import AuditAction, audit_record
from llmplatform.launcher import LOCAL_MODEL_ID, local_model_url
from llmplatform.models import Tenant

LOCAL_BREAKER_RECOVERY_SECONDS = 5.0
ACTOR = Actor.system("system:bootstrap_demo")
DEMO_TENANT = "demo"
DEMO_KEY_NAME = "demo"
EMBEDDINGS_ALIAS = "embed"
ADMIN_USERNAME = "admin"

# 0 means unlimited (see gateway.models.Tier).
TIERS: dict[str, dict[str, Any]] = {
    "free": {
        "description": "Trial use: low rates, small prompts.",
        "requests_per_minute": 10,
        "requests_per_hour": 200,
        "requests_per_day": 1_000,
        "tokens_per_minute": 10_000,
        "tokens_per_day": 100_000,
        "daily_budget": Decimal("1"),
        "monthly_budget": Decimal("10"),
        "max_prompt_chars": 8_000,
        "max_output_tokens": 512,
    },
    "pro": {
        "description": "Production apps of a team.",
        "requests_per_minute": 120,
        "requests_per_hour": 3_000,
        "requests_per_day": 30_000,
        "tokens_per_minute": 200_000,
        "tokens_per_day": 5_000_000,
        "daily_budget": Decimal("100"),
        "monthly_budget": Decimal("2000"),
        "max_prompt_chars": 32_000,
        "max_output_tokens": 2_048,
    },
    "enterprise": {
        "description": "High volume; budgets are agreed per contract.",
        "requests_per_minute": 1_200,
        "requests_per_hour": 50_000,
        "requests_per_day": 0,
        "tokens_per_minute": 2_000_000,
        "tokens_per_day": 0,
        "daily_budget": Decimal("0"),
        "monthly_budget": Decimal("0"),
        "max_prompt_chars": 128_000,
        "max_output_tokens": 4_096,
    },
}


@dataclass
class BootstrapResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    admin_username: str = ADMIN_USERNAME
    admin_created: bool = False
    # Only when the password was generated here; a DEMO_ADMIN_PASSWORD is never echoed.
    admin_password: str | None = None
    admin_password_source: str | None = None  # "generated" | "DEMO_ADMIN_PASSWORD" | None
    tenant: str = DEMO_TENANT
    api_key_created: bool = False
    api_key: str | None = None
    api_key_display: str = ""
    model_alias: str = "default"
    embeddings_alias: str = EMBEDDINGS_ALIAS
    local_model_url: str = ""


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal | models.Model) else value


_M = TypeVar("_M", bound=models.Model)


def _alias_on(
    deployment: ProviderDeployment, name: str, description: str, result: BootstrapResult
) -> None:
    """The alias ``name`` with one version, v1, all of it on ``deployment`` (each row audited
    when created)."""
    alias = _create_audited(
        ModelAlias,
        {"name": name},
        {"description": description},
        result,
        AuditAction.MODELALIAS_CREATE,
    )
    _create_audited(
        ModelVersion,
        {"alias": alias, "version": "v1"},
        {"deployment": deployment, "weight": 100},
        result,
        AuditAction.MODELVERSION_CREATE,
    )


def _create_audited(
    model: type[_M],
    lookup: dict[str, Any],
    defaults: dict[str, Any],
    result: BootstrapResult,
    action: AuditAction,
) -> _M:
    """``get_or_create`` that writes the audit row when it creates."""
    with transaction.atomic():
        # The default manager: ``objects`` on every model here (Django's way to name it for any).
        obj, created = model._default_manager.get_or_create(**lookup, defaults=defaults)
        if created:
            after = {k: _plain(v) for k, v in {**lookup, **defaults}.items()}
            audit_record(actor=ACTOR, action=action, obj=obj, after=after)
            result.created.append(f"{model._meta.verbose_name} {obj}")
    return obj


def _ensure_catalogue(result: BootstrapResult) -> Tier:
    for name, limits in TIERS.items():
        _create_audited(Tier, {"name": name}, limits, result, AuditAction.TIER_CREATE)
    url = local_model_url()
    result.local_model_url = url
    # What the embedded model does not do is declared, so such requests get a clear 400.
    extra = {"unsupported": LOCAL_MODEL_UNSUPPORTED}
    provider = _create_audited(
        Provider,
        {"name": "local"},
        {"kind": Provider.Kind.OPENAI, "base_url": url, "extra": extra},
        result,
        AuditAction.PROVIDER_CREATE,
    )
    assert isinstance(provider, Provider)
    changes = {
        name: value
        for name, value in (("base_url", url), ("extra", extra))
        if (name == "base_url" and provider.base_url != value)
        or (
            name == "extra"
            and provider.extra.get("unsupported", LOCAL_MODEL_UNSUPPORTED_BEFORE_EMBEDDINGS)
            == LOCAL_MODEL_UNSUPPORTED_BEFORE_EMBEDDINGS
        )
    }
    if changes:
        with transaction.atomic():
            before = {name: getattr(provider, name) for name in changes}
            if "extra" in changes:
                changes["extra"] = {**provider.extra, **extra}
            for name, value in changes.items():
                setattr(provider, name, value)
            provider.save(update_fields=[*changes, "updated_at"])
            audit_record(
                actor=ACTOR,
                action=AuditAction.PROVIDER_UPDATE,
                obj=provider,
                before=before,
                after=changes,
            )
        said = {"base_url": f"base_url {url}", "extra": "unsupported features declared"}
        result.updated.append(f"provider local: {', '.join(said[name] for name in changes)}")
    deployment = _create_audited(
        ProviderDeployment,
        {"name": "gemma-3-270m"},
        {
            "provider": provider,
            "model": LOCAL_MODEL_ID,
            "input_price_per_1k": Decimal("0"),
            "output_price_per_1k": Decimal("0"),
            # The model server runs beside the platform and is restarted within seconds when
            # it dies: probe it again after 5 s, not the default minute.
            "breaker_recovery_seconds": LOCAL_BREAKER_RECOVERY_SECONDS,
        },
        result,
        AuditAction.PROVIDERDEPLOYMENT_CREATE,
    )
    _alias_on(
        deployment, "default", "The embedded local model (Gemma 3 270M on llama.cpp).", result
    )
    # The same deployment answers /v1/embeddings (the model server's embedding instance): an
    # alias of its own, so an officer can choose it as a semantic cache's embeddings.
    _alias_on(
        deployment,
        EMBEDDINGS_ALIAS,
        "Embeddings from the embedded local model (Gemma 3 270M).",
        result,
    )
    return Tier.objects.get(name="pro")


def _ensure_admin(result: BootstrapResult) -> None:
    user_model = get_user_model()
    if user_model.objects.filter(username=ADMIN_USERNAME).exists():
        return
    from_env = os.environ.get("DEMO_ADMIN_PASSWORD")
    password = from_env or secrets.token_urlsafe(12)
    with transaction.atomic():
        user = user_model.objects.create_superuser(ADMIN_USERNAME, email="", password=password)
        audit_record(
            actor=ACTOR,
            action=AuditAction.USER_CREATE_SUPERUSER,
            obj=user,
            after={"username": ADMIN_USERNAME, "is_superuser": True},
        )
        # Created on the server by whoever runs it: the demo admin may enrol at first sign-in.
        from llmplatform.staff_signin import enrolment_allow

        enrolment_allow(actor=ACTOR, user=user)
    result.admin_created = True
    result.admin_password_source = "DEMO_ADMIN_PASSWORD" if from_env else "generated"
    result.admin_password = None if from_env else password


def _ensure_demo_key(tenant: Tenant, result: BootstrapResult) -> None:
    now = timezone.now()
    existing = (
        ApiKey.objects.for_tenant(tenant)
        .filter(name=DEMO_KEY_NAME, revoked_at__isnull=True)
        .exclude(expires_at__lte=now)
        .first()
    )
    if existing is not None:
        result.api_key_display = existing.display
        return
    key, plaintext = services.api_key_create(actor=ACTOR, tenant=tenant, name=DEMO_KEY_NAME)
    result.api_key_created = True
    result.api_key = plaintext
    result.api_key_display = key.display


@transaction.atomic
def bootstrap_demo() -> BootstrapResult:
    result = BootstrapResult()
    pro = _ensure_catalogue(result)
    tenant = Tenant.objects.filter(slug=DEMO_TENANT).first()
    if tenant is None:
        tenant = services.tenant_create(actor=ACTOR, name="Demo", slug=DEMO_TENANT, tier=pro)
        result.created.append(f"tenant {DEMO_TENANT} on tier pro")
    _ensure_admin(result)
    _ensure_demo_key(tenant, result)
    return result


class Command(BaseCommand):
    help = "Create the demo tiers, tenant, local model alias, admin user and API key (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="Write the result as JSON.")

    def handle(self, *args, **options) -> None:
        result = bootstrap_demo()
        if options["json"]:
            self.stdout.write(json.dumps(asdict(result)))
            return
        for line in result.created:
            self.stdout.write(f"Created {line}")
        for line in result.updated:
            self.stdout.write(f"Updated {line}")
        if result.admin_created and result.admin_password:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Admin user '{result.admin_username}' created with password "
                    f"{result.admin_password} (shown once: save it)."
                )
            )
        elif result.admin_created:
            self.stdout.write(
                f"Admin user '{result.admin_username}' created with the password "
                "from DEMO_ADMIN_PASSWORD."
            )
        if result.api_key_created:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Demo API key for tenant '{result.tenant}' (shown once: save it):\n"
                    f"  {result.api_key}"
                )
            )
        else:
            self.stdout.write(
                f"A demo API key exists for tenant '{result.tenant}': {result.api_key_display}. "
                "Only its hash is stored, so it cannot be shown again; make a new one with\n"
                f"  python manage.py create_api_key --tenant {result.tenant} --name my-key"
            )
