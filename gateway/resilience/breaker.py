"""Circuit breakers, one per provider deployment: closed, open, half-open.

- **closed**: calls go through. Failures are counted; ``failure_threshold`` consecutive ones,
  or a failure rate of at least ``failure_rate`` over the last ``window_seconds`` (once there
  were ``min_requests``), open the breaker.
- **open**: no call is made (the caller moves on at once) until ``recovery_seconds`` passed.
- **half-open**: exactly one request at a time is let through as a probe (a slot taken with
  ``SET NX`` and a TTL, so a probe whose process died frees it). Its success closes the
  breaker, its failure opens it again.

With ``REDIS_URL`` set the state is shared by every worker and replica
(``redis_breaker.RedisBreaker``, atomic Lua scripts); without it each process has its own
(``InProcessBreaker``, here).

The closed-state hot path costs no Redis round trip: each process keeps the state it last read
for ``state_ttl`` (1 s) and counts its successes locally, adding them to the shared window on
its next read. Failures are written at once. The process that opens a breaker publishes it
(Redis pub/sub, once per opening), and every process drops what it kept of that breaker, so
its next request reads the open state instead of calling the failing deployment; without the
subscription (lost, reconnecting) another process learns of it within a second. A success
resets the shared count of consecutive failures at once only when there are some. If Redis
cannot be reached the in-process breaker takes over (logged loudly) and Redis is tried again a
few seconds later: the breaker never fails a request.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from django.conf import settings

from gateway import metrics
from gateway.resilience.policy import FORCED_CLOSED, FORCED_OPEN, ResiliencePolicy

log = structlog.get_logger("gateway.breaker")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# Transitions, as recorded in BreakerEvent.kind.
OPENED = "opened"
RECENT_FAILURES = 20
# A refused request's Retry-After hint while a half-open probe is under way.
PROBE_RETRY_HINT = 1.0

OnTransition = Callable[[str, str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class BreakerAdmission:
    """May a call to the deployment be made now? ``probe`` marks the half-open probe, whose
    outcome decides the breaker; ``retry_after`` (when refused) is when a probe may go."""

    allowed: bool
    probe: bool = False
    state: str = CLOSED
    retry_after: float | None = None


ALLOW = BreakerAdmission(True)


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker as the admin shows it."""

    deployment: str
    state: str
    consecutive_failures: int = 0
    window_requests: int = 0
    window_failures: int = 0
    retry_in: float | None = None
    probe_in_flight: bool = False
    recent_failures: tuple[tuple[datetime, str], ...] = ()
    backend: str = "process"


async def record_transition_event(deployment: str, kind: str, error_code: str) -> None:
    """Default ``on_transition``: a ``BreakerEvent`` row (rare: state changes only)."""
    from gateway.models import BreakerEvent

    try:
        await BreakerEvent.objects.acreate(
            deployment=deployment, kind=kind, error_code=error_code[:64]
        )
    except Exception as exc:  # a lost history row must not fail the request
        log.warning(
            "breaker_event_not_saved", deployment=deployment, kind=kind, error=type(exc).__name__
        )


class CircuitBreaker(ABC):
    backend = "process"

    def __init__(self, *, on_transition: OnTransition | None = record_transition_event) -> None:
        self.on_transition = on_transition

    async def start_listening(self) -> None:  # noqa: B027 - optional: only shared stores listen
        """Follow the other processes' breakers (a store shared between processes only)."""

    async def admit(self, deployment: str, policy: ResiliencePolicy) -> BreakerAdmission:
        if policy.override == FORCED_OPEN:
            return BreakerAdmission(False, state=FORCED_OPEN)
        if policy.override == FORCED_CLOSED:
            return ALLOW
        return await self._admit(deployment, policy)

    @abstractmethod
    async def _admit(self, deployment: str, policy: ResiliencePolicy) -> BreakerAdmission: ...

    @abstractmethod
    async def record_success(
        self, deployment: str, policy: ResiliencePolicy, admission: BreakerAdmission
    ) -> None: ...

    @abstractmethod
    async def record_failure(
        self, deployment: str, policy: ResiliencePolicy, admission: BreakerAdmission, code: str
    ) -> None: ...

    @abstractmethod
    async def release(self, deployment: str, admission: BreakerAdmission) -> None:
        """A call ended without a verdict on the deployment (cancelled, or the request's own
        fault): give a probe's slot back."""

    @abstractmethod
    def snapshot(self, policies: dict[str, ResiliencePolicy]) -> dict[str, BreakerSnapshot]:
        """Current states (sync, for the admin)."""

    @abstractmethod
    def reset(self, deployment: str) -> None:
        """Back to closed with no counts (sync, for the officer's action)."""

    @abstractmethod
    def clear(self) -> None:
        """Forget every breaker (tests)."""

    async def _transitioned(self, deployment: str, kind: str, error_code: str = "") -> None:
        state = OPEN if kind == OPENED else kind
        metrics.set_breaker_state(deployment, state)
        logger = log.warning if kind == OPENED else log.info
        logger("breaker_transition", deployment=deployment, to=state, error_code=error_code)
        if self.on_transition is not None:
            await self.on_transition(deployment, kind, error_code)


# ---------------------------------------------------------------------------------------------
# In-process


@dataclass(slots=True)
class _Circuit:
    state: str = CLOSED
    opened_at: float = 0.0
    fails: int = 0
    probe_until: float = 0.0
    # bucket start -> [requests, failures]
    buckets: dict[float, list[int]] = field(default_factory=dict)
    recent: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=RECENT_FAILURES))

    def count(self, now: float, policy: ResiliencePolicy, failed: bool) -> None:
        size = _bucket_seconds(policy)
        bucket = self.buckets.setdefault(now - now % size, [0, 0])
        bucket[0] += 1
        bucket[1] += failed

    def window(self, now: float, policy: ResiliencePolicy) -> tuple[int, int]:
        size = _bucket_seconds(policy)
        for start in [s for s in self.buckets if s + size <= now - policy.window_seconds]:
            del self.buckets[start]
        return (sum(b[0] for b in self.buckets.values()), sum(b[1] for b in self.buckets.values()))


def _bucket_seconds(policy: ResiliencePolicy) -> float:
    # Six buckets make the window slide in sixths.
    return max(0.1, policy.window_seconds / 6)


class InProcessBreaker(CircuitBreaker):
    """One process's breakers, in memory (thread-safe: the admin reads them from a thread)."""

    backend = "process"

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: OnTransition | None = record_transition_event,
    ) -> None:
        super().__init__(on_transition=on_transition)
        self._clock = clock
        self._lock = threading.Lock()
        self._circuits: dict[str, _Circuit] = {}

    async def _admit(self, deployment: str, policy: ResiliencePolicy) -> BreakerAdmission:
        circuit = self._circuits.get(deployment)
        if circuit is None or circuit.state == CLOSED:
            return ALLOW
        transition = None
        with self._lock:
            now = self._clock()
            if circuit.state == OPEN:
                wait = circuit.opened_at + policy.recovery_seconds - now
                if wait > 0:
                    return BreakerAdmission(False, state=OPEN, retry_after=wait)
                circuit.state = transition = HALF_OPEN
            if circuit.state == HALF_OPEN:
                if circuit.probe_until <= now:
                    circuit.probe_until = now + policy.probe_ttl
                    admission = BreakerAdmission(True, probe=True, state=HALF_OPEN)
                else:
                    admission = BreakerAdmission(
                        False, state=HALF_OPEN, retry_after=PROBE_RETRY_HINT
                    )
            else:
                admission = ALLOW
        if transition:
            await self._transitioned(deployment, transition)
        return admission

    def _circuit(self, deployment: str) -> _Circuit:
        circuit = self._circuits.get(deployment)
        if circuit is None:
            circuit = self._circuits.setdefault(deployment, _Circuit())
        return circuit

    async def record_success(
        self, deployment: str, policy: ResiliencePolicy, admission: BreakerAdmission
    ) -> None:
        transition = None
        with self._lock:
            now = self._clock()
            circuit = self._circuit(deployment)
            circuit.count(now, policy, failed=False)
            if admission.probe:
                circuit.probe_until = 0.0
                if circuit.state != CLOSED:
                    circuit.state = transition = CLOSED
                    circuit.buckets.clear()
                    circuit.fails = 0
            elif circuit.state == CLOSED:
                circuit.fails = 0
        if transition:
            await self._transitioned(deployment, transition)

    async def record_failure(
        self, deployment: str, policy: ResiliencePolicy, admission: BreakerAdmission, code: str
    ) -> None:
        transition = None
        with self._lock:
            now = self._clock()
            circuit = self._circuit(deployment)
            circuit.recent.appendleft((time.time(), code))
            circuit.count(now, policy, failed=True)
            circuit.fails += 1
            if admission.probe:
                circuit.probe_until = 0.0
                if circuit.state != OPEN:
                    transition = OPENED
                circuit.state, circuit.opened_at = OPEN, now
            elif circuit.state == CLOSED:
                requests, failures = circuit.window(now, policy)
                if _should_open(circuit.fails, requests, failures, policy):
                    circuit.state, circuit.opened_at, transition = OPEN, now, OPENED
        if transition:
            await self._transitioned(deployment, transition, code)

    async def release(self, deployment: str, admission: BreakerAdmission) -> None:
        if admission.probe:
            with self._lock:
                self._circuit(deployment).probe_until = 0.0

    def snapshot(self, policies: dict[str, ResiliencePolicy]) -> dict[str, BreakerSnapshot]:
        out = {}
        with self._lock:
            now = self._clock()
            for name, policy in policies.items():
                circuit = self._circuits.get(name)
                if circuit is None:
                    out[name] = BreakerSnapshot(name, CLOSED, backend=self.backend)
                    continue
                requests, failures = circuit.window(now, policy)
                retry_in = None
                if circuit.state == OPEN:
                    retry_in = max(0.0, circuit.opened_at + policy.recovery_seconds - now)
                out[name] = BreakerSnapshot(
                    name,
                    circuit.state,
                    circuit.fails,
                    requests,
                    failures,
                    retry_in,
                    probe_in_flight=circuit.probe_until > now,
                    recent_failures=tuple(
                        (datetime.fromtimestamp(at, UTC), code) for at, code in circuit.recent
                    ),
                    backend=self.backend,
                )
        return out

    def reset(self, deployment: str) -> None:
        with self._lock:
            circuit = self._circuits.get(deployment)
            if circuit is not None:
                # The recent failures stay: they are history, not state.
                recent = circuit.recent
                self._circuits[deployment] = _Circuit(recent=recent)

    def clear(self) -> None:
        with self._lock:
            self._circuits.clear()


def _should_open(fails: int, requests: int, failures: int, policy: ResiliencePolicy) -> bool:
    if fails >= policy.failure_threshold:
        return True
    return (
        policy.failure_rate > 0
        and requests >= policy.min_requests
        and failures >= policy.failure_rate * requests
    )


# ---------------------------------------------------------------------------------------------
# The process's breaker store

_store: CircuitBreaker | None = None
_store_lock = threading.Lock()


def breaker_store() -> CircuitBreaker:
    """Redis-backed when ``REDIS_URL`` is set, else in-process; built on first use."""
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                if settings.REDIS_URL:
                    from gateway.resilience.redis_breaker import RedisBreaker

                    _store = RedisBreaker()
                else:
                    _store = InProcessBreaker()
    return _store


def set_breaker_store(store: CircuitBreaker | None) -> None:
    """Replace the process's store (tests); None builds it again from the settings."""
    global _store
    _store = store
