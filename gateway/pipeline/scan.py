"""Stage "external scanners": the scanners an officer added (``GuardrailScanner``), before the
call on everything the client sent and after it on the reply.

- Which run: the routed alias's enabled scanners (from the routing snapshot, so no query per
  request; an alias without scanners costs one empty-tuple test) whose tenant is the caller's
  or unset, for the phase they check.
- Pre-call (after the built-in injection screen, so a refused request still counts against the
  limits): every text the client sent that reaches the model, as ``inputs`` lists it (messages
  of every role, tool results, tool-call arguments, tool definitions, pass-through fields), each
  with its role, kind and place. The scanners run concurrently, each within its own timeout and
  all within ``LLMP_SCANNERS_DEADLINE_MS``.
- Post-call: the reply as the client would get it (each choice's content, refusal and tool-call
  arguments). A streamed reply is held until it is checked, so nothing a scanner refuses
  reaches the client; the client gets the whole stream at once after the check (``chat``).
- Verdicts: a ``block`` refuses (400 ``request_blocked_by_scanner`` /
  ``response_blocked_by_scanner``); a ``flag`` lets it through. A scanner that times out, errors
  or answers what the contract does not allow follows its fail mode: open lets the request
  through, closed refuses it (503 ``scanner_unavailable``). Every flag, block and failure is a
  security event (kind ``scanner`` or ``scanner_error``, reasons naming the scanner, the phase
  and what it said) and a metric; the client's message names none of it, only the request id.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog
from django.conf import settings

from gateway import metrics
from gateway.errors import ApiError
from gateway.models import SecurityEvent
from gateway.pipeline import guard, inputs
from gateway.pipeline.authenticate import Principal
from gateway.scanners.base import (
    ALLOW,
    BLOCK,
    POST_CALL,
    PRE_CALL,
    ScannerConfig,
    ScannerFailed,
    ScanRequest,
    ScanText,
)
from gateway.scanners.registry import get_scanner

log = structlog.get_logger("gateway.scan")

__all__ = ["POST_CALL", "PRE_CALL", "enforce", "request_texts", "scanners_for"]


class RequestBlockedByScanner(ApiError):
    status = 400
    code = "request_blocked_by_scanner"


class ResponseBlockedByScanner(ApiError):
    status = 400
    code = "response_blocked_by_scanner"


class ScannerUnavailable(ApiError):
    status = 503
    type = "api_error"
    code = "scanner_unavailable"


@dataclass(frozen=True, slots=True)
class ScanOutcome:
    """One scanner's part in a phase: its verdict, or ``failure`` (timeout, unavailable,
    bad_response, not_allowed, error) with the action its fail mode gives."""

    scanner: ScannerConfig
    action: str
    score: float = 0.0
    reasons: tuple[str, ...] = ()
    failure: str = ""
    seconds: float = 0.0


def scanners_for(
    configured: tuple[ScannerConfig, ...], tenant_id: int, phase: str
) -> tuple[ScannerConfig, ...]:
    """The scanners of a route that run for this tenant in this phase."""
    return tuple(
        s
        for s in configured
        if s.applies_to(tenant_id) and (s.pre_call if phase == PRE_CALL else s.post_call)
    )


def _kind(part: inputs.Part) -> str:
    if part.role == inputs.TOOLS:
        return "tool_definition"
    if part.role == inputs.FIELD:
        return "field"
    if ".tool_calls[" in part.param:
        return "tool_call"
    if part.role == "tool":
        return "tool_result"
    return "message"


def request_texts(parts: list[inputs.Part]) -> tuple[ScanText, ...]:
    """What the client sent, as scanners read it (a structured field's string leaves)."""
    texts = []
    for part in parts:
        text = "\n".join(part.screened)
        if text:
            texts.append(ScanText(part.param, part.role, _kind(part), text))
    return tuple(texts)


def _failed(config: ScannerConfig, failure: str, seconds: float) -> ScanOutcome:
    return ScanOutcome(
        config, BLOCK if config.fail_closed else ALLOW, failure=failure, seconds=seconds
    )


async def _one(config: ScannerConfig, request: ScanRequest) -> ScanOutcome:
    started = time.perf_counter()
    try:
        verdict = await asyncio.wait_for(get_scanner(config).scan(request), config.timeout)
    except TimeoutError:
        return _failed(config, "timeout", time.perf_counter() - started)
    except ScannerFailed as exc:
        log.warning("scanner_failed", scanner=config.name, reason=exc.reason, error=str(exc))
        return _failed(config, exc.reason, time.perf_counter() - started)
    except Exception:
        # A bug in an adapter must not become a 500, and follows the fail mode like any failure.
        log.exception("scanner_error", scanner=config.name)
        return _failed(config, "error", time.perf_counter() - started)
    return ScanOutcome(
        config,
        verdict.action,
        verdict.score,
        verdict.reasons,
        seconds=time.perf_counter() - started,
    )


async def run(scanners: tuple[ScannerConfig, ...], request: ScanRequest) -> list[ScanOutcome]:
    """Every scanner at once; those not done by the deadline have timed out."""
    started = time.perf_counter()
    tasks = {asyncio.ensure_future(_one(s, request)): s for s in scanners}
    try:
        done, _ = await asyncio.wait(tasks, timeout=settings.LLMP_SCANNERS_DEADLINE_MS / 1000)
    finally:  # the deadline passed, or the client went away: nothing is left running
        for task in tasks:
            if not task.done():
                task.cancel()
    late = time.perf_counter() - started
    return [
        task.result() if task in done else _failed(config, "timeout", late)
        for task, config in tasks.items()
    ]


async def enforce(
    *,
    principal: Principal,
    request_id: str,
    alias: str,
    user: str | None,
    phase: str,
    scanners: tuple[ScannerConfig, ...],
    texts: tuple[ScanText, ...],
) -> None:
    """Run a phase's scanners, record what they found, and refuse if one blocked (or failed
    closed)."""
    if not scanners or not texts:
        return
    request = ScanRequest(
        phase, request_id, principal.tenant_id, principal.tenant_slug, alias, texts
    )
    outcomes = await run(scanners, request)
    content_block = failed_closed = False
    for outcome in outcomes:
        name = outcome.scanner.name
        result = outcome.failure or outcome.action
        metrics.record_scanner(name, phase, result, outcome.seconds)
        if outcome.action == ALLOW and not outcome.failure:
            continue
        refused = outcome.action == BLOCK
        if outcome.failure:
            failed_closed = failed_closed or refused
            reasons = [outcome.failure, "fail_closed" if refused else "fail_open"]
        else:
            content_block = content_block or refused
            reasons = list(outcome.reasons)
        await guard.record_event(
            principal=principal,
            request_id=request_id,
            kind=SecurityEvent.Kind.SCANNER_ERROR
            if outcome.failure
            else SecurityEvent.Kind.SCANNER,
            action=SecurityEvent.Action.BLOCKED if refused else SecurityEvent.Action.FLAGGED,
            alias=alias,
            score=outcome.score,
            reasons=[f"scanner:{name}", f"phase:{phase}", *reasons],
            text=request.joined(),
            user=user,
        )
    # What a scanner found, or that one failed: the client gets neither the scanner's name nor
    # its reasons (an attacker would tune against them), only the request id to quote.
    if content_block and phase == PRE_CALL:
        raise RequestBlockedByScanner(
            f"The request was refused by a content scanner (request {request_id}).",
            param="messages",
        )
    if content_block:
        raise ResponseBlockedByScanner(
            f"The reply was withheld: a content scanner refused it (request {request_id})."
        )
    if failed_closed:
        raise ScannerUnavailable(
            "A content scanner this request must pass is unavailable, so the request was "
            f"refused (request {request_id}). Try again later."
        )
