"""Stage "admit": request limits, token limits and spend budgets, before the upstream call.

The request reserves one request in each of its request counters (per tenant, key and end
user; per minute, hour and day, as the tier sets), its estimated tokens (the prompt's estimate
plus the most it may generate) in the tenant's token counters, and the estimated cost of those
tokens in the tenant's and the key's budgets. ``settle`` then corrects the reservation to what
was used. See ``gateway.limits`` for how the counters are kept.
"""

from __future__ import annotations

import math
import time
from decimal import Decimal

from gateway import limits, metrics
from gateway.errors import ApiError
from gateway.limits import REQUESTS, SPEND, TOKENS, Admission, Counter
from gateway.pipeline.authenticate import Principal
from gateway.pipeline.inputs import request_chars
from gateway.pipeline.route import Target
from gateway.pipeline.settle import chars_to_tokens
from gateway.providers.base import ChatRequest

# When neither the request nor the tier bounds the reply, reserve this many tokens for it.
DEFAULT_COMPLETION_RESERVE = 1024


class RateLimitExceeded(ApiError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class BudgetExceeded(ApiError):
    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"


class LimitsUnavailable(ApiError):
    status = 503
    type = "server_error"
    code = "limits_unavailable"


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``2h3m4s``."""
    seconds = max(math.ceil(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _nano_cost(target: Target, prompt_tokens: int, completion_tokens: int) -> int:
    return int(target.cost(prompt_tokens, completion_tokens) * limits.NANO)


def estimate(request: ChatRequest, principal: Principal) -> tuple[int, int]:
    """(prompt tokens, completion tokens) to reserve."""
    prompt = chars_to_tokens(request_chars(request))  # tool calls, tools, other fields too
    completion = request.max_tokens or principal.tier.max_output_tokens
    return prompt, completion or DEFAULT_COMPLETION_RESERVE


def counters(principal: Principal, user: str | None, target: Target, request: ChatRequest,
             now: float) -> list[Counter]:
    tenant = principal.tenant_id
    result = []

    def add(kind: str, scope: str, owner: str, window: str, limit: int, amount: int) -> None:
        if limit > 0:
            result.append(limits.counter(kind=kind, scope=scope, owner=owner, window=window,
                                         limit=limit, amount=amount, tenant_id=tenant, now=now))

    owners = {"tenant": "-", "key": str(principal.key_id)}
    for scope, window, limit in principal.tier.request_limits:
        if scope == "user":
            if user:
                add(REQUESTS, scope, f"u:{user}", window, limit, 1)
        else:
            add(REQUESTS, scope, owners[scope], window, limit, 1)
    prompt, completion = estimate(request, principal)
    tier = principal.tier
    add(TOKENS, "tenant", "-", "minute", tier.tokens_per_minute, prompt + completion)
    add(TOKENS, "tenant", "-", "day", tier.tokens_per_day, prompt + completion)
    cost = _nano_cost(target, prompt, completion)
    budgets = principal.budgets
    add(SPEND, "tenant", "-", "day", budgets.tenant_daily, cost)
    add(SPEND, "tenant", "-", "month", budgets.tenant_monthly, cost)
    add(SPEND, "key", str(principal.key_id), "day", budgets.key_daily, cost)
    add(SPEND, "key", str(principal.key_id), "month", budgets.key_monthly, cost)
    return result


_WINDOW_WORD = {"minute": "per-minute", "hour": "hourly", "day": "daily", "month": "monthly"}
_SCOPE_WORD = {"tenant": "tenant's", "key": "API key's", "user": "end user's"}


async def admit(principal: Principal, user: str | None, target: Target,
                request: ChatRequest) -> Admission:
    now = time.time()
    wanted = counters(principal, user, target, request, now)
    try:
        admission = await limits.admit(wanted, now)
    except limits.LimitsUnavailable as exc:
        raise LimitsUnavailable(
            "Limits cannot be checked right now; retry shortly.", headers={"Retry-After": "1"}
        ) from exc
    if admission.allowed:
        return admission
    denied = admission.denied
    metrics.record_limited(denied.kind, denied.scope, denied.window)
    retry_after = max(math.ceil(denied.reset_at - now), 1)
    headers = rate_limit_headers(admission, now)
    headers["Retry-After"] = str(retry_after)
    what = f"{_SCOPE_WORD[denied.scope]} {_WINDOW_WORD[denied.window]}"
    if denied.kind == SPEND:
        raise BudgetExceeded(
            f"The {what} budget of ${Decimal(denied.limit) / limits.NANO:.2f} is used up; it "
            f"resets in {_duration(retry_after)}.",
            headers=headers,
        )
    if denied.kind == TOKENS:
        raise RateLimitExceeded(
            f"Rate limit reached: the {what} limit is {denied.limit} tokens and this request "
            f"may need {denied.amount}. Try again in {_duration(retry_after)}.",
            code="tokens_rate_limit_exceeded", headers=headers,
        )
    raise RateLimitExceeded(
        f"Rate limit reached: the {what} limit is {denied.limit} requests. Try again in "
        f"{_duration(retry_after)}.",
        headers=headers,
    )


def rate_limit_headers(admission: Admission | None, now: float | None = None) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers from the tightest request and token counters."""
    if admission is None:
        return {}
    now = time.time() if now is None else now
    headers = {}
    for kind, suffix in ((REQUESTS, "requests"), (TOKENS, "tokens")):
        tightest = admission.tightest(kind, now)
        if tightest is None:
            continue
        limit, remaining, reset = tightest
        headers[f"x-ratelimit-limit-{suffix}"] = str(limit)
        headers[f"x-ratelimit-remaining-{suffix}"] = str(remaining)
        headers[f"x-ratelimit-reset-{suffix}"] = _duration(reset)
    return headers
