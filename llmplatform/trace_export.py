"""The exporter's side of what a trace never holds (see ``llmplatform.tracing``); imported only
when tracing is configured, like the rest of the SDK."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode


class WithoutExceptionMessages(SpanExporter):
    """Sends no exception's message. The platform's own spans never record one, but Celery's
    instrumentation records a failed task's exception (an event with its message and traceback,
    and the message as the span's status description), and a task's error may quote personal
    data (an erasure's subject, a prompt): such a span is exported with the exception's class
    name in their place."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([without_exception_messages(span) for span in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def without_exception_messages(span: ReadableSpan) -> ReadableSpan:
    exceptions = [event for event in span.events if event.name == "exception"]
    if not exceptions:
        return span
    kind = str((exceptions[-1].attributes or {}).get("exception.type", "Exception"))
    events = [
        Event(
            "exception",
            {"exception.type": str((event.attributes or {}).get("exception.type", kind))},
            event.timestamp,
        )
        if event.name == "exception"
        else event
        for event in span.events
    ]
    status = span.status
    if status.status_code is StatusCode.ERROR:
        status = Status(StatusCode.ERROR, kind.rsplit(".", 1)[-1])
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
