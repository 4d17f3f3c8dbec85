"""Real Google servers on loopback, built on ``tests.upstreams``' threaded server (same
attributes: ``base_url``, ``requests``, ``behaviour``, ``reply``, ``required_key``,
``on_request``, ``hang_seconds``):

GeminiUpstream: the Generative Language API (``POST /v1beta/models/<m>:generateContent``,
``:streamGenerateContent?alt=sse``, ``:batchEmbedContents``, ``GET /v1beta/models``).
``required_key`` is checked against the ``x-goog-api-key`` header (a wrong key gets what Gemini
answers: 400 ``INVALID_ARGUMENT`` with an ``ErrorInfo`` of reason ``API_KEY_INVALID``); a ``key``
in the query string is refused (400), so a test fails if the key ever travels in the URL.

VertexUpstream: the same wire at ``/v1/projects/<p>/locations/<l>/publishers/google/models/<m>:
generateContent`` (and ``:streamGenerateContent``, ``:predict`` for embeddings), authenticated
with ``Authorization: Bearer <token>``, where the token must be one ``tokens`` (a
``GoogleTokenServer``) issued and has not expired (401 ``UNAUTHENTICATED`` otherwise).

Both check bodies as Gemini does (400 ``INVALID_ARGUMENT``): ``contents`` present, roles
``user``/``model`` alternating, no empty parts list, a ``functionResponse`` answers a
``functionCall`` of the same name in the model turn before it, ``inlineData`` is base64 with a
mime type. ``"ok"`` answers the last user turn's text (function responses' ``response`` as JSON
text; ``" [saw N images]"`` for inline images), or ``reply``. ``function_call``: ``None`` or
``{"name", "args"}`` (or a list): when the request declares tools, the answer is those
functionCall parts (finishReason STOP, as Gemini reports). ``generationConfig.candidateCount``
n answers n candidates (candidate i > 0 says the text with ``" (choice i)"`` appended).
Streams: one chunk per word, a function call whole in one chunk, each candidate's chunks in
turn, then one chunk with every candidate's finishReason and the usageMetadata.

Behaviours: ``"safety"`` (a candidate finished by SAFETY, no content), ``"prompt_blocked"``
(``promptFeedback.blockReason``, no candidates), ``"rate_limited"`` (429 RESOURCE_EXHAUSTED with
a ``RetryInfo`` of ``retry_delay``, default ``"1s"``, and no Retry-After header),
``"unauthorized"`` (Gemini: the wrong-key 400; Vertex: 401), ``"error500"``,
``"malformed_json"``, ``"hang"``, ``"reset"``, ``"stream_break"`` (two chunks, then the
connection closes).

GoogleTokenServer: an OAuth token endpoint (``POST /token``) taking Google's JWT-bearer grant,
checking the assertion's RS256 signature against ``public_key`` (PEM) and its ``aud``
(Google's token endpoint, which google-auth always names); it issues
``token-<n>`` valid for ``expires_in`` seconds (default 3600). Behaviours: ``"ok"``,
``"refuse"`` (400 ``invalid_grant``), ``"error500"``, ``"redirect"`` (307 to ``/elsewhere``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.upstreams import ReceivedRequest, _Handler, _pieces, _Upstream, _words


def _error(handler: _Handler, status: int, code: str, details: list[Any] | None = None) -> None:
    body = {"error": {"code": status, "message": f"{code} (test)", "status": code}}
    if details:
        body["error"]["details"] = details
    handler.send_json(status, body)


def contents_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "Invalid JSON payload"
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "contents is not specified"
    previous: dict[str, Any] | None = None
    for n, content in enumerate(contents):
        role = content.get("role") if isinstance(content, dict) else None
        if role not in ("user", "model"):
            return f"contents[{n}].role must be user or model"
        if previous is not None and previous["role"] == role:
            return "roles must alternate"
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"contents[{n}].parts must not be empty"
        called = {
            p["functionCall"]["name"]
            for p in (previous or {}).get("parts", [])
            if isinstance(p, dict) and "functionCall" in p
        }
        for part in parts:
            if "functionResponse" in part:
                response = part["functionResponse"]
                if response.get("name") not in called or not isinstance(
                    response.get("response"), dict
                ):
                    return "functionResponse must answer a functionCall of the previous turn"
            if "inlineData" in part:
                data = part["inlineData"]
                try:
                    base64.b64decode(data.get("data", ""), validate=True)
                except binascii.Error:
                    return "inlineData.data is not base64"
                if not data.get("mimeType"):
                    return "inlineData.mimeType is required"
            if "text" in part and not isinstance(part["text"], str):
                return "text must be a string"
        previous = content
    return None


class GeminiUpstream(_Upstream):
    model_path = re.compile(r"/v1beta/models/(?P<model>[^/:]+):(?P<method>\w+)")

    def __init__(self, behaviour: str = "ok", *, reply: str | None = None) -> None:
        super().__init__(behaviour, reply=reply)
        self.function_call: dict[str, Any] | list[dict[str, Any]] | None = None
        self.retry_delay = "1s"
        self.embedding_dimensions = 8

    def authorized(self, request: ReceivedRequest) -> bool:
        if self.required_key is None:
            return True
        return request.headers.get("x-goog-api-key") == self.required_key

    def refuse_credentials(self, handler: _Handler) -> None:
        # What the Gemini API answers a wrong key: a 400, the reason in the details.
        reason = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
        }
        _error(handler, 400, "INVALID_ARGUMENT", [reason])

    def answer(self, handler: _Handler, request: ReceivedRequest) -> None:
        if "key" in request.query:
            _error(handler, 400, "INVALID_ARGUMENT")  # the key belongs in the header
            return
        if self.behaviour == "unauthorized" or not self.authorized(request):
            self.refuse_credentials(handler)
            return
        if request.method == "GET" and request.path.endswith("/models"):
            handler.send_json(200, {"models": [{"name": "models/gemini-test"}]})
            return
        match = self.model_path.fullmatch(request.path)
        if request.method != "POST" or match is None:
            _error(handler, 404, "NOT_FOUND")
            return
        behaviour = self.behaviour
        method = match["method"]
        if behaviour == "rate_limited":
            retry = {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": self.retry_delay,
            }
            _error(handler, 429, "RESOURCE_EXHAUSTED", [retry])
        elif behaviour == "error500":
            _error(handler, 500, "INTERNAL")
        elif behaviour == "malformed_json":
            handler.send_bytes(200, "application/json", b'{"candidates": [')
        elif behaviour == "hang":
            self._hang(handler)
        elif behaviour == "reset":
            handler.reset()
        elif method in ("batchEmbedContents", "predict"):
            self._embed(handler, request, method)
        elif method not in ("generateContent", "streamGenerateContent"):
            _error(handler, 404, "NOT_FOUND")
        else:
            problem = contents_problem(request.json)
            if problem is not None:
                _error(handler, 400, "INVALID_ARGUMENT")
                self.last_problem = problem
            elif method == "streamGenerateContent":
                if request.query.get("alt") != "sse":
                    _error(handler, 400, "INVALID_ARGUMENT")
                else:
                    self._stream(handler, request.json, match["model"])
            else:
                handler.send_json(200, self._response(request.json, match["model"]))

    # Answers ----------------------------------------------------------------------------------

    def _calls(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        calls = self.function_call
        if calls is None or not body.get("tools"):
            return []
        return calls if isinstance(calls, list) else [calls]

    def _text(self, body: dict[str, Any]) -> str:
        last = body["contents"][-1]
        texts, images = [], 0
        for part in last["parts"]:
            if "text" in part:
                texts.append(part["text"])
            elif "functionResponse" in part:
                texts.append(json.dumps(part["functionResponse"]["response"]))
            elif "inlineData" in part:
                images += 1
        text = self.reply if self.reply is not None else " ".join(texts) or "ok"
        return text + (f" [saw {images} images]" if images else "")

    def _usage(self, body: dict[str, Any], output: str) -> dict[str, int]:
        prompt = sum(
            _words(part.get("text", ""))
            for content in body["contents"]
            for part in content["parts"]
        )
        return {
            "promptTokenCount": prompt,
            "candidatesTokenCount": _words(output),
            "totalTokenCount": prompt + _words(output),
        }

    def _response(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        if self.behaviour == "prompt_blocked":
            return {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3},
            }
        if self.behaviour == "safety":
            candidate: dict[str, Any] = {"finishReason": "SAFETY", "index": 0}
            return {
                "candidates": [candidate],
                "usageMetadata": self._usage(body, ""),
                "modelVersion": model,
            }
        calls = self._calls(body)
        if calls:
            parts = [
                {"functionCall": {"name": c["name"], "args": c.get("args", {})}} for c in calls
            ]
            output = json.dumps(calls)
        else:
            output = self._text(body)
            parts = [{"text": output}]
        count = (body.get("generationConfig") or {}).get("candidateCount") or 1
        candidates = []
        for index in range(count):
            extra = [{"text": f" (choice {index})"}] if index and not calls else []
            candidates.append(
                {
                    "content": {"role": "model", "parts": parts + extra},
                    "finishReason": "STOP",
                    "index": index,
                }
            )
        return {
            "candidates": candidates,
            "usageMetadata": self._usage(body, output),
            "modelVersion": model,
        }

    def _stream(self, handler: _Handler, body: dict[str, Any], model: str) -> None:
        whole = self._response(body, model)
        chunks: list[dict[str, Any]] = []
        candidates = whole.get("candidates")
        if not candidates:
            chunks.append(whole)
        else:
            last: dict[str, Any] = {"candidates": []}
            for candidate in candidates:
                index = candidate["index"]
                pieces: list[dict[str, Any]] = []
                for part in candidate.get("content", {}).get("parts", []):
                    if "text" in part:
                        pieces += [{"text": piece} for piece in _pieces(part["text"])]
                    else:
                        pieces.append(part)
                for piece in pieces:
                    chunks.append(
                        {
                            "candidates": [
                                {"content": {"role": "model", "parts": [piece]}, "index": index}
                            ]
                        }
                    )
                ending: dict[str, Any] = {"finishReason": candidate["finishReason"], "index": index}
                if pieces:
                    ending["content"] = {"role": "model", "parts": [{"text": ""}]}
                last["candidates"].append(ending)
            chunks.append({**last, "usageMetadata": whole["usageMetadata"], "modelVersion": model})
        handler.start_chunked("text/event-stream")
        for n, chunk in enumerate(chunks):
            if n == 2 and self.behaviour == "stream_break":
                handler.drop()
                return
            handler.write_chunk(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
            handler.wfile.flush()
        handler.end_chunked()

    def _embed(self, handler: _Handler, request: ReceivedRequest, method: str) -> None:
        body = request.json or {}
        if method == "batchEmbedContents":
            texts = [item["content"]["parts"][0]["text"] for item in body.get("requests", [])]
            size = (body.get("requests") or [{}])[0].get("outputDimensionality")
        else:
            texts = [item["content"] for item in body.get("instances", [])]
            size = (body.get("parameters") or {}).get("outputDimensionality")
        size = size or self.embedding_dimensions
        vectors = [[float(len(text) % 7 + i) for i in range(size)] for text in texts]
        if method == "batchEmbedContents":
            handler.send_json(200, {"embeddings": [{"values": v} for v in vectors]})
        else:
            predictions = [
                {"embeddings": {"values": v, "statistics": {"token_count": _words(t)}}}
                for v, t in zip(vectors, texts, strict=True)
            ]
            handler.send_json(200, {"predictions": predictions})


class GoogleTokenServer(_Upstream):
    def __init__(self, public_key: str, behaviour: str = "ok") -> None:
        super().__init__(behaviour)
        self.public_key = public_key
        self.expires_in = 3600
        self.issued: dict[str, float] = {}  # token -> when it expires (time.time())
        self.grants = 0
        self._lock = threading.Lock()

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def _dispatch(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(handler.rfile.read(length).decode())) if length else {}
        request = ReceivedRequest(
            method=handler.command,
            path=urlsplit(handler.path).path,
            query={},
            headers={name.lower(): value for name, value in handler.headers.items()},
            json=form,
            client_port=handler.client_address[1],
        )
        self.requests.append(request)
        self.answer(handler, request)

    def answer(self, handler: _Handler, request: ReceivedRequest) -> None:
        from google.auth import jwt

        if self.behaviour == "error500":
            handler.send_json(500, {"error": "internal_failure"})
            return
        if self.behaviour == "redirect":
            handler.send_bytes(307, "text/plain", b"", {"Location": f"{self.base_url}/elsewhere"})
            return
        form = request.json
        if (
            request.path != "/token"
            or form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer"
            or self.behaviour == "refuse"
        ):
            handler.send_json(400, {"error": "invalid_grant", "error_description": "refused"})
            return
        try:
            # google-auth addresses the grant to Google's endpoint whatever the token_uri: a
            # grant sent to another endpoint could be replayed to Google by whoever runs it.
            jwt.decode(
                form.get("assertion", ""),
                certs=self.public_key,
                audience="https://oauth2.googleapis.com/token",
            )
        except ValueError:
            handler.send_json(400, {"error": "invalid_grant", "error_description": "bad JWT"})
            return
        with self._lock:
            self.grants += 1
            token = f"token-{self.grants}"
            self.issued[token] = time.time() + self.expires_in
        handler.send_json(
            200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        )

    def valid(self, token: str) -> bool:
        with self._lock:
            return self.issued.get(token, 0) > time.time()


class VertexUpstream(GeminiUpstream):
    model_path = re.compile(
        r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
        r"/publishers/google/models/(?P<model>[^/:]+):(?P<method>\w+)"
    )

    def __init__(self, tokens: GoogleTokenServer, behaviour: str = "ok") -> None:
        super().__init__(behaviour)
        self.tokens = tokens

    def refuse_credentials(self, handler: _Handler) -> None:
        _error(handler, 401, "UNAUTHENTICATED")

    def authorized(self, request: ReceivedRequest) -> bool:
        header = request.headers.get("authorization", "")
        return header.startswith("Bearer ") and self.tokens.valid(header.removeprefix("Bearer "))
