"""CPU time of the tracing calls alone, per request, with tracing off and on.

    PYTHONPATH=. DJANGO_SETTINGS_MODULE=llmplatform.settings .venv/bin/python bench/tracing_cost.py

Makes the calls one chat request makes (``llmplatform.tracing``: the server span continuing a
client's ``traceparent``, nine stage spans, the upstream call's GenAI span and its
``traceparent``, the output stage) without the rest of the request, so that the difference
between off and on is not lost in the noise of a whole request. Tracing on exports through a
``BatchSpanProcessor`` to an exporter that drops the spans (the export's own cost is in its
thread, off the request). Off and on alternate, five rounds; process time, best round.
For the cost within a whole request, run ``bench/run.py --quick --skip-litellm`` with and
without ``--tracing``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import django

django.setup()

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from llmplatform import tracing  # noqa: E402

STAGES = ("authenticate", "validate", "route", "guard_input", "pii", "admit", "guard")
HEADERS = [(b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
REQUESTS = 2000


class Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def stages() -> None:
    for name in STAGES:
        with tracing.stage(name):
            pass
    with tracing.stage("dispatch"):
        if tracing.enabled:
            span = tracing.upstream_span(
                operation="chat",
                model="upstream-model",
                provider_kind="openai",
                base_url="http://127.0.0.1:9101/v1",
                deployment="default-deployment",
            )
            tracing.inject({})
            tracing.end_upstream_span(
                span,
                response_model="upstream-model",
                input_tokens=12,
                output_tokens=16,
                finish_reasons=["stop"],
            )
    tracing.end_stage(tracing.start_stage("output"))
    with tracing.stage("settle"):
        pass


def one_request() -> None:
    if not tracing.enabled:
        stages()
        return
    with tracing.server_span("POST", "/v1/chat/completions", HEADERS) as span:
        tracing.set_request_attributes({"llmp.tenant": "tenant-a", "llmp.alias": "default"})
        stages()
        tracing.finish_server_span(span, 200, "req_0123456789abcdef")


def microseconds_per_request() -> float:
    started = time.process_time()
    for _ in range(REQUESTS):
        one_request()
    return (time.process_time() - started) / REQUESTS * 1e6


def main() -> None:
    off: list[float] = []
    on: list[float] = []
    for _ in range(5):
        off.append(microseconds_per_request())
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Dropped()))
        tracing.start(provider)
        on.append(microseconds_per_request())
        tracing.shutdown()
    print(f"tracing off: {min(off):.1f} us per request ({', '.join(f'{x:.1f}' for x in off)})")
    print(f"tracing on:  {min(on):.1f} us per request ({', '.join(f'{x:.1f}' for x in on)})")


if __name__ == "__main__":
    main()
