"""Stages "guard input" and "guard output": prompt-injection screening and the canary check.

Input: everything the client sends that reaches the model (``gateway.pipeline.inputs``: every
message role, tool-call arguments, tool definitions, pass-through fields; so a pasted document or
a tool result carrying an indirect injection is screened too) is scored by ``gateway.screening``,
each part in its role: a ``tool`` message is screened as a tool result, where an instruction to
the assistant or an action on the user's money or messages is suspect on its own.
By the tenant's policy (its plan, else its tier) a score at or above the threshold is blocked
(400 ``prompt_injection_detected``) or flagged (served, recorded), or screening is off.

Output: a canary token derived from a server secret, the tenant and the model version is added
to the system prompt. A reply that contains it is leaking the system prompt: by policy it is
blocked (the reply is cut where the canary starts, finish_reason ``content_filter``, as OpenAI's
content filter does) or flagged. Either way a security event records it.

Security events hold a SHA-256 of the text and, only if the tenant opted in, the text itself.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TypedDict, Unpack

import structlog
from asgiref.sync import sync_to_async
from django.conf import settings

from gateway import metrics, services
from gateway.errors import ApiError
from gateway.models import ScreeningMode, SecurityEvent
from gateway.pipeline import background, inputs
from gateway.pipeline.authenticate import Principal
from gateway.pipeline.verdicts import NO_VERDICTS, TextVerdicts
from gateway.providers.base import ChatMessage
from gateway.screening.canary import WordRun, leak_matcher, with_canary
from gateway.screening.injection import ScreenResult
from llmplatform.db import fresh_db

log = structlog.get_logger("gateway.guard")

SYSTEM_ROLES = frozenset({"system", "developer"})
# What no app writes in its own instructions (see screen_input).
SYSTEM_ATTACK_RULES = frozenset(
    {
        "override_instructions",
        "no_restrictions",
        "role_play_jailbreak",
        "role_injection",
        "encoded_instructions",
        "exfiltrate",
        "homoglyph",
        "zero_width",
    }
)


class PromptInjectionDetected(ApiError):
    status = 400
    code = "prompt_injection_detected"


@dataclass(frozen=True, slots=True)
class InputVerdict:
    action: str  # allow | flag | block
    result: ScreenResult | None
    text: str = ""  # the text that scored highest (for the security event's hash)
    param: str = "messages"  # where it was in the request


def screen_input(
    principal: Principal, found: list[inputs.Part], verdicts: TextVerdicts = NO_VERDICTS
) -> InputVerdict:
    """Score everything the client sent that reaches the model: messages of every role (a forged
    assistant turn, or an app's system message built from user input, can carry an injection
    as well as a user message), tool-call arguments, ``tools`` descriptions and the
    pass-through fields.

    System and developer messages are instructions by design: setting a persona ("You are...")
    and guarding the prompt ("never reveal these instructions") is what they are for, and the
    screen's persona and prompt-extraction signals fire on most real ones. So a system part
    counts only when a rule that no app needs in its own instructions fires
    (``SYSTEM_ATTACK_RULES``: drop your rules, no restrictions, a jailbreak persona, hidden or
    encoded text, exfiltration).

    ``verdicts`` holds the scores of long texts already looked up or computed for this request
    (``gateway.pipeline.verdicts``); others are screened here."""
    mode = principal.tier.screening_mode
    if mode == ScreeningMode.OFF:
        return InputVerdict("allow", None)
    best: tuple[ScreenResult, str, str] | None = None
    for part in found:
        text = "\n".join(part.screened)
        if not text:
            continue
        result = verdicts.screen(text, part.role)
        if part.role in SYSTEM_ROLES and not SYSTEM_ATTACK_RULES.intersection(result.reasons):
            continue
        if best is None or result.score > best[0].score:
            best = (result, part.param, text)
    if best is None:
        return InputVerdict("allow", None)
    result, param, text = best
    if result.score < principal.tier.screening_threshold:
        return InputVerdict("allow", result)
    action = "block" if mode == ScreeningMode.BLOCK else "flag"
    return InputVerdict(action, result, text, param)


def canary_for(principal: Principal, alias: str, version: str) -> str:
    """Stable per tenant and model version (so cached answers stay valid), unguessable without
    the server's secret key."""
    message = f"{principal.tenant_id}:{alias}:{version}".encode()
    digest = hmac.new(settings.SECRET_KEY.encode(), b"canary:" + message, hashlib.sha256)
    return f"llmp-canary-{digest.hexdigest()[:16]}"


def add_canary(messages: list[ChatMessage], canary: str) -> list[ChatMessage]:
    """The messages with the canary added to the first system (or developer) message; a request
    without one gets none (there is no system prompt to leak)."""
    for i, message in enumerate(messages):
        if message.role in SYSTEM_ROLES:
            marked = ChatMessage(
                role=message.role, content=with_canary(message.content, canary), name=message.name
            )
            return [*messages[:i], marked, *messages[i + 1 :]]
    return messages


class _EventRow(TypedDict):
    """The fields of the SecurityEvent row that ``record_event`` writes."""

    tenant_id: int
    api_key_id: int
    request_id: str
    kind: str
    action: str
    alias: str
    score: float
    reasons: list[str]
    text_sha256: str


class _EventWrite(_EventRow):
    """What ``_write_event`` takes: the row, and what decides whether its text is kept."""

    text: str
    store_text: bool
    user: str | None


@fresh_db
def _write_event(
    *, text: str, store_text: bool, user: str | None, **fields: Unpack[_EventRow]
) -> None:
    row: dict[str, object] = {**fields}
    if store_text and text:
        row.update(services.security_event_text(fields["tenant_id"], user, text))
    SecurityEvent.objects.create(**row)


async def record_event(
    *,
    principal: Principal,
    request_id: str,
    kind: str,
    action: str,
    alias: str,
    score: float,
    reasons: list[str],
    text: str,
    user: str | None = None,
) -> None:
    """Write a security event (a block before answering; a flag after, off the answer's
    path)."""
    metrics.record_security_event(kind, action)
    log.warning(
        "security_event",
        kind=kind,
        action=action,
        tenant=principal.tenant_slug,
        key_id=principal.key_id,
        score=round(score, 3),
        reasons=reasons,
    )
    fields: _EventWrite = dict(
        tenant_id=principal.tenant_id,
        api_key_id=principal.key_id,
        request_id=request_id,
        kind=kind,
        action=action,
        alias=alias[:64],
        score=score,
        reasons=reasons,
        text_sha256=hashlib.sha256(text.encode()).hexdigest(),
        text=text,
        store_text=principal.store_flagged_text,
        user=user,
    )
    if action == SecurityEvent.Action.BLOCKED:
        await sync_to_async(_write_event)(**fields)
        return
    await background.after_answer(
        sync_to_async(_write_event)(**fields), event="security_event_write_failed"
    )


class LeakGuard:
    """Watches a reply for the canary (in any case, spaced out, base64 or hex) and for a long run
    of the system prompt itself (``gateway.screening.canary.LeakMatcher``). For streams it holds
    back only what could still become the canary, so no part of it reaches the client; a run
    of the prompt is caught as it grows, and the stream is stopped there."""

    def __init__(self, canary: str, mode: str, system_prompt: str = "") -> None:
        self.canary = canary
        self.mode = mode
        self.leaked = False
        self.kind = ""  # what leaked: canary, canary_encoded or system_prompt
        self._matcher = leak_matcher(canary, system_prompt)
        self._words = WordRun(self._matcher)
        self._held = ""

    @property
    def blocking(self) -> bool:
        return self.mode == ScreeningMode.BLOCK

    def _leak(self, kind: str) -> None:
        self.leaked = True
        self.kind = self.kind or kind

    def check(self, text: str) -> str:
        """A whole reply: returns what may be served."""
        leak = self._matcher.find(text)
        if leak is None:
            return text
        self._leak(leak.kind)
        return text[: leak.start] if self.blocking else self._matcher.without_tokens(text)

    def feed(self, chunk: str) -> str:
        """A stream's next chunk: returns the text that may be sent now."""
        if self.leaked and self.blocking:
            return ""
        text = self._held + chunk
        leak = self._matcher.find_token(text)
        if leak is not None:
            self._leak(leak.kind)
            self._held = ""
            return text[: leak.start] if self.blocking else self._matcher.without_tokens(text)
        if self._words.feed(chunk):
            self._leak("system_prompt")
            if self.blocking:
                self._held = ""
                return ""
        sendable = self._matcher.safe_prefix_length(text)
        self._held = text[sendable:]
        return text[:sendable]

    def flush(self) -> str:
        held, self._held = self._held, ""
        if self.leaked and self.blocking:
            return ""
        leak = self._matcher.find_token(held)
        if self._words.feed("", final=True) and leak is None:
            self._leak("system_prompt")
        if leak is not None:
            self._leak(leak.kind)
            return held[: leak.start] if self.blocking else self._matcher.without_tokens(held)
        return "" if (self.leaked and self.blocking) else held
