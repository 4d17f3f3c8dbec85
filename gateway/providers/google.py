"""Google's Gemini models: the Generative Language API (``kind: gemini``, an API key) and Vertex
AI (``kind: vertex``, a service account), which share one wire: ``generateContent`` and
``streamGenerateContent?alt=sse``.

The HTTP side is ``OpenAICompatibleAdapter``'s; this module translates. System and developer
messages become ``systemInstruction``; user parts become text and ``inlineData`` parts (images
and audio as base64 data URLs only: the gateway never fetches a URL for a client, and Gemini
cannot fetch an arbitrary one); ``tools`` become ``functionDeclarations`` (with
``parametersJsonSchema``, so OpenAI's JSON Schemas go as written), tool calls and results
``functionCall`` and ``functionResponse`` parts. Gemini gives its calls no ids: each gets a
stable one made from its place and content (the same plain and streamed), and a tool result is
matched back to its call's function name by that id, or failing that by order. ``n`` is
``candidateCount``; ``response_format`` json_object / json_schema is ``responseMimeType``
application/json with ``responseJsonSchema``. SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT
and SPII finishes are ``content_filter``, MAX_TOKENS ``length``; a prompt blocked outright
(``promptFeedback.blockReason``) is an empty answer finished by ``content_filter``.

Gemini's API key goes in the ``x-goog-api-key`` header, never in the URL. Vertex's access token
is fetched with google-auth from the service-account JSON the secret reference holds, and
fetched again before it expires (and once on a 401). The JSON is configuration, so its
``token_uri`` is not trusted: only Google's, unless ``LLMP_UPSTREAM_HOSTS`` lists another host.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from gateway.egress import host_listed
from gateway.providers.base import (
    ChatDelta,
    ChatMessage,
    ChatRequest,
    ChatResult,
    Choice,
    EmbeddingRequest,
    EmbeddingResult,
    ProviderConfig,
    UnsupportedByProvider,
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamServerError,
    UpstreamUnavailable,
    Usage,
)
from gateway.providers.capabilities import refuse_embeddings, refuse_unsupported
from gateway.providers.kind_settings import (
    GCP_PROJECT_ID,
    GOOGLE_API_VERSION,
    VERTEX_LOCATION,
    vertex_base_url,
)
from gateway.providers.openai_compatible import (
    _MAX_ERROR_BODY,
    _TRANSPORT_ERRORS,
    OpenAICompatibleAdapter,
    _decode,
    parse_retry_after,
)
from gateway.providers.translation import (
    compact_json,
    data_url,
    function_tools,
    image_url,
    named_tool_choice,
    openai_tool_call,
    tool_call_input,
)
from gateway.secrets import SecretNotFound, aresolve_secret

GEMINI_BASE_URL = "https://generativelanguage.googleapis.com"
GEMINI_API_VERSION = "v1beta"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
VERTEX_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
NAME = "Gemini"
_EMBED_BATCH = 100  # batchEmbedContents' and Vertex predict's limit of texts per call (<=250)

_FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "stop",
}
_KEY_REFUSED = {"API_KEY_INVALID", "API_KEY_EXPIRED"}
_GEMINI_MAJOR = re.compile(r"gemini-(\d+)")
THOUGHT_SIGNATURE_PLACEHOLDER = "skip_thought_signature_validator"
_AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mp3"}


class GeminiAdapter(OpenAICompatibleAdapter):
    """Gemini through the Generative Language API, authenticated with an API key."""

    @property
    def base_url(self) -> str:
        return self.config.base_url.rstrip("/") or GEMINI_BASE_URL

    def _model_path(self, model: str) -> str:
        version = self.config.api_version or GEMINI_API_VERSION
        if not GOOGLE_API_VERSION.fullmatch(version):
            raise UpstreamBadResponse(f"{self._label} has an invalid api_version")
        return f"{self.base_url}/{version}/models/{quote(model.removeprefix('models/'), safe='')}"

    def chat_url(self, request: ChatRequest) -> str:
        return f"{self._model_path(request.model)}:generateContent"

    def stream_url(self, request: ChatRequest) -> str:
        return f"{self._model_path(request.model)}:streamGenerateContent?alt=sse"

    def models_url(self) -> str:
        version = self.config.api_version or GEMINI_API_VERSION
        return f"{self.base_url}/{version}/models?pageSize=1"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key} if key else {}

    async def _open(self, request: ChatRequest, *, stream: bool) -> aiohttp.ClientResponse:
        url = self.stream_url(request) if stream else self.chat_url(request)
        return await self._send(url, self.build_body(request, stream=stream))

    # Translation ---------------------------------------------------------------------------

    def build_body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        refuse_unsupported(self.config, request.messages, request.extra)
        extra = request.extra
        _refuse_unsupported_params(extra)
        tools = function_tools(extra, NAME)
        choice = extra.get("tool_choice")
        named = named_tool_choice(choice, NAME)
        system: list[str] = []
        contents: list[dict[str, Any]] = []
        # Each tool call's function name by id, and the calls of the last assistant turn not
        # yet answered (for results whose id matches nothing: matched by order).
        names: dict[str, str] = {}
        pending: list[str] = []
        signed = _needs_thought_signatures(request.model)
        for i, message in enumerate(request.messages):
            if message.role in ("system", "developer"):
                if message.content.strip():
                    system.append(message.content)
                continue
            if message.role == "tool":
                role, parts = "user", [_function_response(i, message, names, pending)]
            elif message.role == "assistant":
                role, parts = "model", _model_parts(i, message, names, pending)
                if signed:
                    _sign_first_call(parts)
            else:
                role, parts = "user", _user_parts(i, message)
            _add_to_contents(contents, role, parts)
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        if tools:
            declarations = []
            for tool in tools:
                declaration: dict[str, Any] = {
                    "name": tool.name,
                    "parametersJsonSchema": tool.parameters,
                }
                if tool.description:
                    declaration["description"] = tool.description
                declarations.append(declaration)
            body["tools"] = [{"functionDeclarations": declarations}]
            mode = {"auto": "AUTO", "required": "ANY", "none": "NONE"}.get(str(choice))
            if named is not None:
                body["toolConfig"] = {
                    "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [named]}
                }
            elif mode is not None:
                body["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
        config = _generation_config(request)
        if config:
            body["generationConfig"] = config
        return body

    # Answers -------------------------------------------------------------------------------

    async def _raise_for_status(self, response: aiohttp.ClientResponse) -> None:
        """Google's errors: ``{"error": {"code", "message", "status", "details"}}``; a 429's
        wait is in ``Retry-After`` or in the details' ``RetryInfo.retryDelay`` ("37s")."""
        status = response.status
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        error = await self._error_body(response)
        status_name = error.get("status")
        code = status_name if isinstance(status_name, str) else ""
        if not re.fullmatch(r"[A-Z_]{1,64}", code):
            code = ""
        if retry_after is None:
            retry_after = _retry_delay(error.get("details"))
        detail = f"HTTP {status}" + (f", {code}" if code else "")
        if _error_reason(error.get("details")) in _KEY_REFUSED:
            # The Gemini API answers a wrong or expired key with a 400, not a 401: the key is
            # read again for the next request (a rotation), and this one fails as ours.
            self._forget_credentials()
            raise UpstreamAuthError(
                f"{self._label} rejected the credentials ({detail})", upstream_status=status
            )
        if status in (429, 503):
            raise UpstreamUnavailable(
                f"{self._label} is rate limiting us or overloaded ({detail})",
                upstream_status=status,
                retry_after=retry_after,
            )
        if status >= 500:
            raise UpstreamServerError(
                f"{self._label} failed ({detail})", upstream_status=status, retry_after=retry_after
            )
        raise UpstreamBadResponse(
            f"{self._label} refused the request ({detail})",
            upstream_status=status,
            upstream_code=code,
        )

    async def _error_body(self, response: aiohttp.ClientResponse) -> dict[str, Any]:
        try:
            raw = b""
            async for chunk in response.content.iter_any():
                raw += chunk
                if len(raw) > _MAX_ERROR_BODY:
                    return {}
            data = _decode(raw)
        except (*_TRANSPORT_ERRORS, ValueError):
            return {}
        finally:
            response.release()
        if isinstance(data, list) and data:  # the stream endpoint wraps errors in a list
            data = data[0]
        error = data.get("error") if isinstance(data, dict) else None
        return error if isinstance(error, dict) else {}

    def _parse_completion(self, data: Any, status: int) -> ChatResult:
        if not isinstance(data, dict):
            raise UpstreamBadResponse(
                f"{self._label} answered with no object", upstream_status=status
            )
        candidates = data.get("candidates")
        usage = _usage(data.get("usageMetadata")) or Usage()
        model = data.get("modelVersion")
        model = model if isinstance(model, str) else ""
        if not candidates:
            if _blocked(data):
                # The prompt itself was blocked: nothing was generated.
                return ChatResult([Choice(0, "", "content_filter")], usage, model)
            raise UpstreamBadResponse(
                f"{self._label} answered without candidates", upstream_status=status
            )
        if not isinstance(candidates, list):
            raise UpstreamBadResponse(
                f"{self._label} answered with malformed candidates", upstream_status=status
            )
        choices = []
        for position, candidate in enumerate(candidates):
            if not isinstance(candidate, dict):
                raise UpstreamBadResponse(
                    f"{self._label} answered with a malformed candidate", upstream_status=status
                )
            index = _candidate_index(candidate, position)
            texts, calls = self._parts(candidate, index, 0, status)
            choices.append(
                Choice(
                    index=index,
                    content="".join(texts),
                    finish_reason=_finish_reason(candidate.get("finishReason"), bool(calls)),
                    tool_calls=calls or None,
                )
            )
        return ChatResult(sorted(choices, key=lambda c: c.index), usage, model)

    def _parts(
        self, candidate: dict[str, Any], index: int, first_call: int, status: int
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """A candidate's text and its function calls as OpenAI tool calls, numbered from
        ``first_call`` (a stream's earlier chunks may have had calls)."""
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if parts is None:
            return [], []  # a safety stop or an empty turn carries no content
        if not isinstance(parts, list):
            raise UpstreamBadResponse(
                f"{self._label} answered with malformed parts", upstream_status=status
            )
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in parts:
            if not isinstance(part, dict) or part.get("thought") is True:
                continue  # thought summaries are not the answer
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif "functionCall" in part:
                call = part["functionCall"]
                name = call.get("name") if isinstance(call, dict) else None
                args = call.get("args") if isinstance(call, dict) else None
                if not isinstance(name, str) or not name or not isinstance(args, dict | None):
                    raise UpstreamBadResponse(
                        f"{self._label} answered with a malformed function call",
                        upstream_status=status,
                    )
                arguments = compact_json(args or {})
                given = call.get("id")
                call_id = (
                    given
                    if isinstance(given, str) and given
                    else _call_id(index, first_call + len(calls), name, arguments)
                )
                calls.append(openai_tool_call(call_id, name, arguments))
        return texts, calls

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        """Each SSE chunk is a whole GenerateContentResponse: its text parts are content
        deltas; a function call arrives whole, as one fragment with id, name and arguments;
        each candidate's finishReason and the usage come on the last deltas."""
        response = await self._open(request, stream=True)
        try:
            self._require_media_type(response, "text/event-stream")
            status = response.status
            finishes: dict[int, str] = {}
            call_counts: dict[int, int] = {}
            usage: Usage | None = None
            blocked = False
            async with aclosing(self._sse_data(response)) as events:
                async for data in events:
                    chunk = self._parse_chunk(data, status)
                    usage = _usage(chunk.get("usageMetadata")) or usage
                    candidates = chunk.get("candidates")
                    if not candidates:
                        blocked = blocked or _blocked(chunk)
                        continue
                    if not isinstance(candidates, list):
                        raise UpstreamBadResponse(
                            f"{self._label} sent an invalid stream chunk", upstream_status=status
                        )
                    for position, candidate in enumerate(candidates):
                        if not isinstance(candidate, dict):
                            raise UpstreamBadResponse(
                                f"{self._label} sent an invalid stream chunk",
                                upstream_status=status,
                            )
                        index = _candidate_index(candidate, position)
                        before = call_counts.get(index, 0)
                        texts, calls = self._parts(candidate, index, before, status)
                        call_counts[index] = before + len(calls)
                        fragments = [{"index": before + k, **call} for k, call in enumerate(calls)]
                        text = "".join(texts)
                        if text or fragments:
                            yield ChatDelta(content=text, index=index, tool_calls=fragments or None)
                        reason = candidate.get("finishReason")
                        if isinstance(reason, str) and reason:
                            finishes[index] = _finish_reason(reason, call_counts[index] > 0)
            if blocked and not finishes:
                finishes[0] = "content_filter"
            if not finishes:
                raise UpstreamBadResponse(
                    f"{self._label} ended the stream before the answer was complete",
                    upstream_status=status,
                )
            last = sorted(finishes.items())
            for index, reason in last[:-1]:
                yield ChatDelta(index=index, finish_reason=reason)
            yield ChatDelta(index=last[-1][0], finish_reason=last[-1][1], usage=usage)
        finally:
            response.release()

    # Embeddings ----------------------------------------------------------------------------

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """``batchEmbedContents``, up to 100 texts a call. Gemini reports no token count: it is
        estimated (characters / 4) for metering."""
        refuse_embeddings(self.config)
        model = f"models/{request.model.removeprefix('models/')}"
        vectors: list[list[float]] = []
        for start in range(0, len(request.inputs), _EMBED_BATCH):
            batch = request.inputs[start : start + _EMBED_BATCH]
            items = []
            for text in batch:
                item: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
                if request.dimensions is not None:
                    item["outputDimensionality"] = request.dimensions
                items.append(item)
            url = f"{self._model_path(request.model)}:batchEmbedContents"
            response = await self._send(url, {"requests": items})
            data = await self._json(response)
            embeddings = data.get("embeddings") if isinstance(data, dict) else None
            if not isinstance(embeddings, list) or len(embeddings) != len(batch):
                raise UpstreamBadResponse(
                    f"{self._label} answered with malformed embeddings",
                    upstream_status=response.status,
                )
            vectors.extend(
                self._vector(e.get("values") if isinstance(e, dict) else None) for e in embeddings
            )
        tokens = sum((len(text) + 3) // 4 for text in request.inputs)
        return EmbeddingResult(vectors, Usage(prompt_tokens=tokens), request.model)

    def _vector(self, value: Any) -> list[float]:
        if not isinstance(value, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in value
        ):
            raise UpstreamBadResponse(f"{self._label} answered with a malformed embedding")
        return [float(x) for x in value]


class VertexAdapter(GeminiAdapter):
    """Gemini on Vertex AI: ``{location}-aiplatform.googleapis.com`` (``region`` is the location,
    ``extra.project`` the project id), authenticated with an OAuth access token of the service
    account whose JSON key the secret reference (``api_key``) holds."""

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        self._credentials: Any = None  # google.oauth2.service_account.Credentials
        # One token fetch at a time, per event loop (an asyncio lock belongs to one loop, and
        # like the HTTP session this adapter may be used from another: see ``_http``).
        self._refreshing: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    @property
    def base_url(self) -> str:
        if self.config.base_url:
            return self.config.base_url.rstrip("/")
        return vertex_base_url(self._location())

    def _location(self) -> str:
        location = self.config.region
        if not VERTEX_LOCATION.fullmatch(location):
            raise UpstreamBadResponse(f"{self._label} has an invalid location (region)")
        return location

    def _model_path(self, model: str) -> str:
        project = self.config.extra.get("project")
        if not isinstance(project, str) or not GCP_PROJECT_ID.fullmatch(project):
            raise UpstreamBadResponse(f"{self._label} has no valid project id (extra.project)")
        version = self.config.api_version or "v1"
        if not GOOGLE_API_VERSION.fullmatch(version):
            raise UpstreamBadResponse(f"{self._label} has an invalid api_version")
        name = quote(model.removeprefix("models/"), safe="")
        return (
            f"{self.base_url}/{version}/projects/{project}/locations/{self._location()}"
            f"/publishers/google/models/{name}"
        )

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _api_key(self) -> str:
        """A fresh access token: fetched when there is none or it is about to expire (within
        google-auth's refresh threshold), one fetch at a time."""
        from google.auth.credentials import TokenState

        loop = asyncio.get_running_loop()
        lock = self._refreshing.get(loop)
        if lock is None:
            # Locks of finished loops are dropped with them.
            lock = asyncio.Lock()
            self._refreshing = {loop: lock}
        async with lock:
            if self._credentials is None:
                self._credentials = await self._load_credentials()
            credentials = self._credentials
            if credentials.token_state != TokenState.FRESH:
                await asyncio.to_thread(self._refresh, credentials)
            return str(credentials.token)

    async def _load_credentials(self) -> Any:
        from google.oauth2 import service_account

        try:
            raw = await aresolve_secret(self.config.api_key_ref)
        except SecretNotFound as exc:
            raise UpstreamAuthError(f"{self._label}: {exc}") from None
        try:
            info = json.loads(raw)
        except ValueError:
            info = None
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise UpstreamAuthError(
                f"{self._label}: the secret is not a service account's JSON key"
            )
        token_uri = info.get("token_uri") or GOOGLE_TOKEN_URI
        if not isinstance(token_uri, str) or not token_uri_allowed(token_uri):
            # The key would be used to sign a grant for whoever runs that endpoint.
            raise UpstreamAuthError(
                f"{self._label}: the service account's token_uri is not Google's, and its host "
                "is not in LLMP_UPSTREAM_HOSTS"
            )
        try:
            return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                {**info, "token_uri": token_uri}, scopes=[VERTEX_SCOPE]
            )
        except (ValueError, KeyError, TypeError):
            # Not chained: the error may quote the key.
            raise UpstreamAuthError(
                f"{self._label}: the service account's JSON key is incomplete or invalid"
            ) from None

    def _refresh(self, credentials: Any) -> None:
        """Fetch a token (in a worker thread: google-auth's transport is synchronous)."""
        import requests
        from google.auth import exceptions

        try:
            with requests.Session() as session:
                credentials.refresh(_TokenRequest(session, self.config))
        except exceptions.RefreshError as exc:
            # The endpoint answered, and refused (or failed); its text is not repeated.
            if getattr(exc, "retryable", False):
                raise UpstreamUnavailable(
                    f"{self._label}: the token endpoint failed; try again"
                ) from None
            raise UpstreamAuthError(
                f"{self._label}: the token endpoint refused the service account's grant"
            ) from None
        except exceptions.TransportError:
            raise UpstreamUnavailable(
                f"{self._label}: the token endpoint cannot be reached"
            ) from None

    def _forget_credentials(self) -> None:
        super()._forget_credentials()
        self._credentials = None

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Vertex's text embedding models through ``:predict``; their answer counts tokens."""
        refuse_embeddings(self.config)
        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(request.inputs), _EMBED_BATCH):
            batch = request.inputs[start : start + _EMBED_BATCH]
            body: dict[str, Any] = {"instances": [{"content": text} for text in batch]}
            if request.dimensions is not None:
                body["parameters"] = {"outputDimensionality": request.dimensions}
            response = await self._send(f"{self._model_path(request.model)}:predict", body)
            data = await self._json(response)
            predictions = data.get("predictions") if isinstance(data, dict) else None
            if not isinstance(predictions, list) or len(predictions) != len(batch):
                raise UpstreamBadResponse(
                    f"{self._label} answered with malformed embeddings",
                    upstream_status=response.status,
                )
            for prediction in predictions:
                embedding = prediction.get("embeddings") if isinstance(prediction, dict) else None
                if not isinstance(embedding, dict):
                    raise UpstreamBadResponse(f"{self._label} answered with a malformed embedding")
                vectors.append(self._vector(embedding.get("values")))
                statistics = embedding.get("statistics")
                count = statistics.get("token_count") if isinstance(statistics, dict) else None
                tokens += int(count) if isinstance(count, int | float) else 0
        return EmbeddingResult(vectors, Usage(prompt_tokens=tokens), request.model)

    async def check(self) -> bool:
        try:
            await self._api_key()
        except UpstreamError:
            return False
        return True


def token_uri_allowed(uri: str) -> bool:
    """Google's token endpoint, or an https (or loopback http) URL whose host the operator's
    ``LLMP_UPSTREAM_HOSTS`` lists by name (an empty list allows no other)."""
    if uri == GOOGLE_TOKEN_URI:
        return True
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or parts.username or parts.password:
        return False
    return host_listed(uri)


class _TokenRequest:
    """google-auth's requests transport with the provider's timeouts, and no redirects
    followed (the grant is not re-sent wherever a token endpoint points)."""

    def __init__(self, session: Any, config: ProviderConfig) -> None:
        import google.auth.transport.requests

        session.max_redirects = 0  # a redirect raises, and google-auth reports a TransportError
        self._request = google.auth.transport.requests.Request(session)
        self._timeout = (config.connect_timeout, config.read_timeout)

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: Any = None,
        **kwargs: Any,
    ) -> Any:
        return self._request(url, method, body, headers, timeout=self._timeout, **kwargs)


# Translation helpers --------------------------------------------------------------------------


def _refuse_unsupported_params(extra: dict[str, Any]) -> None:
    for name in ("logprobs", "top_logprobs"):
        if extra.get(name):
            raise UnsupportedByProvider(
                "this gateway does not ask Gemini for log probabilities", param=name
            )
    if extra.get("logit_bias"):
        raise UnsupportedByProvider("Gemini does not support logit_bias", param="logit_bias")
    modalities = extra.get("modalities")
    if extra.get("audio") is not None or (modalities and modalities != ["text"]):
        raise UnsupportedByProvider(
            "this gateway asks Gemini for text answers only",
            param="audio" if extra.get("audio") is not None else "modalities",
        )
    response_format = extra.get("response_format")
    if response_format is None:
        return
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise UnsupportedByProvider(
            "response_format's type is text, json_object or json_schema", param="response_format"
        )
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise UnsupportedByProvider(
                "response_format.json_schema.schema must be a JSON Schema object",
                param="response_format",
            )


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    extra = request.extra
    config: dict[str, Any] = {
        "temperature": request.temperature,
        "topP": request.top_p,
        "maxOutputTokens": request.max_tokens,
        "stopSequences": request.stop,
    }
    n = extra.get("n")
    if isinstance(n, int) and n > 1:
        config["candidateCount"] = n
    for name, field in (
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        value = extra.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            config[field] = value
    response_format = extra.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if kind == "json_schema" and isinstance(response_format, dict):
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            config["responseJsonSchema"] = schema
    return {name: value for name, value in config.items() if value is not None}


def _call_id(candidate: int, position: int, name: str, arguments: str) -> str:
    """A call's id, the same each time the same answer is read (plain, streamed, cached)."""
    digest = hashlib.sha256(f"{candidate}:{position}:{name}:{arguments}".encode()).hexdigest()
    return f"call_{digest[:24]}"


def _needs_thought_signatures(model: str) -> bool:
    """Gemini 3 and later refuse a model turn whose function calls lack the thought signature
    they were answered with. OpenAI's tool calls have no place for it, so earlier calls go with
    the placeholder Google documents for calls it did not make itself."""
    match = _GEMINI_MAJOR.match(model.removeprefix("models/"))
    return match is not None and int(match[1]) >= 3


def _sign_first_call(parts: list[dict[str, Any]]) -> None:
    for part in parts:
        if "functionCall" in part:
            part["thoughtSignature"] = THOUGHT_SIGNATURE_PLACEHOLDER
            return


def _model_parts(
    i: int, message: ChatMessage, names: dict[str, str], pending: list[str]
) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if message.content.strip():
        parts.append({"text": message.content})
    pending.clear()
    for j, call in enumerate(message.tool_calls or ()):
        parsed = tool_call_input(i, j, call, NAME)
        if parsed.id:
            names[parsed.id] = parsed.name
        pending.append(parsed.name)
        parts.append({"functionCall": {"name": parsed.name, "args": parsed.arguments}})
    return parts


def _function_response(
    i: int, message: ChatMessage, names: dict[str, str], pending: list[str]
) -> dict[str, Any]:
    name = names.get(message.tool_call_id or "")
    if name is not None:
        if name in pending:
            pending.remove(name)
    elif pending:
        name = pending.pop(0)  # an id we never saw: the next call of the turn, in order
    else:
        raise UnsupportedByProvider(
            "a tool result must answer a tool call of an earlier assistant message",
            param=f"messages[{i}].tool_call_id",
        )
    try:
        value = json.loads(message.content)
    except ValueError:
        value = None
    # Gemini's response is a JSON object: a tool's object output as it is, else wrapped.
    response = value if isinstance(value, dict) else {"result": message.content}
    return {"functionResponse": {"name": name, "response": response}}


def _user_parts(i: int, message: ChatMessage) -> list[dict[str, Any]]:
    if message.parts is None:
        return [{"text": message.content}] if message.content.strip() else []
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(message.parts):
        kind = part.get("type")
        param = f"messages[{i}].content[{j}]"
        if kind == "text":
            text = part.get("text")
            if isinstance(text, str) and text.strip():
                parts.append({"text": text})
        elif kind == "image_url":
            inline = data_url(image_url(part))
            if inline is None or not inline.media_type.startswith("image/"):
                # Never echo the URL: it may carry a signed token or personal data.
                raise UnsupportedByProvider(
                    "Gemini takes images as base64 data URLs (data:image/png;base64,...); the "
                    "gateway does not fetch image URLs for its clients",
                    param=param,
                )
            parts.append({"inlineData": {"mimeType": inline.media_type, "data": inline.data}})
        elif kind == "input_audio":
            audio = part.get("input_audio")
            data = audio.get("data") if isinstance(audio, dict) else None
            media_type = (
                _AUDIO_FORMATS.get(str(audio.get("format"))) if isinstance(audio, dict) else None
            )
            inline = data_url(f"data:{media_type};base64,{data}") if media_type and data else None
            if inline is None:
                raise UnsupportedByProvider(
                    "Gemini takes audio as base64 wav or mp3 data", param=param
                )
            parts.append({"inlineData": {"mimeType": inline.media_type, "data": inline.data}})
        else:
            raise UnsupportedByProvider(
                "this gateway sends Gemini text, images and audio only, not files", param=param
            )
    return parts


def _add_to_contents(
    contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]
) -> None:
    """Turns alternate; consecutive messages of one role are one turn (a model turn's parallel
    calls are answered by one user turn of function responses)."""
    if not parts:
        return
    if not contents or contents[-1]["role"] != role:
        contents.append({"role": role, "parts": []})
    contents[-1]["parts"].extend(parts)


def _finish_reason(value: Any, called: bool) -> str:
    reason = _FINISH_REASONS.get(value, "stop") if isinstance(value, str) else "stop"
    return "tool_calls" if called and reason == "stop" else reason


def _candidate_index(candidate: dict[str, Any], position: int) -> int:
    index = candidate.get("index")
    return index if isinstance(index, int) and index >= 0 else position


def _blocked(data: dict[str, Any]) -> bool:
    feedback = data.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    prompt = data.get("promptTokenCount")
    completion = data.get("candidatesTokenCount")
    thoughts = data.get("thoughtsTokenCount")  # thinking is billed as output
    if not isinstance(prompt, int):
        return None
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=(completion if isinstance(completion, int) else 0)
        + (thoughts if isinstance(thoughts, int) else 0),
    )


def _error_reason(details: Any) -> str:
    """``ErrorInfo.reason`` (``API_KEY_INVALID``) from an error's details."""
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("ErrorInfo"):
            reason = detail.get("reason")
            return reason if isinstance(reason, str) else ""
    return ""


def _retry_delay(details: Any) -> float | None:
    """``RetryInfo.retryDelay`` ("37s", "0.5s") from an error's details."""
    if not isinstance(details, list):
        return None
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = detail.get("retryDelay")
            if isinstance(delay, str) and re.fullmatch(r"\d+(?:\.\d+)?s", delay):
                return float(delay[:-1])
    return None
