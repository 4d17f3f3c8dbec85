"""``detect`` and ``redact``: run the recognisers, keep one entity per stretch of text."""

from __future__ import annotations

import bisect
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
    find_spoken_phones,
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
    (find_spoken_phones, frozenset({PHONE}), True),
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
    taken = resolve_overlaps(candidates)
    found = [e for e in taken if e.type in wanted]
    if not found:
        return found
    values = {text[e.start : e.end]: (e.type, e.score) for e in reversed(found)}
    try:
        return add_repeats(text, taken, found, values)
    except Exception as exc:
        raise DetectorError(f"PII repeat search failed ({type(exc).__name__})") from None


# --- repeats: a value found once is removed wherever else it occurs ---------------------------
# The recognisers judge each occurrence by its context, so the same card number, once with a
# boundary and once glued to a word ("4111 1111 1111 1111x"), is found only the first time;
# redacting just that one would leave the value in the text. So every other occurrence of a
# found value is reported too: anywhere for fixed-shape types, as a whole word for names and
# addresses (a name "Al" is not redacted out of "Also").

# A repeat can only lie where no entity was found: only those stretches ("gaps") are searched,
# in one of two ways, whichever costs less: each value with ``str.find`` (C speed, microseconds
# for a chat prompt, but one pass over the gaps per value), or all values at once with an
# Aho-Corasick automaton, which reads each character of the gaps once however many values
# there are (hostile input can hold tens of thousands) but is built and run in Python. Measured
# here, ``str.find`` reads about 3,000 characters in the time the automaton takes to add one
# character of a value, and about 400 in the time it takes to read one. So the cost is linear
# in the text's length either way.
FIND_CHARS_PER_BUILT_CHAR = 3_000
FIND_CHARS_PER_SCANNED_CHAR = 400
_GAP_JOIN = "\x00"  # joins the gaps for str.find (a value holding it is looked for on its own)


def add_repeats(
    text: str, taken: list[Entity], found: list[Entity], values: dict[str, tuple[str, float]]
) -> list[Entity]:
    """``found`` plus an entity for occurrences in ``text`` of the keys of ``values`` (mapped
    to their type and score) where no entity of ``taken`` (every recognised entity, also of
    types not asked for) is, so that after redaction no occurrence is left whole. Sorted by
    start, not overlapping."""
    covered = bytearray(len(text))
    for entity in taken:
        covered[entity.start : entity.end] = b"\x01" * (entity.end - entity.start)
    repeats: list[Entity] = []
    taken_until = 0

    # Offered by end, the longest first at an end: taking the longest that starts after the
    # last one taken leaves every occurrence either taken, inside one taken, or cut by one.
    def take(start: int, end: int, value: str) -> bool:
        nonlocal taken_until
        if start < taken_until:
            return False
        entity_type, score = values[value]
        if entity_type in _HEURISTIC_TYPES and not _whole_word(text, start, end):
            return False
        taken_until = end
        repeats.append(Entity(entity_type, start, end, score))
        return True

    gaps = _gaps(covered, min(map(len, values), default=len(text) + 1))
    if not gaps:
        return found
    gap_chars = sum(end - start for start, end in gaps)
    find_cost = len(values) * gap_chars
    automaton_cost = (
        FIND_CHARS_PER_BUILT_CHAR * sum(map(len, values)) + FIND_CHARS_PER_SCANNED_CHAR * gap_chars
    )
    if find_cost > automaton_cost:
        _offer_by_automaton(text, gaps, list(values), take)
    else:
        _offer_by_find(text, gaps, list(values), covered, take)
    if not repeats:
        return found
    return sorted([*found, *repeats], key=lambda e: e.start)


def _whole_word(text: str, start: int, end: int) -> bool:
    return (start == 0 or not text[start - 1].isalnum()) and (
        end == len(text) or not text[end].isalnum()
    )


def _gaps(covered: bytearray, shortest: int) -> list[tuple[int, int]]:
    """The stretches of at least ``shortest`` characters that ``covered`` leaves free."""
    gaps, position, length = [], 0, len(covered)
    while position < length:
        start = covered.find(0, position)
        if start < 0:
            break
        end = covered.find(1, start)
        end = length if end < 0 else end
        if end - start >= shortest:
            gaps.append((start, end))
        position = end
    return gaps


Take = Callable[[int, int, str], bool]


def _offer_by_find(
    text: str, gaps: list[tuple[int, int]], values: list[str], covered: bytearray, take: Take
) -> None:
    joinable = [v for v in values if _GAP_JOIN not in v]
    whole = [v for v in values if _GAP_JOIN in v]
    joined = _GAP_JOIN.join(text[start:end] for start, end in gaps)
    offsets, position = [], 0  # where each gap starts in ``joined``
    for start, end in gaps:
        offsets.append(position)
        position += end - start + 1
    found: list[tuple[int, int, str]] = []
    for value in joinable:
        at = joined.find(value)
        while at >= 0:
            gap = bisect.bisect_right(offsets, at) - 1
            start = gaps[gap][0] + at - offsets[gap]
            found.append((start + len(value), start, value))
            at = joined.find(value, at + 1)
    # A value holding the joining character (only a private-key block could) is looked for
    # in the whole text, outside the entities.
    for value in whole:
        at = text.find(value)
        while at >= 0:
            if covered.find(1, at, at + len(value)) < 0:
                found.append((at + len(value), at, value))
            at = text.find(value, at + 1)
    found.sort()
    for end, start, value in found:
        take(start, end, value)


def _offer_by_automaton(
    text: str, gaps: list[tuple[int, int]], values: list[str], take: Take
) -> None:
    # The automaton: a trie of the values with failure links (the longest proper suffix of a
    # node's string that is also in the trie) and output links (the longest such suffix that
    # is a whole value). Built in time linear in the values' total length.
    goto: list[dict[str, int]] = [{}]
    value_at: list[str | None] = [None]
    for value in values:
        node = 0
        for char in value:
            nxt = goto[node].get(char)
            if nxt is None:
                nxt = len(goto)
                goto[node][char] = nxt
                goto.append({})
                value_at.append(None)
            node = nxt
        value_at[node] = value
    fail = [0] * len(goto)
    output = [0] * len(goto)  # 0: none
    queue = list(goto[0].values())
    for node in queue:  # breadth first; the queue grows as it is read
        for char, child in goto[node].items():
            state = fail[node]
            while state and char not in goto[state]:
                state = fail[state]
            suffix = fail[child] = goto[state].get(char, 0)
            output[child] = suffix if value_at[suffix] is not None else output[suffix]
            queue.append(child)
    for gap_start, gap_end in gaps:
        state = 0
        for position in range(gap_start, gap_end):
            char = text[position]
            while state and char not in goto[state]:
                state = fail[state]
            state = goto[state].get(char, 0)
            # Values ending here, longest first, until one is taken.
            node = state if value_at[state] is not None else output[state]
            end = position + 1
            while node:
                ending = value_at[node]
                assert ending is not None  # state and output links lead to nodes ending a value
                if take(end - len(ending), end, ending):
                    break
                node = output[node]


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
