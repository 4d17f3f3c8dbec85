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

OpenAIUpstream (``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``GET /v1/models``) and
AzureUpstream (``POST /openai/deployments/<deployment>/chat/completions?api-version=...``,
``.../embeddings?api-version=...``, ``GET /openai/models?api-version=...``) behaviours:

- ``"ok"`` — a chat completion, or an SSE stream in OpenAI's chunk shape (a role chunk, content
  chunks, a chunk with ``finish_reason``, a usage chunk with ``choices: []`` when the request
  asked for ``stream_options.include_usage``, then ``data: [DONE]``). ``finish_reason``
  (default ``"stop"``) sets the reported finish reason. Answers follow the request as OpenAI's
  models do:

  - ``tool_call`` — ``None`` (default), or ``{"name": ..., "arguments": {...} or "<json>"}`` (or
    a list of them, for parallel calls): when the request has ``tools``, the answer calls them
    (``message.tool_calls`` with ids ``call_<hex>``, arguments as a JSON string, ``content:
    null``, ``finish_reason: "tool_calls"``), unless ``tool_choice`` is ``"none"`` or the last
    message is a ``tool`` result. ``tool_choice`` ``"required"`` or naming a function forces a
    call even then, with ``tool_call``'s arguments for that name or, without them, arguments
    made from the function's parameters schema. ``parallel_tool_calls: false`` keeps the first
    call. Streams send OpenAI's sequence: ``{"role": "assistant", "content": null,
    "tool_calls": [{"index", "id", "type", "function": {"name", "arguments": ""}}]}``, then
    ``{"tool_calls": [{"index", "function": {"arguments": <piece>}}]}`` chunks with
    token-sized pieces of the arguments, the same for each further call, then the finish chunk.
  - ``refusal`` — ``None`` (default) or a text: the answer is ``message.refusal`` with
    ``content: null`` (streams: ``delta.refusal`` pieces).
  - With ``reply`` ``None`` and a ``tool`` message last, the text is ``"The tool said:
    <its content>"``. When user messages carry ``image_url`` parts, the text ends with
    ``" [saw N images]"`` (``reply`` or not).
  - ``n`` — that many choices (index 0..n-1); choice i > 0 says the text with ``" (choice
    i)"`` appended (tool calls: the same calls under other ids). Streamed choices interleave,
    each chunk naming its ``index``, each with its own finish chunk.
  - ``logprobs: true`` (``top_logprobs``: that many alternatives, the token first) — each choice
    carries ``logprobs: {"content": [{"token", "logprob", "bytes", "top_logprobs"}, ...],
    "refusal": null}``, one entry per word (for refusals, under ``refusal``); in streams each
    content chunk carries its entry.
  - Completion tokens count all choices; tool calls count as the words of name and arguments.
- Embeddings: ``input`` a string, strings, a token array or token arrays (anything else: 400);
  ``dimensions`` (default 8) numbers per input, a unit float32 vector derived from a hash of
  the input (equal inputs, equal vectors); ``encoding_format`` ``"float"`` (default) or
  ``"base64"`` (little-endian float32); usage ``{"prompt_tokens", "total_tokens"}`` = words
  (token arrays: their length). Error behaviours apply here too.
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
the binary ``application/vnd.amazon.eventstream`` framing that botocore decodes; and
``.../invoke`` for embeddings) behaviours:

- ``"ok"`` — ``stop_reason`` (default ``"end_turn"``) is the reported ``stopReason``; streams
  send messageStart, contentBlockDelta..., contentBlockStop, messageStop and metadata (usage).
  The echoed reply reads tool results' text as user text.
- ``tool_use`` — ``None`` (default), or ``{"name": ..., "input": {...}}`` (or a list of them, for
  parallel calls; optional ``"id"``, default ``"tooluse_<n>"``): the answer is those toolUse
  blocks, after a text block only when ``reply`` is set, with ``stopReason`` ``"tool_use"``.
  Streams send, per call, contentBlockStart (``start.toolUse``: id and name), contentBlockDelta
  events whose ``delta.toolUse.input`` are 7-character pieces of the input's JSON (or the call's
  ``"pieces"``, a list of strings, when given), then contentBlockStop; content block indexes
  count the text block first, as Bedrock's do.
- Converse bodies are checked as Bedrock checks them, answering 400 ``ValidationException``: the
  first turn is the user's and roles alternate, no turn is empty, no text block is blank (tool
  results' included), toolUse/toolResult blocks need ``toolConfig`` (which needs a tool), a
  toolUse is the assistant's, each toolResult answers a toolUse of the turn before, and image
  blocks have a known format and base64 bytes.
- ``POST /model/<modelId>/invoke`` — embeddings: ``amazon.titan-embed*`` takes ``{"inputText",
  "dimensions"?}`` and answers ``{"embedding", "inputTextTokenCount"}``; ``cohere.embed*`` takes
  ``{"texts", "input_type", "output_dimension"?}`` and answers ``{"embeddings": [[...]], ...}``
  (``cohere.embed-v4*``: ``{"embeddings": {"float": [[...]]}}``). Vectors derive from a hash of
  each text (equal texts, equal vectors), ``dimensions``/``output_dimension`` long, else
  ``embedding_dimensions`` (default 8). Token counts are words; the
  ``X-Amzn-Bedrock-Input-Token-Count`` header carries them unless ``send_token_count`` is
  false. Other bodies get 400 ``ValidationException``. Error behaviours apply here too.
- ``"rate_limited"`` (429 ``ThrottlingException``), ``"unauthorized"`` (403
  ``UnrecognizedClientException``), ``"access_denied"`` (403 ``AccessDeniedException``),
  ``"validation_error"`` (400 ``ValidationException``), ``"error500"`` (500
  ``InternalServerException``), ``"model_timeout"`` (408 ``ModelTimeoutException``),
  ``"malformed_json"``, ``"hang"``, ``"reset"``, ``"stream_break"``, ``"stream_stall"`` and
  ``"stream_exception"`` (two events, then a ``throttlingException`` exception event).

``encode_event(headers, payload)`` builds one event-stream message, for other AWS fakes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import hashlib
import json
import re
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
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


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _argument_pieces(arguments: str) -> list[str]:
    """Token-sized pieces of a tool call's arguments, split as OpenAI streams them (``{"``,
    ``city``, ``":"``, ``Paris``, ``"}``), so a client has to concatenate them."""
    return re.findall(r"\w+|\s+|[^\w\s]+", arguments) or [arguments]


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _functions(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``function`` objects of the request's ``tools``."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    return [
        t["function"]
        for t in tools
        if isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name")
    ]


def _image_parts(messages: list[dict[str, Any]]) -> int:
    return sum(
        1
        for m in messages
        if m.get("role") == "user" and isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )


def _example_value(schema: Any, root: dict[str, Any], depth: int = 0) -> Any:
    """A value that fits a JSON schema (the subset tool parameters use): what a model fills a
    call with when ``tool_choice`` forces one and ``tool_call`` does not say the arguments."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    reference = schema.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/"):
        target: Any = root
        for key in reference[2:].split("/"):
            target = target.get(key) if isinstance(target, dict) else None
        return _example_value(target, root, depth + 1)
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _example_value(options[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or isinstance(schema.get("properties"), dict):
        properties = schema.get("properties") or {}
        return {name: _example_value(sub, root, depth + 1) for name, sub in properties.items()}
    return {"string": "example", "integer": 1, "number": 1.5, "boolean": True, "array": []}.get(
        str(kind)
    )


def _token_logprob(token: str, top: int) -> dict[str, Any]:
    """One ``logprobs.content`` entry: deterministic numbers, ``top`` alternatives (the token
    itself first, as OpenAI lists the sampled token when it is the likeliest)."""
    logprob = -round(0.01 * (1 + len(token.strip())), 4)
    alternatives = [(token, logprob)]
    alternatives += [(f"<alt{rank}>", round(logprob - rank, 4)) for rank in range(1, top)]
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [
            {"token": alt, "logprob": value, "bytes": list(alt.encode())}
            for alt, value in alternatives[:top]
        ],
    }


def _unit_vector(key: str, dimensions: int) -> list[float]:
    """A unit vector derived from a hash of the input; float32 values, so the ``float`` and
    ``base64`` encodings of one input decode to the same numbers."""
    values: list[float] = []
    block = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{block}:{key}".encode()).digest()
        values += [
            int.from_bytes(digest[i : i + 4], "little") / 2**31 - 1.0 for i in range(0, 32, 4)
        ]
        block += 1
    values = values[:dimensions]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


def _embedding_inputs(value: Any) -> list[tuple[str, int]] | None:
    """``(hash key, token count)`` per input of an embeddings request, or ``None`` when
    ``input`` is not one of OpenAI's shapes: a string, strings, a token array, token arrays."""

    def tokens(item: Any) -> bool:
        return (
            isinstance(item, list)
            and bool(item)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        )

    if isinstance(value, str) or tokens(value):
        value = [value]
    if not isinstance(value, list) or not value:
        return None
    inputs = []
    for item in value:
        if isinstance(item, str) and item:
            inputs.append((item, _words(item)))
        elif tokens(item):
            inputs.append((_compact_json(item), len(item)))
        else:
            return None
    return inputs


@dataclass(frozen=True)
class _ToolCall:
    id: str
    name: str
    arguments: str  # a JSON string, as OpenAI sends it


@dataclass(frozen=True)
class _PlannedChoice:
    """What one choice of an answer says: text, a refusal or tool calls."""

    finish_reason: str
    content: str | None = None
    refusal: str | None = None
    tool_calls: tuple[_ToolCall, ...] = ()

    @property
    def completion_tokens(self) -> int:
        said = [self.content or "", self.refusal or ""]
        said += [f"{call.name} {call.arguments}" for call in self.tool_calls]
        return sum(_words(text) for text in said)


class OpenAIUpstream(_Upstream):
    base_path = "/v1"

    def __init__(self, behaviour: str = "ok", *, reply: str | None = None) -> None:
        super().__init__(behaviour, reply=reply)
        self.finish_reason = "stop"
        self.retry_after = "2"
        self.tool_call: dict[str, Any] | list[dict[str, Any]] | None = None
        self.refusal: str | None = None
        # How streamed events are written: the line ending (the SSE spec allows LF, CRLF and
        # CR), and, if set, in pieces of this many bytes, each sent at once (so lines and line
        # endings arrive split across reads).
        self.sse_newline = "\n"
        self.sse_piece: int | None = None
        # Embeddings: the vector answered for a given input text (else one from its hash), so
        # a test can make two questions as similar as it needs.
        self.embedding_for: dict[str, list[float]] = {}

    def route(self, request: ReceivedRequest) -> str | None:
        """``"chat"``, ``"embeddings"``, ``"models"`` or ``None`` (404) for a request."""
        if request.method == "POST" and request.path == "/v1/chat/completions":
            return "chat"
        if request.method == "POST" and request.path == "/v1/embeddings":
            return "embeddings"
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

    def invalid(self, handler: _Handler, param: str, message: str) -> None:
        handler.send_json(
            400,
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": param,
                    "code": None,
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
        elif route == "embeddings":
            self._embed(handler, request)
        elif (request.json or {}).get("stream"):
            self._stream(handler, request)
        else:
            self._complete(handler, request)

    # Chat completions -------------------------------------------------------------------------

    def _tool_calls(self, body: dict[str, Any]) -> list[_ToolCall] | None:
        """The calls the answer makes, or ``None`` for an answer in words."""
        functions = _functions(body)
        choice = body.get("tool_choice")
        if not functions or choice == "none":
            return None
        forced_name = None
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            forced_name = choice["function"].get("name")
        forced = forced_name is not None or choice == "required"
        messages = _messages(body)
        answering_a_result = bool(messages) and messages[-1].get("role") == "tool"
        if not forced and (self.tool_call is None or answering_a_result):
            return None
        planned = [self.tool_call] if isinstance(self.tool_call, dict) else self.tool_call or []
        if forced_name is not None:
            planned = [c for c in planned if c.get("name") == forced_name] or [
                {"name": forced_name}
            ]
        elif not planned:
            planned = [{"name": functions[0]["name"]}]
        if body.get("parallel_tool_calls") is False:
            planned = planned[:1]
        calls = []
        for call in planned:
            name = str(call.get("name"))
            arguments = call.get("arguments")
            if arguments is None:  # what the tool's parameters schema asks for
                schema = next((f.get("parameters") for f in functions if f["name"] == name), {})
                arguments = _example_value(schema, schema if isinstance(schema, dict) else {})
                if not isinstance(arguments, dict):
                    arguments = {}
            if not isinstance(arguments, str):
                arguments = _compact_json(arguments)
            calls.append(_ToolCall(_call_id(), name, arguments))
        return calls

    def _text_reply(self, body: dict[str, Any]) -> str:
        messages = _messages(body)
        if self.reply is None and messages and messages[-1].get("role") == "tool":
            text = f"The tool said: {_text(messages[-1].get('content'))}"
        else:
            text = self.reply_for(
                [_text(m.get("content")) for m in messages if m.get("role") == "user"]
            )
        images = _image_parts(messages)
        return f"{text} [saw {images} images]" if images else text

    def _plan(self, body: dict[str, Any]) -> list[_PlannedChoice]:
        n = body.get("n")
        count = n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 128 else 1
        if self.refusal is not None:
            return [_PlannedChoice(self.finish_reason, refusal=self.refusal)] * count
        calls = self._tool_calls(body)
        if calls is not None:
            # Each choice makes its calls under ids of its own, as OpenAI's choices do.
            return [
                _PlannedChoice(
                    "tool_calls", tool_calls=tuple(replace(c, id=_call_id()) for c in calls)
                )
                for _ in range(count)
            ]
        text = self._text_reply(body)
        return [
            _PlannedChoice(self.finish_reason, content=text if i == 0 else f"{text} (choice {i})")
            for i in range(count)
        ]

    def _usage(self, body: dict[str, Any], plans: list[_PlannedChoice]) -> dict[str, int]:
        prompt = sum(_words(_text(m.get("content"))) for m in _messages(body))
        completion = sum(plan.completion_tokens for plan in plans)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    @staticmethod
    def _top_logprobs(body: dict[str, Any]) -> int | None:
        """``None`` unless the request asked for logprobs; then how many alternatives."""
        if body.get("logprobs") is not True:
            return None
        top = body.get("top_logprobs")
        return top if isinstance(top, int) and not isinstance(top, bool) and top >= 0 else 0

    def _send_answer(self, handler: _Handler, body: bytes) -> None:
        if self.behaviour == "stream_break":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body[: len(body) // 2])
            handler.drop()
            return
        handler.send_bytes(200, "application/json", body)

    def _complete(self, handler: _Handler, request: ReceivedRequest) -> None:
        body = request.json or {}
        plans = self._plan(body)
        top = self._top_logprobs(body)
        choices = []
        for index, plan in enumerate(plans):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": plan.content,
                "refusal": plan.refusal,
            }
            if plan.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for call in plan.tool_calls
                ]
            logprobs = None
            if top is not None:
                logprobs = {
                    "content": None
                    if plan.content is None
                    else [_token_logprob(t, top) for t in _pieces(plan.content)],
                    "refusal": None
                    if plan.refusal is None
                    else [_token_logprob(t, top) for t in _pieces(plan.refusal)],
                }
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": logprobs,
                    "finish_reason": plan.finish_reason,
                }
            )
        answer = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name(request),
            "system_fingerprint": None,
            "choices": choices,
            "usage": self._usage(body, plans),
        }
        self._send_answer(handler, json.dumps(answer).encode())

    @staticmethod
    def _deltas(
        plan: _PlannedChoice, top: int | None
    ) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """One choice's stream: ``(delta, logprobs)`` per chunk, finish chunk excluded."""

        def logprobs(field: str, piece: str) -> dict[str, Any] | None:
            if top is None:
                return None
            return {"content": None, "refusal": None, field: [_token_logprob(piece, top)]}

        if plan.tool_calls:
            deltas: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
            for index, call in enumerate(plan.tool_calls):
                opening: dict[str, Any] = {
                    "index": index,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
                first = {"tool_calls": [opening]}
                if index == 0:
                    first = {"role": "assistant", "content": None, **first}
                deltas.append((first, None))
                deltas += [
                    ({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None)
                    for piece in _argument_pieces(call.arguments)
                ]
            return deltas
        if plan.refusal is not None:
            return [({"role": "assistant", "content": None, "refusal": ""}, None)] + [
                ({"refusal": piece}, logprobs("refusal", piece)) for piece in _pieces(plan.refusal)
            ]
        return [({"role": "assistant", "content": "", "refusal": None}, None)] + [
            ({"content": piece}, logprobs("content", piece))
            for piece in _pieces(plan.content or "")
        ]

    def _stream(self, handler: _Handler, request: ReceivedRequest) -> None:
        body = request.json or {}
        plans = self._plan(body)
        top = self._top_logprobs(body)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base: dict[str, Any] = {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model_name(request),
            "system_fingerprint": None,
        }
        if include_usage:
            base["usage"] = None  # OpenAI sets it to null on every chunk but the last

        def choice(
            index: int,
            delta: dict[str, Any],
            logprobs: dict[str, Any] | None = None,
            finish_reason: str | None = None,
        ) -> dict[str, Any]:
            return {
                **base,
                "choices": [
                    {
                        "index": index,
                        "delta": delta,
                        "logprobs": logprobs,
                        "finish_reason": finish_reason,
                    }
                ],
            }

        # Choices interleave, as OpenAI's do: clients must sort the chunks by index.
        per_choice = [self._deltas(plan, top) for plan in plans]
        chunks = [
            choice(index, *deltas[step])
            for step in range(max(len(deltas) for deltas in per_choice))
            for index, deltas in enumerate(per_choice)
            if step < len(deltas)
        ]
        chunks += [choice(index, {}, None, plan.finish_reason) for index, plan in enumerate(plans)]
        if include_usage:
            chunks.append({**base, "choices": [], "usage": self._usage(body, plans)})

        handler.start_chunked("text/event-stream; charset=utf-8")
        for index, chunk in enumerate(chunks):
            if index == 2 and self.behaviour in {"stream_break", "stream_stall"}:
                if self.behaviour == "stream_stall":
                    self._stopping.wait(self.hang_seconds)
                handler.drop()
                return
            self._write_event(handler, f"data: {json.dumps(chunk)}\n\n")
        self._write_event(handler, "data: [DONE]\n\n")
        handler.end_chunked()

    def _write_event(self, handler: _Handler, event: str) -> None:
        data = event.replace("\n", self.sse_newline).encode()
        piece = self.sse_piece or len(data)
        for start in range(0, len(data), piece):
            handler.write_chunk(data[start : start + piece])
            handler.wfile.flush()

    # Embeddings -------------------------------------------------------------------------------

    def _embed(self, handler: _Handler, request: ReceivedRequest) -> None:
        body = request.json if isinstance(request.json, dict) else {}
        inputs = _embedding_inputs(body.get("input"))
        if inputs is None:
            self.invalid(handler, "input", "'$.input' is invalid.")
            return
        dimensions = body.get("dimensions", 8)
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
            self.invalid(handler, "dimensions", "'$.dimensions' must be a positive integer.")
            return
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            self.invalid(handler, "encoding_format", "'$.encoding_format' is invalid.")
            return
        data = []
        for index, (key, _) in enumerate(inputs):
            vector = self.embedding_for.get(key) or _unit_vector(key, dimensions)
            encoded: Any = vector
            if encoding == "base64":
                packed = struct.pack(f"<{dimensions}f", *vector)
                encoded = base64.b64encode(packed).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(count for _, count in inputs)
        answer = {
            "object": "list",
            "data": data,
            "model": self.model_name(request),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        self._send_answer(handler, json.dumps(answer).encode())


class AzureUpstream(OpenAIUpstream):
    base_path = ""

    def __init__(self, behaviour: str = "ok", *, reply: str | None = None) -> None:
        super().__init__(behaviour, reply=reply)
        self.api_version: str | None = "2024-10-21"

    _DEPLOYMENT_PATH = re.compile(
        r"/openai/deployments/(?P<deployment>[^/]+)/(?P<operation>chat/completions|embeddings)"
    )

    def route(self, request: ReceivedRequest) -> str | None:
        version = request.query.get("api-version")
        if not version or (self.api_version is not None and version != self.api_version):
            return None  # Azure answers an unknown or missing api-version with 404
        match = self._DEPLOYMENT_PATH.fullmatch(request.path)
        if request.method == "POST" and match:
            return "chat" if match["operation"] == "chat/completions" else "embeddings"
        if request.method == "GET" and request.path == "/openai/models":
            return "models"
        return None

    def presented_key(self, request: ReceivedRequest) -> str | None:
        return request.headers.get("api-key")

    def model_name(self, request: ReceivedRequest) -> str:
        match = self._DEPLOYMENT_PATH.fullmatch(request.path)
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


def _turn_text(content: Any) -> str:
    """The text of a Converse turn, tool results' text included."""
    if not isinstance(content, list):
        return ""
    texts = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolResult"), dict):
            texts.append(_text(block["toolResult"].get("content")))
    return "".join(texts)


def _converse_problem(body: Any) -> str | None:
    """What real Bedrock would refuse in a Converse body (a ValidationException), or None."""
    if not isinstance(body, dict):
        return "The request body is not a JSON object."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "The messages field is required."
    tool_config = body.get("toolConfig")
    if tool_config is not None and not (tool_config.get("tools") or []):
        return "The toolConfig field must have at least one tool."
    blocks_of = [[b for b in m.get("content") or [] if isinstance(b, dict)] for m in messages]
    for text in _text_blocks(body.get("system") or []):
        if not text.strip():
            return "The text field in the ContentBlock object is blank."
    previous_uses: set[str] = set()
    for index, (message, blocks) in enumerate(zip(messages, blocks_of, strict=True)):
        role = message.get("role")
        if index == 0 and role != "user":
            return "A conversation must start with a user message."
        if index > 0 and role == messages[index - 1].get("role"):
            return "A conversation must alternate between user and assistant roles."
        if not blocks:
            return "The content field in the Message object is empty."
        uses = set()
        for block in blocks:
            texts = _text_blocks([block])
            if "toolResult" in block:
                texts = _text_blocks(block["toolResult"].get("content") or [])
            if any(not text.strip() for text in texts):
                return "The text field in the ContentBlock object is blank."
            if ("toolUse" in block or "toolResult" in block) and tool_config is None:
                return (
                    "The toolConfig field must be defined when using toolUse and toolResult "
                    "content blocks."
                )
            if "toolUse" in block:
                if role != "assistant":
                    return "toolUse blocks are only allowed in assistant messages."
                uses.add(block["toolUse"].get("toolUseId"))
            if "toolResult" in block and block["toolResult"].get("toolUseId") not in previous_uses:
                return (
                    "The toolResult blocks must match the toolUse blocks of the previous "
                    "assistant turn."
                )
            if "image" in block:
                image = block["image"]
                if image.get("format") not in {"png", "jpeg", "gif", "webp"}:
                    return "The image format is not supported."
                try:
                    base64.b64decode(image["source"]["bytes"], validate=True)
                except (KeyError, TypeError, binascii.Error):
                    return "The image source is not valid base64 bytes."
        previous_uses = uses
    return None


def _text_blocks(blocks: list[Any]) -> list[str]:
    return [b["text"] for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str)]


def _embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic vector for ``text``: equal texts, equal vectors."""
    seed = hashlib.sha256(text.encode()).digest()
    return [round(seed[i % len(seed)] / 255 - 0.5, 6) for i in range(dimensions)]


class BedrockUpstream(_Upstream):
    _PATH = re.compile(r"/model/(?P<model>[^/]+)/(?P<operation>converse|converse-stream|invoke)")
    _CREDENTIAL = re.compile(r"Credential=(?P<key>[^/]+)/")

    def __init__(self, behaviour: str = "ok", *, reply: str | None = None) -> None:
        super().__init__(behaviour, reply=reply)
        self.stop_reason = "end_turn"
        self.tool_use: dict[str, Any] | list[dict[str, Any]] | None = None
        self.embedding_dimensions = 8
        self.send_token_count = True

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
        elif match["operation"] == "invoke":
            self._invoke(handler, request, match["model"])
        elif (problem := _converse_problem(request.json)) is not None:
            self._error(handler, 400, "ValidationException", problem)
        elif match["operation"] == "converse-stream":
            self._stream(handler, request)
        else:
            self._converse(handler, request)

    def _tool_uses(self) -> list[tuple[dict[str, Any], list[str]]]:
        """The toolUse blocks to answer with (ids ``tooluse_<n>`` unless given), each with the
        pieces its input is streamed in."""
        calls = self.tool_use
        if calls is None:
            return []
        uses = []
        for n, call in enumerate([calls] if isinstance(calls, dict) else calls):
            use = {
                "toolUseId": call.get("id", f"tooluse_{n}"),
                "name": call["name"],
                "input": call.get("input", {}),
            }
            pieces = call.get("pieces")
            if pieces is None:  # pieces that split keys and values, as models stream them
                encoded = json.dumps(use["input"])
                pieces = [encoded[i : i + 7] for i in range(0, len(encoded), 7)]
            uses.append((use, pieces))
        return uses

    def _reply_and_usage(self, request: ReceivedRequest) -> tuple[str, dict[str, int]]:
        body = request.json or {}
        messages = body.get("messages") or []
        texts = [_text(body.get("system") or [])]
        texts += [_turn_text(m.get("content")) for m in messages]
        user_texts = [_turn_text(m.get("content")) for m in messages if m.get("role") == "user"]
        # With tool calls, text comes only when set (a preamble such as "Let me look.").
        reply = self.reply_for(user_texts) if self.tool_use is None else self.reply or ""
        completion = _words(reply) + sum(
            _words(json.dumps(use["input"])) for use, _ in self._tool_uses()
        )
        prompt = sum(_words(t) for t in texts)
        return reply, {
            "inputTokens": prompt,
            "outputTokens": completion,
            "totalTokens": prompt + completion,
        }

    def _reported_stop_reason(self) -> str:
        return "tool_use" if self.tool_use is not None else self.stop_reason

    def _converse(self, handler: _Handler, request: ReceivedRequest) -> None:
        reply, usage = self._reply_and_usage(request)
        content: list[dict[str, Any]] = [{"text": reply}] if reply else []
        content += [{"toolUse": use} for use, _ in self._tool_uses()]
        handler.send_json(
            200,
            {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": self._reported_stop_reason(),
                "usage": usage,
                "metrics": {"latencyMs": 1},
            },
            headers={"x-amzn-RequestId": "test-request-id"},
        )

    def _stream(self, handler: _Handler, request: ReceivedRequest) -> None:
        reply, usage = self._reply_and_usage(request)
        events = [_bedrock_event("messageStart", {"role": "assistant"})]
        block = 0
        if reply or self.tool_use is None:
            events += [
                _bedrock_event(
                    "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}
                )
                for piece in _pieces(reply)
            ]
            events.append(_bedrock_event("contentBlockStop", {"contentBlockIndex": 0}))
            block = 1
        for use, pieces in self._tool_uses():
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            events.append(
                _bedrock_event("contentBlockStart", {"contentBlockIndex": block, "start": start})
            )
            events += [
                _bedrock_event(
                    "contentBlockDelta",
                    {"contentBlockIndex": block, "delta": {"toolUse": {"input": piece}}},
                )
                for piece in pieces
            ]
            events.append(_bedrock_event("contentBlockStop", {"contentBlockIndex": block}))
            block += 1
        events += [
            _bedrock_event("messageStop", {"stopReason": self._reported_stop_reason()}),
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

    def _invoke(self, handler: _Handler, request: ReceivedRequest, model: str) -> None:
        """InvokeModel for Titan and Cohere text embeddings (each family's own body)."""
        body = request.json if isinstance(request.json, dict) else {}
        name = model.rsplit("/", 1)[-1]
        if "amazon.titan-embed" in name and isinstance(body.get("inputText"), str):
            text = body["inputText"]
            tokens = _words(text)
            data: dict[str, Any] = {
                "embedding": _embedding(text, body.get("dimensions", self.embedding_dimensions)),
                "inputTextTokenCount": tokens,
            }
        elif "cohere.embed" in name and isinstance(body.get("texts"), list):
            texts = body["texts"]
            tokens = sum(_words(t) for t in texts)
            size = body.get("output_dimension", self.embedding_dimensions)
            vectors = [_embedding(t, size) for t in texts]
            v4 = "embed-v4" in name
            data = {
                "id": "test-embedding-id",
                "texts": texts,
                "response_type": "embeddings_by_type" if v4 else "embeddings_floats",
                "embeddings": {"float": vectors} if v4 else vectors,
            }
        else:
            self._error(handler, 400, "ValidationException", "Malformed input request.")
            return
        headers = {"x-amzn-RequestId": "test-request-id"}
        if self.send_token_count:
            headers["X-Amzn-Bedrock-Input-Token-Count"] = str(tokens)
        handler.send_json(200, data, headers=headers)
