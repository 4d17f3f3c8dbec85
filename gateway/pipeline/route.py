"""Stage "route": a model alias to one of its versions, by the versions' weights, followed by
the alias's fallback deployments.

The routing table is a plain snapshot of the database configuration, built once per process
and rebuilt when it is older than ``REFRESH_SECONDS`` or when any process saves a config row
(signals here, and a Redis pub/sub message to the other processes; without Redis, a counter in
the embedded default's shared cache file that each web process reads at most every
``GENERATION_CHECK_SECONDS``), so the hot path makes no query for it. Each target carries its
resilience policy (the deployment's numbers with the alias's overrides), built here once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog
from asgiref.sync import sync_to_async
from django.conf import settings

from gateway import cache as response_cache
from gateway.errors import ModelNotFound
from gateway.models import (
    AliasFallback,
    GuardrailScanner,
    ModelAlias,
    ModelVersion,
    Provider,
    ProviderDeployment,
)
from gateway.providers.base import ChatMessage, ChatRequest, ProviderConfig
from gateway.resilience.policy import (
    DEFAULT_DEGRADED_MESSAGE,
    DEFAULTS,
    ResiliencePolicy,
    policy_for,
)
from gateway.scanners.base import ScannerConfig
from llmplatform.db import fresh_db
from llmplatform.redis_client import redis_configured, sync_redis

if TYPE_CHECKING:
    from gateway.pipeline.authenticate import Principal
    from gateway.pipeline.validate import ParsedChat

log = structlog.get_logger("gateway.route")

REFRESH_SECONDS = 5.0
# Without Redis: how often a web process looks whether another process changed the routing.
GENERATION_CHECK_SECONDS = 0.5
_GENERATION_KEY = "llmp:routing:generation"


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
    policy: ResiliencePolicy = DEFAULTS

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return (
            Decimal(prompt_tokens) * self.input_price_per_1k
            + Decimal(completion_tokens) * self.output_price_per_1k
        ) / 1000


@dataclass(frozen=True, slots=True)
class Degraded:
    """What an alias answers when its whole fallback chain failed: ``error`` (the last
    failure's 502/503/504) or ``message`` (a 200 with ``message``, marked degraded)."""

    mode: str = "error"
    message: str = DEFAULT_DEGRADED_MESSAGE


@dataclass(frozen=True, slots=True)
class SemanticPolicy:
    """An alias's semantic cache: the alias whose embeddings compare questions, and the
    similarity a stored question needs (``gateway.semantic_cache``)."""

    embeddings_alias: str
    threshold: float


@dataclass(frozen=True, slots=True)
class Fallback:
    """A fallback deployment of an alias: everything a Target takes from the deployment."""

    deployment: str
    model: str
    provider: ProviderConfig
    input_price_per_1k: Decimal
    output_price_per_1k: Decimal
    policy: ResiliencePolicy


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The routed target first, then the alias's fallbacks, and the degraded-mode answer."""

    alias: str
    targets: tuple[Target, ...]
    degraded: Degraded
    # The alias's external scanners, every tenant's: ``scan.scanners_for`` picks the caller's.
    scanners: tuple[ScannerConfig, ...] = ()
    # None unless the alias opted in: the one check a request of any other alias pays.
    semantic: SemanticPolicy | None = None

    @property
    def primary(self) -> Target:
        return self.targets[0]


@dataclass(frozen=True, slots=True)
class AliasRoute:
    name: str
    created: int
    targets: tuple[Target, ...]
    total_weight: int
    fallbacks: tuple[Fallback, ...] = ()
    degraded: Degraded = Degraded()
    scanners: tuple[ScannerConfig, ...] = ()
    semantic: SemanticPolicy | None = None

    def plan(self, user: str | None = None) -> RoutePlan:
        """The picked version, then each fallback deployment (skipping the picked one) with
        the picked version's system prompt and parameters."""
        primary = self.pick(user)
        targets = [primary]
        for fallback in self.fallbacks:
            if fallback.deployment != primary.deployment:
                targets.append(
                    dataclasses.replace(
                        primary,
                        deployment=fallback.deployment,
                        model=fallback.model,
                        provider=fallback.provider,
                        input_price_per_1k=fallback.input_price_per_1k,
                        output_price_per_1k=fallback.output_price_per_1k,
                        policy=fallback.policy,
                    )
                )
        return RoutePlan(self.name, tuple(targets), self.degraded, self.scanners, self.semantic)

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


def provider_config_for(provider: Provider) -> ProviderConfig:
    """What an adapter needs of a ``Provider`` row (unset timeouts: the settings' defaults)."""
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


def _policy(
    deployment: ProviderDeployment, provider: ProviderConfig, alias: ModelAlias
) -> ResiliencePolicy:
    return policy_for(
        deployment,
        connect_timeout=provider.connect_timeout,
        read_timeout=provider.read_timeout,
        alias_overrides=alias.resilience,
    )


def scanner_config_for(scanner: GuardrailScanner) -> ScannerConfig:
    """What the request path and the adapters need of a ``GuardrailScanner`` row."""
    return ScannerConfig(
        name=scanner.name,
        kind=scanner.kind,
        tenant_id=scanner.tenant_id,
        alias=scanner.alias.name if scanner.alias is not None else "",
        pre_call=scanner.pre_call,
        post_call=scanner.post_call,
        fail_closed=scanner.fail_mode == GuardrailScanner.FailMode.CLOSED,
        timeout=scanner.timeout_ms / 1000,
        url=scanner.url,
        auth_header=scanner.auth_header,
        auth_secret_ref=scanner.auth_secret_ref,
        guardrail_id=scanner.guardrail_id,
        guardrail_version=scanner.guardrail_version,
        region=scanner.region,
        language=scanner.language,
        score_threshold=scanner.score_threshold,
        entities=tuple(e for e in scanner.entities or () if isinstance(e, str)),
        on_detect=scanner.on_detect,
        revision=f"{scanner.pk}:{scanner.updated_at.isoformat()}",
    )


def _scanners_by_alias() -> tuple[tuple[ScannerConfig, ...], dict[str, list[ScannerConfig]]]:
    """Enabled scanners: those for every alias, and those of each alias."""
    every: list[ScannerConfig] = []
    by_alias: dict[str, list[ScannerConfig]] = {}
    for scanner in GuardrailScanner.objects.select_related("alias").filter(enabled=True):
        config = scanner_config_for(scanner)
        if config.alias:
            by_alias.setdefault(config.alias, []).append(config)
        else:
            every.append(config)
    return tuple(every), by_alias


@fresh_db
def build_routes() -> dict[str, AliasRoute]:
    """The routing table as the database has it now: every enabled alias's versions and
    fallbacks on enabled deployments of enabled providers."""
    live = {"deployment__enabled": True, "deployment__provider__enabled": True}
    versions = (
        ModelVersion.objects.select_related("alias", "deployment__provider")
        .filter(alias__enabled=True, **live)
        .order_by("alias__name", "version")
    )
    fallbacks = (
        AliasFallback.objects.select_related("alias", "deployment__provider")
        .filter(alias__enabled=True, **live)
        .order_by("alias__name", "position", "id")
    )
    by_alias: dict[str, list[Target]] = {}
    aliases: dict[str, ModelAlias] = {}
    providers: dict[int, ProviderConfig] = {}

    def provider_config(provider: Provider) -> ProviderConfig:
        if provider.pk not in providers:
            providers[provider.pk] = provider_config_for(provider)
        return providers[provider.pk]

    for v in versions:
        deployment = v.deployment
        provider = provider_config(deployment.provider)
        by_alias.setdefault(v.alias.name, []).append(
            Target(
                alias=v.alias.name,
                version=v.version,
                deployment=deployment.name,
                model=deployment.model,
                provider=provider,
                weight=v.weight,
                system_prompt=v.system_prompt,
                params=dict(v.params or {}),
                input_price_per_1k=deployment.input_price_per_1k,
                output_price_per_1k=deployment.output_price_per_1k,
                policy=_policy(deployment, provider, v.alias),
            )
        )
        aliases[v.alias.name] = v.alias
    chains: dict[str, list[Fallback]] = {}
    for f in fallbacks:
        deployment = f.deployment
        provider = provider_config(deployment.provider)
        chains.setdefault(f.alias.name, []).append(
            Fallback(
                deployment=deployment.name,
                model=deployment.model,
                provider=provider,
                input_price_per_1k=deployment.input_price_per_1k,
                output_price_per_1k=deployment.output_price_per_1k,
                policy=_policy(deployment, provider, f.alias),
            )
        )
    every_alias, scanners = _scanners_by_alias()
    table = {}
    for name, targets in by_alias.items():
        alias = aliases[name]
        routed = tuple(t for t in targets if t.weight > 0) or tuple(targets)
        table[name] = AliasRoute(
            name,
            int(alias.created_at.timestamp()),
            routed,
            sum(t.weight for t in routed),
            fallbacks=tuple(chains.get(name, ())),
            degraded=Degraded(alias.degraded_mode, alias.degraded_message),
            scanners=(*every_alias, *scanners.get(name, ())),
            semantic=SemanticPolicy(alias.semantic_cache_embeddings, alias.semantic_cache_threshold)
            if alias.semantic_cache and alias.semantic_cache_embeddings
            else None,
        )
    return table


def _channel() -> str:
    # Pub/sub channels are not per Redis database: the database's URL keeps platforms that
    # share one server apart.
    url = settings.REDIS_URL
    assert url is not None  # pub/sub is used only with Redis configured
    return "llmp:routing:changed:" + hashlib.sha256(url.encode()).hexdigest()[:12]


class RoutingTable:
    def __init__(self) -> None:
        self._table: dict[str, AliasRoute] | None = None
        self._loaded_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._generation: int | None = None
        self._generation_checked = 0.0

    def invalidate(self) -> None:
        self._table = None

    async def start_listening(self) -> None:
        """With Redis, every web process subscribes to routing changes: a change saved in any
        process (an officer's edit, a rollout's switch or rollback) reaches all of them at once,
        with no per-request round trip. ``REFRESH_SECONDS`` stays the safety net."""
        if redis_configured() and (self._listener is None or self._listener.done()):
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        import redis.asyncio as aioredis

        while True:
            url = settings.REDIS_URL
            assert url is not None  # started only with Redis configured
            # Its own connection: the shared client's 1 s socket timeout is for commands, and
            # a subscription waits for messages. Health-check pings find a dead connection.
            client = aioredis.Redis.from_url(
                url, socket_connect_timeout=1.0, health_check_interval=10
            )
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(_channel())
                    # Changes missed while not subscribed: start from the database again.
                    self.invalidate()
                    while True:
                        message = await pubsub.get_message(timeout=5.0)
                        if message is not None and message.get("type") == "message":
                            self.invalidate()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("routing_subscription_lost", error=type(exc).__name__)
                await asyncio.sleep(1.0)
            finally:
                await client.aclose()

    def _follow_shared_generation(self) -> None:
        """Without Redis: drop the table when another process has bumped the shared counter
        (one read of the shared cache file, at most every ``GENERATION_CHECK_SECONDS``)."""
        now = time.monotonic()
        if now - self._generation_checked < GENERATION_CHECK_SECONDS:
            return
        self._generation_checked = now
        try:
            generation = response_cache.shared_file_cache().counter(_GENERATION_KEY)
        except Exception as exc:  # REFRESH_SECONDS stays the safety net
            log.warning("routing_generation_unreadable", error=type(exc).__name__)
            return
        if generation != self._generation:
            if self._generation is not None:
                self._table = None
            self._generation = generation

    async def routes(self) -> dict[str, AliasRoute]:
        if not redis_configured():
            self._follow_shared_generation()
        if self._table is None:
            self._table = await sync_to_async(build_routes)()
            self._loaded_at = time.monotonic()
        elif time.monotonic() - self._loaded_at > REFRESH_SECONDS and (
            self._refreshing is None or self._refreshing.done()
        ):
            # Stale: answer from the current table and rebuild in the background, so no
            # request waits for the query.
            self._loaded_at = time.monotonic()
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        return self._table

    async def _refresh(self) -> None:
        try:
            self._table = await sync_to_async(build_routes)()
        except Exception:
            self._loaded_at = 0.0  # try again on the next request
            log.warning("routing_refresh_failed", exc_info=True)

    async def route(self, alias: str) -> AliasRoute:
        route = (await self.routes()).get(alias)
        if route is None:
            # The message does not repeat the name: it is whatever the client sent.
            raise ModelNotFound(
                "The model does not exist or you do not have access to it.",
                param="model",
            )
        return route

    async def resolve(self, alias: str, user: str | None = None) -> Target:
        """The routed target (the primary of ``plan``)."""
        return (await self.route(alias)).pick(user)

    async def plan(self, alias: str, user: str | None = None) -> RoutePlan:
        """The routed target, then the alias's fallbacks, for ``dispatch``."""
        return (await self.route(alias)).plan(user)


routing_table = RoutingTable()


def invalidate_routing(**_: Any) -> None:
    """Drop this process's routing table and tell the other processes to drop theirs."""
    routing_table.invalidate()
    try:
        if redis_configured():
            sync_redis().publish(_channel(), "1")
        else:
            response_cache.shared_file_cache().bump(_GENERATION_KEY)
    except Exception as exc:  # they follow within REFRESH_SECONDS anyway
        log.warning("routing_publish_failed", error=type(exc).__name__)


def upstream_request(target: Target, parsed: ParsedChat, principal: Principal) -> ChatRequest:
    """The request a target's provider gets (a ``ParsedChat`` from a ``Principal``): the
    version's system prompt first, the client's sampling parameters over the version's own,
    and the reply's length within the tier's cap."""
    messages = parsed.messages
    if target.system_prompt:
        messages = [ChatMessage(role="system", content=target.system_prompt), *messages]
    params = target.params
    max_tokens = parsed.max_tokens or params.get("max_tokens")
    cap = principal.tier.max_output_tokens
    if cap and (max_tokens is None or max_tokens > cap):
        max_tokens = cap
    return ChatRequest(
        model=target.model,
        messages=messages,
        temperature=parsed.temperature
        if parsed.temperature is not None
        else params.get("temperature"),
        top_p=parsed.top_p if parsed.top_p is not None else params.get("top_p"),
        max_tokens=max_tokens,
        stop=parsed.stop if parsed.stop is not None else params.get("stop"),
        user=parsed.user,
        extra=parsed.extra,
    )
