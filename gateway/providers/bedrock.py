"""Amazon Bedrock through the Converse API (one request shape for every model family).

boto3 is synchronous: calls run in worker threads so they never block the event loop, and a
stream is read by a dedicated thread that hands events to the async generator through a queue.
botocore retries are off (a single attempt): the gateway decides about retries and fallbacks.

Credentials come from boto3's default chain (environment, instance/task role...), or from secret
references in ``ProviderConfig.extra``: ``access_key_id_ref`` and ``secret_access_key_ref``
(both, or neither) and optionally ``session_token_ref``.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    ChatRequest,
    ChatResult,
    ProviderConfig,
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
    Usage,
)
from gateway.secrets import SecretNotFound, aresolve_secret, invalidate_secret

CHECK_TIMEOUT_SECONDS = 2.0

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

    async def _call(self, operation: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        for attempt in (1, 2):
            client = await self._get_client()
            try:
                return await asyncio.to_thread(getattr(client, operation), **kwargs)
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
        system: list[dict[str, str]] = []
        turns: list[tuple[str, list[str]]] = []
        for message in request.messages:
            if message.role in ("system", "developer"):
                if message.content.strip():
                    system.append({"text": message.content})
                continue
            if message.role == "tool":
                # Converse has tool blocks, but only for tools declared in the request; a
                # result as text keeps the conversation valid.
                role, text = "user", f"Tool result: {message.content}"
            else:
                role = "assistant" if message.role == "assistant" else "user"
                text = message.content
            if not text.strip():
                continue  # Bedrock rejects blank text blocks
            # Bedrock requires user and assistant turns to alternate.
            if turns and turns[-1][0] == role:
                turns[-1][1].append(text)
            else:
                turns.append((role, [text]))
        arguments: dict[str, Any] = {
            "modelId": request.model,
            "messages": [
                {"role": role, "content": [{"text": "\n\n".join(texts)}]} for role, texts in turns
            ],
        }
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
        return arguments

    @staticmethod
    def _usage(data: Any) -> Usage | None:
        if not isinstance(data, dict):
            return None
        return Usage(
            prompt_tokens=int(data.get("inputTokens") or 0),
            completion_tokens=int(data.get("outputTokens") or 0),
        )

    # The interface -------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatResult:
        response = await self._call("converse", self.converse_arguments(request))
        message = (response.get("output") or {}).get("message")
        blocks = message.get("content") if isinstance(message, dict) else None
        if not isinstance(blocks, list):
            raise UpstreamBadResponse(f"{self._label} answered without a message")
        return ChatResult(
            content="".join(block.get("text", "") for block in blocks if isinstance(block, dict)),
            finish_reason=_STOP_REASONS.get(response.get("stopReason"), "stop"),
            usage=self._usage(response.get("usage")) or Usage(),
            upstream_model=request.model,
        )

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
        try:
            while True:
                kind, value = await queue.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise self._map_stream_error(value) from value
                if "contentBlockDelta" in value:
                    text = value["contentBlockDelta"].get("delta", {}).get("text")
                    if text:
                        yield ChatDelta(content=text)
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


def _interrupt(events: Any) -> None:
    """Wake a reader thread blocked on the stream's socket. Closing a socket does not wake a
    thread blocked reading it; shutting it down does. The socket is reached through botocore's
    and urllib3's internals, so this is best effort: failing it, the reader ends at the read
    timeout, and its ``stopped`` check drops whatever arrives meanwhile."""
    with contextlib.suppress(AttributeError, OSError):
        events._raw_stream.connection.sock.shutdown(socket.SHUT_RDWR)
