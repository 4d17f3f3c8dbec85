"""Stage "guard input" (PII part) and the restoring half of "guard output".

By the tenant's privacy policy, before the provider sees a prompt:

- prompts containing any of the PII types the tenant blocks are refused (400 ``pii_detected``,
  naming the types, never the values);
- ``mask``: PII in every message the client wrote (system, developer, user, assistant, tool;
  tool-call arguments included) and in ``tools``, ``response_format``, ``prediction`` and
  ``metadata`` is replaced by ``<TYPE>``;
- ``pseudonymize``: it is replaced by numbered placeholders (``<EMAIL_1>``; the same value gets
  the same placeholder across the messages of a request, tool-call arguments included), and
  the placeholders in the reply are turned back into the values — in streams too, holding back
  only a possibly incomplete placeholder.

If the detector fails, the request fails (503 ``pii_detector_unavailable``): a prompt is never
sent unscreened because the screen broke.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import structlog

from gateway.errors import ApiError
from gateway.pipeline import inputs
from gateway.pipeline.authenticate import Principal
from gateway.pipeline.verdicts import NO_VERDICTS, TextVerdicts
from gateway.providers.base import ChatMessage, ChatRequest
from privacy.pii import DetectorError, Pseudonymizer, StreamRestorer, detect, redact

log = structlog.get_logger("gateway.pii")

TextFn = Callable[[str], str]  # one text to its masked or pseudonymized form


class PIIDetected(ApiError):
    status = 400
    code = "pii_detected"


class PIIDetectorUnavailable(ApiError):
    status = 503
    type = "server_error"
    code = "pii_detector_unavailable"


class Restorer:
    """Turns placeholders in a reply back into the values (pseudonymize mode)."""

    def __init__(self, pseudonymizer: Pseudonymizer) -> None:
        self.pseudonymizer = pseudonymizer

    def whole(self, text: str, *, json_string: bool = False) -> str:
        """A whole text; ``json_string`` for tool-call arguments (values JSON-escaped)."""
        if json_string:
            return self.pseudonymizer.restore_json(text)
        return self.pseudonymizer.restore(text)

    def stream(self, *, json_string: bool = False) -> StreamRestorer:
        """A restorer for one streamed text (``feed`` / ``flush``)."""
        return self.pseudonymizer.stream_restorer(json_string=json_string)


def _detector_unavailable(exc: DetectorError) -> PIIDetectorUnavailable:
    """The client's 503 when the detector fails: the request is not sent unchecked."""
    log.error("pii_detector_failed", error=type(exc).__name__)
    return PIIDetectorUnavailable(
        "Personal data could not be checked; the request was not sent. Retry shortly.",
        headers={"Retry-After": "1"},
    )


def _check_blocked(
    principal: Principal, request: ChatRequest, keep: int, verdicts: TextVerdicts
) -> None:
    blocked = principal.privacy.block_pii_types
    if not blocked:
        return
    found: set[str] = set()
    params: list[str] = []
    for part in inputs.parts(request.messages[keep:], request.extra):
        for text in part.screened:
            types = {e.type for e in verdicts.detect(text, blocked)}
            if types:
                found |= types
                params.append(part.param)
                break
    if found:
        raise PIIDetected(
            "The request was refused: it contains personal data of types this tenant does not "
            f"send to models ({', '.join(sorted(found))}).",
            # Indexes count the client's messages (the route's system prompt is not one).
            param=params[0] if params else "messages",
        )


def _transform(messages: list[ChatMessage], text_fn: TextFn, keep: int = 0) -> list[ChatMessage]:
    result = list(messages[:keep])
    for message in messages[keep:]:  # every role the client wrote
        tool_calls = message.tool_calls
        if tool_calls:
            tool_calls = [_tool_call(call, text_fn) for call in tool_calls]
        if message.parts:
            # Text parts are transformed one by one; images, audio and files pass as given.
            parts = tuple(
                {**p, "text": text_fn(p["text"])}
                if p.get("type") == "text" and p.get("text")
                else p
                for p in message.parts
            )
            content = "".join(p["text"] for p in parts if p.get("type") == "text")
            result.append(
                dataclasses.replace(message, content=content, parts=parts, tool_calls=tool_calls)
            )
            continue
        result.append(
            dataclasses.replace(
                message,
                content=text_fn(message.content) if message.content else message.content,
                tool_calls=tool_calls,
            )
        )
    return result


def _transform_request(request: ChatRequest, text_fn: TextFn, keep: int) -> ChatRequest:
    return dataclasses.replace(
        request,
        messages=_transform(request.messages, text_fn, keep),
        extra=inputs.transform_fields(request.extra, text_fn),
    )


def _tool_call(call: dict[str, Any], text_fn: TextFn) -> dict[str, Any]:
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    return {**call, "function": {**function, "arguments": text_fn(function["arguments"])}}


def protect(
    principal: Principal,
    request: ChatRequest,
    *,
    keep: int = 0,
    verdicts: TextVerdicts = NO_VERDICTS,
) -> tuple[ChatRequest, Restorer | None]:
    """The request as the provider may see it, and what restores the reply (or None).

    Every part the client sent is checked and transformed (messages of every role including
    system and developer, tool-call arguments, ``tools``, ``response_format`` and the other
    pass-through fields); the first ``keep`` messages are the route's own system prompt and
    are left as the operator wrote them. ``verdicts`` holds the findings of long texts already
    looked up or computed for this request (``gateway.pipeline.verdicts``).
    """
    policy = principal.privacy
    if not policy.block_pii_types and policy.upstream_pii == "off":
        return request, None
    try:
        _check_blocked(principal, request, keep, verdicts)
        if policy.upstream_pii == "mask":

            def mask(text: str) -> str:
                masked = verdicts.mask(text)  # a long text's known findings
                return masked if masked is not None else redact(text, verdicts.detect(text))

            return _transform_request(request, mask, keep), None
        if policy.upstream_pii == "pseudonymize":
            pseudonymizer = Pseudonymizer()
            protected = _transform_request(
                request,
                lambda text: pseudonymizer.pseudonymize(text, verdicts.detect(text)),
                keep,
            )
            if not pseudonymizer.mapping:
                return request, None
            return protected, Restorer(pseudonymizer)
    except DetectorError as exc:
        raise _detector_unavailable(exc) from exc
    return request, None


def protect_texts(principal: Principal, texts: list[str], param: str = "input") -> list[str]:
    """Texts (embedding inputs) as the provider may see them: blocked types refused, the rest
    masked, or replaced by numbered placeholders in pseudonymize mode (an embedding has no
    reply to restore)."""
    policy = principal.privacy
    if not policy.block_pii_types and policy.upstream_pii == "off":
        return texts
    try:
        blocked = policy.block_pii_types
        if blocked:
            for index, text in enumerate(texts):
                types = {e.type for e in detect(text, types=blocked)}
                if types:
                    raise PIIDetected(
                        "The request was refused: it contains personal data of types this "
                        f"tenant does not send to models ({', '.join(sorted(types))}).",
                        param=f"{param}[{index}]" if len(texts) > 1 else param,
                    )
        if policy.upstream_pii == "mask":
            return [redact(text) for text in texts]
        if policy.upstream_pii == "pseudonymize":
            pseudonymizer = Pseudonymizer()
            return [pseudonymizer.pseudonymize(text) for text in texts]
    except DetectorError as exc:
        raise _detector_unavailable(exc) from exc
    return texts
