"""Helpers for the rollout and deployment-checklist tests."""

from __future__ import annotations

import importlib
import itertools
from datetime import datetime
from decimal import Decimal

import httpx
import pytest
from django.apps import apps
from django.contrib.auth.models import Permission

from gateway.models import ModelAlias, ModelVersion, Provider, ProviderDeployment, UsageRecord

_request_ids = itertools.count()


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """The shared principals have passwords; hashing them at full strength dominates these
    tests' setup on a busy machine, and no test here is about passwords."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def alias_with_two_versions(
    stable_url: str, candidate_url: str, *, name: str = "default"
) -> tuple[ModelAlias, ModelVersion, ModelVersion]:
    """``name`` routed wholly to v1 (at ``stable_url``); v2 (at ``candidate_url``) has weight 0.
    The candidate's deployment makes one attempt per request, so failures are quick."""
    alias = ModelAlias.objects.create(name=name)
    versions = []
    for version, url, attempts, weight in (("v1", stable_url, 3, 100), ("v2", candidate_url, 1, 0)):
        provider = Provider.objects.create(
            name=f"{name}-{version}-provider", kind="openai", base_url=url
        )
        deployment = ProviderDeployment.objects.create(
            name=f"{name}-{version}",
            provider=provider,
            model=f"model-{version}",
            input_price_per_1k="0.001",
            output_price_per_1k="0.002",
            max_attempts=attempts,
        )
        versions.append(
            ModelVersion.objects.create(
                alias=alias, version=version, deployment=deployment, weight=weight
            )
        )
    return alias, versions[0], versions[1]


def weights(alias: ModelAlias) -> dict[str, int]:
    return dict(ModelVersion.objects.filter(alias=alias).values_list("version", "weight"))


def chat(
    base_url: str,
    key: str,
    *,
    user: str | None = None,
    temperature: float | None = None,
    content: str = "Hello there",
) -> httpx.Response:
    body: dict = {"model": "default", "messages": [{"role": "user", "content": content}]}
    if user is not None:
        body["user"] = user
    if temperature is not None:
        body["temperature"] = temperature
    return httpx.post(
        f"{base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=15,
    )


def usage_rows(
    tenant,
    alias: str,
    version: str,
    count: int,
    *,
    status: int = 200,
    latency_ms: float = 100.0,
    cost: str = "0",
    at: datetime | None = None,
    **fields,
) -> None:
    """Usage records as the gateway writes them (``at``: their time, default now)."""
    rows = UsageRecord.objects.bulk_create(
        [
            UsageRecord(
                tenant=tenant,
                request_id=f"req-{next(_request_ids)}",
                route="chat.completions",
                alias=alias,
                version=version,
                deployment=f"{alias}-{version}",
                status_code=status,
                latency_ms=latency_ms,
                cost=Decimal(cost),
                **fields,
            )
            for _ in range(count)
        ]
    )
    if at is not None:
        UsageRecord.objects.filter(pk__in=[r.pk for r in rows]).update(created_at=at)


def grant(user, *codenames: str) -> None:
    """Give ``user`` the rollouts permissions named (and make them staff)."""
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="rollouts", codename__in=codenames)
    )


def default_template():
    """The default checklist template as the data migration creates it (transactional tests
    empty the tables, so it is created again when missing)."""
    template_model = apps.get_model("rollouts", "ChecklistTemplate")
    migration = importlib.import_module(
        "deployments.rollouts.migrations.0002_default_checklist_template"
    )
    if not template_model.objects.filter(name=migration.NAME).exists():
        migration.create(apps, None)
    return template_model.objects.get(name=migration.NAME)
