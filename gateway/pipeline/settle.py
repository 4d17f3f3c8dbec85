"""Stage "settle": meter the request. Usage records never hold message bodies."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from gateway.models import UsageRecord
from gateway.pipeline.authenticate import Principal
from gateway.pipeline.route import Target
from gateway.providers.base import Usage


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

    async def record(self, *, status: int, now: float, usage: Usage | None = None,
                     error_code: str = "") -> None:
        usage = usage or Usage()
        cost = (self.target.cost(usage.prompt_tokens, usage.completion_tokens)
                if self.target else Decimal(0))
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
        )
