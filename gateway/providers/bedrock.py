"""Amazon Bedrock through the Converse API (one request shape for every model family).

boto3 is synchronous: calls run in worker threads so they never block the event loop, and a
stream is read by a dedicated thread that hands events to the async generator through a queue.
botocore retries are off (a single attempt): the gateway decides about retries and fallbacks.

OpenAI's tools, tool calls and tool results become Converse's toolConfig, toolUse and toolResult
blocks (and back, streamed too); images must come as data URLs (the gateway never fetches a URL
for a client); what Converse cannot honour (``n`` > 1, logprobs, JSON mode, audio, files) is
refused with ``UnsupportedByProvider`` before any call. Embeddings go through InvokeModel for
Amazon Titan and Cohere Embed models.

Credentials come from boto3's default chain (environment, instance/task role...), or from secret
references in ``ProviderConfig.extra``: ``access_key_id_ref`` and ``secret_access_key_ref``
(both, or neither) and optionally ``session_token_ref``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.session
from botocore import exceptions as boto
from botocore.config import Config
from django.conf import settings
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from gateway.egress import host_allowed
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
    UpstreamTimeout,
    UpstreamUnavailable,
    Usage,
)
from gateway.providers.translation import refuse_single_text_answer_extras
from gateway.secrets import SecretNotFound, aresolve_secret, invalidate_secret

CHECK_TIMEOUT_SECONDS = 2.0
# Titan embeds one text per call: a few calls at once, not one per input of a large batch.
_TITAN_CONCURRENCY = 4
_COHERE_BATCH = 96  # Cohere Embed's limit of texts per call
_TITAN_EMBED = re.compile(r"(?:[a-z]+\.)?amazon\.titan-embed")  # "eu." etc.: inference profiles
_COHERE_EMBED = re.compile(r"(?:[a-z]+\.)?cohere\.embed")
_COHERE_V4 = re.compile(r"(?:[a-z]+\.)?cohere\.embed-v4")
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_DATA_URL = re.compile(r"data:(?P<type>[^;,]+)(?:;[^;,]*)*;base64,(?P<data>.*)", re.DOTALL)

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}
# Error codes, lower-cased: exceptions inside an event stream spell them "throttlingException".
_UNAVAILABLE_CODES = {
    "throttlingexception",
    "serviceunavailableexception",
    "toomanyrequestsexception",
    "modelnotreadyexception",
}
_TIMEOUT_CODES = {"modeltimeoutexception"}
_AUTH_CODES = {
    "accessdeniedexception",
    "unrecognizedclientexception",
    "invalidsignatureexception",
    "expiredtokenexception",
    "expiredtoken",
    "incompletesignature",
    "invalidclienttokenid",
    "missingauthenticationtokenexception",
    "signaturedoesnotmatch",
}
_SERVER_CODES = {"internalserverexception", "modelerrorexception"}
_CREDENTIAL_REFS = {
    "aws_access_key_id": "access_key_id_ref",
    "aws_secret_access_key": "secret_access_key_ref",
    "aws_session_token": "session_token_ref",
}


_build_lock = threading.Lock()
_loader: Any = None


def _new_session() -> boto3.session.Session:
    """A fresh session per client, so credentials and AWS config are read anew, sharing
    botocore's loader, which caches the parsed service model (loading it costs ~0.1 s).
    Called with ``_build_lock`` held: sessions and the loader are not thread-safe."""
    global _loader
    session = botocore.session.get_session()
    if _loader is None:
        _loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _loader)
    return boto3.session.Session(botocore_session=session)


class BedrockAdapter:
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._label = f"provider '{config.name}'"
        self._client: Any = None

    # The client ----------------------------------------------------------------------------

    def _credential_refs(self) -> dict[str, str]:
        extra = self.config.extra
        return {arg: extra[key] for arg, key in _CREDENTIAL_REFS.items() if extra.get(key)}

    async def _credentials(self) -> dict[str, str]:
        refs = self._credential_refs()
        if not refs:
            return {}
        if "aws_access_key_id" not in refs or "aws_secret_access_key" not in refs:
            raise UpstreamAuthError(
                f"{self._label} needs both access_key_id_ref and secret_access_key_ref, or neither"
            )
        try:
            return {arg: await aresolve_secret(ref) for arg, ref in refs.items()}
        except SecretNotFound as exc:
            raise UpstreamAuthError(f"{self._label}: {exc}") from None

    async def _get_client(self) -> Any:
        if self._client is not None:
            return self._client
        credentials = await self._credentials()
        # Building a client reads botocore's model files: not on the event loop.
        return await asyncio.to_thread(self._build_client, credentials)

    def _build_client(self, credentials: dict[str, str]) -> Any:
        if self.config.base_url and not host_allowed(self.config.base_url):
            # Never hand credentials to an endpoint the operator has not allowed.
            raise UpstreamUnavailable(f"{self._label} has an endpoint that is not allowed")
        with _build_lock:
            if self._client is None:
                try:
                    self._client = _new_session().client(
                        "bedrock-runtime",
                        region_name=self.config.region or settings.AWS_REGION,
                        endpoint_url=self.config.base_url or None,
                        config=Config(
                            connect_timeout=self.config.connect_timeout,
                            read_timeout=self.config.read_timeout,
                            retries={"total_max_attempts": 1, "mode": "standard"},
                        ),
                        **credentials,
                    )
                except ValueError as exc:  # botocore's "Invalid endpoint"
                    raise UpstreamUnavailable(f"{self._label} has an invalid endpoint") from exc
                except boto.BotoCoreError as exc:
                    raise self._map_error(exc) from exc
            return self._client

    def _forget_credentials(self) -> None:
        for ref in self._credential_refs().values():
            invalidate_secret(ref)
        # Not closed: calls in other threads may still be using it.
        self._client = None

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # Errors --------------------------------------------------------------------------------

    def _map_error(self, exc: Exception) -> UpstreamError:
        if isinstance(exc, boto.ClientError):  # also EventStreamError, raised mid-stream
            code = str(exc.response.get("Error", {}).get("Code") or "")
            metadata = exc.response.get("ResponseMetadata", {})
            status = metadata.get("HTTPStatusCode")
            detail = (code or "error") + (f", HTTP {status}" if status else "")
            key = code.lower()
            if key in _TIMEOUT_CODES:
                return UpstreamTimeout(
                    f"{self._label}: the model timed out ({detail})", upstream_status=status
                )
            if key in _UNAVAILABLE_CODES:
                return UpstreamUnavailable(
                    f"{self._label} is throttling or unavailable ({detail})", upstream_status=status
                )
            if key in _AUTH_CODES:
                return UpstreamAuthError(
                    f"{self._label} rejected the credentials ({detail})", upstream_status=status
                )
            if key in _SERVER_CODES or (status or 0) >= 500:
                return UpstreamServerError(
                    f"{self._label} failed ({detail})", upstream_status=status
                )
            return UpstreamBadResponse(
                f"{self._label} refused the request ({detail})", upstream_status=status
            )
        name = type(exc).__name__
        if isinstance(exc, boto.ReadTimeoutError | boto.ConnectTimeoutError | Urllib3Timeout):
            return UpstreamTimeout(f"{self._label} did not answer in time ({name})")
        if isinstance(exc, boto.ConnectionError | boto.HTTPClientError):
            # EndpointConnectionError, ConnectionClosedError and kin: nothing was answered.
            return UpstreamUnavailable(f"{self._label} cannot be reached ({name})")
        if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
            return UpstreamAuthError(f"{self._label} has no AWS credentials ({name})")
        return UpstreamBadResponse(f"{self._label} failed ({name})")

    def _map_stream_error(self, exc: BaseException) -> UpstreamError:
        if isinstance(exc, boto.ClientError):
            return self._map_error(exc)
        # Reading the stream raises urllib3's own errors, not botocore's wrappers.
        if isinstance(exc, boto.ReadTimeoutError | Urllib3Timeout):
            return UpstreamTimeout(f"{self._label} stopped streaming mid-way")
        return UpstreamBadResponse(f"{self._label} broke off the stream ({type(exc).__name__})")

    async def _call(
        self, operation: str, kwargs: dict[str, Any], *, read_body: bool = False
    ) -> dict[str, Any]:
        """One API call in a worker thread. ``read_body``: the answer's streamed ``body`` is
        read there too (as bytes), so the event loop never waits on the socket."""
        for attempt in (1, 2):
            client = await self._get_client()
            try:
                return await asyncio.to_thread(_send, client, operation, kwargs, read_body)
            except (boto.BotoCoreError, boto.ClientError) as exc:
                error = self._map_error(exc)
                if (
                    isinstance(error, UpstreamAuthError)
                    and isinstance(exc, boto.ClientError)
                    and attempt == 1
                    and self._credential_refs()
                ):
                    # Keys from secret references may have been rotated: fetch them again,
                    # once. The default chain refreshes its own credentials.
                    self._forget_credentials()
                    continue
                raise error from exc
        raise AssertionError("unreachable")

    # Translation ---------------------------------------------------------------------------

    def converse_arguments(self, request: ChatRequest) -> dict[str, Any]:
        """The Converse request for ``request``. Raises ``UnsupportedByProvider`` for what
        Converse cannot honour, before anything is sent."""
        _refuse_unsupported_params(request.extra)
        tool_config = _tool_config(request.extra)
        # Bedrock refuses toolUse and toolResult blocks in a request without toolConfig: with no
        # tools declared (or tool_choice "none"), earlier calls and results go as text.
        tools_as_text = tool_config is None
        system: list[dict[str, Any]] = []
        turns: list[dict[str, Any]] = []
        for i, message in enumerate(request.messages):
            if message.role in ("system", "developer"):
                if message.content.strip():
                    system.append({"text": message.content})
                continue
            if message.role == "tool":
                role, blocks = "user", [_tool_result_block(message, as_text=tools_as_text)]
            elif message.role == "assistant":
                role, blocks = "assistant", _assistant_blocks(i, message, as_text=tools_as_text)
            else:
                role, blocks = "user", _user_blocks(i, message)
            _add_to_turns(turns, role, blocks)
        arguments: dict[str, Any] = {"modelId": request.model, "messages": turns}
        if system:
            arguments["system"] = system
        inference = {
            "maxTokens": request.max_tokens,
            "temperature": request.temperature,
            "topP": request.top_p,
            "stopSequences": request.stop,
        }
        inference = {name: value for name, value in inference.items() if value is not None}
        if inference:
            arguments["inferenceConfig"] = inference
        if tool_config is not None:
            arguments["toolConfig"] = tool_config
        return arguments

    @staticmethod
    def _usage(data: Any) -> Usage | None:
        if not isinstance(data, dict):
            return None
        return Usage(
            prompt_tokens=int(data.get("inputTokens") or 0),
            completion_tokens=int(data.get("outputTokens") or 0),
        )

    def _tool_identity(self, block: Any) -> tuple[str, str]:
        """The id and name of a toolUse block (or of its start, in a stream)."""
        call_id = block.get("toolUseId") if isinstance(block, dict) else None
        name = block.get("name") if isinstance(block, dict) else None
        if not isinstance(call_id, str) or not isinstance(name, str):
            raise UpstreamBadResponse(f"{self._label} answered with a malformed tool call")
        return call_id, name

    # The interface -------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatResult:
        response = await self._call("converse", self.converse_arguments(request))
        message = (response.get("output") or {}).get("message")
        blocks = message.get("content") if isinstance(message, dict) else None
        if not isinstance(blocks, list):
            raise UpstreamBadResponse(f"{self._label} answered without a message")
        texts: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        for block in blocks:
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif "toolUse" in block:
                call_id, name = self._tool_identity(block["toolUse"])
                arguments = block["toolUse"].get("input")
                # Compact, and not ASCII-escaped: as OpenAI writes arguments.
                encoded = json.dumps(
                    {} if arguments is None else arguments,
                    separators=(",", ":"),
                    ensure_ascii=False,
                )
                tool_calls.append(_openai_tool_call(call_id, name, encoded))
            # Other blocks (reasoningContent, citations...) have no place in OpenAI's message.
        choice = Choice(
            index=0,
            content="".join(texts),
            finish_reason=_STOP_REASONS.get(response.get("stopReason", ""), "stop"),
            tool_calls=tool_calls or None,
        )
        return ChatResult([choice], self._usage(response.get("usage")) or Usage(), request.model)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        response = await self._call("converse_stream", self.converse_arguments(request))
        events = response.get("stream")
        if events is None:
            raise UpstreamBadResponse(f"{self._label} answered without a stream")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stopped = threading.Event()

        def hand_over(item: tuple[str, Any]) -> None:
            # RuntimeError: the loop is closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def read_events() -> None:
            try:
                for event in events:
                    if stopped.is_set():
                        return
                    hand_over(("event", event))
                hand_over(("end", None))
            except Exception as exc:  # everything must reach the consumer, whatever it is
                hand_over(("error", exc))
            finally:
                events.close()

        reader = threading.Thread(
            target=read_events, name=f"bedrock-stream-{self.config.name}", daemon=True
        )
        reader.start()
        finish_reason: str | None = None
        usage: Usage | None = None
        # contentBlockIndex -> the tool call's position among the answer's tool calls (OpenAI's
        # "index"): a text block before the calls takes a content block index, not a call's.
        # None: an event that came without its contentBlockIndex.
        tool_calls: dict[int | None, int] = {}
        # Tool calls whose arguments have not begun yet.
        without_arguments: set[int] = set()
        try:
            while True:
                kind, value = await queue.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise self._map_stream_error(value) from value
                if "contentBlockStart" in value:
                    event = value["contentBlockStart"]
                    start = (event.get("start") or {}).get("toolUse")
                    if start is not None:
                        call_id, name = self._tool_identity(start)
                        position = len(tool_calls)
                        tool_calls[event.get("contentBlockIndex")] = position
                        without_arguments.add(position)
                        call = _openai_tool_call(call_id, name, "")
                        yield ChatDelta(tool_calls=[{"index": position, **call}])
                elif "contentBlockDelta" in value:
                    event = value["contentBlockDelta"]
                    delta = event.get("delta") or {}
                    if delta.get("text"):
                        yield ChatDelta(content=delta["text"])
                    elif isinstance(delta.get("toolUse"), dict):
                        position = self._tool_position(tool_calls, event)
                        piece = delta["toolUse"].get("input")
                        if isinstance(piece, str) and piece:
                            without_arguments.discard(position)
                            yield ChatDelta(tool_calls=[_arguments_fragment(position, piece)])
                elif "contentBlockStop" in value:
                    stopped_call = tool_calls.get(
                        value["contentBlockStop"].get("contentBlockIndex")
                    )
                    if stopped_call is not None and stopped_call in without_arguments:
                        # A call without arguments streams no input at all; "" is not JSON,
                        # and clients parse the arguments they have put together.
                        without_arguments.discard(stopped_call)
                        yield ChatDelta(tool_calls=[_arguments_fragment(stopped_call, "{}")])
                elif "messageStop" in value:
                    reason = value["messageStop"].get("stopReason")
                    finish_reason = _STOP_REASONS.get(reason, "stop")
                elif "metadata" in value:
                    usage = self._usage(value["metadata"].get("usage")) or usage
            if finish_reason is None:
                raise UpstreamBadResponse(
                    f"{self._label} ended the stream before the answer was complete"
                )
            yield ChatDelta(finish_reason=finish_reason, usage=usage)
        finally:
            if reader.is_alive():
                # The consumer left early (or an error ended the stream): stop the reader.
                stopped.set()
                _interrupt(events)

    def _tool_position(self, tool_calls: dict[int | None, int], event: dict[str, Any]) -> int:
        position = tool_calls.get(event.get("contentBlockIndex"))
        if position is None:
            raise UpstreamBadResponse(
                f"{self._label} streamed a tool call's input before the call began"
            )
        return position

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Embeddings through InvokeModel, whose body is each model family's own: Amazon Titan
        text embeddings (one input per call) and Cohere Embed (batches)."""
        family = _embedding_family(request.model)
        if family == "titan":
            vectors, tokens = await self._embed_titan(request)
        elif family == "cohere":
            vectors, tokens = await self._embed_cohere(request)
        else:
            raise UnsupportedByProvider(
                "Bedrock embeddings are supported for Amazon Titan text embeddings "
                "(amazon.titan-embed-*) and Cohere Embed (cohere.embed-*) models only",
                param="model",
            )
        if len(vectors) != len(request.inputs):
            raise UpstreamBadResponse(
                f"{self._label} answered with {len(vectors)} embeddings "
                f"for {len(request.inputs)} inputs"
            )
        return EmbeddingResult(vectors, Usage(prompt_tokens=tokens), request.model)

    async def _embed_titan(self, request: EmbeddingRequest) -> tuple[list[list[float]], int]:
        limit = asyncio.Semaphore(_TITAN_CONCURRENCY)

        async def embed_one(text: str) -> tuple[list[float], int]:
            body: dict[str, Any] = {"inputText": text}
            if request.dimensions is not None:
                body["dimensions"] = request.dimensions  # Titan v2 only; v1 refuses it
            async with limit:
                data, _ = await self._invoke_json(request.model, body)
            tokens = data.get("inputTextTokenCount")
            return self._vector(data.get("embedding")), tokens if isinstance(tokens, int) else 0

        tasks = [asyncio.ensure_future(embed_one(text)) for text in request.inputs]
        try:
            answers = await asyncio.gather(*tasks)
        except BaseException:
            # One failure fails the request: the calls still waiting their turn are not made.
            for task in tasks:
                task.cancel()
            raise
        return [vector for vector, _ in answers], sum(tokens for _, tokens in answers)

    async def _embed_cohere(self, request: EmbeddingRequest) -> tuple[list[list[float]], int]:
        name = _model_name(request.model)
        dimension_field = "output_dimension" if _COHERE_V4.match(name) else None
        if request.dimensions is not None and dimension_field is None:
            raise UnsupportedByProvider(
                "This Cohere Embed model has a fixed vector size: 'dimensions' is supported "
                "from Cohere Embed v4 on",
                param="dimensions",
            )
        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(request.inputs), _COHERE_BATCH):
            batch = request.inputs[start : start + _COHERE_BATCH]
            body: dict[str, Any] = {"texts": batch, "input_type": "search_document"}
            if request.dimensions is not None and dimension_field is not None:
                body[dimension_field] = request.dimensions
            data, headers = await self._invoke_json(request.model, body)
            embeddings = data.get("embeddings")
            if isinstance(embeddings, dict):  # v4, and v3 when asked for embedding_types
                embeddings = embeddings.get("float")
            if not isinstance(embeddings, list) or len(embeddings) != len(batch):
                raise UpstreamBadResponse(f"{self._label} answered with malformed embeddings")
            vectors.extend(self._vector(vector) for vector in embeddings)
            # Cohere's body has no token count; Bedrock's header has, for billing.
            counted = _header(headers, "x-amzn-bedrock-input-token-count")
            if counted is not None and counted.isdigit():
                tokens += int(counted)
            else:
                tokens += (sum(len(text) for text in batch) + 3) // 4
        return vectors, tokens

    async def _invoke_json(
        self, model: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """InvokeModel with a JSON body: the answer's JSON object and HTTP headers."""
        response = await self._call(
            "invoke_model",
            {
                "modelId": model,
                "body": json.dumps(body).encode(),
                "contentType": "application/json",
                "accept": "application/json",
            },
            read_body=True,
        )
        try:
            data = json.loads(response["body"])
        except (ValueError, KeyError, TypeError):
            data = None
        if not isinstance(data, dict):
            raise UpstreamBadResponse(f"{self._label} answered with malformed JSON")
        headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        return data, headers

    def _vector(self, value: Any) -> list[float]:
        if not isinstance(value, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in value
        ):
            raise UpstreamBadResponse(f"{self._label} answered with a malformed embedding")
        return [float(x) for x in value]

    async def check(self) -> bool:
        try:
            await self._get_client()
        except UpstreamError:
            return False
        if not self.config.base_url:
            return True  # AWS's own endpoint: not worth a probe on every readiness poll
        parts = urlsplit(self.config.base_url)
        if not parts.hostname:
            return False
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname, port), CHECK_TIMEOUT_SECONDS
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True


def _send(client: Any, operation: str, kwargs: dict[str, Any], read_body: bool) -> dict[str, Any]:
    response: dict[str, Any] = getattr(client, operation)(**kwargs)
    if read_body:
        response["body"] = response["body"].read()
    return response


def _interrupt(events: Any) -> None:
    """Wake a reader thread blocked on the stream's socket. Closing a socket does not wake a
    thread blocked reading it; shutting it down does. The socket is reached through botocore's
    and urllib3's internals, so this is best effort: failing it, the reader ends at the read
    timeout, and its ``stopped`` check drops whatever arrives meanwhile."""
    with contextlib.suppress(AttributeError, OSError):
        events._raw_stream.connection.sock.shutdown(socket.SHUT_RDWR)


# Translation helpers --------------------------------------------------------------------------


def _refuse_unsupported_params(extra: dict[str, Any]) -> None:
    """Refuse the pass-through parameters Converse cannot honour, rather than drop them: the
    client would get something other than what it asked for without knowing. Sampling hints
    with no Converse equivalent (seed, frequency and presence penalties, reasoning_effort,
    prediction) and bookkeeping (metadata, store, service_tier, user, parallel_tool_calls) are
    ignored, as they change nothing a client relies on."""
    refuse_single_text_answer_extras(
        extra, "Bedrock", "Bedrock's Converse API answers with text only"
    )


def _tool_config(extra: dict[str, Any]) -> dict[str, Any] | None:
    """Converse's toolConfig for OpenAI's ``tools`` and ``tool_choice``; None for none."""
    tools = extra.get("tools")
    choice = extra.get("tool_choice")
    if not tools:
        return None  # Bedrock refuses an empty tool list; a tool_choice alone means nothing
    if choice == "none":
        # Converse's toolChoice has auto, any and tool but no "none": withholding the tools is
        # the only way to keep the model from calling them.
        return None
    specs = []
    for k, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(function, dict)
            or tool.get("type", "function") != "function"
            or not isinstance(function.get("name"), str)
            or not function["name"]
        ):
            raise UnsupportedByProvider(
                "Bedrock accepts function tools only, each with a name", param=f"tools[{k}]"
            )
        parameters = function.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}  # OpenAI allows none: no arguments
        if not isinstance(parameters, dict):
            raise UnsupportedByProvider(
                "a tool's parameters must be a JSON Schema object",
                param=f"tools[{k}].function.parameters",
            )
        spec: dict[str, Any] = {"name": function["name"], "inputSchema": {"json": parameters}}
        if isinstance(function.get("description"), str) and function["description"].strip():
            spec["description"] = function["description"]  # Bedrock refuses an empty one
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    if choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if choice.get("type") != "function" or not isinstance(name, str) or not name:
            raise UnsupportedByProvider(
                "Bedrock's tool_choice is 'auto', 'none', 'required' or one named function",
                param="tool_choice",
            )
        config["toolChoice"] = {"tool": {"name": name}}
    elif choice is not None:
        raise UnsupportedByProvider(
            "Bedrock's tool_choice is 'auto', 'none', 'required' or one named function",
            param="tool_choice",
        )
    return config


def _tool_call_input(i: int, j: int, call: Any) -> tuple[str, str, dict[str, Any]]:
    """The id, name and parsed arguments of tool call ``j`` of message ``i``."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise UnsupportedByProvider(
            "a tool call needs a function name", param=f"messages[{i}].tool_calls[{j}].function"
        )
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise UnsupportedByProvider(
            "Bedrock needs the id of every tool call", param=f"messages[{i}].tool_calls[{j}].id"
        )
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            # Blank arguments are how some clients write a call without any.
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            arguments = None
    if not isinstance(arguments, dict):
        # Bedrock's toolUse input is a JSON object.
        raise UnsupportedByProvider(
            "Bedrock needs a tool call's arguments to be a JSON object",
            param=f"messages[{i}].tool_calls[{j}].function.arguments",
        )
    return call_id, function["name"], arguments


def _assistant_blocks(i: int, message: ChatMessage, *, as_text: bool) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if message.content.strip():
        blocks.append({"text": message.content})
    for j, call in enumerate(message.tool_calls or ()):
        call_id, name, arguments = _tool_call_input(i, j, call)
        if as_text:
            encoded = json.dumps(arguments, ensure_ascii=False)
            blocks.append({"text": f"Tool call {name}: {encoded}"})
        else:
            blocks.append({"toolUse": {"toolUseId": call_id, "name": name, "input": arguments}})
    return blocks


def _tool_result_block(message: ChatMessage, *, as_text: bool) -> dict[str, Any]:
    # Bedrock refuses blank text blocks, and a tool may well have printed nothing.
    content = message.content if message.content.strip() else "(no output)"
    if as_text:
        return {"text": f"Tool result: {content}"}
    return {"toolResult": {"toolUseId": message.tool_call_id, "content": [{"text": content}]}}


def _user_blocks(i: int, message: ChatMessage) -> list[dict[str, Any]]:
    if message.parts is None:
        return [{"text": message.content}] if message.content.strip() else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(message.parts):
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                continue
            if blocks and "text" in blocks[-1]:  # adjacent parts are one text, as in OpenAI's
                blocks[-1] = {"text": blocks[-1]["text"] + text}
            else:
                blocks.append({"text": text})
        elif kind == "image_url":
            blocks.append({"image": _image(part.get("image_url"), f"messages[{i}].content[{j}]")})
        else:
            what = {"input_audio": "audio", "file": "files"}.get(str(kind), f"'{kind}' parts")
            raise UnsupportedByProvider(
                f"this gateway sends Bedrock text and images only, not {what}",
                param=f"messages[{i}].content[{j}]",
            )
    return [block for block in blocks if "text" not in block or block["text"].strip()]


def _image(image_url: Any, param: str) -> dict[str, Any]:
    """An image part as Converse's image block: the bytes of a base64 data URL."""
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    match = _DATA_URL.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        # Never echo the URL: it may carry a signed token or personal data.
        raise UnsupportedByProvider(
            "Bedrock takes images only as bytes, and the gateway does not fetch URLs for its "
            "clients: send the image as a data URL (data:image/png;base64,...)",
            param=param,
        )
    image_format = _IMAGE_FORMATS.get(match["type"].lower())
    if image_format is None:
        raise UnsupportedByProvider(
            "Bedrock takes PNG, JPEG, GIF and WebP images only", param=param
        )
    try:
        data = base64.b64decode("".join(match["data"].split()), validate=True)
    except binascii.Error:
        data = b""
    if not data:
        raise UnsupportedByProvider("the image's data URL is not valid base64", param=param)
    return {"format": image_format, "source": {"bytes": data}}


def _add_to_turns(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Append ``blocks`` as a turn of ``role``, merged into the last turn when it has the same
    role: Bedrock requires user and assistant turns to alternate. Adjacent texts are joined,
    as one block, like the messages they came from."""
    if not blocks:
        return  # nothing left of the message (Bedrock refuses blank text blocks)
    if not turns or turns[-1]["role"] != role:
        turns.append({"role": role, "content": []})
    content: list[dict[str, Any]] = turns[-1]["content"]
    for block in blocks:
        if "text" in block and content and "text" in content[-1]:
            content[-1] = {"text": f"{content[-1]['text']}\n\n{block['text']}"}
        else:
            content.append(block)


def _openai_tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _arguments_fragment(position: int, piece: str) -> dict[str, Any]:
    return {"index": position, "function": {"arguments": piece}}


def _model_name(model_id: str) -> str:
    """A model id without an ARN's prefix (``arn:...:foundation-model/<name>``)."""
    return model_id.rsplit("/", 1)[-1]


def _embedding_family(model_id: str) -> str | None:
    name = _model_name(model_id)
    if _TITAN_EMBED.match(name):
        return "titan"
    if _COHERE_EMBED.match(name):
        return "cohere"
    return None


def _header(headers: dict[str, str], name: str) -> str | None:
    """A response header, whatever case botocore kept."""
    return next((v for k, v in headers.items() if k.lower() == name), None)
