"""Stage "route": a model alias to one of its versions, by the versions' weights.

The routing table is a plain snapshot of the database configuration, built once per process
and rebuilt when it is older than ``REFRESH_SECONDS`` or when this process saves a config row
(signals), so the hot path makes no query for it.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from gateway.errors import ModelNotFound
from gateway.models import ModelVersion
from gateway.providers.base import ProviderConfig

REFRESH_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Target:
    alias: str
    version: str
    deployment: str
    model: str
    provider: ProviderConfig
    weight: int
    system_prompt: str
    params: dict[str, Any]
    input_price_per_1k: Decimal
    output_price_per_1k: Decimal

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return (
            Decimal(prompt_tokens) * self.input_price_per_1k
            + Decimal(completion_tokens) * self.output_price_per_1k
        ) / 1000


@dataclass(frozen=True, slots=True)
class AliasRoute:
    name: str
    created: int
    targets: tuple[Target, ...]
    total_weight: int

    def pick(self, user: str | None = None) -> Target:
        if len(self.targets) == 1 or self.total_weight == 0:
            return self.targets[0]
        if user:
            # Sticky per end user: the same user lands on the same version for a given split.
            digest = hashlib.sha256(f"{self.name}:{user}".encode()).digest()
            point = int.from_bytes(digest[:8], "big") % self.total_weight
        else:
            point = random.randrange(self.total_weight)  # noqa: S311 - traffic split, not crypto
        for target in self.targets:
            if point < target.weight:
                return target
            point -= target.weight
        return self.targets[-1]


def _provider_config(provider) -> ProviderConfig:
    return ProviderConfig(
        name=provider.name,
        kind=provider.kind,
        base_url=provider.base_url,
        api_key_ref=provider.api_key_ref,
        api_version=provider.api_version,
        region=provider.region,
        connect_timeout=provider.connect_timeout or settings.LLMP_UPSTREAM_CONNECT_TIMEOUT,
        read_timeout=provider.read_timeout or settings.LLMP_UPSTREAM_READ_TIMEOUT,
        extra=dict(provider.extra or {}),
        revision=f"{provider.pk}:{provider.updated_at.isoformat()}",
    )


def _build() -> dict[str, AliasRoute]:
    versions = (
        ModelVersion.objects.select_related("alias", "deployment__provider")
        .filter(alias__enabled=True, deployment__enabled=True, deployment__provider__enabled=True)
        .order_by("alias__name", "version")
    )
    by_alias: dict[str, list[Target]] = {}
    created: dict[str, int] = {}
    for v in versions:
        deployment = v.deployment
        by_alias.setdefault(v.alias.name, []).append(
            Target(
                alias=v.alias.name,
                version=v.version,
                deployment=deployment.name,
                model=deployment.model,
                provider=_provider_config(deployment.provider),
                weight=v.weight,
                system_prompt=v.system_prompt,
                params=dict(v.params or {}),
                input_price_per_1k=deployment.input_price_per_1k,
                output_price_per_1k=deployment.output_price_per_1k,
            )
        )
        created[v.alias.name] = int(v.alias.created_at.timestamp())
    table = {}
    for name, targets in by_alias.items():
        live = tuple(t for t in targets if t.weight > 0) or tuple(targets)
        table[name] = AliasRoute(name, created[name], live, sum(t.weight for t in live))
    return table


class RoutingTable:
    def __init__(self) -> None:
        self._table: dict[str, AliasRoute] | None = None
        self._loaded_at = 0.0

    def invalidate(self) -> None:
        self._table = None

    async def routes(self) -> dict[str, AliasRoute]:
        if self._table is None or time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            self._table = await sync_to_async(_build)()
            self._loaded_at = time.monotonic()
        return self._table

    async def resolve(self, alias: str, user: str | None = None) -> Target:
        route = (await self.routes()).get(alias)
        if route is None:
            raise ModelNotFound(
                f"The model '{alias}' does not exist or you do not have access to it.",
                param="model",
            )
        return route.pick(user)


routing_table = RoutingTable()


def invalidate_routing(**_: Any) -> None:
    routing_table.invalidate()


