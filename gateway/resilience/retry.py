"""Retries of one deployment's calls, with tenacity: exponential backoff with jitter, never
sooner than the upstream's ``Retry-After``, only for retryable failures, and never past the
deployment's total timeout.

A ``Retry-After`` longer than the policy's ``retry_after_max`` stops the retries: waiting that
long would hold the client, and the next deployment of the chain may answer now.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tenacity import RetryCallState, retry_if_exception, wait_exponential_jitter

from gateway.providers.base import UpstreamError
from gateway.resilience.policy import ResiliencePolicy


def is_retryable(exc: BaseException) -> bool:
    """Connect errors, timeouts, 429 and 5xx (the adapters mark them ``retryable``)."""
    return isinstance(exc, UpstreamError) and exc.retryable


def _retry_after(state: RetryCallState) -> float | None:
    exc = state.outcome.exception() if state.outcome is not None else None
    return getattr(exc, "retry_after", None)


class BackoffWait:
    """``base * 2**(n-1)`` plus up to ``base`` of jitter, at most ``backoff_max``; at least the
    upstream's Retry-After."""

    def __init__(self, policy: ResiliencePolicy) -> None:
        self.policy = policy
        self.backoff = (
            wait_exponential_jitter(
                multiplier=policy.backoff_base, max=policy.backoff_max, jitter=policy.backoff_base
            )
            if policy.backoff_base > 0
            else None
        )

    def __call__(self, state: RetryCallState) -> float:
        wait = self.backoff(state) if self.backoff is not None else 0.0
        retry_after = _retry_after(state)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.policy.retry_after_max))
        return wait


class StopRetrying:
    """Stop after ``max_attempts`` calls, when the upstream asks for a longer wait than we
    accept, or when the next attempt could not start before the deadline."""

    def __init__(
        self,
        policy: ResiliencePolicy,
        *,
        max_attempts: int,
        deadline: float,
        clock: Callable[[], float],
    ) -> None:
        self.policy = policy
        self.max_attempts = max_attempts
        self.deadline = deadline
        self.clock = clock

    def __call__(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.max_attempts:
            return True
        retry_after = _retry_after(state)
        if retry_after is not None and retry_after > self.policy.retry_after_max:
            return True
        return self.clock() + state.upcoming_sleep >= self.deadline


def retry_policy(
    policy: ResiliencePolicy,
    *,
    deadline: float,
    clock: Callable[[], float],
    max_attempts: int,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.AsyncRetrying``."""
    return {
        "retry": retry_if_exception(is_retryable),
        "wait": BackoffWait(policy),
        "stop": StopRetrying(policy, max_attempts=max_attempts, deadline=deadline, clock=clock),
        "before_sleep": before_sleep,
        "reraise": True,
    }
