"""The CPU work of the input guard on a batch of texts: injection scores and PII findings.

Pure Python, without Django, so that ``gateway.pipeline.verdicts`` can run it in a worker
process for long inputs (the regular-expression work holds the GIL: in a thread it would still
stall the event loop's other requests). Values cross the process boundary as plain tuples.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Collection

from gateway.screening import heuristics, injection, meaning, prefilter
from privacy import pii

# (text, role) to screen; (text, types or None for all) to look for PII in.
ScreenJob = tuple[str, str]
PiiJob = tuple[str, frozenset[str] | None]
# A screen result as (score, reasons); PII findings as (type, start, end, score) tuples.
ScreenOutcome = tuple[float, tuple[str, ...]]
Finding = tuple[str, int, int, float]


def screen(text: str, role: str) -> ScreenOutcome:
    # Through the module attribute, so a test's spy on ``injection.screen_text`` sees it.
    result = injection.screen_text(text, role=role)
    return result.score, result.reasons


def find_pii(text: str, types: Collection[str] | None) -> tuple[Finding, ...]:
    """Raises ``privacy.pii.DetectorError`` as ``detect`` does (the caller fails closed)."""
    return tuple((e.type, e.start, e.end, e.score) for e in pii.detect(text, types))


def check_texts(
    screen_jobs: list[ScreenJob], pii_jobs: list[PiiJob]
) -> tuple[list[ScreenOutcome], list[tuple[Finding, ...]]]:
    """Every job of the batch, in order."""
    return (
        [screen(text, role) for text, role in screen_jobs],
        [find_pii(text, types) for text, types in pii_jobs],
    )


def warm_up() -> None:
    """A worker process's first job should not pay for loading word lists and rules (nor, for
    the screen's long texts, numpy and its table of character classes: left to the first long
    text, about 0.25 s)."""
    warm_up_short()
    prefilter.warm_up()
    injection.screen_text("Hello there, how are you?")
    # A long text through both passes, so the process's heap has grown to what one needs: a
    # worker's first long texts were about twice as slow as the next (measured at 100k).
    long_text = "Hello there, how are you? " * 8_000
    injection.screen_text(long_text)
    pii.detect(long_text)


def warm_up_short() -> None:
    """What a web process checks itself (texts below ``LLMP_GUARD_OFFLOAD_CHARS``) would
    otherwise load or compile in its first requests: the PII detector's word lists and phone
    metadata (the country names alone import about 0.6 s of ``phonenumbers``), the screen's
    indexes and the patterns they compile when first needed, and its meaning model (about 1 s)."""
    pii.warm_up()
    heuristics.compile_patterns()
    meaning.warm_up()


def start_worker(niceness: int) -> None:
    """A guard worker process's start: ``niceness`` added to its priority (0 by default: see
    ``LLMP_GUARD_NICE``), then ``warm_up``, then ``freeze_heap``."""
    if niceness:
        with contextlib.suppress(OSError):
            os.nice(niceness)
    warm_up()
    freeze_heap()


def freeze_heap() -> None:
    """Leave what the process has built so far (rule indexes, compiled patterns, word lists,
    modules) out of every later garbage collection: they live as long as the process, and each
    full collection walked them all again (measured: 40 ms of a guard worker's first 100k
    screen; a full collection of a warmed web process, about 0.1 s)."""
    gc.collect()
    gc.freeze()
