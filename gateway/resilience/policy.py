"""How hard the gateway tries one provider deployment: timeouts, retries and the breaker's
numbers. A ``ResiliencePolicy`` is built once per routed target when the routing table is
rebuilt (from the deployment's row, then the alias's overrides), so the hot path reads plain
attributes.

Where each timeout applies:

- ``connect_timeout`` / ``read_timeout`` belong to the provider's pooled HTTP client (the
  ``Provider`` row): connecting, and the longest silence between two reads of a response.
- ``total_timeout`` bounds everything spent on one deployment for one request, retries and
  backoff included; for a stream, everything until its first delta.
- ``first_token_timeout`` (streams): from sending the request to the first delta, per attempt.
- ``idle_timeout`` (streams): the longest gap between two deltas once the stream has started.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

AUTO, FORCED_OPEN, FORCED_CLOSED = "auto", "forced_open", "forced_closed"
OVERRIDES = (AUTO, FORCED_OPEN, FORCED_CLOSED)
# What clients get in degraded mode when every deployment failed (``ModelAlias``'s default):
# a fixed reply, marked degraded, instead of an error.
DEFAULT_DEGRADED_MESSAGE = "I'm temporarily unavailable. Please try again later."


@dataclass(frozen=True, slots=True)
class ResiliencePolicy:
    # The provider's HTTP client (informational here: the adapter enforces them).
    connect_timeout: float = 5.0
    read_timeout: float = 120.0
    # Enforced by dispatch.
    total_timeout: float = 180.0
    first_token_timeout: float = 60.0
    idle_timeout: float = 60.0
    # Retries of retryable failures (connect errors, 429, 5xx, timeouts).
    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    # A Retry-After longer than this is not waited for: the next deployment is tried instead.
    retry_after_max: float = 10.0
    # The breaker: open after ``failure_threshold`` consecutive failures, or when at least
    # ``failure_rate`` of the last ``window_seconds``' requests failed (once there were
    # ``min_requests``; a rate of 0 turns that rule off); probe again after
    # ``recovery_seconds``.
    failure_threshold: int = 5
    failure_rate: float = 0.5
    window_seconds: float = 60.0
    min_requests: int = 20
    recovery_seconds: float = 60.0
    # An officer's override: auto | forced_open | forced_closed.
    override: str = AUTO

    def with_overrides(self, overrides: Mapping[str, Any]) -> ResiliencePolicy:
        """This policy with an alias's overrides applied. Invalid entries (which validation
        keeps out of the database) are ignored rather than breaking the routing table."""
        if not isinstance(overrides, Mapping) or not overrides:
            return self
        changes = {
            key: LIMITS[key][0](value)
            for key, value in overrides.items()
            if key in ALIAS_KEYS and number_error(key, value) is None
        }
        return dataclasses.replace(self, **changes)

    @property
    def probe_ttl(self) -> float:
        """How long a half-open probe may hold its slot before another may be admitted."""
        return self.total_timeout + 1.0


DEFAULTS = ResiliencePolicy()

# (type, minimum, maximum) of every number an officer can set, for the model fields' validators,
# the configuration file and the alias overrides alike.
LIMITS: dict[str, tuple[type, float, float]] = {
    "total_timeout": (float, 0.1, 3600),
    "first_token_timeout": (float, 0.1, 3600),
    "idle_timeout": (float, 0.1, 3600),
    "max_attempts": (int, 1, 10),
    "backoff_base": (float, 0, 60),
    "backoff_max": (float, 0, 600),
    "retry_after_max": (float, 0, 600),
    "failure_threshold": (int, 1, 1000),
    "failure_rate": (float, 0, 1),
    "window_seconds": (float, 1, 86400),
    "min_requests": (int, 1, 1_000_000),
    "recovery_seconds": (float, 0.1, 86400),
}

# What an alias may override: how one request is treated. The breaker's numbers stay the
# deployment's, since its state is shared by every alias that uses the deployment.
ALIAS_KEYS = (
    "total_timeout",
    "first_token_timeout",
    "idle_timeout",
    "max_attempts",
    "backoff_base",
    "backoff_max",
    "retry_after_max",
)


def number_error(key: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for ``key``, or None."""
    kind, low, high = LIMITS[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number" if kind is float else "must be an integer"
    if kind is int and not isinstance(value, int):
        return "must be an integer"
    if not low <= value <= high:
        return f"must be between {low:g} and {high:g}"
    return None


def override_errors(value: Any) -> list[str]:
    """Problems with an alias's resilience overrides (a mapping of ``ALIAS_KEYS``)."""
    if value in (None, {}):
        return []
    if not isinstance(value, dict):
        return ["must be a mapping"]
    errors = []
    for key, item in value.items():
        if key not in ALIAS_KEYS:
            errors.append(f"{key}: unknown setting (allowed: {', '.join(ALIAS_KEYS)})")
            continue
        problem = number_error(key, item)
        if problem:
            errors.append(f"{key}: {problem}")
    return errors


def validate_overrides(value: Any) -> None:
    """Model field validator for ``ModelAlias.resilience``."""
    errors = override_errors(value)
    if errors:
        raise ValidationError(errors)


def policy_for(
    deployment: Any,
    *,
    connect_timeout: float,
    read_timeout: float,
    alias_overrides: Mapping[str, Any] | None = None,
) -> ResiliencePolicy:
    """The policy of a ``ProviderDeployment`` row (and its provider's client timeouts), with an
    alias's overrides on top."""
    policy = ResiliencePolicy(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        total_timeout=deployment.total_timeout,
        first_token_timeout=deployment.first_token_timeout,
        idle_timeout=deployment.idle_timeout,
        max_attempts=deployment.max_attempts,
        backoff_base=deployment.backoff_base,
        backoff_max=deployment.backoff_max,
        retry_after_max=deployment.retry_after_max,
        failure_threshold=deployment.breaker_failure_threshold,
        failure_rate=deployment.breaker_failure_rate,
        window_seconds=deployment.breaker_window_seconds,
        min_requests=deployment.breaker_min_requests,
        recovery_seconds=deployment.breaker_recovery_seconds,
        override=deployment.breaker_override,
    )
    return policy.with_overrides(alias_overrides or {})
