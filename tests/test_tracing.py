"""OpenTelemetry traces, as a collector receives them: a real OTLP/HTTP receiver on loopback
decodes what the gateway exports (``ExportTraceServiceRequest`` protobuf), for requests sent to
the real gateway server, answered by a real local upstream."""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from gateway import services as gateway_services
from llmplatform import tracing
from llmplatform.actors import SYSTEM
from tests.conftest import route_alias
from tests.upstreams import OpenAIUpstream
from tests.upstreams_anthropic import AnthropicUpstream
from tests.upstreams_google import GeminiUpstream

PROMPT = "Quelle est la capitale de la Mongolie, Bayarmaa?"
CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT_ID = "00f067aa0ba902b7"


class OtlpReceiver:
    """A collector's OTLP/HTTP trace endpoint: keeps every export's raw body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    receiver.bodies.append(body)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def spans(self) -> list[ExportedSpan]:
        found = []
        for body in self.bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                service = _attributes(resource_spans.resource.attributes).get("service.name")
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append(ExportedSpan(span, service))
        return found


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


@dataclass
class ExportedSpan:
    proto: SpanProto
    service: str | None

    @property
    def name(self) -> str:
        return self.proto.name

    @property
    def trace_id(self) -> str:
        return self.proto.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.proto.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.proto.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, Any]:
        return _attributes(self.proto.attributes)

    @property
    def failed(self) -> bool:
        return self.proto.status.code == self.proto.status.STATUS_CODE_ERROR


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    found = OtlpReceiver()
    yield found
    found.close()


@pytest.fixture
def traced(settings, receiver) -> Iterator[OtlpReceiver]:
    """Tracing on, as configured in production (an OTLP endpoint): exported to ``receiver``."""
    settings.LLMP_TRACES_ENDPOINT = f"{receiver.url}/v1/traces"
    settings.OTEL_SERVICE_NAME = "llmp-test"
    assert tracing.configure()
    yield receiver
    tracing.shutdown()


@pytest.fixture
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream() as server:
        yield server


GATEWAY = "http://gateway.test"


@pytest.fixture
def key_a(tier) -> str:
    """Tenant A's key (without the users of ``principals``: their password hashing is most of
    a test's set-up)."""
    tenant = gateway_services.tenant_create(
        actor=SYSTEM, name="Tenant A", slug="tenant-a", tier=tier
    )
    _, plaintext = gateway_services.api_key_create(actor=SYSTEM, tenant=tenant, name="a-key")
    return plaintext


@pytest.fixture
def gateway(db, upstream) -> str:
    route_alias("default", upstream.base_url, model="upstream-model")
    return GATEWAY


def _post(url: str, *, headers: dict[str, str], json: dict[str, Any]) -> httpx.Response:
    """A request through the platform's real ASGI application (its fast path, where the
    request's span begins), in this test's database transaction: its sync parts run on this
    thread, as with Django's test client."""
    from llmplatform.asgi import application

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            response = await client.post(url, headers=headers, json=json)
            await response.aread()
            return response

    return async_to_sync(send)()


def _chat(gateway: str, key: str, headers: dict[str, str] | None = None, **body: Any):
    return _post(
        f"{gateway}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
        json={"model": "default", "messages": [{"role": "user", "content": PROMPT}], **body},
    )


def _exported(receiver: OtlpReceiver) -> list[ExportedSpan]:
    assert tracing.flush()
    return receiver.spans()


def _by_name(spans: list[ExportedSpan]) -> dict[str, list[ExportedSpan]]:
    named: dict[str, list[ExportedSpan]] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


def test_a_chat_request_is_one_trace_of_stage_spans_continuing_the_clients(
    traced, gateway, key_a, upstream
):
    response = _chat(
        gateway,
        key_a,
        headers={"traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_PARENT_ID}-01"},
        temperature=0,
    )
    assert response.status_code == 200
    spans = _exported(traced)
    named = _by_name(spans)

    (server,) = named["POST /v1/chat/completions"]
    assert server.service == "llmp-test"
    assert server.trace_id == CLIENT_TRACE_ID and server.parent_id == CLIENT_PARENT_ID
    assert server.proto.kind == SpanProto.SPAN_KIND_SERVER
    assert server.attributes["llmp.request_id"] == response.headers["X-Request-ID"]
    assert server.attributes["llmp.tenant"] == "tenant-a"
    assert server.attributes["llmp.alias"] == "default"
    assert server.attributes["http.response.status_code"] == 200

    stages = ["authenticate", "validate", "route", "guard_input", "admit", "guard"]
    stages += ["dispatch", "output", "settle"]
    for stage in stages:
        (span,) = named[f"llmp.{stage}"]
        assert span.trace_id == CLIENT_TRACE_ID
        assert span.parent_id == server.span_id, stage
        assert not span.failed
    (pii,) = named["llmp.pii"]
    assert pii.parent_id == named["llmp.guard_input"][0].span_id

    (call,) = named["chat upstream-model"]
    assert call.proto.kind == SpanProto.SPAN_KIND_CLIENT
    assert call.parent_id == named["llmp.dispatch"][0].span_id
    usage = response.json()["usage"]
    assert call.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "upstream-model",
        "gen_ai.response.model": "upstream-model",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.usage.input_tokens": usage["prompt_tokens"],
        "gen_ai.usage.output_tokens": usage["completion_tokens"],
        "gen_ai.response.finish_reasons": ["stop"],
        "llmp.deployment": "default-deployment",
        "server.address": "127.0.0.1",
        "server.port": int(upstream.base_url.split(":")[2].split("/")[0]),
    }

    # The upstream was told the call's context: the client's trace, the call's span.
    traceparent = upstream.requests[-1].headers["traceparent"]
    assert traceparent == f"00-{CLIENT_TRACE_ID}-{call.span_id}-01"


def test_traces_carry_no_message_text_and_no_key(traced, gateway, key_a, upstream):
    upstream.reply = "Oulan-Bator, Bayarmaa."
    assert _chat(gateway, key_a).status_code == 200
    assert _chat(gateway, key_a, stream=True).status_code == 200
    assert _exported(traced)
    exported = b"".join(traced.bodies)
    secret = key_a.split("_")[-1]
    for text in (PROMPT, "Mongolie", "Bayarmaa", "Oulan-Bator", key_a, secret):
        assert text.encode() not in exported, text


def test_a_stream_is_traced_until_its_end(traced, gateway, key_a, upstream):
    response = _chat(gateway, key_a, stream=True, stream_options={"include_usage": True})
    events = [line for line in response.text.splitlines() if line.startswith("data: {")]
    usage = json.loads(events[-1].removeprefix("data: "))["usage"]
    named = _by_name(_exported(traced))
    (server,) = named["POST /v1/chat/completions"]
    (call,) = named["chat upstream-model"]
    (output,) = named["llmp.output"]
    # The request's span ends after the last byte; the upstream call's when its stream ended.
    assert server.proto.end_time_unix_nano >= output.proto.end_time_unix_nano
    assert output.proto.end_time_unix_nano >= call.proto.end_time_unix_nano
    assert call.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert call.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert output.parent_id == server.span_id


def test_a_refusal_fails_its_stage_with_the_typed_code(traced, gateway, key_a):
    response = _chat(gateway, "llmp_nosuchkey_0123456789abcdef")
    assert response.status_code == 401
    unknown = _chat(gateway, key_a, model="someone@example.com")
    assert unknown.status_code == 404
    named = _by_name(_exported(traced))
    refused, missing = sorted(
        named["POST /v1/chat/completions"], key=lambda s: s.proto.start_time_unix_nano
    )
    (authenticate, _) = sorted(
        named["llmp.authenticate"], key=lambda s: s.proto.start_time_unix_nano
    )
    assert authenticate.failed and authenticate.proto.status.message == "invalid_api_key"
    assert authenticate.parent_id == refused.span_id
    assert refused.attributes["error.type"] == "invalid_api_key"
    assert refused.attributes["http.response.status_code"] == 401
    assert "llmp.tenant" not in refused.attributes
    (route,) = named["llmp.route"]
    assert route.failed and route.proto.status.message == "model_not_found"
    # What the client sent as the model is not a name the trace gives.
    assert "llmp.alias" not in missing.attributes
    assert b"someone@example.com" not in b"".join(traced.bodies)


@pytest.mark.parametrize(
    ("kind", "server_class", "provider_name"),
    [("anthropic", AnthropicUpstream, "anthropic"), ("gemini", GeminiUpstream, "gcp.gemini")],
)
def test_anthropic_and_gemini_upstreams_are_told_the_calls_context(
    traced, db, key_a, monkeypatch, kind, server_class, provider_name
):
    """Not only OpenAI-compatible upstreams: a proxy or a self-hosted server in front of
    Anthropic's or Gemini's API that traces continues the same trace."""
    monkeypatch.setenv("PROVIDER_TRACE_TEST_KEY", "sk-provider-secret")
    with server_class() as server:
        server.required_key = "sk-provider-secret"
        route_alias(
            "default",
            server.base_url,
            model="upstream-model",
            kind=kind,
            api_key_ref="env:PROVIDER_TRACE_TEST_KEY",
        )
        response = _chat(
            GATEWAY, key_a, headers={"traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_PARENT_ID}-01"}
        )
        assert response.status_code == 200, response.text
        (call,) = _by_name(_exported(traced))["chat upstream-model"]
        assert call.attributes["gen_ai.provider.name"] == provider_name
        assert server.requests[-1].headers["traceparent"] == (
            f"00-{CLIENT_TRACE_ID}-{call.span_id}-01"
        )


def test_an_upstream_failure_fails_the_call_span_with_its_code(traced, gateway, key_a, upstream):
    upstream.behaviour = "bad_request"
    assert _chat(gateway, key_a).status_code == 502
    named = _by_name(_exported(traced))
    (call,) = named["chat upstream-model"]
    assert call.failed and call.attributes["error.type"] == "upstream_bad_response"
    assert named["llmp.dispatch"][0].failed


def test_embeddings_are_traced_as_an_embeddings_call(traced, gateway, key_a, upstream):
    response = _post(
        f"{gateway}/v1/embeddings",
        headers={"Authorization": f"Bearer {key_a}"},
        json={"model": "default", "input": [PROMPT]},
    )
    assert response.status_code == 200
    named = _by_name(_exported(traced))
    (call,) = named["embeddings upstream-model"]
    assert call.attributes["gen_ai.operation.name"] == "embeddings"
    assert call.attributes["gen_ai.usage.input_tokens"] == response.json()["usage"]["prompt_tokens"]
    assert upstream.requests[-1].headers["traceparent"].split("-")[1] == call.trace_id
    (server,) = named["POST /v1/embeddings"]
    assert named["llmp.dispatch"][0].parent_id == server.span_id


def test_tracing_off_exports_nothing_and_makes_no_span(
    settings, receiver, gateway, key_a, upstream, monkeypatch
):
    settings.LLMP_TRACES_ENDPOINT = ""
    assert not tracing.configure()
    from opentelemetry.sdk import trace as sdk_trace

    made: list[str] = []
    original = sdk_trace.Span.__init__

    def counted(self, name, *args, **kwargs):
        made.append(name)
        original(self, name, *args, **kwargs)

    monkeypatch.setattr(sdk_trace.Span, "__init__", counted)
    traceparent = f"00-{CLIENT_TRACE_ID}-{CLIENT_PARENT_ID}-01"
    assert _chat(gateway, key_a, headers={"traceparent": traceparent}).status_code == 200
    assert _chat(gateway, key_a, stream=True).status_code == 200
    assert made == []
    assert tracing.stage("route") is tracing.stage("settle")  # one shared do-nothing block
    assert receiver.bodies == []
    assert "traceparent" not in upstream.requests[-1].headers


def test_a_task_enqueued_under_a_request_runs_in_a_span_linked_to_it(traced):
    """The task's context travels in the message's headers to a real worker (Celery's test
    worker on the platform's broker); its span links to the span that enqueued it."""
    from celery.contrib.testing.worker import start_worker

    from llmplatform.celery import app
    from llmplatform.tasks import heartbeat, last_heartbeat

    before = last_heartbeat() or 0.0
    app.conf.task_always_eager = False
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            with tracing.server_span("POST", "/v1/test", ()) as request_span:
                heartbeat.delay()
            deadline = time.monotonic() + 30
            while (last_heartbeat() or 0.0) <= before and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        app.conf.task_always_eager = True
    assert (last_heartbeat() or 0.0) > before, "the worker did not run the task"
    named = _by_name(_exported(traced))
    (enqueued,) = named["apply_async/llmplatform.heartbeat"]
    assert enqueued.parent_id == format(request_span.get_span_context().span_id, "016x")
    (ran,) = named["run/llmplatform.heartbeat"]
    assert ran.proto.kind == SpanProto.SPAN_KIND_CONSUMER
    (link,) = ran.proto.links
    assert (link.trace_id.hex(), link.span_id.hex()) == (enqueued.trace_id, enqueued.span_id)


SUBJECT_EMAIL = "batbayar.dorj@example.mn"


def _fail_quoting_personal_data() -> None:
    raise LookupError(f"no records for {SUBJECT_EMAIL}")


def test_a_failed_tasks_span_names_the_exception_not_its_message(traced):
    """Celery's instrumentation records a failed task's exception (message and traceback); a
    task's error may quote personal data, so the exported span has only the exception's class."""
    from celery.contrib.testing.worker import start_worker

    from llmplatform.celery import app

    task = app.task(name="tests.fail_quoting_personal_data")(_fail_quoting_personal_data)
    app.conf.task_always_eager = False
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            task.delay()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                spans = _by_name(_exported(traced))
                if "run/tests.fail_quoting_personal_data" in spans:
                    break
                time.sleep(0.1)
    finally:
        app.conf.task_always_eager = True
        app.tasks.pop("tests.fail_quoting_personal_data", None)
    (ran,) = spans["run/tests.fail_quoting_personal_data"]
    assert ran.failed
    assert ran.proto.status.message == "LookupError"
    (event,) = [event for event in ran.proto.events if event.name == "exception"]
    assert _attributes(event.attributes) == {"exception.type": "LookupError"}
    exported = b"".join(traced.bodies)
    assert SUBJECT_EMAIL.encode() not in exported
    assert b"no records for" not in exported


# Configuration: OTel's own variables, checked as hostile input -------------------------------

OTEL_VARIABLES = (
    "LLMP_TRACING",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
)


def _endpoint(monkeypatch, **env: str) -> str:
    from llmplatform.settings import _traces_endpoint

    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return _traces_endpoint()


def test_tracing_is_off_unless_an_endpoint_or_the_switch_turns_it_on(monkeypatch):
    assert _endpoint(monkeypatch) == ""
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318/"}
    assert _endpoint(monkeypatch, **base) == "https://collector.example:4318/v1/traces"
    assert (
        _endpoint(
            monkeypatch,
            **base,
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://otel.internal/custom/traces",
        )
        == "http://otel.internal/custom/traces"
    )
    assert _endpoint(monkeypatch, LLMP_TRACING="true") == "http://localhost:4318/v1/traces"
    assert _endpoint(monkeypatch, **base, LLMP_TRACING="false") == ""
    assert _endpoint(monkeypatch, **base, OTEL_SDK_DISABLED="true") == ""
    assert _endpoint(monkeypatch, **base, OTEL_TRACES_EXPORTER="none") == ""


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "file:///etc/passwd"}, "an http(s) URL with a host"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://:4318"}, "an http(s) URL with a host"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:99999"}, "an http(s) URL"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/v1/traces\n#x"}, "a plain URL"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "'otlp' or 'none'"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "must be 'http/protobuf'",
        ),
        ({"LLMP_TRACING": "maybe"}, "is not a boolean"),
    ],
)
def test_a_bad_tracing_setting_is_refused(monkeypatch, env, message):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        _endpoint(monkeypatch, **env)


def test_credentials_in_the_endpoint_stop_the_start_without_being_echoed(tmp_path):
    from tests.test_audit_and_settings import run_manage

    url = "https://tracer:s3cr3t-token@collector.example/v1/traces"
    result = run_manage(["check"], {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url}, tmp_path)
    assert result.returncode != 0
    assert "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT must not carry credentials" in result.stderr
    assert "s3cr3t-token" not in result.stderr + result.stdout


def test_a_request_the_sampler_leaves_out_makes_only_its_own_span(
    receiver, gateway, key_a, upstream, monkeypatch
):
    """OTEL_TRACES_SAMPLER=parentbased_traceidratio, say, keeps some requests: the others cost
    one non-recording span, and the upstream is told they are not sampled."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    provider = TracerProvider(sampler=ALWAYS_OFF)
    exporter = OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracing.start(provider)
    try:
        started: list[str] = []
        start_span = tracing._tracer.start_span

        def counted(name, *args, **kwargs):
            started.append(name)
            return start_span(name, *args, **kwargs)

        monkeypatch.setattr(tracing._tracer, "start_span", counted)
        assert _chat(gateway, key_a, stream=True).status_code == 200
        assert _chat(gateway, key_a).status_code == 200
        assert tracing.flush()
    finally:
        tracing.shutdown()
    assert started == ["POST /v1/chat/completions"] * 2
    assert receiver.bodies == []
    flags = upstream.requests[-1].headers["traceparent"].split("-")[3]
    assert int(flags, 16) & 0x01 == 0  # W3C: not sampled
