"""``detect`` and ``redact``: run the recognisers, keep one entity per stretch of text."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator

from .addresses import find_street_addresses
from .entities import (
    CREDIT_CARD,
    DATE_OF_BIRTH,
    EMAIL,
    ENTITY_TYPES,
    IBAN,
    IP_ADDRESS,
    PASSPORT,
    PERSON,
    PHONE,
    SECRET,
    STREET_ADDRESS,
    US_SSN,
    DetectorError,
    Entity,
)
from .people import find_people
from .recognizers import (
    find_dates_of_birth,
    find_emails,
    find_ibans,
    find_ipv6_addresses,
    find_numbers,
    find_passports,
    find_secrets,
    forget_text,
)

Recognizer = Callable[[str], Iterator[Entity]]

# Each recogniser and the types it reports. Those with a fixed shape always run, even when
# their types are not asked for: they are cheap, and an SSN or a card number must not be taken
# for a phone number or part of an address. Names and addresses run only when asked for.
RECOGNIZERS: tuple[tuple[Recognizer, frozenset[str], bool], ...] = (
    (find_secrets, frozenset({SECRET}), True),
    (find_emails, frozenset({EMAIL}), True),
    (find_numbers, frozenset({PHONE, US_SSN, CREDIT_CARD, IP_ADDRESS}), True),
    (find_ipv6_addresses, frozenset({IP_ADDRESS}), True),
    (find_ibans, frozenset({IBAN}), True),
    (find_dates_of_birth, frozenset({DATE_OF_BIRTH}), True),
    (find_passports, frozenset({PASSPORT}), True),
    (find_street_addresses, frozenset({STREET_ADDRESS}), False),
    (find_people, frozenset({PERSON}), False),
)
# Where two candidates overlap, one of a fixed-shape type wins over a name or an address.
_HEURISTIC_TYPES = frozenset({PERSON, STREET_ADDRESS})


def detect(text: str, types: Collection[str] | None = None) -> list[Entity]:
    """The PII entities in ``text`` (of ``types``, or all known types), sorted by start and not
    overlapping. Raises ``DetectorError`` if anything goes wrong, so callers can fail closed."""
    if not isinstance(text, str):
        raise DetectorError(f"text must be a str, not {type(text).__name__}")
    wanted = ENTITY_TYPES if types is None else frozenset(types)
    unknown = wanted - ENTITY_TYPES
    if unknown:
        raise DetectorError(f"unknown PII types: {', '.join(sorted(unknown))}")
    if not text or not wanted:
        return []
    candidates: list[Entity] = []
    try:
        for recognizer, reports, always in RECOGNIZERS:
            if not always and not reports & wanted:
                continue
            try:
                candidates.extend(recognizer(text))
            except Exception as exc:
                # The original exception may quote the text: do not chain it.
                raise DetectorError(
                    f"PII recogniser {recognizer.__name__} failed ({type(exc).__name__})"
                ) from None
    finally:
        forget_text()
    return [e for e in resolve_overlaps(candidates) if e.type in wanted]


def resolve_overlaps(candidates: Iterable[Entity]) -> list[Entity]:
    """Wherever candidates overlap keep one: a fixed-shape type before a name or address, then
    the most certain, then the longest. Sorted by start."""
    ranked = sorted(
        candidates,
        key=lambda e: (e.type in _HEURISTIC_TYPES, -e.score, -(e.end - e.start), e.start),
    )
    if not ranked:
        return []
    # One byte per character says whether a kept entity covers it: checking and marking a span
    # costs its length (in C), so hostile input with many candidates stays linear.
    covered = bytearray(max(e.end for e in ranked))
    taken: list[Entity] = []
    for entity in ranked:
        if entity.end <= entity.start or covered.find(1, entity.start, entity.end) >= 0:
            continue
        covered[entity.start : entity.end] = b"\x01" * (entity.end - entity.start)
        taken.append(entity)
    taken.sort(key=lambda e: e.start)
    return taken


def redact(text: str, entities: list[Entity] | None = None) -> str:
    """``text`` with each entity replaced by ``<TYPE>``, e.g. ``<EMAIL>``. With no ``entities``
    given, all known types are detected first."""
    if entities is None:
        entities = detect(text)
    parts: list[str] = []
    position = 0
    for entity in sorted(entities, key=lambda e: (e.start, -e.end)):
        if entity.end <= position:
            continue  # inside one already replaced
        parts.append(text[position : max(position, entity.start)])
        parts.append(f"<{entity.type}>")
        position = entity.end
    parts.append(text[position:])
    return "".join(parts)


def warm_up() -> None:
    """Load the word lists and phone metadata now rather than on the first request (about half
    a second)."""
    detect("Dear Mr. Smith, call +1 415 867 5309 or visit 12 Main Street, Springfield.")
