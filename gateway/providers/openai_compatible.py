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
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from django.conf import settings
from yarl import URL

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
from llmplatform import tracing

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
    # Loading the CA bundle takes tens of milliseconds; one context serves every client. httpx
    # builds it as the gateway's other HTTP clients verify (certifi's bundle, or SSL_CERT_FILE).
    import httpx

    return httpx.create_ssl_context()


def _proxies_in_environment() -> bool:
    """Whether ``HTTP(S)_PROXY``/``ALL_PROXY`` are set: only then are upstream calls made
    through the environment's proxy (aiohttp's ``trust_env`` looks them up on every request)."""
    return bool(urllib.request.getproxies_environment())


def _encode(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # what orjson does not write (an integer over 64 bits, say)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _decode(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)  # NaN and Infinity, which some servers write; else ValueError


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
        calls.append(
            {
                "id": str(call.get("id") or ""),
                "type": "function",
                "function": {"name": function["name"], "arguments": arguments},
            }
        )
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


def _media_type(response: aiohttp.ClientResponse) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


# What a failed connection or a broken answer raises in aiohttp: its own errors, timeouts (every
# aiohttp timeout is a ``TimeoutError``) and the socket's ``OSError``.
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


class OpenAICompatibleAdapter:
    """Subclasses change where requests go and how they authenticate (``chat_url``,
    ``models_url``, ``auth_headers``); the wire format and error mapping are shared."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._label = f"provider '{config.name}'"
        # Connecting and waiting for a pooled connection each within the connect timeout; then
        # every read (also the wait for the first byte) within the read timeout.
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=config.connect_timeout,
            sock_connect=config.connect_timeout,
            sock_read=config.read_timeout,
        )
        self._client: aiohttp.ClientSession | None = None
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

    def _http(self) -> aiohttp.ClientSession:
        """The adapter's pooled session. aiohttp connections belong to the event loop that
        opened them; a server process runs one loop, so this is built once, but a sync caller
        bridging through ``async_to_sync`` (or a test) may bring another loop, which gets its
        own. aiohttp directly (not under httpx's API): httpx's request and header objects cost
        about a tenth of the gateway's CPU per call (measured with bench/ --profile)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # Streams hold their connection for the whole answer: the pool must be as large as
            # the concurrent streams the gateway allows, or the next one would wait for a slot.
            connector = aiohttp.TCPConnector(
                limit=settings.LLMP_UPSTREAM_MAX_CONNECTIONS,
                limit_per_host=0,
                ssl=_tls_context(),
                keepalive_timeout=5.0,
            )
            self._client = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                trust_env=_proxies_in_environment(),
                # Nothing the upstream sets is sent back to it (nor to another provider).
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
                auto_decompress=True,
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        client, loop = self._client, self._client_loop
        self._client = self._client_loop = None
        # A session of another (usually finished) loop cannot be closed from here; its sockets
        # go with it.
        if client is not None and loop is asyncio.get_running_loop():
            await client.close()

    async def _api_key(self) -> str:
        try:
            return await aresolve_secret(self.config.api_key_ref)
        except SecretNotFound as exc:
            raise UpstreamAuthError(f"{self._label}: {exc}") from None

    def _forget_credentials(self) -> None:
        """Drop what ``_api_key`` cached, so the next call resolves the secret again."""
        invalidate_secret(self.config.api_key_ref)

    # Sending -------------------------------------------------------------------------------

    def _refuse_disallowed_host(self, url: str) -> None:
        if not host_allowed(url):
            # Never send a credential to a host the operator has not allowed (LLMP_UPSTREAM_HOSTS).
            raise UpstreamUnavailable(f"{self._label} has a base URL that is not allowed")

    async def _post(self, url: str, body: bytes, key: str) -> aiohttp.ClientResponse:
        self._refuse_disallowed_host(url)
        try:
            target = URL(url, encoded=True)
        except (ValueError, TypeError) as exc:
            raise UpstreamUnavailable(f"{self._label} has an invalid base URL") from exc
        if target.scheme not in ("http", "https") or not target.host:
            raise UpstreamUnavailable(f"{self._label} has an invalid base URL")
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            **self.auth_headers(key),
        }
        if tracing.enabled:
            tracing.inject(headers)  # the upstream call's span, as W3C traceparent
        try:
            return await self._http().post(
                target, data=body, headers=headers, allow_redirects=False
            )
        except aiohttp.InvalidURL as exc:
            raise UpstreamUnavailable(f"{self._label} has an invalid base URL") from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"{self._label} did not answer in time ({type(exc).__name__})"
            ) from exc
        except _TRANSPORT_ERRORS as exc:
            # Refused, reset or closed before any answer: nothing was processed.
            raise UpstreamUnavailable(
                f"{self._label} cannot be reached ({type(exc).__name__})"
            ) from exc

    async def _open(self, request: ChatRequest, *, stream: bool) -> aiohttp.ClientResponse:
        """POST the request and return a successful response, its body not read yet."""
        return await self._send(self.chat_url(request), self.build_body(request, stream=stream))

    async def _send(self, url: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST ``body``; a successful response, its body not read yet, or an error raised."""
        payload = _encode(body)
        response = await self._post(url, payload, await self._api_key())
        if response.status in (401, 403):
            # The key may have been rotated since we cached it: fetch it again, once.
            response.release()
            self._forget_credentials()
            response = await self._post(url, payload, await self._api_key())
            if response.status in (401, 403):
                response.release()
                raise UpstreamAuthError(
                    f"{self._label} rejected the credentials (HTTP {response.status})",
                    upstream_status=response.status,
                )
        if not 200 <= response.status < 300:
            await self._raise_for_status(response)
        return response

    async def _raise_for_status(self, response: aiohttp.ClientResponse) -> None:
        status = response.status
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
            f"{self._label} refused the request ({detail})",
            upstream_status=status,
            upstream_code=code,
        )

    async def _error_code(self, response: aiohttp.ClientResponse) -> str:
        """The upstream's error code (``error.code`` or ``error.type``) if it is a short
        identifier; best effort, never raises."""
        try:
            raw = b""
            async for chunk in response.content.iter_any():
                raw += chunk
                if len(raw) > _MAX_ERROR_BODY:
                    return ""
            data = _decode(raw)
        except (*_TRANSPORT_ERRORS, ValueError):
            return ""
        finally:
            response.release()
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            return ""
        for value in (error.get("code"), error.get("type")):
            if isinstance(value, str) and _ERROR_CODE.fullmatch(value):
                return value
        return ""

    def _require_media_type(self, response: aiohttp.ClientResponse, expected: str) -> None:
        if _media_type(response) != expected:
            raise UpstreamBadResponse(
                f"{self._label} answered with content type "
                f"'{_media_type(response) or 'none'}', expected '{expected}'",
                upstream_status=response.status,
            )

    # The interface -------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatResult:
        response = await self._open(request, stream=False)
        return self._parse_completion(await self._json(response), response.status)

    async def _json(self, response: aiohttp.ClientResponse) -> Any:
        """The answer's JSON body, read whole; a broken, mistyped or invalid one raises."""
        try:
            raw = await response.read()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{self._label} stopped answering mid-way") from exc
        except _TRANSPORT_ERRORS as exc:
            raise UpstreamBadResponse(
                f"{self._label} broke off its answer ({type(exc).__name__})",
                upstream_status=response.status,
            ) from exc
        finally:
            response.release()
        self._require_media_type(response, "application/json")
        try:
            return _decode(raw)
        except ValueError:
            # Not chained: the decode error carries the body.
            raise UpstreamBadResponse(
                f"{self._label} answered with invalid JSON", upstream_status=response.status
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
            parsed.append(
                Choice(
                    index=index if isinstance(index, int) and index >= 0 else position,
                    content=content,
                    finish_reason=_finish_reason(choice.get("finish_reason")),
                    tool_calls=tool_calls,
                    refusal=refusal if isinstance(refusal, str) else None,
                    logprobs=logprobs if isinstance(logprobs, dict) else None,
                )
            )
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
                    chunk = self._parse_chunk(data, response.status)
                    usage = _usage(chunk.get("usage")) or usage
                    choices = chunk.get("choices")
                    if not isinstance(choices, list):
                        continue
                    for choice in choices:
                        delta = _delta(choice)
                        if delta is None:
                            raise UpstreamBadResponse(
                                f"{self._label} sent an invalid stream chunk",
                                upstream_status=response.status,
                            )
                        if delta.finish_reason:
                            finishes[delta.index] = delta.finish_reason
                            delta.finish_reason = None
                        if delta.content or delta.tool_calls or delta.refusal or delta.logprobs:
                            yield delta
            if not done and not finishes:
                raise UpstreamBadResponse(
                    f"{self._label} ended the stream before the answer was complete",
                    upstream_status=response.status,
                )
            last = sorted(finishes.items()) or [(0, "stop")]
            for index, reason in last[:-1]:
                yield ChatDelta(index=index, finish_reason=reason)
            yield ChatDelta(index=last[-1][0], finish_reason=last[-1][1], usage=usage)
        finally:
            response.release()

    def _parse_chunk(self, data: str, status: int) -> dict[str, Any]:
        try:
            chunk = _decode(data)
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

    async def _sse_data(self, response: aiohttp.ClientResponse) -> AsyncGenerator[str, None]:
        """The ``data`` of each server-sent event (multi-line data joined, as the spec says).
        Lines end in LF, CRLF or CR; a line may be any length (a whole answer in one event)."""
        lines: list[str] = []
        pending = b""
        try:
            async for chunk in response.content.iter_any():
                pending += chunk
                if b"\r" in pending:
                    # A CR at the very end may be the first half of a CRLF: wait for more.
                    tail = b"\r" if pending.endswith(b"\r") else b""
                    pending = pending[: len(pending) - len(tail)]
                    pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    line = raw.decode("utf-8", errors="replace")
                    if not line:
                        if lines:
                            yield "\n".join(lines)
                            lines = []
                        continue
                    field, _, value = line.partition(":")
                    if field == "data":
                        lines.append(value.removeprefix(" "))
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{self._label} stopped streaming mid-way") from exc
        except _TRANSPORT_ERRORS as exc:
            raise UpstreamBadResponse(
                f"{self._label} broke off the stream ({type(exc).__name__})",
                upstream_status=response.status,
            ) from exc
        line = pending.rstrip(b"\r").decode("utf-8", errors="replace")
        if line.partition(":")[0] == "data":
            lines.append(line.partition(":")[2].removeprefix(" "))
        if lines:
            yield "\n".join(lines)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """``POST /embeddings``; vectors always asked for as floats (the door encodes them as
        the client asked)."""
        refuse_embeddings(self.config)
        body: dict[str, Any] = {
            "model": request.model,
            "input": request.inputs,
            "encoding_format": "float",
        }
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
            raise UpstreamBadResponse(
                f"{self._label} answered with malformed embeddings", upstream_status=response.status
            ) from None
        if len(vectors) != len(request.inputs):
            raise UpstreamBadResponse(
                f"{self._label} answered with {len(vectors)} embeddings "
                f"for {len(request.inputs)} inputs",
                upstream_status=response.status,
            )
        usage = data.get("usage") if isinstance(data, dict) else None
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        model = data.get("model")
        return EmbeddingResult(
            vectors,
            Usage(prompt if isinstance(prompt, int) else 0, 0),
            model if isinstance(model, str) else "",
        )

    async def check(self) -> bool:
        # A provider configured to answer faster than the probe's budget is not waited for
        # longer than that.
        timeout = min(CHECK_TIMEOUT_SECONDS, self.config.read_timeout)
        try:
            self._refuse_disallowed_host(self.models_url())
            headers = self.auth_headers(await self._api_key())
            async with self._http().get(
                URL(self.models_url(), encoded=True),
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                return 200 <= response.status < 300
        except (UpstreamError, ValueError, *_TRANSPORT_ERRORS):
            return False
