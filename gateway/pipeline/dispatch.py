"""Stage "dispatch": build the upstream request for the routed target and call its adapter.

Provider failures become client errors with OpenAI's shape: 502 for a bad upstream answer,
503 when it cannot be reached or is overloaded, 504 on a timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway.errors import InvalidRequest, UpstreamFailure
from gateway.pipeline.authenticate import Principal
from gateway.pipeline.route import Target
from gateway.pipeline.validate import ParsedChat
from gateway.providers.base import (
    ChatDelta,
    ChatMessage,
    ChatRequest,
    ChatResult,
    UpstreamError,
)
from gateway.providers.registry import get_adapter


def check_limits(principal: Principal, parsed: ParsedChat) -> None:
    limit = principal.tier.max_prompt_chars
    size = parsed.prompt_chars
    if size > limit:
        raise InvalidRequest(
            f"The prompt is {size} characters; the '{principal.tier.name}' tier allows at most "
            f"{limit} characters over all messages.",
            code="prompt_too_large",
            param="messages",
        )
    cap = principal.tier.max_output_tokens
    if cap and parsed.max_tokens is not None and parsed.max_tokens > cap:
        raise InvalidRequest(
            f"max_tokens is {parsed.max_tokens}; the '{principal.tier.name}' tier allows at most "
            f"{cap}.",
            code="max_tokens_too_large",
            param="max_tokens",
        )


def build_request(target: Target, parsed: ParsedChat, principal: Principal) -> ChatRequest:
    messages = parsed.messages
    if target.system_prompt:
        messages = [ChatMessage(role="system", content=target.system_prompt), *messages]
    params = target.params
    max_tokens = parsed.max_tokens or params.get("max_tokens")
    cap = principal.tier.max_output_tokens
    if cap and (max_tokens is None or max_tokens > cap):
        max_tokens = cap
    return ChatRequest(
        model=target.model,
        messages=messages,
        temperature=parsed.temperature if parsed.temperature is not None
        else params.get("temperature"),
        top_p=parsed.top_p if parsed.top_p is not None else params.get("top_p"),
        max_tokens=max_tokens,
        stop=parsed.stop if parsed.stop is not None else params.get("stop"),
        user=parsed.user,
        extra=parsed.extra,
    )


def as_api_error(exc: UpstreamError) -> UpstreamFailure:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
    return UpstreamFailure(f"The model provider failed: {exc.message}", code=exc.code,
                           status=exc.status, headers=headers)


async def complete(target: Target, request: ChatRequest) -> ChatResult:
    try:
        return await get_adapter(target.provider).complete(request)
    except UpstreamError as exc:
        raise as_api_error(exc) from exc


def stream(target: Target, request: ChatRequest) -> AsyncIterator[ChatDelta]:
    return get_adapter(target.provider).stream(request)
