"""Real upstream servers for tests: OpenAI, Azure OpenAI and Amazon Bedrock on loopback.

Each is a threaded HTTP server on ``127.0.0.1`` (a free port) that speaks the provider's wire
protocol closely enough for the real clients (httpx, the openai SDK, boto3) to talk to it, so
tests exercise real sockets, real framing and real error paths instead of mocks.

Usage::

    with OpenAIUpstream() as upstream:             # or AzureUpstream(), BedrockUpstream()
        config = ProviderConfig(name="p", kind="openai", base_url=upstream.base_url)
        ...
        upstream.behaviour = "rate_limited"        # change how it answers from now on
        assert upstream.requests[-1].headers["authorization"] == "Bearer sk-test"

Common attributes (all settable at any time, from any thread):

- ``base_url`` — what goes in ``Provider.base_url``: ``http://127.0.0.1:PORT/v1`` for OpenAI,
  ``http://127.0.0.1:PORT`` for Azure and Bedrock.
- ``requests`` — every request received, in order, as ``ReceivedRequest(method, path, query,
  headers, json, client_port)``; ``path`` excludes the query string (Bedrock model ids are
  unquoted), ``query`` is a ``dict[str, str]``, header names are lower case, ``json`` is the
  parsed body or ``None``; equal ``client_port`` values mean a reused connection.
- ``behaviour`` — how requests are answered (see below); ``"ok"`` by default.
- ``reply`` — the answer text: ``None`` (default) echoes the last user message, a string is
  sent as is. Streams send it in word-sized pieces.
- ``required_key`` — when set, a request without that credential gets the provider's 401/403
  (OpenAI: ``Authorization: Bearer``; Azure: ``api-key``; Bedrock: the SigV4 access key id).
- ``on_request`` — a callable run with each ``ReceivedRequest`` before it is answered.
- ``hang_seconds`` — how long ``"hang"`` and ``"stream_stall"`` wait (5 s; ``stop()`` wakes
  them early).

Token counts are deterministic: prompt tokens = words over all messages (and system prompts),
completion tokens = words in the reply.

OpenAIUpstream (``POST /v1/chat/completions``, ``GET /v1/models``) and AzureUpstream
(``POST /openai/deployments/<deployment>/chat/completions?api-version=...``,
``GET /openai/models?api-version=...``) behaviours:

- ``"ok"`` — a chat completion, or an SSE stream in OpenAI's chunk shape (a role chunk, content
  chunks, a chunk with ``finish_reason``, a usage chunk with ``choices: []`` when the request
  asked for ``stream_options.include_usage``, then ``data: [DONE]``). ``finish_reason``
  (default ``"stop"``) sets the reported finish reason.
- ``"error500"``, ``"bad_request"`` (400 ``context_length_exceeded``), ``"unauthorized"`` (401),
  ``"rate_limited"`` (429 with ``Retry-After: <retry_after>``, default ``"2"``; may be an HTTP
  date), ``"malformed_json"``, ``"wrong_content_type"`` (200 ``text/html``),
  ``"missing_choices"`` (200 JSON without ``choices``), ``"hang"`` (no answer for
  ``hang_seconds``), ``"reset"`` (TCP RST before any answer), ``"stream_break"`` (streams:
  two chunks then the connection closes; plain answers: half a body), ``"stream_stall"``
  (two chunks, then silence for ``hang_seconds``).

AzureUpstream also answers 404 unless ``api-version`` equals ``api_version`` (default
``"2024-10-21"``; ``None`` accepts any). ``model`` in its answers is the deployment name.

BedrockUpstream (``POST /model/<modelId>/converse`` and ``.../converse-stream``, the latter in
the binary ``application/vnd.amazon.eventstream`` framing that botocore decodes) behaviours:

- ``"ok"`` — ``stop_reason`` (default ``"end_turn"``) is the reported ``stopReason``; streams
  send messageStart, contentBlockDelta..., contentBlockStop, messageStop and metadata (usage).
- ``"rate_limited"`` (429 ``ThrottlingException``), ``"unauthorized"`` (403
  ``UnrecognizedClientException``), ``"access_denied"`` (403 ``AccessDeniedException``),
  ``"validation_error"`` (400 ``ValidationException``), ``"error500"`` (500
  ``InternalServerException``), ``"model_timeout"`` (408 ``ModelTimeoutException``),
  ``"malformed_json"``, ``"hang"``, ``"reset"``, ``"stream_break"``, ``"stream_stall"`` and
  ``"stream_exception"`` (two events, then a ``throttlingException`` exception event).

``encode_event(headers, payload)`` builds one event-stream message, for other AWS fakes.
"""

from __future__ import annotations

import binascii
import contextlib
import email.utils
import json
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "AzureUpstream",
    "BedrockUpstream",
    "OpenAIUpstream",
    "ReceivedRequest",
    "encode_event",
    "http_date",
]


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    client_port: int  # the same port on two requests means a reused (pooled) connection


def http_date(seconds_from_now: float) -> str:
    """An HTTP date (as in ``Retry-After``) the given number of seconds from now."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI parts or Bedrock content blocks
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _pieces(text: str) -> list[str]:
    """Word-sized pieces that concatenate back to ``text`` (so streams have several chunks)."""
    return re.findall(r"\s*\S+\s*", text) or [text]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real providers do: clients pool connections
    # Headers and body go out in separate writes; with Nagle's algorithm the second one waits
    # for the client's delayed ACK, adding 40 ms to every answer on a reused connection.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self.server.upstream._dispatch(self)

    def do_POST(self) -> None:
        self.server.upstream._dispatch(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean

    def setup(self) -> None:
        super().setup()
        self.server.upstream._connections.add(self.connection)

    def finish(self) -> None:
        self.server.upstream._connections.discard(self.connection)
        super().finish()

    # Answers ---------------------------------------------------------------------------------

    def send_bytes(
        self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, "application/json", json.dumps(data).encode(), headers)

    def start_chunked(self, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def drop(self) -> None:
        """Close the connection (FIN) without finishing the answer."""
        self.close_connection = True

    def reset(self) -> None:
        """Abort the connection with a TCP RST, as a crashed proxy or peer does."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()  # the RST goes out once handle() returns and the files close
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    upstream: _Upstream

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-answer is what several tests are about; anything else is a
        # bug in the fake and is reported.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Upstream:
    base_path = ""

    def __init__(self, behaviour: str = "ok", *, reply: str | None = None) -> None:
        self.behaviour = behaviour
        self.reply = reply
        self.required_key: str | None = None
        self.on_request: Callable[[ReceivedRequest], None] | None = None
        self.hang_seconds = 5.0
        self.requests: list[ReceivedRequest] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle --------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the upstream is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self.base_path}"

    def start(self) -> None:
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.upstream = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"{type(self).__name__}-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for connection in list(self._connections):
            # Wakes handler threads waiting on idle keep-alive connections.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> _Upstream:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Handling ---------------------------------------------------------------------------------

    def _dispatch(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = ReceivedRequest(
            method=handler.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query)),
            headers={name.lower(): value for name, value in handler.headers.items()},
            json=body,
            client_port=handler.client_address[1],
        )
        self.requests.append(request)
        if self.on_request is not None:
            self.on_request(request)
        self.answer(handler, request)

    def answer(self, handler: _Handler, request: ReceivedRequest) -> None:
        raise NotImplementedError

    def _hang(self, handler: _Handler) -> None:
        self._stopping.wait(self.hang_seconds)
        handler.drop()

    def reply_for(self, user_texts: list[str]) -> str:
        if self.reply is not None:
            return self.reply
        return user_texts[-1] if user_texts else "ok"


# ---------------------------------------------------------------------------------------------
# OpenAI and Azure OpenAI


class OpenAIUpstream(_Upstream):
    base_path = "/v1"

    def __init__(self, behaviour: str = "ok", *, reply: str | None = None) -> None:
        super().__init__(behaviour, reply=reply)
        self.finish_reason = "stop"
        self.retry_after = "2"

    def route(self, request: ReceivedRequest) -> str | None:
        """``"chat"``, ``"models"`` or ``None`` (404) for a request."""
        if request.method == "POST" and request.path == "/v1/chat/completions":
            return "chat"
        if request.method == "GET" and request.path == "/v1/models":
            return "models"
        return None

    def presented_key(self, request: ReceivedRequest) -> str | None:
        value = request.headers.get("authorization", "")
        return value.removeprefix("Bearer ") if value.startswith("Bearer ") else None

    def model_name(self, request: ReceivedRequest) -> str:
        return str((request.json or {}).get("model", ""))

    def not_found(self, handler: _Handler) -> None:
        handler.send_json(
            404,
            {
                "error": {
                    "message": "Not found",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "not_found",
                }
            },
        )

    def answer(self, handler: _Handler, request: ReceivedRequest) -> None:
        route = self.route(request)
        if route is None:
            self.not_found(handler)
            return
        behaviour = self.behaviour
        if behaviour == "unauthorized" or (
            self.required_key is not None and self.presented_key(request) != self.required_key
        ):
            handler.send_json(
                401,
                {
                    "error": {
                        "message": "Incorrect API key provided.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
            )
        elif behaviour == "error500":
            handler.send_json(
                500,
                {
                    "error": {
                        "message": "The server had an error.",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
        elif behaviour == "bad_request":
            handler.send_json(
                400,
                {
                    "error": {
                        "message": "This model's maximum context length is 10 tokens.",
                        "type": "invalid_request_error",
                        "param": "messages",
                        "code": "context_length_exceeded",
                    }
                },
            )
        elif behaviour == "rate_limited":
            handler.send_json(
                429,
                {
                    "error": {
                        "message": "Rate limit reached.",
                        "type": "requests",
                        "param": None,
                        "code": "rate_limit_exceeded",
                    }
                },
                headers={"Retry-After": self.retry_after},
            )
        elif behaviour == "malformed_json":
            handler.send_bytes(200, "application/json", b'{"id": "chatcmpl-broken", "choices": [')
        elif behaviour == "wrong_content_type":
            handler.send_bytes(200, "text/html", b"<html><body>Welcome to nginx!</body></html>")
        elif behaviour == "missing_choices":
            handler.send_json(200, {"id": "chatcmpl-x", "object": "chat.completion"})
        elif behaviour == "hang":
            self._hang(handler)
        elif behaviour == "reset":
            handler.reset()
        elif route == "models":
            handler.send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": "upstream-model",
                            "object": "model",
                            "created": 1700000000,
                            "owned_by": "tests",
                        }
                    ],
                },
            )
        elif (request.json or {}).get("stream"):
            self._stream(handler, request)
        else:
            self._complete(handler, request)

    def _reply_and_usage(self, request: ReceivedRequest) -> tuple[str, dict[str, int]]:
        messages = (request.json or {}).get("messages") or []
        texts = [_text(m.get("content")) for m in messages]
        reply = self.reply_for(
            [_text(m.get("content")) for m in messages if m.get("role") == "user"]
        )
        prompt = sum(_words(t) for t in texts)
        completion = _words(reply)
        return reply, {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _complete(self, handler: _Handler, request: ReceivedRequest) -> None:
        reply, usage = self._reply_and_usage(request)
        body = json.dumps(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model_name(request),
                "system_fingerprint": None,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply, "refusal": None},
                        "logprobs": None,
                        "finish_reason": self.finish_reason,
                    }
                ],
                "usage": usage,
            }
        ).encode()
        if self.behaviour == "stream_break":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body[: len(body) // 2])
            handler.drop()
            return
        handler.send_bytes(200, "application/json", body)

    def _stream(self, handler: _Handler, request: ReceivedRequest) -> None:
        reply, usage = self._reply_and_usage(request)
        include_usage = bool(
            ((request.json or {}).get("stream_options") or {}).get("include_usage")
        )
        base = {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model_name(request),
            "system_fingerprint": None,
        }
        if include_usage:
            base["usage"] = None  # OpenAI sets it to null on every chunk but the last

        def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }

        chunks = [choice({"role": "assistant", "content": "", "refusal": None})]
        chunks += [choice({"content": piece}) for piece in _pieces(reply)]
        chunks.append(choice({}, self.finish_reason))
        if include_usage:
            chunks.append({**base, "choices": [], "usage": usage})

        handler.start_chunked("text/event-stream; charset=utf-8")
        for index, chunk in enumerate(chunks):
            if index == 2 and self.behaviour in {"stream_break", "stream_stall"}:
                if self.behaviour == "stream_stall":
                    self._stopping.wait(self.hang_seconds)
                handler.drop()
                return
            handler.write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        handler.write_chunk(b"data: [DONE]\n\n")
        handler.end_chunked()


class AzureUpstream(OpenAIUpstream):
    base_path = ""

    def __init__(self, behaviour: str = "ok", *, reply: str | None = None) -> None:
        super().__init__(behaviour, reply=reply)
        self.api_version: str | None = "2024-10-21"

    _CHAT = re.compile(r"/openai/deployments/(?P<deployment>[^/]+)/chat/completions")

    def route(self, request: ReceivedRequest) -> str | None:
        version = request.query.get("api-version")
        if not version or (self.api_version is not None and version != self.api_version):
            return None  # Azure answers an unknown or missing api-version with 404
        if request.method == "POST" and self._CHAT.fullmatch(request.path):
            return "chat"
        if request.method == "GET" and request.path == "/openai/models":
            return "models"
        return None

    def presented_key(self, request: ReceivedRequest) -> str | None:
        return request.headers.get("api-key")

    def model_name(self, request: ReceivedRequest) -> str:
        match = self._CHAT.fullmatch(request.path)
        return unquote(match["deployment"]) if match else ""

    def not_found(self, handler: _Handler) -> None:
        handler.send_json(404, {"error": {"code": "404", "message": "Resource not found"}})


# ---------------------------------------------------------------------------------------------
# Amazon Bedrock


def _event_header(name: str, value: str) -> bytes:
    name_bytes, value_bytes = name.encode(), value.encode()
    # type 7 = string: 1-byte name length, name, type, 2-byte value length, value
    return (
        struct.pack("!B", len(name_bytes))
        + name_bytes
        + struct.pack("!BH", 7, len(value_bytes))
        + value_bytes
    )


def encode_event(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total length, headers length, CRC32 of those 8
    bytes), headers, payload, then a CRC32 of everything before it."""
    header_bytes = b"".join(_event_header(name, value) for name, value in headers.items())
    total = 12 + len(header_bytes) + len(payload) + 4
    prelude = struct.pack("!II", total, len(header_bytes))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + header_bytes + payload
    return message + struct.pack("!I", binascii.crc32(message) & 0xFFFFFFFF)


def _bedrock_event(event_type: str, data: dict[str, Any]) -> bytes:
    return encode_event(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(data).encode(),
    )


def _bedrock_exception(exception_type: str, message: str) -> bytes:
    return encode_event(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps({"message": message}).encode(),
    )


_BEDROCK_ERRORS: dict[str, tuple[int, str, str]] = {
    "rate_limited": (429, "ThrottlingException", "Too many requests, please wait."),
    "unauthorized": (
        403,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    ),
    "access_denied": (
        403,
        "AccessDeniedException",
        "You don't have access to the model with the specified model ID.",
    ),
    "validation_error": (
        400,
        "ValidationException",
        "A conversation must start with a user message.",
    ),
    "error500": (500, "InternalServerException", "The server encountered an error."),
    "model_timeout": (408, "ModelTimeoutException", "Model has timed out."),
}


class BedrockUpstream(_Upstream):
    _PATH = re.compile(r"/model/(?P<model>[^/]+)/(?P<operation>converse|converse-stream)")
    _CREDENTIAL = re.compile(r"Credential=(?P<key>[^/]+)/")

    def __init__(self, behaviour: str = "ok", *, reply: str | None = None) -> None:
        super().__init__(behaviour, reply=reply)
        self.stop_reason = "end_turn"

    def _dispatch(self, handler: _Handler) -> None:
        # Report the model id unquoted (botocore percent-encodes ':' in ids like
        # "anthropic.claude-3-haiku-20240307-v1:0").
        handler.path = unquote(handler.path)
        super()._dispatch(handler)

    def _error(self, handler: _Handler, status: int, error_type: str, message: str) -> None:
        handler.send_json(
            status,
            {"message": message},
            headers={
                "x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/"
                "coral/com.amazon.bedrock/",
                "x-amzn-RequestId": "test-request-id",
            },
        )

    def answer(self, handler: _Handler, request: ReceivedRequest) -> None:
        match = self._PATH.fullmatch(request.path)
        if request.method != "POST" or match is None:
            self._error(handler, 404, "UnknownOperationException", "Unknown operation")
            return
        credential = self._CREDENTIAL.search(request.headers.get("authorization", ""))
        behaviour = self.behaviour
        if self.required_key is not None and (
            credential is None or credential["key"] != self.required_key
        ):
            behaviour = "unauthorized"
        if behaviour in _BEDROCK_ERRORS:
            self._error(handler, *_BEDROCK_ERRORS[behaviour])
        elif behaviour == "malformed_json":
            handler.send_bytes(200, "application/json", b'{"output": {"message": ')
        elif behaviour == "hang":
            self._hang(handler)
        elif behaviour == "reset":
            handler.reset()
        elif match["operation"] == "converse-stream":
            self._stream(handler, request)
        else:
            self._converse(handler, request)

    def _reply_and_usage(self, request: ReceivedRequest) -> tuple[str, dict[str, int]]:
        body = request.json or {}
        messages = body.get("messages") or []
        texts = [_text(body.get("system") or [])]
        texts += [_text(m.get("content")) for m in messages]
        reply = self.reply_for(
            [_text(m.get("content")) for m in messages if m.get("role") == "user"]
        )
        prompt, completion = sum(_words(t) for t in texts), _words(reply)
        return reply, {
            "inputTokens": prompt,
            "outputTokens": completion,
            "totalTokens": prompt + completion,
        }

    def _converse(self, handler: _Handler, request: ReceivedRequest) -> None:
        reply, usage = self._reply_and_usage(request)
        handler.send_json(
            200,
            {
                "output": {"message": {"role": "assistant", "content": [{"text": reply}]}},
                "stopReason": self.stop_reason,
                "usage": usage,
                "metrics": {"latencyMs": 1},
            },
            headers={"x-amzn-RequestId": "test-request-id"},
        )

    def _stream(self, handler: _Handler, request: ReceivedRequest) -> None:
        reply, usage = self._reply_and_usage(request)
        events = [_bedrock_event("messageStart", {"role": "assistant"})]
        events += [
            _bedrock_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
            for piece in _pieces(reply)
        ]
        events += [
            _bedrock_event("contentBlockStop", {"contentBlockIndex": 0}),
            _bedrock_event("messageStop", {"stopReason": self.stop_reason}),
            _bedrock_event("metadata", {"usage": usage, "metrics": {"latencyMs": 1}}),
        ]
        handler.start_chunked(
            "application/vnd.amazon.eventstream", headers={"x-amzn-RequestId": "test-request-id"}
        )
        for index, event in enumerate(events):
            if index == 2:
                if self.behaviour == "stream_exception":
                    handler.write_chunk(
                        _bedrock_exception("throttlingException", "Too many tokens, please wait.")
                    )
                    handler.end_chunked()
                    return
                if self.behaviour in {"stream_break", "stream_stall"}:
                    if self.behaviour == "stream_stall":
                        self._stopping.wait(self.hang_seconds)
                    handler.drop()
                    return
            handler.write_chunk(event)
        handler.end_chunked()
