"""Prometheus metrics of the gateway. With ``PROMETHEUS_MULTIPROC_DIR`` set (several uvicorn
workers), every worker writes its samples there and ``/metrics`` aggregates them."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

REQUESTS = Counter(
    "llmp_requests_total", "API requests answered", ["route", "status", "tier", "alias"]
)
LATENCY = Histogram(
    "llmp_request_duration_seconds",
    "Time to answer an API request",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM_LATENCY = Histogram(
    "llmp_upstream_duration_seconds",
    "Time spent waiting for the provider",
    ["deployment"],
    buckets=_LATENCY_BUCKETS,
)
OVERHEAD = Histogram(
    "llmp_gateway_overhead_seconds",
    "Time the gateway itself adds to a request (total minus upstream)",
    ["route"],
    buckets=_OVERHEAD_BUCKETS,
)
TOKENS = Counter("llmp_tokens_total", "Tokens metered", ["alias", "kind"])
COST = Counter("llmp_cost_usd_total", "Cost metered, in USD", ["alias", "tier"])
CACHE = Counter("llmp_cache_requests_total", "Response cache lookups", ["result"])
BREAKER_STATE = Gauge(
    "llmp_breaker_state",
    "Circuit breaker state per deployment (0 closed, 1 half-open, 2 open)",
    ["deployment"],
    multiprocess_mode="max",
)
RETRIES = Counter("llmp_upstream_retries_total", "Upstream calls retried", ["deployment"])
FALLBACKS = Counter("llmp_fallbacks_total", "Requests served by a fallback", ["alias", "reason"])

LIMITED = Counter(
    "llmp_rate_limited_total", "Requests refused by a limit or budget", ["kind", "scope", "window"]
)
LIMITS_REDIS_DOWN = Counter(
    "llmp_limits_redis_unavailable_total",
    "Admissions made while Redis was unreachable, by what the setting "
    "did (open: let through; closed: refused)",
    ["fail"],
)
CONTENT_KINDS = Counter(
    "llmp_request_content_total",
    "Requests by a kind of content they carried (text, image_url, "
    "input_audio, file, tool_calls, tool_results)",
    ["route", "kind"],
)
TOOL_CALLS = Counter("llmp_tool_calls_total", "Tool calls in replies", ["alias"])
SECURITY_EVENTS = Counter(
    "llmp_security_events_total", "Prompts or replies blocked or flagged", ["kind", "action"]
)

SCANNER_CHECKS = Counter(
    "llmp_scanner_checks_total",
    "External scanner checks by outcome (allow, flag, block, or the failure: timeout, "
    "unavailable, bad_response, not_allowed, error)",
    ["scanner", "phase", "outcome"],
)
SCANNER_LATENCY = Histogram(
    "llmp_scanner_duration_seconds",
    "Time an external scanner took to answer (or to fail)",
    ["scanner"],
    buckets=_LATENCY_BUCKETS,
)

_BREAKER_VALUES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}


def record_retry(deployment: str) -> None:
    RETRIES.labels(deployment).inc()


def record_fallback(alias: str, reason: str) -> None:
    FALLBACKS.labels(alias, reason).inc()


def set_breaker_state(deployment: str, state: str) -> None:
    BREAKER_STATE.labels(deployment).set(_BREAKER_VALUES.get(state, 0))


def record_limited(kind: str, scope: str, window: str) -> None:
    LIMITED.labels(kind, scope, window).inc()


def record_limits_redis_down(fail: str) -> None:
    LIMITS_REDIS_DOWN.labels(fail).inc()


def record_security_event(kind: str, action: str) -> None:
    SECURITY_EVENTS.labels(kind, action).inc()


def record_scanner(scanner: str, phase: str, outcome: str, seconds: float) -> None:
    # Scanner names are the officers' configuration: a bounded set, like aliases.
    _child(SCANNER_CHECKS, scanner, phase, outcome).inc()
    _child(SCANNER_LATENCY, scanner).observe(seconds)


def record_cache(result: str) -> None:
    CACHE.labels(result).inc()


# The labelled child of a metric for a tuple of label values, looked up once: ``labels()``
# validates and copies its arguments on every call, a third of ``record_request``'s time. The
# label values are bounded (routes, statuses, tiers, aliases, deployments, content kinds).
_children: dict[tuple[object, tuple[str, ...]], Any] = {}


def _child(metric: Counter | Histogram, *values: str) -> Any:
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


def record_request(
    *,
    route: str,
    status: int,
    tier: str,
    alias: str,
    seconds: float,
    overhead: float | None,
    upstream: float | None,
    deployment: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost: float,
    content_kinds: tuple[str, ...] = (),
    tool_calls: int = 0,
) -> None:
    _child(REQUESTS, route, str(status), tier, alias).inc()
    for kind in content_kinds:
        _child(CONTENT_KINDS, route, kind).inc()
    if tool_calls:
        _child(TOOL_CALLS, alias).inc(tool_calls)
    _child(LATENCY, route).observe(seconds)
    if overhead is not None:
        _child(OVERHEAD, route).observe(max(overhead, 0.0))
    if upstream is not None and deployment:
        _child(UPSTREAM_LATENCY, deployment).observe(upstream)
    if prompt_tokens:
        _child(TOKENS, alias, "prompt").inc(prompt_tokens)
    if completion_tokens:
        _child(TOKENS, alias, "completion").inc(completion_tokens)
    if cost:
        _child(COST, alias, tier).inc(cost)
