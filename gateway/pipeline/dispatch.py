"""Stage "dispatch": call the routed deployment, and when it fails, the alias's fallbacks.

For each deployment of the plan, in order (the routed one first):

1. its circuit breaker is asked; an open one is skipped at once, costing no upstream wait;
2. the call is made with the deployment's timeouts, and retried with backoff and jitter
   (honouring ``Retry-After``) on retryable failures (connect errors, 429, 5xx, timeouts),
   all within the deployment's total timeout; a half-open breaker's probe is not retried;
3. a failure that is the deployment's (not a refusal of the request itself, like a 400) moves
   on to the next deployment.

When every deployment failed or was skipped: the plan's cached answer for the same request if
there is one, else the alias's degraded reply, else an error: the last failure's (502/503/504),
or 503 ``circuit_open`` with ``Retry-After`` when no deployment could even be tried.

A stream may be retried or moved to a fallback only until its first delta arrives: the gateway
waits for that delta before it sends the response headers. After it, a failure ends the stream
(``relay`` in the views sends an error event).

Provider failures become client errors with OpenAI's shape: 502 for a bad upstream answer, 503
when it cannot be reached or is overloaded, 504 on a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypedDict, TypeVar, cast

import structlog
from opentelemetry import trace
from tenacity import AsyncRetrying, RetryCallState

from gateway import metrics
from gateway.errors import ApiError, InvalidRequest, UpstreamFailure
from gateway.pipeline.output import as_deltas
from gateway.pipeline.route import Degraded, RoutePlan, Target
from gateway.providers.base import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    EmbeddingRequest,
    EmbeddingResult,
    UnsupportedByProvider,
    UpstreamAuthError,
    UpstreamError,
    UpstreamTimeout,
    Usage,
)
from gateway.providers.registry import get_adapter
from gateway.resilience.breaker import BreakerAdmission, CircuitBreaker, breaker_store
from gateway.resilience.retry import retry_policy
from llmplatform import tracing

log = structlog.get_logger("gateway.dispatch")

UPSTREAM, CACHE, DEGRADED = "upstream", "cache", "degraded"
BREAKER_OPEN = "breaker_open"
# Upstream answers that refuse this request (too long, invalid...): another deployment would
# likely refuse it too, and the deployment is healthy, so neither fallback nor breaker count.
REQUEST_FAULT_STATUSES = frozenset({400, 413, 422})


# What a plan sends (ChatRequest, EmbeddingRequest), what it answers with (ChatResult,
# EmbeddingResult), and what one upstream call returns (a result, or a stream's first delta).
RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")
AnswerT = TypeVar("AnswerT")
_T = TypeVar("_T")


# Retry-After for a 503 whose upstream gave no hint (it could not be reached at all): a model
# server that is restarting is usually back within seconds.
UNAVAILABLE_RETRY_AFTER = 2


def as_api_error(exc: UpstreamError) -> ApiError:
    if isinstance(exc, UnsupportedByProvider):
        # The gateway's own refusal, made before any call: its message names the part and the
        # reason, never the provider.
        return InvalidRequest(exc.message, param=exc.param, code=exc.code)
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
    elif exc.status == 503:
        headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER)
    # The client learns what kind of failure it was, never which provider, deployment or
    # secret reference was involved: that detail goes to the log, under the request id.
    log.warning(
        "upstream_failed",
        error_code=exc.code,
        upstream_status=exc.upstream_status,
        detail=exc.message,
    )
    message = PUBLIC_MESSAGES.get(exc.code, "The model's provider failed.")
    if exc.upstream_code and exc.upstream_status in REQUEST_FAULT_STATUSES:
        message += f" The provider's error code: {exc.upstream_code}."
    return UpstreamFailure(message, code=exc.code, status=exc.status, headers=headers)


PUBLIC_MESSAGES = {
    "upstream_timeout": "The model did not answer in time.",
    "upstream_unavailable": "The model is unavailable right now; retry shortly.",
    "upstream_server_error": "The model's provider failed.",
    "upstream_bad_response": "The model's provider refused the request or gave an answer the "
    "gateway could not read.",
    "upstream_auth_failed": "The gateway could not authenticate with the model's provider; "
    "an administrator has to fix its configuration.",
}


class CircuitOpen(UpstreamFailure):
    """Every deployment of the chain is refused by its breaker: no upstream call was made."""

    status = 503
    code = "circuit_open"


def is_deployment_fault(exc: UpstreamError) -> bool:
    """Whether a failure says something about the deployment (counted by its breaker, and a
    reason to try the next one) rather than about this request."""
    if exc.retryable or isinstance(exc, UpstreamAuthError):
        return True
    return exc.upstream_status not in REQUEST_FAULT_STATUSES


# ---------------------------------------------------------------------------------------------
# The plan and its outcome


@dataclass(frozen=True, slots=True)
class DispatchPlan(Generic[RequestT, ResultT]):
    """What to try, in order, and what to fall back on.

    ``request_for`` builds the upstream request for a target (model ids differ between
    deployments); ``cached_answer`` returns a stored answer to the same request, if any, and
    is only called when every deployment failed.
    """

    alias: str
    targets: tuple[Target, ...]
    request_for: Callable[[Target], RequestT]
    cached_answer: Callable[[], Awaitable[ResultT | None]] | None = None
    degraded: Degraded = field(default_factory=Degraded)
    breaker: CircuitBreaker | None = None  # None: the process's store

    @classmethod
    def from_route(
        cls,
        route: RoutePlan,
        *,
        request_for: Callable[[Target], RequestT],
        cached_answer: Callable[[], Awaitable[ResultT | None]] | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> DispatchPlan[RequestT, ResultT]:
        return cls(route.alias, route.targets, request_for, cached_answer, route.degraded, breaker)


@dataclass(slots=True)
class Outcome(Generic[RequestT]):
    """Who answered and how. ``target`` is the deployment that answered (None when the answer
    came from the cache or is the degraded reply); ``attempts`` counts upstream calls made,
    retries and fallbacks included; ``fallback_reason`` says why the routed deployment did
    not answer (its error code, or ``breaker_open``), empty when it did; ``request`` is what
    was sent to ``target`` (or would have been sent to the routed one)."""

    target: Target | None
    attempts: int
    request: RequestT
    source: str = UPSTREAM
    fallback_reason: str = ""

    @property
    def degraded(self) -> bool:
        return self.source == DEGRADED

    @property
    def deployment(self) -> str:
        """For the ``x-llmp-deployment`` header: the deployment, ``cache`` or ``degraded``."""
        return self.target.deployment if self.target is not None else self.source


@dataclass(slots=True)
class Served(Outcome[RequestT], Generic[RequestT, ResultT]):
    result: ResultT = field(kw_only=True)


@dataclass(slots=True)
class StreamServed(Outcome[ChatRequest]):
    """``first`` is the first delta (already received); ``deltas`` the rest, each awaited
    within the idle timeout."""

    first: ChatDelta = field(default_factory=ChatDelta)
    deltas: AsyncIterator[ChatDelta] = field(default_factory=lambda: _no_deltas())


async def _no_deltas() -> AsyncIterator[ChatDelta]:
    return
    yield  # an async generator that yields nothing


# ---------------------------------------------------------------------------------------------
# Walking the chain


class _Refused(Exception):
    """The breaker refused a call (before the first attempt or between retries)."""

    def __init__(self, admission: BreakerAdmission) -> None:
        self.admission = admission


class _OutcomeFields(TypedDict, Generic[RequestT]):
    """The fields of an ``Outcome``, as a walk knows them."""

    target: Target | None
    attempts: int
    request: RequestT
    source: str
    fallback_reason: str


@dataclass(slots=True)
class _Walk(Generic[RequestT, ResultT]):
    plan: DispatchPlan[RequestT, ResultT]
    breaker: CircuitBreaker
    attempts: int = 0
    reason: str = ""
    last_error: UpstreamError | None = None
    retry_after: float | None = None
    requests: dict[int, RequestT] = field(default_factory=dict)

    def request(self, index: int) -> RequestT:
        if index not in self.requests:
            self.requests[index] = self.plan.request_for(self.plan.targets[index])
        return self.requests[index]

    def outcome_fields(self, index: int | None, source: str = UPSTREAM) -> _OutcomeFields[RequestT]:
        target = self.plan.targets[index] if index is not None else None
        return {
            "target": target,
            "attempts": self.attempts,
            "request": self.request(index or 0),
            "source": source,
            "fallback_reason": self.reason if index != 0 else "",
        }


# One upstream call: (target, its request, seconds left of its total timeout) -> its answer.
Call = Callable[[Target, RequestT, float], Awaitable[AnswerT]]


async def _through_chain(
    plan: DispatchPlan[RequestT, ResultT], call: Call[RequestT, AnswerT]
) -> tuple[_Walk[RequestT, ResultT], int | None, AnswerT | None]:
    """Try each target in order; (walk, index of the target that answered, its answer), or
    (walk, None, None) when none did."""
    if not plan.targets:
        raise ValueError("a dispatch plan needs at least one target")
    walk = _Walk(plan, plan.breaker or breaker_store())
    for index, target in enumerate(plan.targets):
        try:
            answer = await _call_with_retries(walk, target, walk.request(index), call)
        except _Refused as refused:
            wait = refused.admission.retry_after
            if wait is not None:
                walk.retry_after = wait if walk.retry_after is None else min(walk.retry_after, wait)
            walk.reason = walk.reason or (walk.last_error.code if walk.last_error else BREAKER_OPEN)
            continue
        except UpstreamError as exc:
            if not is_deployment_fault(exc):
                raise as_api_error(exc) from exc
            walk.last_error = exc
            walk.reason = walk.reason or exc.code
            log.warning(
                "deployment_failed",
                alias=plan.alias,
                deployment=target.deployment,
                error_code=exc.code,
                next=_next_name(plan, index),
            )
            continue
        if index > 0:
            metrics.record_fallback(plan.alias, walk.reason)
        return walk, index, answer
    return walk, None, None


def _next_name(plan: DispatchPlan[RequestT, ResultT], index: int) -> str:
    return plan.targets[index + 1].deployment if index + 1 < len(plan.targets) else "none"


async def _call_with_retries(
    walk: _Walk[RequestT, ResultT],
    target: Target,
    request: RequestT,
    call: Call[RequestT, AnswerT],
) -> AnswerT:
    policy, breaker, name = target.policy, walk.breaker, target.deployment
    loop = asyncio.get_running_loop()
    deadline = loop.time() + policy.total_timeout
    admission = await breaker.admit(name, policy)
    if not admission.allowed:
        raise _Refused(admission)
    retrying = AsyncRetrying(
        **retry_policy(
            policy,
            deadline=deadline,
            clock=loop.time,
            max_attempts=1 if admission.probe else policy.max_attempts,
            before_sleep=lambda state: _before_retry(state, name),
        )
    )
    async for attempt in retrying:
        with attempt:
            if attempt.retry_state.attempt_number > 1:
                admission = await breaker.admit(name, policy)
                if not admission.allowed:
                    raise _Refused(admission)  # not retryable: ends the loop
            walk.attempts += 1
            try:
                if tracing.enabled and tracing.recording():
                    answer = await _traced(call, target, request, deadline - loop.time())
                else:
                    answer = await call(target, request, deadline - loop.time())
            except UpstreamError as exc:
                if is_deployment_fault(exc):
                    await breaker.record_failure(name, policy, admission, exc.code)
                else:
                    await breaker.release(name, admission)
                walk.last_error = exc
                raise
            except BaseException:
                await breaker.release(name, admission)
                raise
            await breaker.record_success(name, policy, admission)
            return answer
    raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover


async def _traced(
    call: Call[RequestT, AnswerT], target: Target, request: RequestT, budget: float
) -> AnswerT:
    """One upstream call inside its client span (current while the request is sent, so the
    provider gets its ``traceparent``). A stream's span ends with the stream."""
    span = tracing.upstream_span(
        operation="embeddings" if isinstance(request, EmbeddingRequest) else "chat",
        model=getattr(request, "model", ""),
        provider_kind=target.provider.kind,
        base_url=target.provider.base_url,
        deployment=target.deployment,
    )
    try:
        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            answer = await call(target, request, budget)
    except BaseException as exc:
        tracing.end_upstream_span(span, error=exc)
        raise
    if isinstance(answer, ChatResult):
        usage = answer.usage
        reported = usage.prompt_tokens or usage.completion_tokens
        tracing.end_upstream_span(
            span,
            response_model=answer.upstream_model,
            input_tokens=usage.prompt_tokens if reported else None,
            output_tokens=usage.completion_tokens if reported else None,
            finish_reasons=[choice.finish_reason for choice in answer.choices],
        )
    elif isinstance(answer, EmbeddingResult):
        tracing.end_upstream_span(
            span,
            response_model=answer.upstream_model,
            input_tokens=answer.usage.prompt_tokens or None,
        )
    elif isinstance(answer, tuple):  # a stream's first delta and the rest
        first, deltas = answer
        return cast(AnswerT, (first, _traced_deltas(first, deltas, span)))
    else:  # pragma: no cover - every call answers with one of the above
        tracing.end_upstream_span(span)
    return answer


async def _traced_deltas(
    first: ChatDelta, deltas: AsyncIterator[ChatDelta], span: trace.Span
) -> AsyncIterator[ChatDelta]:
    """The rest of a stream, its usage and finish reasons noted on the upstream call's span,
    which ends with it (the span is not made current: it spans yields)."""
    usage = first.usage
    reasons = {first.index: first.finish_reason} if first.finish_reason else {}
    error: BaseException | None = None
    try:
        async for delta in deltas:
            if delta.usage is not None:
                usage = delta.usage
            if delta.finish_reason:
                reasons[delta.index] = delta.finish_reason
            yield delta
    except BaseException as exc:
        error = exc
        raise
    finally:
        await _close(deltas)
        tracing.end_upstream_span(
            span,
            input_tokens=usage.prompt_tokens if usage is not None else None,
            output_tokens=usage.completion_tokens if usage is not None else None,
            finish_reasons=[reasons[index] for index in sorted(reasons)],
            error=error,
        )


def _before_retry(state: RetryCallState, deployment: str) -> None:
    metrics.record_retry(deployment)
    exc = state.outcome.exception() if state.outcome else None
    log.info(
        "upstream_retry",
        deployment=deployment,
        attempt=state.attempt_number + 1,
        wait_seconds=round(state.upcoming_sleep, 3),
        error_code=getattr(exc, "code", ""),
    )


async def _after_chain(
    walk: _Walk[RequestT, ResultT], *, degraded_ok: bool = True
) -> tuple[str, ResultT | ChatResult]:
    """Every deployment failed: the cached answer or the degraded reply, or raise."""
    plan = walk.plan
    if plan.cached_answer is not None:
        try:
            cached = await plan.cached_answer()
        except Exception:  # a cache outage must not turn a fallback into a failure
            log.warning("fallback_cache_failed", alias=plan.alias, exc_info=True)
            cached = None
        if cached is not None:
            metrics.record_fallback(plan.alias, CACHE)
            return CACHE, cached
    if degraded_ok and plan.degraded.mode == "message":
        metrics.record_fallback(plan.alias, DEGRADED)
        return DEGRADED, ChatResult.text(plan.degraded.message, "stop", Usage())
    if walk.last_error is not None:
        raise as_api_error(walk.last_error) from walk.last_error
    headers = {}
    if walk.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(walk.retry_after + 0.999)))
    raise CircuitOpen(
        f"The model '{plan.alias}' is temporarily unavailable (its providers' circuit breakers "
        "are open). Please try again later.",
        headers=headers,
    )


# ---------------------------------------------------------------------------------------------
# Plain answers


async def _within_budget(target: Target, budget: float, call: Callable[[], Awaitable[_T]]) -> _T:
    """``call()`` within what is left of the deployment's total timeout."""
    try:
        async with asyncio.timeout(budget) as scope:
            return await call()
    except TimeoutError:
        if scope.expired():
            raise UpstreamTimeout(
                f"deployment '{target.deployment}' did not answer within its total timeout "
                f"({target.policy.total_timeout:g}s)"
            ) from None
        raise


async def _complete_once(target: Target, request: ChatRequest, budget: float) -> ChatResult:
    return await _within_budget(
        target, budget, lambda: get_adapter(target.provider).complete(request)
    )


async def _served(
    plan: DispatchPlan[RequestT, ResultT],
    call: Call[RequestT, ResultT],
    *,
    degraded_ok: bool = True,
) -> Served[RequestT, ResultT]:
    walk, index, answer = await _through_chain(plan, call)
    if index is not None:
        assert answer is not None  # the target at ``index`` answered
        return Served(**walk.outcome_fields(index), result=answer)
    # Bound first, then unpacked: unpacking the call directly makes mypy solve ResultT from
    # the targets instead of from ``walk``.
    fallback = await _after_chain(walk, degraded_ok=degraded_ok)
    source, result = fallback
    # The degraded reply (a ChatResult) comes only with degraded_ok, which only chat plans
    # (ResultT = ChatResult) leave on; anything else is the plan's own cached answer.
    return Served(**walk.outcome_fields(None, source), result=cast(ResultT, result))


async def complete(plan: DispatchPlan[ChatRequest, ChatResult]) -> Served[ChatRequest, ChatResult]:
    """A plain answer through the plan's chain; raises ``ApiError``."""
    return await _served(plan, _complete_once)


# ---------------------------------------------------------------------------------------------
# Embeddings


async def _embed_once(target: Target, request: EmbeddingRequest, budget: float) -> EmbeddingResult:
    return await _within_budget(target, budget, lambda: get_adapter(target.provider).embed(request))


async def embed(
    plan: DispatchPlan[EmbeddingRequest, EmbeddingResult],
) -> Served[EmbeddingRequest, EmbeddingResult]:
    """Embeddings through the plan's chain (timeouts, retries, breakers, fallbacks, then the
    cached answer); there is no degraded reply for vectors. ``result`` is an
    ``EmbeddingResult``."""
    return await _served(plan, _embed_once, degraded_ok=False)


# ---------------------------------------------------------------------------------------------
# Streams


async def _first_delta(
    target: Target, request: ChatRequest, budget: float
) -> tuple[ChatDelta, AsyncIterator[ChatDelta]]:
    """Start the stream and wait for its first delta, within the first-token timeout."""
    policy = target.policy
    wait = min(policy.first_token_timeout, budget)
    deltas = get_adapter(target.provider).stream(request).__aiter__()
    try:
        async with asyncio.timeout(wait) as scope:
            first = await deltas.__anext__()
    except StopAsyncIteration:
        first = ChatDelta(finish_reason="stop")
    except TimeoutError:
        await _close(deltas)
        if scope.expired():
            raise UpstreamTimeout(
                f"deployment '{target.deployment}' sent no first token within {wait:g}s"
            ) from None
        raise
    except BaseException:
        await _close(deltas)
        raise
    return first, deltas


async def _close(deltas: AsyncIterator[ChatDelta]) -> None:
    aclose = getattr(deltas, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


async def _rest_of_stream(
    deltas: AsyncIterator[ChatDelta], target: Target, breaker: CircuitBreaker
) -> AsyncIterator[ChatDelta]:
    """The deltas after the first, each within the idle timeout. A failure here is the
    deployment's (counted by its breaker) but is not retried: the client has bytes already."""
    policy = target.policy
    try:
        while True:
            try:
                async with asyncio.timeout(policy.idle_timeout) as scope:
                    delta = await deltas.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                if scope.expired():
                    raise UpstreamTimeout(
                        f"deployment '{target.deployment}' sent nothing for "
                        f"{policy.idle_timeout:g}s mid-stream"
                    ) from None
                raise
            yield delta
    except UpstreamError as exc:
        if is_deployment_fault(exc):
            await breaker.record_failure(
                target.deployment, policy, BreakerAdmission(True), exc.code
            )
        raise
    finally:
        await _close(deltas)


async def _replay(deltas: list[ChatDelta]) -> AsyncIterator[ChatDelta]:
    for delta in deltas:
        yield delta


async def open_stream(plan: DispatchPlan[ChatRequest, ChatResult]) -> StreamServed:
    """A stream through the plan's chain, its first delta received; raises ``ApiError``."""
    walk, index, answer = await _through_chain(plan, _first_delta)
    if index is not None:
        assert answer is not None  # the target at ``index`` answered
        first, deltas = answer
        return StreamServed(
            **walk.outcome_fields(index),
            first=first,
            deltas=_rest_of_stream(deltas, plan.targets[index], walk.breaker),
        )
    source, result = await _after_chain(walk)
    first, *rest = as_deltas(result)
    return StreamServed(**walk.outcome_fields(None, source), first=first, deltas=_replay(rest))
