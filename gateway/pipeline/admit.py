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

from gateway import cache as response_cache
from gateway import limits, metrics
from gateway.errors import ApiError, InvalidRequest
from gateway.limits import REQUESTS, SPEND, TOKENS, Admission, Counter
from gateway.pipeline.authenticate import Principal
from gateway.pipeline.inputs import request_chars
from gateway.pipeline.route import Target
from gateway.pipeline.settle import chars_to_tokens
from gateway.pipeline.validate import ParsedChat, media_size
from gateway.providers.base import ChatRequest, EmbeddingRequest
from llmplatform.redis_client import async_script, script_batcher

# When neither the request nor the tier bounds the reply, reserve this many tokens for it.
DEFAULT_COMPLETION_RESERVE = 1024
# Tokens reserved for an image, audio clip or file part (OpenAI bills a high-detail 1024x1024
# image at 765 tokens); corrected to the provider's count when it answers.
MEDIA_PART_TOKENS = 765


def check_limits(principal: Principal, parsed: ParsedChat) -> None:
    """The tier's bounds on one request: the text the model reads, the reply's length, how
    many choices, and how many and how large the image, audio and file parts are."""
    tier = principal.tier
    limit = tier.max_prompt_chars
    found = parsed.parts()
    size = sum(len(p.text) for p in found)
    if size > limit:
        # Everything the model reads counts (tool-call arguments, tools, response_format...);
        # the error names the largest part so the client knows what to shorten.
        largest = max(found, key=lambda p: len(p.text))
        raise InvalidRequest(
            f"The request sends the model {size} characters; the '{tier.name}' tier "
            f"allows at most {limit} over messages, tool calls, tools and other fields. The "
            f"largest part is '{largest.param}' ({len(largest.text)} characters).",
            code="prompt_too_large",
            param=largest.param,
        )
    cap = tier.max_output_tokens
    if cap and parsed.max_tokens is not None and parsed.max_tokens > cap:
        raise InvalidRequest(
            f"max_tokens is {parsed.max_tokens}; the '{tier.name}' tier allows at most {cap}.",
            code="max_tokens_too_large",
            param="max_tokens",
        )
    if parsed.n > tier.max_choices:
        raise InvalidRequest(
            f"n is {parsed.n}; the '{tier.name}' tier allows at most {tier.max_choices} choices "
            "per request.",
            code="too_many_choices",
            param="n",
        )
    media = parsed.media()
    if len(media) > tier.max_media_parts:
        raise InvalidRequest(
            f"The request carries {len(media)} image, audio or file parts; the '{tier.name}' "
            f"tier allows at most {tier.max_media_parts}.",
            code="too_many_media_parts",
            param=media[tier.max_media_parts][0]
            if tier.max_media_parts < len(media)
            else "messages",
        )
    for param, part in media:
        size = media_size(part)
        if size > tier.max_media_part_chars:
            raise InvalidRequest(
                f"'{param}' is {size} characters; the '{tier.name}' tier allows at most "
                f"{tier.max_media_part_chars} per image, audio or file part.",
                code="media_part_too_large",
                param=param,
            )


class RateLimitExceeded(ApiError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class BudgetExceeded(ApiError):
    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"


class LimitsUnavailable(ApiError):
    """The client's 503 when the limits cannot be checked (``limits.LimitsRedisDown``)."""

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


def estimate(request: ChatRequest | EmbeddingRequest, principal: Principal) -> tuple[int, int]:
    """(prompt tokens, completion tokens) to reserve."""
    if isinstance(request, EmbeddingRequest):
        return chars_to_tokens(sum(len(text) for text in request.inputs)), 0
    prompt = chars_to_tokens(request_chars(request))  # tool calls, tools, other fields too
    prompt += MEDIA_PART_TOKENS * sum(len(m.media()) for m in request.messages)
    completion = request.max_tokens or principal.tier.max_output_tokens
    # Every choice is generated (and billed) separately.
    choices = request.extra.get("n") or 1
    return prompt, (completion or DEFAULT_COMPLETION_RESERVE) * choices


def counters(
    principal: Principal,
    user: str | None,
    target: Target,
    request: ChatRequest | EmbeddingRequest,
    now: float,
) -> list[Counter]:
    tenant = principal.tenant_id
    result = []

    def add(kind: str, scope: str, owner: str, window: str, limit: int, amount: int) -> None:
        if limit > 0:
            result.append(
                limits.counter(
                    kind=kind,
                    scope=scope,
                    owner=owner,
                    window=window,
                    limit=limit,
                    amount=amount,
                    tenant_id=tenant,
                    now=now,
                )
            )

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


def unavailable() -> LimitsUnavailable:
    return LimitsUnavailable(
        "Limits cannot be checked right now; retry shortly.", headers={"Retry-After": "1"}
    )


async def admit(counters: list[Counter], now: float) -> Admission:
    """Reserve ``counters`` (``counters()``); raises the refusal."""
    try:
        admission = await limits.admit(counters, now)
    except limits.LimitsRedisDown as exc:
        raise unavailable() from exc
    return decide(admission, now)


# The admission and the response cache's read in one script: one round trip instead of two
# (both are Redis scripts; the read only reads). A refused request reads nothing.
# KEYS: the counters' keys, then the three namespace keys. ARGV: how many counters, the
# admission's packed argument, then the read's two arguments.
_ADMIT_AND_READ = (
    limits.ADMIT_FUNCTION
    + response_cache.READ_FUNCTION
    + """
local n = tonumber(ARGV[1])
local keys = {}
for i = 1, n do
  keys[i] = KEYS[i]
end
local admitted = admit(keys, ARGV[2])
if admitted[1] == 0 then
  return {admitted}
end
return {admitted, cache_read(KEYS[n + 1], KEYS[n + 2], KEYS[n + 3], ARGV[3], ARGV[4])}
"""
)

# The cache's read: (namespace, the cached answer or None), or why it failed.
CacheFound = tuple[str, response_cache.CachedAnswer | None] | BaseException


async def admit_and_read(
    counters: list[Counter], now: float, key: response_cache.CacheKey, *, entry: bool
) -> tuple[Admission, CacheFound]:
    """``admit`` and the Redis cache's read of ``key`` (the entry, or only its namespace), in
    one round trip. Raises the refusal; a failed read is returned (a cache outage is a bypass,
    never a failure)."""
    try:
        reply = await script_batcher().call(
            async_script(_ADMIT_AND_READ),
            [c.key for c in counters] + key.ns_keys,
            [
                len(counters),
                limits.pack(counters, now),
                *response_cache.read_args(key, entry=entry),
            ],
        )
    except Exception as exc:
        try:
            admission = limits.redis_down(counters, exc)
        except limits.LimitsRedisDown as down:
            raise unavailable() from down
        return decide(admission, now), exc
    admission = decide(limits.admission_of(counters, reply[0]), now)
    return admission, response_cache.read_result(reply[1])


def decide(admission: Admission, now: float) -> Admission:
    """The admission if it was allowed; otherwise the refusal it means, raised."""
    if admission.allowed:
        return admission
    denied = admission.denied
    assert denied is not None  # a refused admission names the counter without room
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
            code="tokens_rate_limit_exceeded",
            headers=headers,
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
