"""The one interface every provider adapter implements.

The gateway speaks OpenAI's chat format at its edge and builds the responses itself; adapters
only translate a normalised ``ChatRequest`` to their upstream's protocol and back into a
``ChatResult`` (or a stream of ``ChatDelta``). Failures are raised as ``UpstreamError``
subclasses, which the API maps to 502/503/504.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """A plain snapshot of a ``gateway.models.Provider`` row: adapters never touch the ORM."""

    name: str
    kind: str  # openai | azure | bedrock | anthropic | gemini | vertex
    base_url: str = ""
    api_key_ref: str = ""  # a secret reference, resolved by gateway.secrets
    api_version: str = ""
    region: str = ""
    connect_timeout: float = 5.0
    read_timeout: float = 120.0
    extra: dict[str, Any] = field(default_factory=dict)
    # Changes whenever the row changes, so cached adapters are rebuilt.
    revision: str = ""


# Content part kinds a client may send (OpenAI's names); only user messages carry non-text ones.
MEDIA_KINDS = ("image_url", "input_audio", "file")


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # system | developer | user | assistant | tool
    content: str  # the message's text (its text parts joined)
    name: str | None = None
    tool_call_id: str | None = None
    # OpenAI-format tool calls made by an assistant turn, passed through as given.
    tool_calls: list[dict[str, Any]] | None = None
    # The content as OpenAI content parts, kept only when a part is not text (an image, audio,
    # a file): ``{"type": "text", "text": ...}`` parts hold the same text as ``content``.
    parts: tuple[dict[str, Any], ...] | None = None

    def media(self) -> list[tuple[int, dict[str, Any]]]:
        """(index, part) of the non-text parts."""
        return [(i, p) for i, p in enumerate(self.parts or ()) if p.get("type") in MEDIA_KINDS]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str  # the upstream model id (or Azure deployment / Bedrock model id)
    messages: list[ChatMessage]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    user: str | None = None
    # Parameters passed through verbatim to OpenAI-compatible upstreams only.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Choice:
    """One choice of an answer: the assistant message whole."""

    index: int = 0
    content: str = ""
    finish_reason: str = "stop"  # stop | length | tool_calls | content_filter
    # OpenAI's shape: ``{"id", "type": "function", "function": {"name", "arguments"}}``.
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None


@dataclass(slots=True)
class ChatResult:
    choices: list[Choice]
    usage: Usage
    upstream_model: str = ""

    @classmethod
    def text(
        cls,
        content: str,
        finish_reason: str = "stop",
        usage: Usage | None = None,
        upstream_model: str = "",
    ) -> ChatResult:
        return cls([Choice(0, content, finish_reason)], usage or Usage(), upstream_model)

    @property
    def content(self) -> str:
        return self.choices[0].content if self.choices else ""

    @property
    def finish_reason(self) -> str:
        return self.choices[0].finish_reason if self.choices else "stop"

    @property
    def tool_call_count(self) -> int:
        return sum(len(c.tool_calls or ()) for c in self.choices)


@dataclass(slots=True)
class ChatDelta:
    """One piece of a streamed answer, for choice ``index``. A choice's last delta carries its
    ``finish_reason``; ``usage`` is set on whichever delta the upstream reported it (often the
    last). ``tool_calls`` are OpenAI's delta fragments: ``{"index", "id", "type", "function":
    {"name", "arguments"}}`` with id and name in a call's first fragment, then pieces of its
    arguments."""

    content: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    index: int = 0
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    model: str
    inputs: list[str]  # always a list (a single string input is a list of one)
    dimensions: int | None = None
    user: str | None = None


@dataclass(slots=True)
class EmbeddingResult:
    vectors: list[list[float]]  # one per input, in order
    usage: Usage  # prompt_tokens only
    upstream_model: str = ""


class ProviderAdapter(Protocol):
    async def complete(self, request: ChatRequest) -> ChatResult: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]: ...

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult: ...

    async def check(self) -> bool:
        """Cheap reachability probe for /readyz (no tokens spent where avoidable)."""
        ...

    async def aclose(self) -> None: ...


class UpstreamError(Exception):
    """A provider call failed. ``status`` is what the client gets."""

    status = 502
    code = "upstream_error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        retry_after: float | None = None,
        upstream_code: str = "",
    ) -> None:
        super().__init__(message)
        # For logs and operators: names the provider (and may name a secret reference).
        self.message = message
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        # The upstream's own short error code (``context_length_exceeded``): safe to show.
        self.upstream_code = upstream_code


class UpstreamBadResponse(UpstreamError):
    """The upstream answered with an error or with something that is not a valid answer."""

    status = 502
    code = "upstream_bad_response"


class UpstreamServerError(UpstreamBadResponse):
    """The upstream answered 5xx."""

    code = "upstream_server_error"
    retryable = True


class UpstreamAuthError(UpstreamError):
    """The upstream rejected our credentials (401/403): a configuration problem of ours."""

    status = 502
    code = "upstream_auth_failed"


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached, or is overloaded (429/503)."""

    status = 503
    code = "upstream_unavailable"
    retryable = True


class UnsupportedByProvider(UpstreamError):
    """The request uses something this provider (or this deployment of it) does not accept: an
    image part, tools, ``n`` > 1... Raised before any call. The client gets 400 naming the part;
    the deployment is healthy (no breaker count, no fallback)."""

    status = 400
    code = "unsupported_by_provider"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message, upstream_status=400)
        self.param = param


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    retryable = True


def flatten_content(content: Any) -> str:
    """OpenAI content is a string or a list of parts: the text of its text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")
