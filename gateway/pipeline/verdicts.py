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
skipped screen. What a process has read from the store it keeps, decoded, in a bounded LRU
under the same key (``_known``), with what masking a text with its findings takes: a later
turn then reads nothing from the store and builds nothing again for its history.

Texts shorter than ``LLMP_VERDICT_MIN_CHARS`` are kept in the process only, never in Redis:
screening one costs less than a round trip (see ``docs/benchmarks.md``), and far more than
finding it in the process's memory; a conversation's short messages (assistant turns, tool
calls, a system prompt every request repeats) are then not screened again on every turn.
Work on long texts leaves the event loop (``LLMP_GUARD_OFFLOAD``), for a worker process by
default.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import multiprocessing
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import cache
from itertools import chain
from operator import itemgetter
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


@dataclass(eq=False, slots=True)
class Findings:
    """The PII findings of one text (under ``key``, its PII key), and what masking the text
    with them takes: worked out once per process, then reused by every turn that resends it."""

    entities: tuple[Entity, ...]
    key: str
    # The text's slices between the findings (one ``itemgetter``) and the placeholders that go
    # between them: ``redact``'s own walk over the findings, done once.
    _plan: tuple[Callable[[str], tuple[str, ...]], tuple[str, ...]] | None = None
    added: int | None = None  # placeholders that masking adds to the text (for the meter)

    def mask(self, text: str) -> str:
        """``redact(text, entities)``, the same string, from the planned slices."""
        if self._plan is None:
            self._plan = _mask_plan(self.entities)
        pieces, tags = self._plan
        if not tags:
            return text
        return "".join(chain.from_iterable(zip(pieces(text), tags, strict=True)))


def _mask_plan(
    entities: Iterable[Entity],
) -> tuple[Callable[[str], tuple[str, ...]], tuple[str, ...]]:
    """``privacy.pii.redact``'s walk (by start, the longest first; one inside another already
    replaced is skipped), as slices of the text and the placeholders after each (the last is
    empty). Held equal to ``redact`` by tests/test_verdict_cache.py."""
    slices: list[slice] = []
    tags: list[str] = []
    position = 0
    for entity in sorted(entities, key=lambda e: (e.start, -e.end)):
        if entity.end <= position:
            continue  # inside one already replaced
        slices.append(slice(position, max(position, entity.start)))
        tags.append(f"<{entity.type}>")
        position = entity.end
    if not tags:
        return itemgetter(slice(0, None)), ()  # nothing replaced: the text itself
    slices.append(slice(position, None))
    tags.append("")
    return itemgetter(*slices), tuple(tags)


# What the store answered, decoded, per process: a verdict is a function of its key alone (the
# tenant, the text's HMAC and every version and policy it depends on), so an answer read once
# holds for as long as the process lives. A later turn then costs no round trip, no decoding
# and no rebuilding of its findings. For a long text, filled only from the store's answers
# (what was computed here is read back on the next turn: with the store down, everything long
# is computed again); a short text's verdicts are kept here when computed, and only here.
# Bounded by entries and by the findings they hold (a long text may have thousands).
Known = ScreenResult | Findings
_known: OrderedDict[str, Known] = OrderedDict()
_known_findings = 0
_known_lock = threading.Lock()
KNOWN_MAX_ENTRIES = 16_384
KNOWN_MAX_FINDINGS = 50_000


@dataclass
class TextVerdicts:
    """One request's screen results and PII findings, for the texts it holds. ``screen`` and
    ``detect`` answer from what was looked up or computed in ``look_up``; a text it did not
    foresee (a short one, or a changed one) is worked out on the spot.

    Texts are found by identity (the stages pass on the very strings the request was parsed
    into), so a long text is not hashed again to be found; an equal string that is another
    object (a structured field joined again) is found by value.

    For the response cache's key (``token``) it also knows a stand-in for each long text: its
    HMAC, and for a text ``mask`` made from it, the PII key of the findings it was masked with,
    which with the text make the masked text; so the key does not hash the history again."""

    # (id(text), role) -> (text, result); (id(text), types) -> (text, findings).
    screens: dict[tuple[int, str], tuple[str, ScreenResult]] = field(default_factory=dict)
    findings: dict[tuple[int, frozenset[str] | None], tuple[str, Findings]] = field(
        default_factory=dict
    )
    # id(text) -> (text, stand-in): the long texts looked up, and what ``mask`` made of them.
    tokens: dict[int, tuple[str, str]] = field(default_factory=dict)
    # id(masked) -> (masked, original, findings) for ``added_placeholders``.
    origins: dict[int, tuple[str, str, Findings]] = field(default_factory=dict)
    lengths: set[int] = field(default_factory=set)  # of the texts above
    computed_chars: int = 0  # characters worked on for this request (hits excluded)

    def screen(self, text: str, role: str) -> ScreenResult:
        entry = self.screens.get((id(text), role))
        if entry is not None and entry[0] is text:
            return entry[1]
        if len(text) in self.lengths:  # another object: compared (equal lengths only)
            for (_, known_role), (known, result) in self.screens.items():
                if known_role == role and len(known) == len(text) and known == text:
                    return result
        score, reasons = text_checks.screen(text, role)
        return ScreenResult(score=score, reasons=reasons, message_index=0)

    def _findings(self, text: str, wanted: frozenset[str] | None) -> Findings | None:
        entry = self.findings.get((id(text), wanted))
        if entry is not None and entry[0] is text:
            return entry[1]
        if len(text) in self.lengths:
            for (_, types), (known, findings) in self.findings.items():
                if types == wanted and len(known) == len(text) and known == text:
                    return findings
        return None

    def detect(self, text: str, types: Collection[str] | None = None) -> list[Entity]:
        known = self._findings(text, None if types is None else frozenset(types))
        if known is not None:
            return list(known.entities)
        return [Entity(*f) for f in text_checks.find_pii(text, types)]

    def mask(self, text: str) -> str | None:
        """``text`` with its findings (all types) replaced by ``<TYPE>``, exactly as
        ``redact`` does it; None when they are not known here (``redact`` and ``detect``)."""
        known = self._findings(text, None)
        if known is None:
            return None
        masked = known.mask(text)
        if masked is not text:
            self.tokens[id(masked)] = (masked, "masked:" + known.key)
            self.origins[id(masked)] = (masked, text, known)
        return masked

    def token(self, text: str) -> str | None:
        """A stand-in for ``text`` in the response cache's key, or None (hash the text): the
        tenant's HMAC of a long text, or the PII key of the findings a text was masked with
        (which, with the text they were found in, make the masked text)."""
        entry = self.tokens.get(id(text))
        return entry[1] if entry is not None and entry[0] is text else None

    def added_placeholders(self, before: str, after: str, count: Callable[[str], int]) -> int:
        """``count(after) - count(before)`` for ``after`` made from ``before`` by the PII
        policy; for a text ``mask`` made, worked out once per process with its findings."""
        entry = self.origins.get(id(after))
        if entry is None or entry[0] is not after or entry[1] is not before:
            return count(after) - count(before)
        findings = entry[2]
        if findings.added is None:
            findings.added = count(after) - count(before)
        return findings.added


NO_VERDICTS = TextVerdicts()


@cache
def _hmac_key() -> bytes:
    return hmac.new(settings.SECRET_KEY.encode(), b"llmp-verdict-key", hashlib.sha256).digest()


def text_digest(tenant_id: int, text: str) -> str:
    prefix = f"{tenant_id}\x00".encode()
    if len(text) < 4096:  # one call (short texts are the many)
        message = prefix + text.encode("utf-8", "surrogatepass")
        return hmac.digest(_hmac_key(), message, "sha256").hex()[:32]
    mac = hmac.new(_hmac_key(), prefix, hashlib.sha256)
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
    """Screen results and PII findings for every text of the request: known ones from this
    process's memory, or for long ones from the store in one round trip; the rest computed (off
    the event loop when long), long ones queued to be kept in the store, short ones kept in the
    process."""
    minimum = settings.LLMP_VERDICT_MIN_CHARS
    # Texts are told apart by identity, not hashed (an equal text that is another object is
    # looked up under the same key and computed at most once).
    screen_jobs: dict[tuple[int, str], tuple[str, str]] = {}
    if principal.tier.screening_mode != "off":
        for text, role in screen_texts(parts):
            screen_jobs[id(text), role] = (text, role)
    pii_jobs: dict[tuple[int, frozenset[str] | None], tuple[str, frozenset[str] | None]] = {}
    policy = principal.privacy
    if policy.block_pii_types or policy.upstream_pii != "off":
        wanted: list[frozenset[str] | None] = []
        if policy.block_pii_types:
            wanted.append(frozenset(policy.block_pii_types))
        if policy.upstream_pii != "off":
            wanted.append(None)
        for text in pii_texts(parts, messages):
            if text:
                for types in wanted:
                    pii_jobs[id(text), types] = (text, types)
    if not screen_jobs and not pii_jobs:
        return NO_VERDICTS

    verdicts = TextVerdicts()
    digests: dict[int, str] = {}
    for text in [t for t, _ in screen_jobs.values()] + [t for t, _ in pii_jobs.values()]:
        if id(text) not in digests:
            digests[id(text)] = digest = text_digest(principal.tenant_id, text)
            verdicts.tokens[id(text)] = (text, "text:" + digest)
            verdicts.lengths.add(len(text))
    screen_keys = {job: screen_key(principal, job[1], digests[job[0]]) for job in screen_jobs}
    pii_keys = {job: pii_key(principal, job[1], digests[job[0]]) for job in pii_jobs}
    # Only long texts' verdicts go to the store (and are asked of it).
    shared = {key for job, key in screen_keys.items() if len(screen_jobs[job][0]) >= minimum}
    shared.update(key for job, key in pii_keys.items() if len(pii_jobs[job][0]) >= minimum)
    stored = await _read(list(screen_keys.values()), list(pii_keys.values()), shared)

    missing_screens: dict[str, text_checks.ScreenJob] = {}
    for job, (text, role) in screen_jobs.items():
        key = screen_keys[job]
        result = stored.get(key)
        if isinstance(result, ScreenResult):
            verdicts.screens[job] = (text, result)
        else:
            missing_screens[key] = (text, role)
    missing_pii: dict[str, text_checks.PiiJob] = {}
    for pii_job, (text, types) in pii_jobs.items():
        key = pii_keys[pii_job]
        found = stored.get(key)
        if isinstance(found, Findings):
            verdicts.findings[pii_job] = (text, found)
        else:
            missing_pii[key] = (text, types)
    if not missing_screens and not missing_pii:
        return verdicts

    chars = sum(len(t) for t, _ in missing_screens.values())
    chars += sum(len(t) for t, _ in missing_pii.values())
    verdicts.computed_chars = chars
    try:
        scores, findings = await _check(
            list(missing_screens.values()), list(missing_pii.values()), chars
        )
    except DetectorError:
        return verdicts  # ``pii.protect`` meets it again, inline, and answers 503
    new: list[tuple[str, bytes]] = []
    computed: dict[str, Known] = {}
    for key, (score, reasons) in zip(missing_screens, scores, strict=True):
        computed[key] = ScreenResult(score, reasons, 0)
        if key in shared:
            new.append((key, orjson.dumps([score, reasons])))
    for key, entities in zip(missing_pii, findings, strict=True):
        computed[key] = Findings(tuple(Entity(*f) for f in entities), key)
        if key in shared:
            new.append((key, orjson.dumps(entities)))
    _remember([(key, value) for key, value in computed.items() if key not in shared])
    for job, (text, _) in screen_jobs.items():
        result = computed.get(screen_keys[job])
        if isinstance(result, ScreenResult):
            verdicts.screens[job] = (text, result)
    for pii_job, (text, _) in pii_jobs.items():
        computed_findings = computed.get(pii_keys[pii_job])
        if isinstance(computed_findings, Findings):
            verdicts.findings[pii_job] = (text, computed_findings)
    if new:
        await _keep(new)
    return verdicts


async def _read(screen_keys: list[str], pii_keys: list[str], shared: set[str]) -> dict[str, Known]:
    """What is known of these keys: from this process's memory, else, for those in ``shared``,
    from the store (one round trip for all that are not in memory), decoded."""
    found: dict[str, Known] = {}
    wanted: list[str] = []
    with _known_lock:
        for key in dict.fromkeys((*screen_keys, *pii_keys)):
            known = _known.get(key)
            if known is not None:
                _known.move_to_end(key)
                found[key] = known
            elif key in shared:
                wanted.append(key)
    if not wanted:
        return found
    stored = await _get_many(wanted)
    if not stored:
        return found
    screens = set(screen_keys)
    decoded: list[tuple[str, Known]] = []
    for key, raw in stored.items():
        try:
            if key in screens:
                score, reasons = orjson.loads(raw)
                value: Known = ScreenResult(score, tuple(reasons), 0)
            else:
                value = Findings(tuple(Entity(*f) for f in orjson.loads(raw)), key)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            continue  # not what this version writes: computed again, and overwritten
        found[key] = value
        decoded.append((key, value))
    _remember(decoded)
    return found


def _remember(entries: list[tuple[str, Known]]) -> None:
    global _known_findings
    with _known_lock:
        for key, value in entries:
            if key in _known:
                continue
            _known[key] = value
            _known_findings += _weight(value)
        while len(_known) > KNOWN_MAX_ENTRIES or _known_findings > KNOWN_MAX_FINDINGS:
            _, dropped = _known.popitem(last=False)
            _known_findings -= _weight(dropped)


def _weight(value: Known) -> int:
    return 1 + (len(value.entities) if isinstance(value, Findings) else 0)


def forget_known() -> None:
    """Empty this process's memory of the store's answers (tests)."""
    global _known_findings
    with _known_lock:
        _known.clear()
        _known_findings = 0


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
    pool = _pool()
    try:
        if _split(screen_jobs, pii_jobs):
            # The screen and the PII pass at once, each in a worker of its own: the request
            # waits for the longer of the two, not for both (the text is sent to each).
            screened, searched = await asyncio.gather(
                loop.run_in_executor(pool, text_checks.check_texts, screen_jobs, []),
                loop.run_in_executor(pool, text_checks.check_texts, [], pii_jobs),
            )
            return screened[0], searched[1]
        return await loop.run_in_executor(pool, text_checks.check_texts, screen_jobs, pii_jobs)
    except BrokenProcessPool:  # the worker died (killed, out of memory): a new one next time
        log.error("guard_worker_failed")
        _pool.cache_clear()
        return text_checks.check_texts(screen_jobs, pii_jobs)


def _split(screen_jobs: list[text_checks.ScreenJob], pii_jobs: list[text_checks.PiiJob]) -> bool:
    """Whether the two passes go to two workers: only up to ``LLMP_GUARD_SPLIT_MAX_CHARS`` in
    the longer one. Split, a pass takes a core each; on a small machine a long pair would hold
    every core for long enough to delay the small requests beside it (measured on 2 cores:
    the p99 of small requests beside 400k-character ones rose by up to 54 ms split, against
    up to 31 ms in one worker), where a short one holds them for milliseconds."""
    if settings.LLMP_GUARD_WORKERS < 2 or not screen_jobs or not pii_jobs:
        return False
    longer = max(sum(len(text) for text, _ in screen_jobs), sum(len(t) for t, _ in pii_jobs))
    return longer <= settings.LLMP_GUARD_SPLIT_MAX_CHARS


def start_workers() -> None:
    """Start the guard's worker processes now, in the background (a web process's start-up):
    left to the first long request, it waited for them to start and warm up (1 to 4 s here).
    Only with ``LLMP_GUARD_OFFLOAD=process``."""
    if settings.LLMP_GUARD_OFFLOAD != "process":
        return
    pool = _pool()
    for _ in range(settings.LLMP_GUARD_WORKERS):
        pool.submit(int)  # a job no idle worker can take starts one (up to the maximum)


@cache
def _pool() -> Executor:
    """``LLMP_GUARD_WORKERS`` worker processes per web process (``start_workers``), at
    ``LLMP_GUARD_NICE`` steps below its priority: a long prompt's regular expressions run
    there, and the event loop keeps serving. (A forkserver, not fork: this process has
    threads.)"""
    return ProcessPoolExecutor(
        max_workers=settings.LLMP_GUARD_WORKERS,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=text_checks.start_worker,
        initargs=(settings.LLMP_GUARD_NICE,),
    )
