"""Adapter for OpenAI's chat completions API and the servers that copy it (vLLM, llama.cpp,
Ollama, LiteLLM...). ``AzureOpenAIAdapter`` reuses it with another URL scheme and header.

Failures become ``UpstreamError`` subclasses (see ``base``). Their messages name the provider and
the upstream status, and an upstream error code when it looks like an identifier; never the key,
and never the upstream's free-text message, which may quote the conversation back.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import math
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import aiohttp
import httpx
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

from gateway.egress import host_allowed
from gateway.providers.base import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    Choice,
    EmbeddingRequest,
    EmbeddingResult,
    ProviderConfig,
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
    Usage,
    flatten_content,
)
from gateway.providers.capabilities import refuse_embeddings, refuse_unsupported
from gateway.secrets import SecretNotFound, aresolve_secret, invalidate_secret

CHECK_TIMEOUT_SECONDS = 2.0

_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",  # the pre-tools name of the same thing
    "content_filter": "content_filter",
}
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# An error body is only read to find a short error code; a huge one is not worth waiting for.
_MAX_ERROR_BODY = 64 * 1024


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of milliseconds; one context serves every client.
    return httpx.create_ssl_context()


def _finish_reason(value: Any) -> str:
    return _FINISH_REASONS.get(value, "stop") if isinstance(value, str) else "stop"


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    prompt, completion = data.get("prompt_tokens"), data.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


def _tool_calls(value: Any) -> list[dict[str, Any]] | None:
    """A message's tool calls, as OpenAI's shape (whatever else an upstream adds is dropped)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError("tool_calls is not a list")
    calls = []
    for call in value:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValueError("a tool call without a function name")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments if arguments is not None else {})
        calls.append({"id": str(call.get("id") or ""), "type": "function",
                      "function": {"name": function["name"], "arguments": arguments}})
    return calls or None


def _delta(choice: Any) -> ChatDelta | None:
    """One choice of a stream chunk as a delta; None when it is malformed."""
    if not isinstance(choice, dict):
        return None
    delta = choice.get("delta") or {}
    if not isinstance(delta, dict):
        return None
    index = choice.get("index", 0)
    content = delta.get("content")
    refusal = delta.get("refusal")
    tool_calls = delta.get("tool_calls")
    if tool_calls is not None:
        if not isinstance(tool_calls, list) or not all(isinstance(c, dict) for c in tool_calls):
            return None
        tool_calls = [_fragment(c, n) for n, c in enumerate(tool_calls)]
    logprobs = choice.get("logprobs")
    finish = choice.get("finish_reason")
    return ChatDelta(
        content=content if isinstance(content, str) else "",
        finish_reason=_finish_reason(finish) if finish else None,
        index=index if isinstance(index, int) and index >= 0 else 0,
        tool_calls=tool_calls or None,
        refusal=refusal if isinstance(refusal, str) and refusal else None,
        logprobs=logprobs if isinstance(logprobs, dict) else None,
    )


def _fragment(call: dict[str, Any], position: int) -> dict[str, Any]:
    """A streamed tool-call fragment in OpenAI's shape: index always, id/type/name when sent."""
    index = call.get("index")
    fragment: dict[str, Any] = {"index": index if isinstance(index, int) else position}
    if isinstance(call.get("id"), str):
        fragment["id"] = call["id"]
        fragment["type"] = "function"
    function = call.get("function")
    if isinstance(function, dict):
        out: dict[str, Any] = {}
        if isinstance(function.get("name"), str):
            out["name"] = function["name"]
        arguments = function.get("arguments")
        out["arguments"] = arguments if isinstance(arguments, str) else ""
        fragment["function"] = out
    return fragment


def _media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def _timed_out(exc: BaseException) -> bool:
    """Whether a transport failure was a timeout. The aiohttp transport reports every
    connection failure as ``httpx.ConnectTimeout``; the aiohttp error it wraps tells a refused
    or reset connection (the upstream is unavailable) from a real timeout."""
    cause: BaseException | None = exc.__cause__ or exc.__context__
    seen = 0
    while cause is not None and seen < 8:
        if isinstance(cause, TimeoutError):
            return True
        if isinstance(cause, aiohttp.ClientError):
            return False
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return isinstance(exc, httpx.TimeoutException)


class OpenAICompatibleAdapter:
    """Subclasses change where requests go and how they authenticate (``chat_url``,
    ``models_url``, ``auth_headers``); the wire format and error mapping are shared."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._label = f"provider '{config.name}'"
        self._timeout = httpx.Timeout(
            connect=config.connect_timeout,
            read=config.read_timeout,
            # A stalled upload is as stuck as a stalled answer.
            write=config.read_timeout,
            pool=config.connect_timeout,
        )
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    # Where and how -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.config.base_url.rstrip("/")

    def chat_url(self, request: ChatRequest) -> str:
        return f"{self.base_url}/chat/completions"

    def models_url(self) -> str:
        return f"{self.base_url}/models"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def embeddings_url(self, request: EmbeddingRequest) -> str:
        return f"{self.base_url}/embeddings"

    def build_body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        # What the operator declared this provider does not take is refused, not sent.
        refuse_unsupported(self.config, request.messages, request.extra)
        messages = []
        for message in request.messages:
            content: Any = list(message.parts) if message.parts else message.content
            if content == "" and message.tool_calls:
                content = None  # an assistant turn that only called tools, as OpenAI sends it
            item: dict[str, Any] = {"role": message.role, "content": content}
            if message.name is not None:
                item["name"] = message.name
            if message.tool_call_id is not None:
                item["tool_call_id"] = message.tool_call_id
            if message.tool_calls is not None:
                item["tool_calls"] = message.tool_calls
            messages.append(item)
        # Pass-through parameters first, so they can never replace the ones the gateway set.
        body: dict[str, Any] = {**request.extra, "model": request.model, "messages": messages}
        optional = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "stop": request.stop,
            "user": request.user,
        }
        body.update({name: value for name, value in optional.items() if value is not None})
        if stream:
            body["stream"] = True
            options = body.get("stream_options")
            body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return body

    # The client ----------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        """The adapter's pooled client. httpx connections belong to the event loop that opened
        them; a server process runs one loop, so this is built once, but a sync caller bridging
        through ``async_to_sync`` (or a test) may bring another loop, which gets its own."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # Streams hold their connection for the whole answer: httpx's default of 100
            # would queue the 101st concurrent stream until the pool timeout.
            limits = httpx.Limits(max_connections=settings.LLMP_UPSTREAM_MAX_CONNECTIONS,
                                  max_keepalive_connections=100)
            # httpx's API over aiohttp's transport: httpx's own HTTP/1.1 stack costs about
            # 1 ms of CPU per call, aiohttp's about 0.2 ms (measured with bench/).
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                transport=AiohttpTransport(verify=_tls_context(), limits=limits),
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        client, loop = self._client, self._client_loop
        self._client = self._client_loop = None
        # A client of another (usually finished) loop cannot be closed from here; its sockets
        # go with it.
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()

    async def _api_key(self) -> str:
        try:
            return await aresolve_secret(self.config.api_key_ref)
        except SecretNotFound as exc:
            raise UpstreamAuthError(f"{self._label}: {exc}") from None

    # Sending -------------------------------------------------------------------------------

    def _refuse_disallowed_host(self, url: str) -> None:
        if not host_allowed(url):
            # Never send a credential to a host the operator has not allowed (LLMP_UPSTREAM_HOSTS).
            raise UpstreamUnavailable(f"{self._label} has a base URL that is not allowed")

    async def _post(self, url: str, body: dict[str, Any], key: str) -> httpx.Response:
        self._refuse_disallowed_host(url)
        client = self._http()
        headers = {"Accept": "application/json, text/event-stream", **self.auth_headers(key)}
        try:
            outgoing = client.build_request("POST", url, json=body, headers=headers)
            return await client.send(outgoing, stream=True)
        except httpx.TransportError as exc:
            if _timed_out(exc):
                raise UpstreamTimeout(
                    f"{self._label} did not answer in time ({type(exc).__name__})"
                ) from exc
            # Refused, reset or closed before any answer: nothing was processed.
            raise UpstreamUnavailable(
                f"{self._label} cannot be reached ({type(exc).__name__})"
            ) from exc
        except httpx.InvalidURL as exc:
            raise UpstreamUnavailable(f"{self._label} has an invalid base URL") from exc

    async def _open(self, request: ChatRequest, *, stream: bool) -> httpx.Response:
        """POST the request and return a successful response, its body not read yet."""
        return await self._send(self.chat_url(request), self.build_body(request, stream=stream))

    async def _send(self, url: str, body: dict[str, Any]) -> httpx.Response:
        """POST ``body``; a successful response, its body not read yet, or an error raised."""
        response = await self._post(url, body, await self._api_key())
        if response.status_code in (401, 403):
            # The key may have been rotated since we cached it: fetch it again, once.
            await response.aclose()
            invalidate_secret(self.config.api_key_ref)
            response = await self._post(url, body, await self._api_key())
            if response.status_code in (401, 403):
                await response.aclose()
                raise UpstreamAuthError(
                    f"{self._label} rejected the credentials (HTTP {response.status_code})",
                    upstream_status=response.status_code,
                )
        if not response.is_success:
            await self._raise_for_status(response)
        return response

    async def _raise_for_status(self, response: httpx.Response) -> None:
        status = response.status_code
        code = await self._error_code(response)
        detail = f"HTTP {status}" + (f", {code}" if code else "")
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if status == 429:
            raise UpstreamUnavailable(
                f"{self._label} is rate limiting us ({detail})",
                upstream_status=status,
                retry_after=retry_after,
            )
        if status >= 500:
            raise UpstreamServerError(
                f"{self._label} failed ({detail})", upstream_status=status, retry_after=retry_after
            )
        raise UpstreamBadResponse(
            f"{self._label} refused the request ({detail})", upstream_status=status,
            upstream_code=code
        )

    async def _error_code(self, response: httpx.Response) -> str:
        """The upstream's error code (``error.code`` or ``error.type``) if it is a short
        identifier; best effort, never raises."""
        try:
            raw = b""
            async for chunk in response.aiter_bytes():
                raw += chunk
                if len(raw) > _MAX_ERROR_BODY:
                    return ""
            data = json.loads(raw)
        except (httpx.HTTPError, ValueError):
            return ""
        finally:
            await response.aclose()
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            return ""
        for value in (error.get("code"), error.get("type")):
            if isinstance(value, str) and _ERROR_CODE.fullmatch(value):
                return value
        return ""

    def _require_media_type(self, response: httpx.Response, expected: str) -> None:
        if _media_type(response) != expected:
            raise UpstreamBadResponse(
                f"{self._label} answered with content type "
                f"'{_media_type(response) or 'none'}', expected '{expected}'",
                upstream_status=response.status_code,
            )

    # The interface -------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatResult:
        response = await self._open(request, stream=False)
        return self._parse_completion(await self._json(response), response.status_code)

    async def _json(self, response: httpx.Response) -> Any:
        """The answer's JSON body, read whole; a broken, mistyped or invalid one raises."""
        try:
            raw = await response.aread()
        except httpx.TransportError as exc:
            if _timed_out(exc):
                raise UpstreamTimeout(f"{self._label} stopped answering mid-way") from exc
            raise UpstreamBadResponse(
                f"{self._label} broke off its answer ({type(exc).__name__})",
                upstream_status=response.status_code,
            ) from exc
        finally:
            await response.aclose()
        self._require_media_type(response, "application/json")
        try:
            return json.loads(raw)
        except ValueError:
            # Not chained: the decode error carries the body.
            raise UpstreamBadResponse(
                f"{self._label} answered with invalid JSON", upstream_status=response.status_code
            ) from None

    def _parse_completion(self, data: Any, status: int) -> ChatResult:
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            raise UpstreamBadResponse(
                f"{self._label} answered without choices", upstream_status=status
            )
        parsed = []
        for position, choice in enumerate(choices):
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                raise UpstreamBadResponse(
                    f"{self._label} answered without a message", upstream_status=status
                )
            try:
                content = flatten_content(message.get("content"))
                tool_calls = _tool_calls(message.get("tool_calls"))
            except (AttributeError, TypeError, ValueError):
                raise UpstreamBadResponse(
                    f"{self._label} answered with malformed content", upstream_status=status
                ) from None
            index = choice.get("index")
            refusal = message.get("refusal")
            logprobs = choice.get("logprobs")
            parsed.append(Choice(
                index=index if isinstance(index, int) and index >= 0 else position,
                content=content,
                finish_reason=_finish_reason(choice.get("finish_reason")),
                tool_calls=tool_calls,
                refusal=refusal if isinstance(refusal, str) else None,
                logprobs=logprobs if isinstance(logprobs, dict) else None,
            ))
        model = data.get("model")
        return ChatResult(
            choices=sorted(parsed, key=lambda c: c.index),
            usage=_usage(data.get("usage")) or Usage(),
            upstream_model=model if isinstance(model, str) else "",
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        """Deltas as they arrive (content, tool-call fragments, refusal, logprobs, for each
        choice), then each choice's ``finish_reason``, the last of them with the usage."""
        response = await self._open(request, stream=True)
        try:
            self._require_media_type(response, "text/event-stream")
            # Each choice's finish reason, held until the end: the last delta carries the
            # finish reason with the usage (OpenAI reports usage after the finish chunks).
            finishes: dict[int, str] = {}
            usage: Usage | None = None
            done = False
            async with aclosing(self._sse_data(response)) as events:
                async for data in events:
                    if data == "[DONE]":
                        done = True
                        break
                    chunk = self._parse_chunk(data, response.status_code)
                    usage = _usage(chunk.get("usage")) or usage
                    choices = chunk.get("choices")
                    if not isinstance(choices, list):
                        continue
                    for choice in choices:
                        delta = _delta(choice)
                        if delta is None:
                            raise UpstreamBadResponse(
                                f"{self._label} sent an invalid stream chunk",
                                upstream_status=response.status_code,
                            )
                        if delta.finish_reason:
                            finishes[delta.index] = delta.finish_reason
                            delta.finish_reason = None
                        if delta.content or delta.tool_calls or delta.refusal or delta.logprobs:
                            yield delta
            if not done and not finishes:
                raise UpstreamBadResponse(
                    f"{self._label} ended the stream before the answer was complete",
                    upstream_status=response.status_code,
                )
            last = sorted(finishes.items()) or [(0, "stop")]
            for index, reason in last[:-1]:
                yield ChatDelta(index=index, finish_reason=reason)
            yield ChatDelta(index=last[-1][0], finish_reason=last[-1][1], usage=usage)
        finally:
            await response.aclose()

    def _parse_chunk(self, data: str, status: int) -> dict[str, Any]:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise UpstreamBadResponse(
                f"{self._label} sent an invalid stream chunk", upstream_status=status
            ) from None
        if not isinstance(chunk, dict):
            raise UpstreamBadResponse(
                f"{self._label} sent an invalid stream chunk", upstream_status=status
            )
        if "error" in chunk:
            raise UpstreamBadResponse(
                f"{self._label} reported an error mid-stream", upstream_status=status
            )
        return chunk

    async def _sse_data(self, response: httpx.Response) -> AsyncIterator[str]:
        """The ``data`` of each server-sent event (multi-line data joined, as the spec says)."""
        lines: list[str] = []
        try:
            async for line in response.aiter_lines():
                if not line:
                    if lines:
                        yield "\n".join(lines)
                        lines = []
                    continue
                field, _, value = line.partition(":")
                if field == "data":
                    lines.append(value.removeprefix(" "))
        except httpx.TransportError as exc:
            if _timed_out(exc):
                raise UpstreamTimeout(f"{self._label} stopped streaming mid-way") from exc
            raise UpstreamBadResponse(
                f"{self._label} broke off the stream ({type(exc).__name__})",
                upstream_status=response.status_code,
            ) from exc
        if lines:
            yield "\n".join(lines)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """``POST /embeddings``; vectors always asked for as floats (the door encodes them as
        the client asked)."""
        refuse_embeddings(self.config)
        body: dict[str, Any] = {"model": request.model, "input": request.inputs,
                                "encoding_format": "float"}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        if request.user is not None:
            body["user"] = request.user
        response = await self._send(self.embeddings_url(request), body)
        data = await self._json(response)
        try:
            items = sorted(data["data"], key=lambda item: item["index"])
            vectors = [[float(x) for x in item["embedding"]] for item in items]
        except (KeyError, TypeError, ValueError):
            raise UpstreamBadResponse(f"{self._label} answered with malformed embeddings",
                                      upstream_status=response.status_code) from None
        if len(vectors) != len(request.inputs):
            raise UpstreamBadResponse(f"{self._label} answered with {len(vectors)} embeddings "
                                      f"for {len(request.inputs)} inputs",
                                      upstream_status=response.status_code)
        usage = data.get("usage") if isinstance(data, dict) else None
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        model = data.get("model")
        return EmbeddingResult(vectors, Usage(prompt if isinstance(prompt, int) else 0, 0),
                               model if isinstance(model, str) else "")

    async def check(self) -> bool:
        # A provider configured to answer faster than the probe's budget is not waited for
        # longer than that.
        timeout = min(CHECK_TIMEOUT_SECONDS, self.config.read_timeout)
        try:
            self._refuse_disallowed_host(self.models_url())
            headers = self.auth_headers(await self._api_key())
            response = await self._http().get(self.models_url(), headers=headers, timeout=timeout)
        except (UpstreamError, httpx.HTTPError, httpx.InvalidURL):
            return False
        return response.is_success
