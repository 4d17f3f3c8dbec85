"""Resilience of upstream calls: timeouts, retries, circuit breakers (per provider deployment),
used by ``gateway.pipeline.dispatch`` to walk an alias's fallback chain.

- ``policy``: the numbers (``ResiliencePolicy``), one frozen snapshot per routed target.
- ``retry``: tenacity retries with backoff, jitter and ``Retry-After``, within a deadline.
- ``breaker``: the breaker state machine, shared through Redis (or in-process without it).
- ``services``: the officer's actions on a breaker (force open / closed, reset), audited.
"""
