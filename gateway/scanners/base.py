"""The scanners' shared types: what a scanner is asked, what it answers, how it fails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

PRE_CALL, POST_CALL = "pre_call", "post_call"
ALLOW, FLAG, BLOCK = "allow", "flag", "block"
ACTIONS = (ALLOW, FLAG, BLOCK)
# What a scanner may put in a security event: a few short reasons (an officer reads them; they
# are never shown to the client).
MAX_REASONS, MAX_REASON_CHARS = 10, 100


@dataclass(frozen=True, slots=True)
class ScannerConfig:
    """A ``GuardrailScanner`` row as the request path needs it (adapters never touch the ORM).
    ``tenant_id`` None: every tenant; ``alias`` "": every alias."""

    name: str
    kind: str
    tenant_id: int | None
    alias: str
    pre_call: bool
    post_call: bool
    fail_closed: bool
    timeout: float  # seconds
    url: str = ""
    auth_header: str = ""
    auth_secret_ref: str = ""
    guardrail_id: str = ""
    guardrail_version: str = ""
    region: str = ""
    language: str = "en"
    score_threshold: float = 0.5
    entities: tuple[str, ...] = ()
    on_detect: str = BLOCK
    revision: str = ""

    def applies_to(self, tenant_id: int) -> bool:
        return self.tenant_id is None or self.tenant_id == tenant_id


@dataclass(frozen=True, slots=True)
class ScanText:
    """One text a scanner reads: where it is in the request (``param``), who wrote it
    (``role``: a message's role, ``tools``, ``field``, or ``assistant`` for a reply) and what
    it is (``kind``: message, tool_result, tool_call, tool_definition, field, reply)."""

    param: str
    role: str
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class ScanRequest:
    phase: str  # pre_call | post_call
    request_id: str
    tenant_id: int
    tenant_slug: str
    alias: str
    texts: tuple[ScanText, ...]

    def joined(self) -> str:
        return "\n".join(t.text for t in self.texts)


@dataclass(frozen=True, slots=True)
class ScanVerdict:
    """A scanner's answer: ``action`` allow | flag | block, a score in [0, 1] and short
    reasons (for the security event)."""

    action: str
    score: float = 0.0
    reasons: tuple[str, ...] = ()


def bounded_reasons(reasons: object) -> tuple[str, ...]:
    """At most ``MAX_REASONS`` strings of at most ``MAX_REASON_CHARS``; anything else dropped."""
    if not isinstance(reasons, list | tuple):
        return ()
    kept = [r[:MAX_REASON_CHARS] for r in reasons if isinstance(r, str) and r]
    return tuple(kept[:MAX_REASONS])


class ScannerFailed(Exception):
    """A scanner that gave no usable answer. ``reason`` (timeout, unavailable, bad_response,
    not_allowed) goes in the security event; the message never holds a secret or a text."""

    reason = "unavailable"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ScannerTimeout(ScannerFailed):
    reason = "timeout"


class ScannerBadResponse(ScannerFailed):
    reason = "bad_response"


class ScannerAdapter(Protocol):
    config: ScannerConfig

    async def scan(self, request: ScanRequest) -> ScanVerdict: ...

    async def aclose(self) -> None: ...
