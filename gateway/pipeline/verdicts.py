"""Pay the input guard once per text, not once per turn.

Agents resend the whole conversation on every turn; screening it and looking for PII in it
again each time makes a conversation cost the square of its length. So the injection score and
the PII findings of each long text are kept, per tenant, keyed by an HMAC (with a server key) of
the tenant and the text, plus what the result depends on:

- screen: the screen's version (a hash of its source), the tenant's screening mode and
  threshold, the text's role;
- PII: the detector's version, the PII types asked for and the tenant's PII mode.

Change any of them and the old entries are simply never asked for again (they expire after
``LLMP_VERDICT_TTL_SECONDS``). Values hold scores, rule codes and character offsets, never the
text. The leak guard and the PII restore stay per reply (``gateway.pipeline.output``).

Where: Redis when configured (all of a request's keys in one MGET; the new entries written
behind the answer, ``gateway.write_behind``); otherwise Django's in-process LRU (``locmem``):
the embedded default runs one web process, and a lookup there costs microseconds where the
shared SQLite file would cost a query per request. Redis failing costs recomputation, never a
skipped screen.

Texts shorter than ``LLMP_VERDICT_MIN_CHARS`` are neither looked up nor kept: screening them
costs less than a round trip to Redis (see ``docs/benchmarks.md``). Work on long texts leaves
the event loop (``LLMP_GUARD_OFFLOAD``), for a worker process by default.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import multiprocessing
from collections.abc import Collection, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import orjson
import structlog
from django.conf import settings
from django.core.cache.backends.locmem import LocMemCache

from gateway.pipeline import text_checks
from gateway.pipeline.authenticate import Principal
from gateway.pipeline.inputs import Part
from gateway.providers.base import ChatMessage
from gateway.screening.injection import ScreenResult
from gateway.write_behind import buffer
from llmplatform.redis_client import async_redis, redis_configured
from privacy.pii import DetectorError, Entity

log = structlog.get_logger("gateway.verdicts")

KEY_PREFIX = "llmp:verdict"
_ROOT = Path(__file__).resolve().parents[2]


def _source_version(*packages: str) -> str:
    """A hash of the sources (and data files) of ``packages``: any change to a rule, a weight
    or a word list gives a new version, so no verdict outlives the code that made it."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((_ROOT / package).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".txt", ".json", ".csv", ".tsv"):
                digest.update(str(path.relative_to(_ROOT)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


SCREEN_VERSION = _source_version("gateway/screening")
PII_VERSION = _source_version("privacy/pii")

_local = LocMemCache("llmp-verdicts", {"OPTIONS": {"MAX_ENTRIES": 20_000, "CULL_FREQUENCY": 4}})


@dataclass
class TextVerdicts:
    """One request's screen results and PII findings, for the texts it holds. ``screen`` and
    ``detect`` answer from what was looked up or computed in ``look_up``; a text it did not
    foresee (a short one, or a changed one) is worked out on the spot."""

    screens: dict[tuple[str, str], ScreenResult] = field(default_factory=dict)
    findings: dict[tuple[str, frozenset[str] | None], list[Entity]] = field(default_factory=dict)
    computed_chars: int = 0  # characters worked on for this request (hits excluded)

    def screen(self, text: str, role: str) -> ScreenResult:
        found = self.screens.get((text, role))
        if found is None:
            score, reasons = text_checks.screen(text, role)
            found = ScreenResult(score=score, reasons=reasons, message_index=0)
        return found

    def detect(self, text: str, types: Collection[str] | None = None) -> list[Entity]:
        key = (text, None if types is None else frozenset(types))
        found = self.findings.get(key)
        if found is None:
            found = [Entity(*f) for f in text_checks.find_pii(text, types)]
        return found


NO_VERDICTS = TextVerdicts()


@cache
def _hmac_key() -> bytes:
    return hmac.new(settings.SECRET_KEY.encode(), b"llmp-verdict-key", hashlib.sha256).digest()


def text_digest(tenant_id: int, text: str) -> str:
    mac = hmac.new(_hmac_key(), f"{tenant_id}\x00".encode(), hashlib.sha256)
    mac.update(text.encode("utf-8", "surrogatepass"))
    return mac.hexdigest()[:32]


def screen_key(principal: Principal, role: str, digest: str) -> str:
    tier = principal.tier
    policy = f"{tier.screening_mode}:{tier.screening_threshold!r}"
    return f"{KEY_PREFIX}:{principal.tenant_id}:s:{SCREEN_VERSION}:{policy}:{role}:{digest}"


def pii_key(principal: Principal, types: frozenset[str] | None, digest: str) -> str:
    wanted = "all" if types is None else ",".join(sorted(types))
    mode = principal.privacy.upstream_pii
    return f"{KEY_PREFIX}:{principal.tenant_id}:p:{PII_VERSION}:{mode}:{wanted}:{digest}"


def screen_texts(parts: Iterable[Part]) -> list[tuple[str, str]]:
    """(text, role) as ``guard.screen_input`` screens them."""
    return [(text, part.role) for part in parts if (text := "\n".join(part.screened))]


def pii_texts(parts: Iterable[Part], messages: Iterable[ChatMessage]) -> list[str]:
    """The texts ``pii.protect`` looks at: each part's strings, and each text part of a
    message made of parts (masked one by one)."""
    texts = [text for part in parts for text in part.screened]
    for message in messages:
        texts.extend(p["text"] for p in message.parts or () if p.get("type") == "text")
    return texts


async def look_up(
    principal: Principal, parts: list[Part], messages: list[ChatMessage]
) -> TextVerdicts:
    """Screen results and PII findings for every long text of the request: known ones in one
    round trip, the rest computed (off the event loop when long) and queued to be kept."""
    minimum = settings.LLMP_VERDICT_MIN_CHARS
    screen_jobs: list[tuple[str, str]] = []
    if principal.tier.screening_mode != "off":
        screen_jobs = [(t, r) for t, r in dict.fromkeys(screen_texts(parts)) if len(t) >= minimum]
    pii_jobs: list[tuple[str, frozenset[str] | None]] = []
    policy = principal.privacy
    if policy.block_pii_types or policy.upstream_pii != "off":
        long_texts = [t for t in dict.fromkeys(pii_texts(parts, messages)) if len(t) >= minimum]
        if policy.block_pii_types:
            pii_jobs += [(t, frozenset(policy.block_pii_types)) for t in long_texts]
        if policy.upstream_pii != "off":
            pii_jobs += [(t, None) for t in long_texts]
    if not screen_jobs and not pii_jobs:
        return NO_VERDICTS

    digests: dict[str, str] = {}
    for text in [t for t, _ in screen_jobs] + [t for t, _ in pii_jobs]:
        if text not in digests:
            digests[text] = text_digest(principal.tenant_id, text)
    screen_keys = [screen_key(principal, role, digests[t]) for t, role in screen_jobs]
    pii_keys = [pii_key(principal, types, digests[t]) for t, types in pii_jobs]
    stored = await _get_many(screen_keys + pii_keys)

    verdicts = TextVerdicts()
    screen_misses: list[int] = []
    for index, (job, key) in enumerate(zip(screen_jobs, screen_keys, strict=True)):
        value = stored.get(key)
        if value is None:
            screen_misses.append(index)
            continue
        score, reasons = orjson.loads(value)
        verdicts.screens[job] = ScreenResult(score, tuple(reasons), 0)
    pii_misses: list[int] = []
    for index, (pii_job, key) in enumerate(zip(pii_jobs, pii_keys, strict=True)):
        value = stored.get(key)
        if value is None:
            pii_misses.append(index)
            continue
        verdicts.findings[pii_job] = [Entity(*f) for f in orjson.loads(value)]
    if not screen_misses and not pii_misses:
        return verdicts

    missing_screens = [screen_jobs[i] for i in screen_misses]
    missing_pii = [pii_jobs[i] for i in pii_misses]
    chars = sum(len(t) for t, _ in missing_screens) + sum(len(t) for t, _ in missing_pii)
    verdicts.computed_chars = chars
    try:
        scores, findings = await _check(missing_screens, missing_pii, chars)
    except DetectorError:
        return verdicts  # ``pii.protect`` meets it again, inline, and answers 503
    new: list[tuple[str, bytes]] = []
    for job, index, (score, reasons) in zip(missing_screens, screen_misses, scores, strict=True):
        verdicts.screens[job] = ScreenResult(score, reasons, 0)
        new.append((screen_keys[index], orjson.dumps([score, reasons])))
    for pjob, index, found in zip(missing_pii, pii_misses, findings, strict=True):
        verdicts.findings[pjob] = [Entity(*f) for f in found]
        new.append((pii_keys[index], orjson.dumps(found)))
    await _keep(new)
    return verdicts


async def _get_many(keys: list[str]) -> dict[str, bytes]:
    if not redis_configured():
        return _local.get_many(keys)
    try:
        values = await async_redis().mget(keys)
    except Exception as exc:  # Redis down or slow: recompute (never skip the screen)
        log.warning("verdict_lookup_failed", keys=len(keys), error=type(exc).__name__)
        return {}
    # The client does not decode responses, so the values are bytes.
    return {key: value for key, value in zip(keys, values, strict=True) if isinstance(value, bytes)}


async def _keep(entries: list[tuple[str, bytes]]) -> None:
    ttl = settings.LLMP_VERDICT_TTL_SECONDS
    if not redis_configured():
        _local.set_many(dict(entries), timeout=ttl)
    elif settings.LLMP_AFTER_ANSWER_INLINE:  # tests read the store right after the answer
        try:
            async with async_redis().pipeline(transaction=False) as pipe:
                for key, value in entries:
                    pipe.set(key, value, ex=ttl)
                await pipe.execute()
        except Exception as exc:
            log.warning("verdict_store_failed", keys=len(entries), error=type(exc).__name__)
    else:
        # Off the answer's path: the write-behind buffer's next pipeline (every 20 ms) takes
        # them; a lost write costs one recomputation.
        for key, value in entries:
            buffer.add_set(key, value, ttl)


async def _check(
    screen_jobs: list[text_checks.ScreenJob], pii_jobs: list[text_checks.PiiJob], chars: int
) -> tuple[list[text_checks.ScreenOutcome], list[tuple[text_checks.Finding, ...]]]:
    mode = settings.LLMP_GUARD_OFFLOAD
    if mode == "off" or chars < settings.LLMP_GUARD_OFFLOAD_CHARS:
        return text_checks.check_texts(screen_jobs, pii_jobs)
    if mode == "thread":
        return await asyncio.to_thread(text_checks.check_texts, screen_jobs, pii_jobs)
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_pool(), text_checks.check_texts, screen_jobs, pii_jobs)
    except BrokenProcessPool:  # the worker died (killed, out of memory): a new one next time
        log.error("guard_worker_failed")
        _pool.cache_clear()
        return text_checks.check_texts(screen_jobs, pii_jobs)


@cache
def _pool() -> Executor:
    """One worker process per web process: a long prompt's regular expressions run there, and
    the event loop keeps serving. (A forkserver, not fork: this process has threads.)"""
    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=text_checks.warm_up,
    )
