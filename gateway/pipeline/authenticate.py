"""Stage "authenticate": an API key to a principal (tenant, key, scopes, tier).

A verified key is trusted from a per-process cache for ``LLMP_AUTH_CACHE_SECONDS`` (default 5 s),
so a revocation or expiry takes effect everywhere within seconds while the hot path makes no
database query for repeat callers. The cache is keyed by a SHA-256 of the presented token, never
the token itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from gateway import keys
from gateway.errors import AuthenticationFailed, PermissionDenied
from gateway.models import ApiKey, Tier
from gateway.pipeline import background
from llmplatform.actors import Actor
from llmplatform.db import fresh_db
from llmplatform.models import Tenant

LAST_USED_INTERVAL = timedelta(minutes=1)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class TierLimits:
    name: str
    max_prompt_chars: int
    max_output_tokens: int
    allowed_aliases: frozenset[str]  # empty = all
    # (scope, window, limit) of every request limit that is set: scope tenant | key | user.
    request_limits: tuple[tuple[str, str, int], ...] = ()
    tokens_per_minute: int = 0
    tokens_per_day: int = 0
    screening_mode: str = "off"
    screening_threshold: float = 0.5
    leak_mode: str = "off"
    max_choices: int = 4
    max_media_parts: int = 8
    max_media_part_chars: int = 3_000_000


@dataclass(frozen=True, slots=True)
class Budgets:
    """Spend budgets in nano-dollars (0 = none)."""

    tenant_daily: int = 0
    tenant_monthly: int = 0
    key_daily: int = 0
    key_monthly: int = 0


@dataclass(frozen=True, slots=True)
class PrivacySettings:
    """The tenant's privacy policy, as the request path needs it (defaults: no policy row)."""

    upstream_pii: str = "off"  # off | mask | pseudonymize
    block_pii_types: frozenset[str] = frozenset()
    store_conversations: bool = True


def _privacy(tenant: Tenant) -> PrivacySettings:
    policy = getattr(tenant, "privacy", None)
    if policy is None:
        return PrivacySettings()
    return PrivacySettings(
        upstream_pii=policy.upstream_pii,
        block_pii_types=frozenset(policy.block_pii_types or ()),
        store_conversations=policy.store_conversations,
    )


def _nano(amount: Decimal | None) -> int:
    return int(Decimal(amount) * 1_000_000_000) if amount else 0


def _request_limits(tier: Tier) -> tuple[tuple[str, str, int], ...]:
    limits: list[tuple[str, str, int]] = []
    for scope, prefix in (("tenant", ""), ("key", "key_"), ("user", "user_")):
        for window in ("minute", "hour", "day"):
            value = getattr(tier, f"{prefix}requests_per_{window}")
            if value:
                limits.append((scope, window, value))
    return tuple(limits)


@dataclass(slots=True)
class Principal:
    tenant_id: int
    tenant_slug: str
    key_id: int
    key_name: str
    scopes: frozenset[str]
    tier: TierLimits
    expires_at: datetime | None
    last_used_at: datetime | None
    cache_nonzero_temperature: bool = False
    budgets: Budgets = field(default_factory=Budgets)
    allowed_networks: tuple[IPNetwork, ...] = ()  # empty = anywhere
    service_account: str = ""
    store_flagged_text: bool = False
    privacy: PrivacySettings = field(default_factory=PrivacySettings)

    @property
    def actor(self) -> Actor:
        return Actor.for_api_key(key_id=self.key_id, name=self.key_name)

    def allows_ip(self, address: str) -> bool:
        if not self.allowed_networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.allowed_networks)

    def require_scope(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise PermissionDenied(f"This API key lacks the '{scope}' scope.")

    def may_use(self, alias: str) -> bool:
        return not self.tier.allowed_aliases or alias in self.tier.allowed_aliases


_cache: dict[str, tuple[float, Principal]] = {}
# Loads under way, by token digest: requests that miss the cache while the same key is being
# loaded wait for that load instead of each making its own query and HMAC (when an entry
# expires, every request in flight for that key would otherwise miss at once). Futures belong
# to the loop that made them; another loop loads on its own.
_loading: dict[str, asyncio.Future[Principal | None]] = {}
# Bumped by clear_cache: a load that began before a change (a revocation) is not cached.
_generation = 0


def clear_cache() -> None:
    global _generation
    _generation += 1
    _cache.clear()


@fresh_db
def _load(lookup: str, secret: str) -> Principal | None:
    key = (
        ApiKey.objects.select_related(
            "tenant", "tenant__plan__tier", "tenant__privacy", "service_account"
        )
        .filter(lookup=lookup)
        .first()
    )
    # Unknown lookups are verified against a dummy hash: same work, same time.
    valid = keys.verify(secret, key.secret_hash if key else None, key.pepper_id if key else None)
    if key is None or not valid:
        return None
    now = timezone.now()
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        return None
    if not key.tenant.is_active:
        return None
    if key.service_account is not None and key.service_account.disabled_at is not None:
        return None
    plan = getattr(key.tenant, "plan", None)
    if plan is None:
        return None
    tier = plan.tier
    allowed = frozenset(tier.allowed_aliases.values_list("name", flat=True))
    return Principal(
        tenant_id=key.tenant_id,
        tenant_slug=key.tenant.slug,
        key_id=key.pk,
        key_name=key.name,
        scopes=frozenset(key.scopes),
        tier=TierLimits(
            name=tier.name,
            max_prompt_chars=tier.max_prompt_chars,
            max_output_tokens=tier.max_output_tokens,
            allowed_aliases=allowed,
            request_limits=_request_limits(tier),
            tokens_per_minute=tier.tokens_per_minute,
            tokens_per_day=tier.tokens_per_day,
            screening_mode=plan.screening_mode or tier.screening_mode,
            screening_threshold=(
                plan.screening_threshold
                if plan.screening_threshold is not None
                else tier.screening_threshold
            ),
            leak_mode=plan.leak_mode or tier.leak_mode,
            max_choices=tier.max_choices,
            max_media_parts=tier.max_media_parts,
            max_media_part_chars=tier.max_media_part_chars,
        ),
        expires_at=key.expires_at,
        last_used_at=key.last_used_at,
        cache_nonzero_temperature=plan.cache_nonzero_temperature,
        budgets=Budgets(
            tenant_daily=_nano(
                plan.daily_budget if plan.daily_budget is not None else tier.daily_budget
            ),
            tenant_monthly=_nano(
                plan.monthly_budget if plan.monthly_budget is not None else tier.monthly_budget
            ),
            key_daily=_nano(key.daily_budget),
            key_monthly=_nano(key.monthly_budget),
        ),
        allowed_networks=tuple(ipaddress.ip_network(n, strict=False) for n in key.allowed_ips),
        service_account=key.service_account.name if key.service_account is not None else "",
        store_flagged_text=plan.store_flagged_text,
        privacy=_privacy(key.tenant),
    )


@fresh_db
def _touch(key_id: int, now: datetime) -> None:
    ApiKey.objects.filter(pk=key_id).update(last_used_at=now)


def bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(authorization: str, client_ip: str = "") -> Principal:
    """The principal of a valid key. A key limited to IP ranges used from elsewhere is refused
    with 403 (the key is right, the place is not)."""
    principal = await _authenticate(authorization)
    if not principal.allows_ip(client_ip):
        raise PermissionDenied(
            "This API key may not be used from your IP address.", code="ip_not_allowed"
        )
    return principal


async def _load_once(token: str, digest: str) -> Principal | None:
    """The principal of ``token`` from the database (None: not a valid key), cached; one load
    at a time per token and loop, which every concurrent miss for that token awaits."""
    loop = asyncio.get_running_loop()
    while (pending := _loading.get(digest)) is not None and pending.get_loop() is loop:
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not pending.cancelled() or (task is not None and task.cancelling()):
                raise
            # The load it waited for was cancelled (that request's client went away): the first
            # waiter to get here loads, the others wait for it.
    future: asyncio.Future[Principal | None] = loop.create_future()
    _loading[digest] = future
    generation = _generation
    try:
        parts = keys.split(token)
        # A malformed token still costs one HMAC, like a wrong one.
        principal = await sync_to_async(_load)(*parts) if parts else None
        if not parts:
            keys.verify(token, None, None)
        if principal is not None and generation == _generation:
            _cache[digest] = (time.monotonic() + settings.LLMP_AUTH_CACHE_SECONDS, principal)
            if len(_cache) > 100_000:
                _cache.clear()
    except asyncio.CancelledError:
        future.cancel()
        raise
    except BaseException as error:
        future.set_exception(error)
        future.exception()  # retrieved here, so a load nobody else awaited logs no warning
        raise
    else:
        future.set_result(principal)
        return principal
    finally:
        if _loading.get(digest) is future:
            del _loading[digest]


async def _authenticate(authorization: str) -> Principal:
    token = bearer_token(authorization or "")
    if token is None:
        raise AuthenticationFailed()
    digest = hashlib.sha256(token.encode()).hexdigest()
    now_mono = time.monotonic()
    cached = _cache.get(digest)
    now = timezone.now()
    principal: Principal | None
    if cached is not None and cached[0] > now_mono:
        principal = cached[1]
        if principal.expires_at is not None and principal.expires_at <= now:
            _cache.pop(digest, None)
            raise AuthenticationFailed()
    else:
        principal = await _load_once(token, digest)
        if principal is None:
            raise AuthenticationFailed()
    if principal.last_used_at is None or now - principal.last_used_at >= LAST_USED_INTERVAL:
        principal.last_used_at = now
        background.spawn(sync_to_async(_touch)(principal.key_id, now))
    return principal
