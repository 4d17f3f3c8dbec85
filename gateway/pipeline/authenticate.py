"""Stage "authenticate": an API key to a principal (tenant, key, scopes, tier).

A verified key is trusted from a per-process cache for ``LLMP_AUTH_CACHE_SECONDS`` (default 5 s),
so a revocation or expiry takes effect everywhere within seconds while the hot path makes no
database query for repeat callers. The cache is keyed by a SHA-256 of the presented token, never
the token itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from gateway import keys
from gateway.errors import AuthenticationFailed, PermissionDenied
from gateway.models import ApiKey
from llmplatform.db import fresh_db

LAST_USED_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class TierLimits:
    name: str
    max_prompt_chars: int
    max_output_tokens: int
    allowed_aliases: frozenset[str]  # empty = all


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

    def require_scope(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise PermissionDenied(f"This API key lacks the '{scope}' scope.")

    def may_use(self, alias: str) -> bool:
        return not self.tier.allowed_aliases or alias in self.tier.allowed_aliases


_cache: dict[str, tuple[float, Principal]] = {}
_background: set[asyncio.Task] = set()


def clear_cache() -> None:
    _cache.clear()


@fresh_db
def _load(lookup: str, secret: str) -> Principal | None:
    key = (
        ApiKey.objects.select_related("tenant", "tenant__plan__tier")
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
        ),
        expires_at=key.expires_at,
        last_used_at=key.last_used_at,
        cache_nonzero_temperature=plan.cache_nonzero_temperature,
    )


@fresh_db
def _touch(key_id: int, now: datetime) -> None:
    ApiKey.objects.filter(pk=key_id).update(last_used_at=now)


def bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(authorization: str) -> Principal:
    token = bearer_token(authorization or "")
    if token is None:
        raise AuthenticationFailed()
    digest = hashlib.sha256(token.encode()).hexdigest()
    now_mono = time.monotonic()
    cached = _cache.get(digest)
    now = timezone.now()
    if cached is not None and cached[0] > now_mono:
        principal = cached[1]
        if principal.expires_at is not None and principal.expires_at <= now:
            _cache.pop(digest, None)
            raise AuthenticationFailed()
    else:
        parts = keys.split(token)
        # A malformed token still costs one HMAC, like a wrong one.
        principal = await sync_to_async(_load)(*parts) if parts else None
        if principal is None:
            if not parts:
                keys.verify(token, None, None)
            raise AuthenticationFailed()
        _cache[digest] = (now_mono + settings.LLMP_AUTH_CACHE_SECONDS, principal)
        if len(_cache) > 100_000:
            _cache.clear()
    if principal.last_used_at is None or now - principal.last_used_at >= LAST_USED_INTERVAL:
        principal.last_used_at = now
        task = asyncio.create_task(sync_to_async(_touch)(principal.key_id, now))
        _background.add(task)
        task.add_done_callback(_background.discard)
    return principal
