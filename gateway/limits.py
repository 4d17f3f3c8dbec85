"""Counters behind request limits, token limits and spend budgets.

Every limit is a counter over a fixed window (a minute, hour, day or calendar month, UTC) kept in
Redis, so every gateway process and replica sees the same numbers. A request is admitted by one
Lua script that checks all of its counters and, only if every one has room, adds to all of them
(requests: 1; tokens: the estimate; spend: the estimated cost). After the upstream call the token
and spend counters are corrected to the actual usage (also for streams and for failures, which
give back what they did not use), in the same windows the reservation went into.

Without Redis (the embedded default: one process) the same logic runs on an in-process store.
What happens when Redis cannot be reached is a setting: ``LLMP_LIMITS_REDIS_DOWN_REQUESTS``
(request and token rate limits, default ``open``) and ``LLMP_LIMITS_REDIS_DOWN_BUDGETS`` (spend
budgets, default ``closed``).
"""

from __future__ import annotations

import calendar
import functools
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from django.conf import settings

from gateway import metrics, write_behind
from llmplatform.redis_client import async_script, redis_configured

log = structlog.get_logger("gateway.limits")

# Kinds of counter. "requests" and "tokens" are rate limits; "spend" is a budget.
REQUESTS, TOKENS, SPEND = "requests", "tokens", "spend"
# Spend is counted in nano-dollars: integers, exact, and Lua's doubles hold 9e15 of them.
NANO = 1_000_000_000

WINDOW_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True, slots=True)
class Counter:
    kind: str  # requests | tokens | spend
    scope: str  # tenant | key | user
    window: str  # minute | hour | day | month
    limit: int  # in requests, tokens or nano-dollars; > 0
    key: str  # the Redis key, window included
    reset_at: float  # epoch seconds when the window ends
    amount: int  # what this request adds

    @property
    def is_budget(self) -> bool:
        return self.kind == SPEND


def _month_bounds(now: float) -> tuple[str, float]:
    return _month_bounds_of_day(int(now // 86400))


@functools.lru_cache(maxsize=4)
def _month_bounds_of_day(day: int) -> tuple[str, float]:
    """The month's (id, end) for a day (days since the epoch, UTC): worked out once a day,
    not for every counter of every request."""
    moment = datetime.fromtimestamp(day * 86400, UTC)
    days = calendar.monthrange(moment.year, moment.month)[1]
    end = datetime(moment.year, moment.month, days, tzinfo=UTC).timestamp() + 86400
    return f"{moment.year:04d}{moment.month:02d}", end


def window_of(window: str, now: float) -> tuple[str, float]:
    """(window id, end of the window in epoch seconds)."""
    if window == "month":
        return _month_bounds(now)
    length = WINDOW_SECONDS[window]
    index = int(now // length)
    return str(index), float((index + 1) * length)


def counter(
    *,
    kind: str,
    scope: str,
    owner: str,
    window: str,
    limit: int,
    amount: int,
    tenant_id: int,
    now: float,
) -> Counter:
    window_id, reset_at = window_of(window, now)
    # The tenant in braces: a hash tag, so a tenant's counters share a Redis Cluster slot and
    # one script can touch them all.
    key = f"llmp:lim:{{t{tenant_id}}}:{kind}:{scope}:{owner}:{window[0]}{window_id}"
    return Counter(kind, scope, window, limit, key, reset_at, amount)


@dataclass(slots=True)
class Admission:
    """The result of admitting a request: what it reserved, and what the headers say."""

    allowed: bool
    counters: list[Counter] = field(default_factory=list)
    values: list[int] = field(default_factory=list)  # counter values after this request
    denied: Counter | None = None
    degraded: bool = False  # Redis unreachable, let through by the fail-open setting

    def tightest(self, kind: str, now: float) -> tuple[int, int, float] | None:
        """(limit, remaining, seconds to reset) of the counter of ``kind`` with least room."""
        best = None
        for c, value in zip(self.counters, self.values, strict=False):
            if c.kind != kind:
                continue
            remaining = max(c.limit - value, 0)
            if best is None or remaining < best[1]:
                best = (c.limit, remaining, max(c.reset_at - now, 0.0))
        return best


# Check every counter; only if all have room, add to all. Returns {1, v1, v2, ...} (the values
# after adding) or {0, i, v} (the 1-based index of the first counter without room, its value).
# ``packed``: "limit,amount,ttl,limit,amount,ttl,..." for the keys in order (one argument: fewer
# to encode on every request). A Lua function, so a script that does more in the same round
# trip (the admit stage also reads the response cache) can call it: ``ADMIT_FUNCTION``.
ADMIT_FUNCTION = """
local function admit(keys, packed)
  local args = {}
  for value in string.gmatch(packed, '[^,]+') do
    args[#args + 1] = tonumber(value)
  end
  for i, key in ipairs(keys) do
    local current = tonumber(redis.call('GET', key) or '0')
    if current + args[i * 3 - 1] > args[i * 3 - 2] then
      return {0, i, current}
    end
  end
  local result = {1}
  for i, key in ipairs(keys) do
    local amount = args[i * 3 - 1]
    local value = redis.call('INCRBY', key, amount)
    if value == amount then
      redis.call('EXPIRE', key, args[i * 3])
    end
    result[i + 1] = value
  end
  return result
end
"""
_ADMIT = ADMIT_FUNCTION + "return admit(KEYS, ARGV[1])\n"


def pack(counters: list[Counter], now: float) -> str:
    """The admission script's argument for ``counters``."""
    return ",".join(f"{c.limit},{c.amount},{int(c.reset_at - now) + 60}" for c in counters)


def admission_of(counters: list[Counter], reply: list[int | bytes]) -> Admission:
    """The admission script's reply as an ``Admission``."""
    if int(reply[0]) == 1:
        return Admission(True, counters, [int(v) for v in reply[1:]])
    denied = counters[int(reply[1]) - 1]
    return Admission(False, [denied], [int(reply[2])], denied=denied)


class LocalStore:
    """The same semantics in one process, for the embedded default without Redis."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def _get(self, key: str, now: float) -> int:
        entry = self._values.get(key)
        if entry is None or entry[1] <= now:
            return 0
        return entry[0]

    def admit(self, counters: list[Counter], now: float) -> tuple[bool, list[int], int | None]:
        with self._lock:
            for i, c in enumerate(counters):
                current = self._get(c.key, now)
                if current + c.amount > c.limit:
                    return False, [current], i
            values = []
            for c in counters:
                value = self._get(c.key, now) + c.amount
                self._values[c.key] = (value, c.reset_at + 60)
                values.append(value)
            if len(self._values) > 200_000:
                self._values = {k: v for k, v in self._values.items() if v[1] > now}
            return True, values, None

    def correct(self, deltas: list[tuple[str, int]], now: float) -> None:
        with self._lock:
            for key, delta in deltas:
                entry = self._values.get(key)
                if entry is not None and entry[1] > now:
                    self._values[key] = (entry[0] + delta, entry[1])

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


local_store = LocalStore()


class LimitsRedisDown(Exception):
    """Redis could not be reached and the setting says to fail closed. Internal: the admit
    stage turns it into the API's 503 (``gateway.pipeline.admit.LimitsUnavailable``)."""


async def admit(counters: list[Counter], now: float | None = None) -> Admission:
    now = time.time() if now is None else now
    if not counters:
        return Admission(True)
    if not redis_configured():
        ok, values, index = local_store.admit(counters, now)
        if ok:
            return Admission(True, counters, values)
        assert index is not None  # a refusal names the counter without room
        return Admission(False, [counters[index]], values, denied=counters[index])
    try:
        script = async_script(_ADMIT)
        result = await script(keys=[c.key for c in counters], args=[pack(counters, now)])
    except Exception as exc:
        return redis_down(counters, exc)
    return admission_of(counters, result)


def redis_down(counters: list[Counter], exc: Exception) -> Admission:
    """What an admission is when Redis could not be reached: let through (degraded) or
    ``LimitsRedisDown``, as the settings say for the kinds of counter involved."""
    budgets_closed = settings.LLMP_LIMITS_REDIS_DOWN_BUDGETS == "closed"
    requests_closed = settings.LLMP_LIMITS_REDIS_DOWN_REQUESTS == "closed"
    has_budget = any(c.is_budget for c in counters)
    has_rate = any(not c.is_budget for c in counters)
    closed = (has_budget and budgets_closed) or (has_rate and requests_closed)
    metrics.record_limits_redis_down("closed" if closed else "open")
    log.error(
        "limits_redis_unavailable", fail=("closed" if closed else "open"), error=type(exc).__name__
    )
    if closed:
        raise LimitsRedisDown() from exc
    return Admission(True, degraded=True)


def _deltas(admission: Admission, actual: dict[str, int]) -> list[tuple[str, int]]:
    return [
        (c.key, actual[c.kind] - c.amount)
        for c in admission.counters
        if c.kind in actual and actual[c.kind] != c.amount
    ]


async def correct(admission: Admission, actual: dict[str, int]) -> None:
    """Replace each reservation with the actual amount (``actual`` by kind: tokens, spend)."""
    await _apply(_deltas(admission, actual))


class CorrectionBuffer:
    """Corrections made after the answer. With Redis they go through the write-behind buffer
    (``gateway.write_behind``): gathered for a few milliseconds and sent with other deferred
    writes in one round trip. A reservation is held that much longer, which errs on the safe
    side of a limit. Without Redis they apply at once to the in-process store."""

    def add(self, admission: Admission, actual: dict[str, int]) -> None:
        deltas = _deltas(admission, actual)
        if not deltas:
            return
        if redis_configured():
            write_behind.buffer.add_deltas(deltas)
        else:
            local_store.correct(deltas, time.time())

    async def flush(self) -> None:
        await write_behind.buffer.flush()


corrections = CorrectionBuffer()


async def _apply(deltas: list[tuple[str, int]]) -> None:
    if not deltas:
        return
    if not redis_configured():
        local_store.correct(deltas, time.time())
        return
    try:
        script = async_script(write_behind.CORRECT_SCRIPT)
        await script(keys=[k for k, _ in deltas], args=[d for _, d in deltas])
    except Exception as exc:
        # The reservation stands (the conservative side); it expires with its window.
        log.error("limits_correction_failed", error=type(exc).__name__)
