"""The Redis-backed circuit breaker: one state per deployment shared by every worker and
replica, changed only by atomic Lua scripts, read at most once per ``state_ttl`` per process
on the closed-state hot path, and an opening published to every process at once (see
``gateway.resilience.breaker`` for the state machine)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as aioredis
import structlog
from django.conf import settings
from redis.exceptions import RedisError

from gateway import metrics
from gateway.resilience.breaker import (
    ALLOW,
    CLOSED,
    HALF_OPEN,
    OPEN,
    OPENED,
    PROBE_RETRY_HINT,
    RECENT_FAILURES,
    BreakerAdmission,
    BreakerSnapshot,
    CircuitBreaker,
    InProcessBreaker,
    OnTransition,
    record_transition_event,
)
from gateway.resilience.policy import ResiliencePolicy

log = structlog.get_logger("gateway.breaker")

# After a failed Redis call, the in-process breaker serves this long before Redis is tried again.
REDIS_RETRY_SECONDS = 5.0

# Shared by the scripts: KEYS = the breaker's hash, its probe slot, its recent failures;
# ARGV = the policy's numbers (ms), successes counted locally since the last write, whether the
# call was the probe, and the failure's error code. Time is Redis's own (TIME), so replicas
# with skewed clocks agree. The hash holds state, opened_at, fails (consecutive) and the
# window's buckets ``r:<start>`` (requests) and ``f:<start>`` (failures).
_LUA_PRELUDE = """
local key, probe_key, recent_key = KEYS[1], KEYS[2], KEYS[3]
local threshold = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local window_ms = tonumber(ARGV[3])
local min_requests = tonumber(ARGV[4])
local recovery_ms = tonumber(ARGV[5])
local probe_ttl_ms = tonumber(ARGV[6])
local key_ttl_ms = tonumber(ARGV[7])
local flush = tonumber(ARGV[8])
local probe = ARGV[9] == '1'
local code = ARGV[10]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local bucket_ms = math.max(100, math.floor(window_ms / 6))

local function count(requests, failures)
  local start = now - (now % bucket_ms)
  if requests > 0 then redis.call('HINCRBY', key, 'r:' .. start, requests) end
  if failures > 0 then redis.call('HINCRBY', key, 'f:' .. start, failures) end
end

local function window()
  local all = redis.call('HGETALL', key)
  local requests, failures, stale = 0, 0, {}
  for i = 1, #all, 2 do
    local kind, start = string.match(all[i], '^([rf]):(%d+)$')
    if kind then
      if tonumber(start) + bucket_ms <= now - window_ms then
        stale[#stale + 1] = all[i]
      elseif kind == 'r' then
        requests = requests + tonumber(all[i + 1])
      else
        failures = failures + tonumber(all[i + 1])
      end
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  return requests, failures
end

local function clear_window()
  local names = {}
  for _, name in ipairs(redis.call('HKEYS', key)) do
    if string.match(name, '^[rf]:') then names[#names + 1] = name end
  end
  if #names > 0 then redis.call('HDEL', key, unpack(names)) end
end

local function retry_in()
  local opened = tonumber(redis.call('HGET', key, 'opened_at') or '0')
  return math.max(0, opened + recovery_ms - now)
end

local state = redis.call('HGET', key, 'state') or 'closed'
local fails = tonumber(redis.call('HGET', key, 'fails') or '0')
"""

# -> {state, fails, retry_in_ms, verdict (0 refused, 1 allowed, 2 probe), transition}
_LUA_ADMIT = (
    _LUA_PRELUDE
    + """
local transition = ''
if flush > 0 then
  count(flush, 0)
  window()
  redis.call('PEXPIRE', key, key_ttl_ms)
end
if state == 'open' then
  local wait = retry_in()
  if wait > 0 then return {state, fails, wait, 0, ''} end
  state = 'half_open'
  transition = 'half_open'
  redis.call('HSET', key, 'state', state)
  redis.call('PEXPIRE', key, key_ttl_ms)
end
if state == 'half_open' then
  if redis.call('SET', probe_key, '1', 'NX', 'PX', probe_ttl_ms) then
    return {state, fails, 0, 2, transition}
  end
  return {state, fails, PROBE_RETRY_HINT_MS, 0, transition}
end
return {state, fails, 0, 1, ''}
"""
)

_LUA_ADMIT = _LUA_ADMIT.replace("PROBE_RETRY_HINT_MS", str(int(PROBE_RETRY_HINT * 1000)))

_LUA_SUCCESS = (
    _LUA_PRELUDE
    + """
local transition = ''
count(flush + 1, 0)
if probe then
  redis.call('DEL', probe_key)
  if state ~= 'closed' then
    transition = 'closed'
    state = 'closed'
    clear_window()
    redis.call('HDEL', key, 'opened_at')
  end
  fails = 0
  redis.call('HSET', key, 'state', state, 'fails', 0)
elseif state == 'closed' then
  fails = 0
  redis.call('HSET', key, 'fails', 0)
end
window()
redis.call('PEXPIRE', key, key_ttl_ms)
local wait = 0
if state == 'open' then wait = retry_in() end
return {state, fails, wait, 1, transition}
"""
)

_LUA_FAILURE = (
    _LUA_PRELUDE
    + """
local transition = ''
redis.call('LPUSH', recent_key, now .. ' ' .. code)
redis.call('LTRIM', recent_key, 0, RECENT_MAX)
redis.call('PEXPIRE', recent_key, key_ttl_ms)
count(flush + 1, 1)
fails = redis.call('HINCRBY', key, 'fails', 1)
if probe then
  redis.call('DEL', probe_key)
  if state ~= 'open' then transition = 'opened' end
  state = 'open'
  redis.call('HSET', key, 'state', state, 'opened_at', now)
elseif state == 'closed' then
  local requests, failures = window()
  if fails >= threshold or (rate > 0 and requests >= min_requests
                            and failures >= rate * requests) then
    state = 'open'
    transition = 'opened'
    redis.call('HSET', key, 'state', state, 'opened_at', now)
  end
end
redis.call('PEXPIRE', key, key_ttl_ms)
local wait = 0
if state == 'open' then wait = retry_in() end
return {state, fails, wait, 0, transition}
""".replace("RECENT_MAX", str(RECENT_FAILURES - 1))
)


@dataclass(slots=True)
class _Seen:
    """What this process last learnt of a breaker from Redis."""

    state: str
    fails: int
    fresh_until: float
    retry_at: float


class _RedisDown(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _LoopClient:
    client: aioredis.Redis
    admit: object
    success: object
    failure: object


class RedisBreaker(CircuitBreaker):
    backend = "redis"

    def __init__(
        self,
        *,
        url: str | None = None,
        prefix: str = "llmp:breaker:",
        state_ttl: float = 1.0,
        redis_timeout: float = 0.25,
        on_transition: OnTransition | None = record_transition_event,
    ) -> None:
        super().__init__(on_transition=on_transition)
        self.url = url or settings.REDIS_URL
        self.prefix = prefix
        self.state_ttl = state_ttl
        self.redis_timeout = redis_timeout
        self.local = InProcessBreaker(on_transition=on_transition)
        self._seen: dict[str, _Seen] = {}
        self._successes: dict[str, int] = {}
        self._down_until = 0.0
        self._listener: asyncio.Task[None] | None = None
        # One client per event loop: a redis.asyncio connection belongs to the loop that
        # opened it, and Django's test client runs each request in a fresh loop.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = (
            weakref.WeakKeyDictionary()
        )

    # -- plumbing --

    def _keys(self, deployment: str) -> list[str]:
        base = f"{self.prefix}{{{deployment}}}"  # one hash slot per breaker (Redis Cluster)
        return [base, f"{base}:probe", f"{base}:recent"]

    def _opened_channel(self) -> str:
        # Pub/sub channels are not per Redis database: the URL and prefix keep platforms that
        # share one server apart.
        assert self.url is not None
        digest = hashlib.sha256(f"{self.url} {self.prefix}".encode()).hexdigest()[:12]
        return f"llmp:breaker:opened:{digest}"

    def _client(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            assert self.url is not None, "RedisBreaker needs a URL or settings.REDIS_URL"
            client = aioredis.Redis.from_url(
                self.url,
                socket_connect_timeout=self.redis_timeout,
                socket_timeout=self.redis_timeout,
            )
            entry = _LoopClient(
                client,
                client.register_script(_LUA_ADMIT),
                client.register_script(_LUA_SUCCESS),
                client.register_script(_LUA_FAILURE),
            )
            self._clients[loop] = entry
        return entry

    async def _run(
        self,
        which: str,
        deployment: str,
        policy: ResiliencePolicy,
        *,
        probe: bool = False,
        code: str = "",
    ) -> list:
        if time.monotonic() < self._down_until:
            raise _RedisDown
        flush = self._successes.pop(deployment, 0)
        args = [
            policy.failure_threshold,
            policy.failure_rate,
            int(policy.window_seconds * 1000),
            policy.min_requests,
            int(policy.recovery_seconds * 1000),
            int(policy.probe_ttl * 1000),
            int((max(policy.window_seconds, policy.recovery_seconds) * 2 + 60) * 1000),
            flush,
            int(probe),
            code,
        ]
        try:
            script = getattr(self._client(), which)
            async with asyncio.timeout(self.redis_timeout):
                result = await script(keys=self._keys(deployment), args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._went_down(exc)
            raise _RedisDown from exc
        if self._down_until:
            self._down_until = 0.0
            log.warning("breaker_redis_recovered", backend="redis")
        state, fails, wait_ms, verdict, transition = result
        state = state.decode() if isinstance(state, bytes) else state
        transition = transition.decode() if isinstance(transition, bytes) else transition
        now = time.monotonic()
        previous = self._seen.get(deployment)
        self._seen[deployment] = _Seen(
            state, int(fails), now + self.state_ttl, now + int(wait_ms) / 1000
        )
        if previous is None or previous.state != state:
            metrics.set_breaker_state(deployment, state)
        if transition == OPENED:
            await self._publish_opened(deployment)
        if transition:
            await self._transitioned(deployment, transition, code)
        return [state, int(fails), int(wait_ms) / 1000, int(verdict)]

    async def _publish_opened(self, deployment: str) -> None:
        """Tell every process (this one too) to forget the closed state it keeps for
        ``state_ttl``: before this request answers, so a client that saw it fail and tries
        another replica finds the breaker open there. Once per opening, not per request."""
        try:
            async with asyncio.timeout(self.redis_timeout):
                await self._client().client.publish(self._opened_channel(), deployment)
        except (RedisError, OSError, TimeoutError) as exc:  # they learn within state_ttl
            log.warning("breaker_publish_failed", error=type(exc).__name__)

    async def start_listening(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        assert self.url is not None
        while True:
            # Its own connection: a subscription waits for messages, and the command clients'
            # socket timeout is a quarter of a second.
            client = aioredis.Redis.from_url(
                self.url, socket_connect_timeout=1.0, health_check_interval=10
            )
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._opened_channel())
                    # Openings missed while not subscribed: read every breaker again.
                    self._seen.clear()
                    while True:
                        message = await pubsub.get_message(timeout=5.0)
                        if message is not None and message.get("type") == "message":
                            data = message["data"]
                            name = data.decode() if isinstance(data, bytes) else str(data)
                            self._seen.pop(name, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # state_ttl stays the safety net
                log.warning("breaker_subscription_lost", error=type(exc).__name__)
                await asyncio.sleep(1.0)
            finally:
                await client.aclose()

    def _went_down(self, exc: BaseException) -> None:
        if not self._down_until:
            # Loud: breakers are now per process until Redis answers again.
            log.error(
                "breaker_redis_unavailable",
                error=type(exc).__name__,
                fallback="in-process breaker",
                retry_in_seconds=REDIS_RETRY_SECONDS,
            )
        self._down_until = time.monotonic() + REDIS_RETRY_SECONDS

    # -- the interface --

    async def _admit(self, deployment: str, policy: ResiliencePolicy) -> BreakerAdmission:
        seen = self._seen.get(deployment)
        if seen is not None:
            now = time.monotonic()
            if now < seen.fresh_until:
                if seen.state == CLOSED:
                    return ALLOW
                if now < seen.retry_at:
                    return BreakerAdmission(
                        False, state=seen.state, retry_after=seen.retry_at - now
                    )
        try:
            state, _, wait, verdict = await self._run("admit", deployment, policy)
        except _RedisDown:
            return await self.local._admit(deployment, policy)
        if verdict == 1:
            return ALLOW
        if verdict == 2:
            return BreakerAdmission(True, probe=True, state=HALF_OPEN)
        return BreakerAdmission(False, state=state, retry_after=wait)

    async def record_success(
        self, deployment: str, policy: ResiliencePolicy, admission: BreakerAdmission
    ) -> None:
        seen = self._seen.get(deployment)
        if not admission.probe and (seen is None or seen.fails == 0):
            # The hot path: nothing to reset, so only count it, for the next write.
            self._successes[deployment] = self._successes.get(deployment, 0) + 1
            return
        try:
            await self._run("success", deployment, policy, probe=admission.probe)
        except _RedisDown:
            await self.local.record_success(deployment, policy, admission)

    async def record_failure(
        self, deployment: str, policy: ResiliencePolicy, admission: BreakerAdmission, code: str
    ) -> None:
        try:
            await self._run("failure", deployment, policy, probe=admission.probe, code=code)
        except _RedisDown:
            await self.local.record_failure(deployment, policy, admission, code)

    async def release(self, deployment: str, admission: BreakerAdmission) -> None:
        if not admission.probe:
            return
        await self.local.release(deployment, admission)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            client = self._client().client
            async with asyncio.timeout(self.redis_timeout):
                await client.delete(self._keys(deployment)[1])

    # -- sync, for the admin --

    def _sync(self):
        from redis import Redis

        return Redis.from_url(self.url, socket_connect_timeout=1.0, socket_timeout=1.0)

    def snapshot(self, policies: dict[str, ResiliencePolicy]) -> dict[str, BreakerSnapshot]:
        names = list(policies)
        try:
            with self._sync() as client:
                pipe = client.pipeline(transaction=False)
                pipe.time()
                for name in names:
                    key, probe_key, recent_key = self._keys(name)
                    pipe.hgetall(key)
                    pipe.exists(probe_key)
                    pipe.lrange(recent_key, 0, RECENT_FAILURES - 1)
                results = pipe.execute()
        except (RedisError, OSError) as exc:
            log.error("breaker_redis_unavailable", error=type(exc).__name__, during="snapshot")
            return self.local.snapshot(policies)
        seconds, micros = results[0]
        now_ms = seconds * 1000 + micros // 1000
        out = {}
        for index, name in enumerate(names):
            data, probing, recent = results[1 + 3 * index : 4 + 3 * index]
            out[name] = _snapshot_from_hash(
                name, policies[name], data, bool(probing), recent, now_ms, self.backend
            )
        return out

    def reset(self, deployment: str) -> None:
        key, probe_key, _ = self._keys(deployment)
        with self._sync() as client:
            client.delete(key, probe_key)
        self.local.reset(deployment)
        self._seen.pop(deployment, None)

    def clear(self) -> None:
        self.local.clear()
        self._seen.clear()
        self._successes.clear()
        self._down_until = 0.0
        with contextlib.suppress(RedisError, OSError), self._sync() as client:
            keys = list(client.scan_iter(match=f"{self.prefix}*", count=500))
            if keys:
                client.delete(*keys)


def _snapshot_from_hash(
    name: str,
    policy: ResiliencePolicy,
    data: dict,
    probing: bool,
    recent: Iterable[bytes],
    now_ms: int,
    backend: str,
) -> BreakerSnapshot:
    fields = {k.decode(): v.decode() for k, v in data.items()}
    state = fields.get("state", CLOSED)
    window_ms = policy.window_seconds * 1000
    bucket_ms = max(100, int(window_ms // 6))
    requests = failures = 0
    for name, value in fields.items():
        kind, _, start = name.partition(":")
        if kind in ("r", "f") and start.isdigit() and int(start) + bucket_ms > now_ms - window_ms:
            if kind == "r":
                requests += int(value)
            else:
                failures += int(value)
    retry_in = None
    if state == OPEN:
        opened = int(fields.get("opened_at", "0"))
        retry_in = max(0.0, (opened + policy.recovery_seconds * 1000 - now_ms) / 1000)
    failures_seen = []
    for item in recent:
        at, _, code = item.decode().partition(" ")
        failures_seen.append((datetime.fromtimestamp(int(at) / 1000, UTC), code))
    return BreakerSnapshot(
        name,
        state,
        int(fields.get("fails", "0")),
        requests,
        failures,
        retry_in,
        probing,
        tuple(failures_seen),
        backend,
    )
