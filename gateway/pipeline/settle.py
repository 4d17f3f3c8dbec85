"""Stage "settle": meter the request. Usage records never hold message bodies."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import structlog

from gateway import metrics
from gateway.models import UsageRecord
from gateway.pipeline.authenticate import Principal
from gateway.pipeline.route import Target
from gateway.providers.base import Usage

log = structlog.get_logger("gateway.request")


def estimate_tokens(text: str) -> int:
    """A rough count for upstreams that report none (about four characters a token)."""
    return max(1, (len(text) + 3) // 4) if text else 0


@dataclass(slots=True)
class Meter:
    request_id: str
    route: str
    principal: Principal
    started: float
    alias: str = ""
    target: Target | None = None
    streamed: bool = False
    upstream_ms: float = 0.0
    upstream_called: bool = False
    cache_hit: bool = False
    # For streams: the gateway's own time up to the first byte, fixed when headers go out.
    overhead_ms: float | None = None

    def overhead_now(self, now: float) -> float:
        """What the gateway itself has spent so far: elapsed time minus time spent upstream."""
        return max((now - self.started) * 1000 - self.upstream_ms, 0.0)

    async def record(self, *, status: int, now: float, usage: Usage | None = None,
                     error_code: str = "") -> None:
        usage = usage or Usage()
        cost = (self.target.cost(usage.prompt_tokens, usage.completion_tokens)
                if self.target and not self.cache_hit else Decimal(0))
        overhead = self.overhead_ms if self.overhead_ms is not None else self.overhead_now(now)
        metrics.record_request(
            route=self.route, status=status, tier=self.principal.tier.name, alias=self.alias,
            seconds=now - self.started, overhead=overhead / 1000,
            upstream=self.upstream_ms / 1000 if self.upstream_called else None,
            deployment=self.target.deployment if self.target else "",
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cost=float(cost),
        )
        log.info(
            "request_finished", route=self.route, tenant=self.principal.tenant_slug,
            key_id=self.principal.key_id, alias=self.alias,
            deployment=self.target.deployment if self.target else "", status=status,
            error_code=error_code or None, cache_hit=self.cache_hit,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            latency_ms=round((now - self.started) * 1000, 2), overhead_ms=round(overhead, 2),
        )
        await UsageRecord.objects.acreate(
            tenant_id=self.principal.tenant_id,
            api_key_id=self.principal.key_id,
            request_id=self.request_id,
            route=self.route,
            alias=self.alias[:64],
            deployment=self.target.deployment if self.target else "",
            status_code=status,
            error_code=error_code[:64],
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost=cost,
            latency_ms=(now - self.started) * 1000,
            upstream_latency_ms=self.upstream_ms,
            streamed=self.streamed,
            cache_hit=self.cache_hit,
        )
