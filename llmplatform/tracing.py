"""OpenTelemetry traces, exported over OTLP/HTTP; off unless configured (``settings``:
``LLMP_TRACES_ENDPOINT``, from OTel's own variables, see docs/operations.md).

What is traced, when on: one server span per API request (``POST /v1/chat/completions``; a
client's ``traceparent`` is continued), a child span per pipeline stage (``llmp.authenticate``,
``llmp.validate``, ``llmp.route``, ``llmp.pii``, ``llmp.admit``, ``llmp.guard``, ``llmp.scan``,
``llmp.dispatch``, ``llmp.output``, ``llmp.settle``), a client span per upstream call with the
GenAI semantic conventions (``gen_ai.*``), its context sent to OpenAI-compatible upstreams in
``traceparent``, and Celery tasks (a task's span links to the span that enqueued it).

Spans carry ids, names, counts and codes: never a message, a prompt, a reply, a key or a
header's value. Exceptions are not recorded (their messages may quote input): a failed span
has status ERROR with the typed error code as its description and as ``error.type``; a failed
Celery task's span (recorded by Celery's instrumentation) is exported with the exception's class
name in place of its message and traceback.

The request path pays for tracing only when it is on: each stage checks the module's
``enabled`` flag once and, when off, gets one shared do-nothing context manager; no span object
is made. Spans are exported in batches from a background thread (``BatchSpanProcessor``), never
on the request path. The SDK is imported only when tracing is configured.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

# Read on the request path: the whole cost of tracing while it is off.
enabled = False

_tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None
_lock = threading.Lock()
_w3c = TraceContextTextMapPropagator()
_NO_SPAN: contextlib.nullcontext[Span] = contextlib.nullcontext(INVALID_SPAN)
# The request's server span, for the attributes the pipeline learns on the way (tenant, alias).
_request_span: ContextVar[Span] = ContextVar("llmp_request_span", default=INVALID_SPAN)

# gen_ai.provider.name (and the older gen_ai.system) for each provider kind.
GEN_AI_PROVIDER = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "bedrock": "aws.bedrock",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
}


# Set-up --------------------------------------------------------------------------------------


def configure() -> bool:
    """Start tracing from the settings if an endpoint is configured (once per process; every
    process that serves or runs tasks calls it: web, worker, beat). Returns whether it is on."""
    from django.conf import settings

    endpoint = settings.LLMP_TRACES_ENDPOINT
    if enabled or not endpoint:
        return enabled
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; the sampler comes from
    # OTEL_TRACES_SAMPLER (default: follow the parent, else sample everything), the batch sizes
    # from OTEL_BSP_*, the exporter's headers, TLS files and timeout from OTEL_EXPORTER_OTLP_*.
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.OTEL_SERVICE_NAME}),
    )
    from llmplatform.trace_export import WithoutExceptionMessages

    exporter = WithoutExceptionMessages(OTLPSpanExporter(endpoint=endpoint))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    start(provider)
    return True


def start(provider: TracerProvider) -> None:
    """Trace into ``provider`` (its processors decide where spans go). Celery's signals are
    instrumented too: a task's span is linked to the span that enqueued it."""
    global enabled, _tracer, _provider
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    with _lock:
        if enabled:
            return
        _provider = provider
        _tracer = provider.get_tracer("llmplatform")
        instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]  # untyped package
        instrumentor.instrument(tracer_provider=provider, use_span_links=True)
        enabled = True


def shutdown() -> None:
    """Export what is buffered and stop tracing (process exit; tests)."""
    global enabled, _tracer, _provider
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    with _lock:
        if not enabled:
            return
        enabled = False
        CeleryInstrumentor().uninstrument()  # type: ignore[no-untyped-call]  # untyped package
        provider, _provider, _tracer = _provider, None, trace.NoOpTracer()
    if provider is not None:
        provider.shutdown()


def flush(timeout_millis: int = 5000) -> bool:
    """Export every finished span now (tests, and before a process exits)."""
    provider = _provider
    return provider.force_flush(timeout_millis) if provider is not None else True


# The request ---------------------------------------------------------------------------------


def incoming_context(headers: Sequence[tuple[bytes, bytes]]) -> otel_context.Context:
    """The client's trace context from ASGI headers (W3C ``traceparent`` and ``tracestate``);
    an empty context when it sent none or a malformed one (a new trace starts)."""
    carrier: dict[str, str] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in (b"traceparent", b"tracestate"):
            carrier[lowered.decode("latin-1")] = value.decode("latin-1")
    return _w3c.extract(carrier) if carrier else otel_context.Context()


@contextlib.contextmanager
def server_span(method: str, route: str, headers: Sequence[tuple[bytes, bytes]]) -> Iterator[Span]:
    """The request's span, current for everything the request does. ``route`` is the
    registered path (a fixed string, never one with ids in it)."""
    span = _tracer.start_span(
        f"{method} {route}",
        context=incoming_context(headers),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": method,
            "http.route": route,
            "url.path": route,
        },
    )
    token = _request_span.set(span)
    try:
        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            yield span
    except Exception as exc:
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        _request_span.reset(token)
        span.end()


def finish_server_span(span: Span, status: int, request_id: str) -> None:
    span.set_attribute("llmp.request_id", request_id)
    if status:
        span.set_attribute("http.response.status_code", status)
    if status >= 500:  # HTTP semantic conventions: a server span fails on 5xx only
        span.set_status(Status(StatusCode.ERROR, str(status)))


def set_request_attributes(attributes: Mapping[str, str | int]) -> None:
    """Add to the request's server span (no-op when tracing is off or outside a request)."""
    span = _request_span.get()
    # Not once it has ended (a stream's last stage may finish after its request's span).
    if span is not INVALID_SPAN and span.is_recording():
        span.set_attributes(attributes)


def stage(
    name: str, parent: otel_context.Context | None = None
) -> contextlib.AbstractContextManager[Span]:
    """``with stage("route"):`` -- a child span for one pipeline stage, current inside the
    block. Never hold it across a ``yield`` (use ``start_stage``): the context it attaches
    must be detached where it was attached."""
    if not enabled or not _request_span.get().is_recording():
        return _NO_SPAN  # off, or a request the sampler left out: no span below it either
    return _stage(name, parent)


@contextlib.contextmanager
def _stage(name: str, parent: otel_context.Context | None) -> Iterator[Span]:
    span = _tracer.start_span(f"llmp.{name}", context=parent)
    try:
        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            yield span
    except Exception as exc:
        failed(span, exc)
        set_request_attributes({"error.type": error_code(exc)})
        raise
    finally:
        span.end()


def start_stage(name: str, parent: otel_context.Context | None = None) -> Span:
    """A stage's span that is not made current (for a stage that spans an async generator's
    yields, like the output guard over a stream); end it with ``end_stage``."""
    if not enabled or not _request_span.get().is_recording():
        return INVALID_SPAN
    return _tracer.start_span(f"llmp.{name}", context=parent)


def end_stage(span: Span, error_code: str = "") -> None:
    """End a ``start_stage`` span; ``error_code``: the typed error it failed with."""
    if error_code:
        span.set_attribute("error.type", error_code)
        span.set_status(Status(StatusCode.ERROR, error_code))
        set_request_attributes({"error.type": error_code})
    span.end()


def recording() -> bool:
    """Whether this request is traced (on, and kept by the sampler)."""
    return enabled and _request_span.get().is_recording()


def current_context() -> otel_context.Context | None:
    """The current context (to parent spans that start later, elsewhere), None when off."""
    return otel_context.get_current() if enabled else None


def error_code(exc: BaseException) -> str:
    """The typed error code of an ``ApiError`` or ``UpstreamError`` (their ``code``), else the
    exception's class name; never its message."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else type(exc).__name__


def failed(span: Span, exc: BaseException) -> None:
    code = error_code(exc)
    span.set_attribute("error.type", code)
    span.set_status(Status(StatusCode.ERROR, code))


# The upstream call ---------------------------------------------------------------------------


def upstream_span(
    *, operation: str, model: str, provider_kind: str, base_url: str, deployment: str
) -> Span:
    """A client span for one call to a provider (GenAI semantic conventions: named
    ``{operation} {model}``); make it current while the call's request is sent, so that
    ``inject`` sends its context."""
    provider = GEN_AI_PROVIDER.get(provider_kind, provider_kind)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": model,
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "llmp.deployment": deployment,
    }
    try:
        parts = urlsplit(base_url)
        if parts.hostname:
            attributes["server.address"] = parts.hostname  # never the URL's user or password
            if parts.port:
                attributes["server.port"] = parts.port
    except ValueError:
        pass
    return _tracer.start_span(f"{operation} {model}", kind=SpanKind.CLIENT, attributes=attributes)


def end_upstream_span(
    span: Span,
    *,
    response_model: str = "",
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    finish_reasons: Sequence[str] = (),
    error: BaseException | None = None,
) -> None:
    if response_model:
        span.set_attribute("gen_ai.response.model", response_model)
    if input_tokens is not None:
        span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
    if output_tokens is not None:
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
    if finish_reasons:
        span.set_attribute("gen_ai.response.finish_reasons", list(finish_reasons))
    if error is not None:
        failed(span, error)
    span.end()


def inject(headers: dict[str, str]) -> None:
    """Add the current span's ``traceparent`` (and ``tracestate``) to an upstream request's
    headers."""
    _w3c.inject(headers)
