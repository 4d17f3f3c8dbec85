"""Weighted heuristic signals for prompt injection: the rules of ``rules`` matched against the
folded view (``normalize``), plus a few signals that count rather than match.

A code counts its strongest rule and half of its next strongest; different codes add up, so a
jailbreak that switches persona, lifts the rules and locks the character scores higher than any
one of those phrases alone.

Where a rule is tried: most rules start with a known word ("ignore", "reveal", "you"), read
from the parsed regex; such a rule is tried, with ``pattern.match``, at a word start where one of
its first words begins. The few others (special tokens, line starts, CJK) are scanned with
``pattern.search`` if one of their anchor substrings occurs. That is what decides a match; to
find the places fast, ``prefilter`` reads from each rule's regex the words every match holds
and how far into the match each can be: a rule one of whose requirements has no word in the
text is not tried, and the others only within reach before the occurrences of one requirement
(``_Index``, ``signals``). The signals are those of trying every rule at every word
(``tests/test_screen_prefilter.py``).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gateway.screening import prefilter, rules_agents, rules_multilingual
from gateway.screening.normalize import Normalized, encoded_payloads, normalize
from gateway.screening.prefilter import Requirement
from gateway.screening.rules import (
    GUARD_ENDINGS,
    GUARD_WORDS,
    RULES,
    TRICK_WEIGHTS,
    Rule,
)

try:  # the regex parser, to read each rule's first words (private, so guarded; 3.11 and 3.12)
    # typeshed stubs these private modules only under their deprecated names (sre_*).
    from re import _constants as _sre  # type: ignore[attr-defined]
    from re import _parser as _sre_parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    _sre = _sre_parser = None


def _is_word_char(char: str) -> bool:
    # Underscores separate words here: "ignore_all_previous_instructions".
    return char.isalnum()


def _leading_words(pattern: str) -> set[tuple[str, bool]] | None:
    """``_leading_words_of`` the parsed ``pattern``."""
    if _sre_parser is None:  # pragma: no cover (a Python without re._parser)
        return None
    try:
        parsed = list(_sre_parser.parse(pattern))
    except (AttributeError, re.error):  # pragma: no cover
        return None
    return _leading_words_of(parsed)


def _leading_words_of(parsed: list) -> set[tuple[str, bool]] | None:
    """The literal words a match of ``pattern`` can start with, each with whether it is a
    whole word there (what follows can't be a letter or digit): {("ignor", False),
    ("do", True), ...}; None if some branch starts with something else. Read from the parsed
    regex, so the rules need not list them twice; a pattern this cannot read is scanned."""
    repeats = (_sre.MAX_REPEAT, _sre.MIN_REPEAT, getattr(_sre, "POSSESSIVE_REPEAT", None))

    def separates(items: list) -> bool:
        """Whether the first character ``items`` can match is never a letter or digit."""
        if not items:
            return True
        op, arg = items[0]
        if op is _sre.AT:
            return arg is _sre.AT_BOUNDARY
        if op is _sre.LITERAL:
            return not _is_word_char(chr(arg))
        if op is _sre.IN:
            if arg[:2] == [(_sre.NEGATE, None), (_sre.CATEGORY, _sre.CATEGORY_WORD)]:
                return True  # [^\w...]
            return all(
                (kind is _sre.LITERAL and not _is_word_char(chr(value)))
                or (
                    kind is _sre.CATEGORY and value in (_sre.CATEGORY_NOT_WORD, _sre.CATEGORY_SPACE)
                )
                for kind, value in arg
            )
        if op is _sre.SUBPATTERN:
            return separates(list(arg[3]))
        if op is _sre.BRANCH:
            return all(separates(list(branch)) for branch in arg[1])
        if op in repeats and arg[0] >= 1:
            return separates(list(arg[2]))
        return False

    def starts(items: list, prefix: str) -> set[tuple[str, bool]]:
        for index, (op, arg) in enumerate(items):
            if op is _sre.LITERAL and _is_word_char(chr(arg)):
                prefix += chr(arg)
            elif op is _sre.BRANCH:
                rest = items[index + 1 :]
                return set().union(*(starts(list(branch) + rest, prefix) for branch in arg[1]))
            elif op is _sre.SUBPATTERN:
                return starts(list(arg[3]) + items[index + 1 :], prefix)
            else:
                return {(prefix, separates(items[index:]))}
        return {(prefix, True)}

    words = starts(parsed, "")
    return None if any(not word for word, _ in words) or len(words) > 2000 else words


# Rough costs, in microseconds, to choose where to look for a rule (``_Look.cost``).
_TRY_COST = 1.5  # trying a rule at a place
_HIT_COST = 3.0  # finding where a match holding an occurrence could start
_CHUNK_COST = 0.3  # ... per chunk of reach, and the tries there
_SCAN_COST = 0.1  # scanning a text with a rule's regex, per character


@dataclass(frozen=True, slots=True, eq=False)
class _Gate:
    """A requirement of a way to match, as a place to look for the match: its needles, and at
    most how many chunks holding a letter lie from the match's start to the end of one of
    them (None: no bound; 0: the needles are where the match starts)."""

    needles: tuple[prefilter.Needle, ...]
    keys: frozenset[str]  # whole words and word starts (``prefilter.key``)
    anywhere: tuple[str, ...]  # those that may be anywhere
    chunks: int | None
    per_hit: float | None  # what an occurrence costs (``_Look.cost``); None: not a gate


class _Way:
    """One top-level alternative of a rule with a literal first word."""

    __slots__ = ("_lead_re", "gates", "lead", "lead_length", "requirements")

    def __init__(
        self,
        lead: tuple[tuple[str, bool], ...],
        requirements: tuple[_Requirement, ...],
        gates: tuple[_Gate, ...],
    ) -> None:
        self.lead = lead  # its first words (see ``_Entry``)
        self.lead_length = max(len(word) for word, _ in lead)  # the longest
        self.requirements = requirements
        self.gates = gates
        self._lead_re: re.Pattern[str] | None = None

    def lead_re(self) -> re.Pattern[str]:
        """Where one of its first words starts at a word start (compiled when first asked)."""
        if self._lead_re is None:
            self._lead_re = _lead_pattern(self.lead)
        return self._lead_re


@dataclass(frozen=True, slots=True, eq=False)
class _Entry:
    """A rule, with where it can be tried (see ``prefilter``)."""

    rule: Rule
    order: int  # the rule's place in its set
    # The words a match can start with, each with whether it is a whole word there; empty for
    # a rule that is scanned (no literal first word: special tokens, line starts, CJK).
    lead: tuple[tuple[str, bool], ...]
    ways: tuple[_Way, ...]  # a rule with a lead: its alternatives
    # A scanned rule: its requirements, where to look for a match (requirements of letters
    # with a reach), and the characters a match starts with (None: not known).
    requirements: tuple[_Requirement, ...]
    gates: tuple[_Gate, ...]
    first_re: re.Pattern[str] | None


def _lead_pattern(lead: Iterable[tuple[str, bool]]) -> re.Pattern[str]:
    """Where the rule is tried (as ``_leads`` says): one of its first words where a word
    starts; one of one or two letters that is whole there, as the word itself. The word start
    is checked after the first letter (``i(?<![^\\W_].)gnore``), so the engine can skip ahead
    to a possible first letter."""
    ordered = sorted(set(lead), key=lambda item: (-len(item[0]), item))
    return prefilter.compile_uncached(
        "|".join(
            re.escape(word[0])
            + r"(?<![^\W_].)"
            + re.escape(word[1:])
            + (r"(?![^\W_])" if whole and len(word) <= 2 else "")
            for word, whole in ordered
        )
    )


def _lead_needles(lead: Iterable[tuple[str, bool]]) -> frozenset[prefilter.Needle]:
    # Where the rule is tried: one of its first words at a word start (a short one that is a
    # whole word there, as the word itself).
    return frozenset((word, True, whole and len(word) <= 2) for word, whole in lead)


def _gate(needles: Iterable[prefilter.Needle], chunks: int | None) -> _Gate:
    ordered = tuple(sorted(needles))
    keys, anywhere, _ = _requirement(ordered)
    per_hit = (
        None if chunks is None else _TRY_COST if chunks == 0 else _HIT_COST + _CHUNK_COST * chunks
    )
    return _Gate(ordered, keys, anywhere, chunks, per_hit)


# A requirement as the keys of its whole-word and word-start needles, of those anywhere, and of
# those anywhere that an ASCII text can hold.
_Requirement = tuple[frozenset[str], tuple[str, ...], tuple[str, ...]]


def _requirement(needles: Iterable[prefilter.Needle]) -> _Requirement:
    keys = sorted(map(prefilter.key, needles))
    anywhere = tuple(k for k in keys if k[0] == "~")
    return (
        frozenset(k for k in keys if k[0] != "~"),
        anywhere,
        tuple(k for k in anywhere if k.isascii()),
    )


def _requirement_of(keys: Iterable[str]) -> _Requirement:
    return _requirement(map(prefilter.from_key, keys))


def _way(
    lead: tuple[tuple[str, bool], ...], found: Iterable[tuple[Requirement, int | None]]
) -> _Way:
    gates = [_gate(_lead_needles(lead), 0)] + [_gate(r, chunks) for r, chunks in found]
    requirements = tuple(dict.fromkeys(_requirement(gate.needles) for gate in gates))
    return _Way(lead, requirements, tuple(gates))


def _ways(regex: prefilter.Regex, lead: tuple[tuple[str, bool], ...]) -> tuple[_Way, ...]:
    """The rule's top-level alternatives (a match of the rule at a place is a match of one of
    them there), each with its own first words and requirements; the rule whole if they could
    not be read."""
    ways = []
    for way in regex.ways:
        words = _leading_words_of(way.items)
        if not words:
            return (_way(lead, ()),)
        ways.append(_way(tuple(sorted(words)), way.requirements))
    return tuple(ways) or (_way(lead, ()),)


class _Index:
    """The rules of one set, read for where each can match (``prefilter``).

    A rule with a literal first word is tried (``pattern.match``) where a word starts with one
    of its first words, as it always was, but only where one of its top-level alternatives
    could match: once each of that alternative's requirements has a needle in the text, and
    then only within reach before the occurrences of the requirement that occurs least often.
    A rule with no literal first word is scanned (``pattern.search``) only if one of its
    anchors and a needle of each of its requirements are in the text."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.entries: list[_Entry] = []
        needles: set[prefilter.Needle] = set()
        for order, rule in enumerate(rules):
            regex = prefilter.Regex(rule.pattern, rule.word_start)
            words = None
            if rule.word_start:
                if regex.parsed is None:  # pragma: no cover (not read)
                    words = _leading_words(rule.pattern.pattern)
                else:
                    words = _leading_words_of(regex.parsed)
            if words:
                lead = tuple(sorted(words))
                ways = _ways(regex, lead)
                if rule.requires:  # a rule with required words is gated whole
                    ways = tuple(
                        _Way(way.lead, (*way.requirements, _requires(rule)), way.gates)
                        for way in ways
                    )
                entry = _Entry(rule, order, lead, ways, (), (), None)
                needles.update(n for way in ways for gate in way.gates for n in gate.needles)
            else:
                # A scanned rule runs only where one of its anchors occurs: the ones it names,
                # else the literal words it must start with (Chinese, Arabic...).
                anchors = rule.anchors or tuple(
                    sorted({word for word, _ in _leading_words(rule.pattern.pattern) or ()})
                )
                if not anchors:
                    raise ValueError(f"rule {rule.code} has neither a first word nor anchors")
                read = regex.requirements
                found = [frozenset((anchor, False, False) for anchor in anchors)]
                found += [frozenset(r) for r, _ in read]
                keys = [_requirement(r) for r in found]
                if rule.requires:
                    keys.append(_requires(rule))
                needles.update(n for r in found for n in r)
                gates = tuple(
                    _gate(r, chunks)
                    for r, chunks in read
                    if chunks and all(needle[0].isalnum() for needle in r)
                )
                entry = _Entry(
                    rule,
                    order,
                    (),
                    (),
                    tuple(dict.fromkeys(keys)),
                    gates,
                    regex.first_characters,
                )
            self.entries.append(entry)
        needles.update((word, False, False) for rule in rules for word in rule.requires)
        # Strongest first: once a code has its two strongest rules, weaker ones need no look.
        self.entries.sort(key=lambda entry: -entry.rule.weight)
        self.needles = prefilter.NeedleSet(needles)
        # Each rule is considered only if a needle of one of its requirements is in the text
        # (one requirement per way to match: the one least likely to be there, of whole words
        # and word starts); a rule with a way that has no such requirement, always.
        # In an ASCII text, a way with a requirement only other scripts can meet cannot match.
        self.triggers, self.always = self._triggers(ascii_text=False)
        self.ascii_triggers, self.ascii_always = self._triggers(ascii_text=True)

    def _triggers(self, ascii_text: bool) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...]]:
        triggers: dict[str, set[int]] = {}
        always: set[int] = set()
        for position, entry in enumerate(self.entries):
            for requirements in [way.requirements for way in entry.ways] or [entry.requirements]:
                if ascii_text and any(
                    not any(map(str.isascii, keys)) and not ascii_anywhere
                    for keys, _, ascii_anywhere in requirements
                ):
                    continue
                known = [
                    keys
                    for keys, anywhere, ascii_anywhere in requirements
                    if keys and not (ascii_anywhere if ascii_text else anywhere)
                ]
                if not known:
                    always.add(position)
                    continue
                for needle_key in min(known, key=_keys_cost):
                    triggers.setdefault(needle_key, set()).add(position)
        return {k: tuple(sorted(v)) for k, v in triggers.items()}, tuple(sorted(always))

    def considered(self, present: frozenset[str], ascii_text: bool) -> list[_Entry]:
        """The rules a text with these needles may match, in order."""
        triggers = self.ascii_triggers if ascii_text else self.triggers
        found = {p for k in present if k in triggers for p in triggers[k]}
        found.update(self.ascii_always if ascii_text else self.always)
        return [self.entries[p] for p in sorted(found)]


def _keys_cost(keys: Iterable[str]) -> float:
    return prefilter.requirement_cost(map(prefilter.from_key, keys))


def _requires(rule: Rule) -> _Requirement:
    return _requirement((word, False, False) for word in rule.requires)


def _leads(entry: _Entry, word: str) -> bool:
    """Whether ``entry``'s rule is tried where ``word`` begins: one of its first words starts
    it, and a first word of one or two letters that is whole there is the word itself."""
    return any(
        word.startswith(prefix) and (len(prefix) > 2 or not whole or len(word) == len(prefix))
        for prefix, whole in entry.lead
    )


@functools.cache
def rule_index() -> _Index:
    """The rules read in every text, indexed on first use, not at import: reading each rule's
    regex takes about half a second, and every Django process imports this module (manage.py
    commands, Celery), where only web processes and the guard's worker screen. A web process
    builds it at start-up (``gateway.apps``), before it serves."""
    return _Index(RULES + rules_agents.RULES + rules_multilingual.RULES)


@functools.cache
def tool_rule_index() -> _Index:
    """Rules read only in text that came back from a tool or a retrieved document (see
    rules_agents)."""
    return _Index(rules_agents.TOOL_RULES)


def compile_patterns() -> None:
    """Build both indexes, and compile now what they otherwise compile when a text first needs
    it: each way's pattern of first words (``_Way.lead_re``) and the patterns of the common
    words among the gates' needles (``prefilter.occurrences``). A web process and the guard's
    worker do this before they serve (about 0.1 s), so no request pays for it: left lazy, the
    first texts of each new kind paid up to tens of milliseconds each, in the request."""
    for index in (rule_index(), tool_rule_index()):
        for entry in index.entries:
            gates = [*entry.gates]
            for way in entry.ways:
                way.lead_re()
                gates += way.gates
            for gate in gates:
                for needle in gate.needles:
                    if needle[1] and needle[0] in prefilter.COMMON_WORDS:
                        prefilter.needle_pattern(needle)


TOOL = "tool"
TOOL_ROLES = frozenset({TOOL, "function"})  # OpenAI's tool results, and the legacy role
_WORD_RE = re.compile(r"[^\W_]+")


_QUOTES = "\"'“‘«"
# Whose action a verb is: after "to", the word before says who is told to do it ("telling the
# assistant to ignore its instructions" describes an attack; "I want you to ignore" is one).
_THIRD_PARTIES = frozenset(
    {
        "model",
        "models",
        "assistant",
        "assistants",
        "chatbot",
        "chatbots",
        "bot",
        "bots",
        "ai",
        "llm",
        "llms",
        "agent",
        "agents",
        "them",
        "it",
        "someone",
        "people",
        "users",
        "recipients",
        "employees",
        "staff",
        "attackers",
        "hackers",
        "prompts",
        "attacks",
        "inputs",
        "tricks",
        "jailbreaks",
        "they",
        "not",
        "never",
    }
)
# Adverbs skipped when looking for the subject: "do such prompts really bypass...".
_ADVERBS = frozenset({"really", "actually", "sometimes", "often", "ever", "still", "usually"})


def _guard_allows(rule: Rule, text: str, start: int) -> bool:
    """False for a guarded rule right after a negation or a third-person subject, or after
    "to" whose subject is a third party ("telling the assistant to ignore...")."""
    if not rule.guarded or not start:
        return True
    if not (text[start - 1].isspace() or text[start - 1] in _QUOTES):
        return True
    before = [w.strip(_QUOTES + "([{") for w in text[max(0, start - 48) : start].split()]
    before = [w for w in before if w]
    if not before:
        return True
    word = before[-1]
    if word in _ADVERBS and len(before) > 1:
        word = before[-2]
    if word == "to" and len(before) > 1:
        return before[-2] not in _THIRD_PARTIES
    return (
        word not in GUARD_WORDS and word not in _THIRD_PARTIES and not word.endswith(GUARD_ENDINGS)
    )


def _scan(rule: Rule, text: str) -> bool:
    position = 0
    while (match := rule.pattern.search(text, position)) is not None:
        start = match.start()
        position = start + 1
        if (
            rule.word_start
            and start
            and _is_word_char(text[start - 1])
            and _is_word_char(text[start])
        ):
            continue
        if _guard_allows(rule, text, start):
            return True
    return False


SECOND_RULE_FACTOR = 0.5  # a second, different rule of the same kind adds half its weight


def _needed(best: dict[str, list[float]], rule: Rule) -> bool:
    """Whether matching ``rule`` could still raise its code's weight (its top two rules)."""
    top = best.get(rule.code)
    return top is None or len(top) < 2 or rule.weight > top[-1]


def _record(best: dict[str, list[float]], rule: Rule) -> None:
    best[rule.code] = sorted([*best.get(rule.code, ()), rule.weight], reverse=True)[:2]


class _Look:
    """One text, as the rules look at it: its words and the needles it holds (``Words`` finds
    where they occur)."""

    __slots__ = ("_anywhere", "ascii", "folded", "present", "words")

    def __init__(self, folded: str, index: _Index, words: prefilter.Words) -> None:
        self.folded = folded
        self.ascii = folded.isascii()
        self.words = words
        self.present = index.needles.present(words)  # whole words and word starts
        self._anywhere: dict[str, bool] = {}

    def has(self, needle_key: str) -> bool:
        if needle_key[0] != "~":
            return needle_key in self.present
        found = self._anywhere.get(needle_key)
        if found is None:
            found = self._anywhere[needle_key] = self.words.holds(needle_key[1:])
        return found

    def meets(self, requirement: _Requirement) -> bool:
        """Whether the text holds a needle of the requirement."""
        keys, anywhere, ascii_anywhere = requirement
        return not self.present.isdisjoint(keys) or any(
            map(self.has, ascii_anywhere if self.ascii else anywhere)
        )

    def held(self, gate: _Gate) -> list[str]:
        """The keys of the gate's needles the text holds."""
        found = list(gate.keys & self.present)
        if gate.anywhere:
            found += filter(self.has, gate.anywhere)
        return found

    def cost(self, gate: _Gate) -> float:
        """What looking for a match near the gate's needles costs, roughly, in microseconds:
        per occurrence, the search back for where a match could start and the tries there."""
        if gate.per_hit is None:
            return math.inf
        return sum(map(self.words.count, self.held(gate))) * gate.per_hit


def _hits(look: _Look, gate: _Gate) -> list[int]:
    """Where the gate's needles occur, in order."""
    occurrences = look.words.occurrences
    found = [occurrences(k) for k in look.held(gate)]
    if len(found) == 1:
        return found[0]
    return sorted({at for hits in found for at in hits})


def _spans(look: _Look, gate: _Gate) -> list[list[int]]:
    """Where a match holding one of the gate's needles can start: [low, high] spans, merged."""
    assert gate.chunks is not None
    spans: list[list[int]] = []
    for at in _hits(look, gate):
        low = look.words.reach_start(at, gate.chunks)
        if spans and low <= spans[-1][1]:
            spans[-1][1] = at
        else:
            spans.append([low, at])
    return spans


def _way_first(entry: _Entry, way: _Way, gate: _Gate, look: _Look) -> int | None:
    """The first word start where the rule matches (where it is tried: ``_leads``), looking
    only where this way of matching could: within reach before the occurrences of the
    requirement that is cheapest to look at (``gate``). None if there is none."""
    folded = look.folded
    if gate.chunks == 0:
        starts = _hits(look, gate)  # the first words' own occurrences
    else:
        starts = []
        for low, high in _spans(look, gate):
            # (one character past the longest first word: its lookahead reads it)
            for match in way.lead_re().finditer(folded, low, high + way.lead_length + 1):
                if match.start() <= high:
                    starts.append(match.start())
    # Each start is a word start where the rule is tried (``_leads``), in order: found by
    # ``lead_re``, or an occurrence of its first words as needles.
    rule = entry.rule
    for start in starts:
        if _guard_allows(rule, folded, start) and rule.pattern.match(folded, start):
            return start
    return None


def _tried_first(entry: _Entry, folded: str, start: int) -> int:
    """Where, among the rules tried at a word start, this one came: the index used to try them
    in turn (first words of three letters or more, then whole words of one or two, then stems
    of one, then of two letters). The order of the reason codes keeps it."""
    word = _WORD_RE.match(folded, start)
    text = word.group() if word is not None else ""
    lead = entry.lead
    if any(len(p) >= 3 and p[:3] == text[:3] and folded.startswith(p, start) for p, _ in lead):
        return 0
    if len(text) <= 2 and any(whole and len(p) <= 2 and p == text for p, whole in lead):
        return 1
    if any(not whole and len(p) <= 2 and p == text[:1] for p, whole in lead):
        return 2
    return 3


def _scan_gate(entry: _Entry, look: _Look) -> _Gate | None:
    """Where to look for a scanned rule's match: its cheapest gate, or None to scan the whole
    text (when that is cheaper, or the characters a match starts with are not known)."""
    gate = min(entry.gates, key=look.cost, default=None)
    if entry.first_re is None or gate is None or look.cost(gate) > _SCAN_COST * len(look.folded):
        return None
    return gate


def _scanned_matches(entry: _Entry, gate: _Gate | None, look: _Look) -> bool:
    """``_scan``, looking only where a match could start: within reach before the occurrences
    of the gate's needles, where a match's first character is; or the whole text if ``gate``
    is None."""
    rule, folded = entry.rule, look.folded
    if gate is None or entry.first_re is None:
        return _scan(rule, folded)
    spans = _spans(look, gate)
    for low, high in spans:
        for match in entry.first_re.finditer(folded, low, high + 1):
            start = match.start()
            if (
                rule.word_start
                and start
                and _is_word_char(folded[start - 1])
                and _is_word_char(folded[start])
            ):
                continue
            if _guard_allows(rule, folded, start) and rule.pattern.match(folded, start):
                return True
    return False


def signals(
    folded: str, index: _Index | None = None, words: prefilter.Words | None = None
) -> dict[str, float]:
    """The heuristic signals in a folded text: reason code -> weight. A code's weight is its
    strongest rule's, plus half the next strongest: two different phrasings of one kind of
    attack say more than one, but not twice as much. ``words``: the text's words, if they were
    listed already.

    The codes come in the order their first rule matches in the text (by where it starts, then
    in the order rules are tried at a word; the scanned rules after): the order in which the
    rules were once tried, word by word, and in which the reasons of equal weight are listed."""
    if index is None:
        index = rule_index()
    look = _Look(folded, index, words if words is not None else prefilter.Words(folded))
    present = look.present
    # The rules that can match (each requirement of a way has a needle in the text), and where
    # their gates' needles occur: found for all of them at once.
    live: list[tuple[_Entry, list[_Way]]] = []
    for entry in index.considered(present, look.ascii):
        if entry.ways:
            ways = [way for way in entry.ways if all(map(look.meets, way.requirements))]
            if ways:
                live.append((entry, ways))
        elif all(map(look.meets, entry.requirements)):
            live.append((entry, []))
    # Where to look for each (the gate that costs least), and where its needles occur: found
    # for all of them at once.
    gates: dict[int, _Gate | None] = {}
    for entry, ways in live:
        for way in ways:
            gates[id(way)] = min(way.gates, key=look.cost)
        if not entry.ways:
            gates[id(entry)] = _scan_gate(entry, look)
    look.words.find({k for gate in gates.values() if gate for k in gate.keys & present})
    found: list[tuple[tuple[int, int, int, int], Rule]] = []
    for entry, ways in live:
        if entry.ways:
            starts = [
                start
                for way in ways
                if (start := _way_first(entry, way, gates[id(way)], look))  # type: ignore[arg-type]
                is not None
            ]
            if starts:
                start = min(starts)
                where = (0, start, _tried_first(entry, folded, start), entry.order)
                found.append((where, entry.rule))
        elif _scanned_matches(entry, gates[id(entry)], look):
            found.append(((1, 0, 0, entry.order), entry.rule))
    found.sort(key=lambda item: item[0])
    best: dict[str, list[float]] = {}
    for _, rule in found:
        if _needed(best, rule):
            _record(best, rule)
    return {code: top[0] + SECOND_RULE_FACTOR * sum(top[1:]) for code, top in best.items()}


PAYLOAD_BONUS = 1.0  # hiding an instruction in an encoding is itself a signal
MAX_PAYLOAD_DEPTH = 2


# The counting signals below look for a *density*: so many of something within
# ``DENSITY_WINDOW`` characters. A jailbreak template packs its role definition into a page; a
# long manual or README says "you will" and "the tool can" just as often in all, spread over
# many pages, and must not add up to an attack.
DENSITY_WINDOW = 2_500


def _most_within(positions: list[int], window: int = DENSITY_WINDOW) -> int:
    """The largest number of ``positions`` (ascending) that fit in ``window`` characters."""
    best = start = 0
    for end, position in enumerate(positions):
        while position - positions[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


# Words that jailbreak templates use to describe what the model shall now produce. Any one of
# them is ordinary ("illegal parking"); three different ones close together are a pattern.
_UNSAFE_WORDS_RE = re.compile(
    r"(?:illegal|unethical|immoral|amoral|harmful|dangerous|offensive|explicit|nsfw|uncensored"
    r"|unfiltered|unrestricted|inappropriate|malicious|violent|derogatory)\b"
)
UNSAFE_WORDS = 3


_UNSAFE_WORDS = frozenset(
    {
        "illegal",
        "unethical",
        "immoral",
        "amoral",
        "harmful",
        "dangerous",
        "offensive",
        "explicit",
        "nsfw",
        "uncensored",
        "unfiltered",
        "unrestricted",
        "inappropriate",
        "malicious",
        "violent",
        "derogatory",
    }
)


def _unsafe_vocabulary(folded: str, words: prefilter.Words | None = None) -> float:
    # Each word found is a word of the text: with fewer than three of them there, none count.
    if words is not None and len(_UNSAFE_WORDS & words.words) < UNSAFE_WORDS:
        return 0.0
    found = [  # whole words only (not "nonviolent")
        (match.start(), match.group())
        for match in _UNSAFE_WORDS_RE.finditer(folded)
        if not match.start() or not folded[match.start() - 1].isalnum()
    ]
    if len({word for _, word in found}) < UNSAFE_WORDS:
        return 0.0
    in_window: dict[str, int] = {}
    start = 0
    for position, word in found:
        in_window[word] = in_window.get(word, 0) + 1
        while position - found[start][0] > DENSITY_WINDOW:
            first = found[start][1]
            in_window[first] -= 1
            if not in_window[first]:
                del in_window[first]
            start += 1
        if len(in_window) >= UNSAFE_WORDS:
            return 1.5
    return 0.0


# A jailbreak is usually a long role definition addressed to the model: "you will...", "you
# must never...", "your responses...". A user's message rarely tells the model, again and
# again, what it is and must do; a system prompt does, and that belongs in the system role.
_DIRECTIVE_TO_MODEL_RE = re.compile(  # no leading \b, so the engine can skip to each "you"
    r"you(?:\W?ll|\s+will|\s+must|\s+shall|\s+should|\s+are\s+(?:now|going|to|not|free|able"
    r"|allowed|no)|\s+can\s+(?:now|do|say|generate)|\s+have\s+to|\s+need\s+to|\s+never"
    r"|\s+always|\s+do\s+not|\s+don\W?t|\s+won\W?t|\s+cannot|\s+can\W?t)\b"
    r"|your\s+(?:responses?|answers?|replies|outputs?|goal|purpose|role|rules|name)\b"
)
# Supporting evidence only, never enough alone: a manual or a recipe talks to its reader in the
# same way ("you will need", "you must not"), and the classifier reads what the text is about.
DIRECTIVE_STEPS = ((12, 1.5), (8, 1.0), (4, 0.5))  # (directives in a window at least, weight)


def _directives_to_model(folded: str) -> float:
    most = DIRECTIVE_STEPS[0][0]
    positions: list[int] = []
    for match in _DIRECTIVE_TO_MODEL_RE.finditer(folded):
        if match.start() and folded[match.start() - 1].isalnum():
            continue  # "bayou will"
        positions.append(match.start())
        if len(positions) >= most and positions[-1] - positions[-most] <= DENSITY_WINDOW:
            break  # the strongest step is reached
    count = _most_within(positions)
    return next((weight for least, weight in DIRECTIVE_STEPS if count >= least), 0.0)


# A jailbreak persona is defined in the third person, again and again: "DAN can do anything",
# "DAN will never refuse", "AIM is amoral", "Zed has no filters". One name as the subject of
# such a statement four or more times close together, and written as a name, is a character
# sheet (a README that says "the tool can" on every page is not). Pronouns, articles and the
# usual subjects of technical prose ("the function will") don't count.
_PERSONA_STATEMENT_RE = re.compile(
    r"(?<![^\W\d_])([^\W\d_]{2,20})\s++(?:will|can|must|never|always|should|won\W?t"
    r"|doesn\W?t|does\s+not|has\s+no|is\s+(?:an?|not|free|able|completely|always|never))\b"
)
_NOT_A_PERSONA = frozenset(
    {
        "you",
        "he",
        "she",
        "it",
        "they",
        "we",
        "i",
        "this",
        "that",
        "there",
        "which",
        "who",
        "what",
        "one",
        "everyone",
        "someone",
        "anyone",
        "nobody",
        "user",
        "users",
        "function",
        "method",
        "code",
        "system",
        "model",
        "program",
        "script",
        "app",
        "application",
        "data",
        "file",
        "server",
        "class",
        "value",
        "output",
        "input",
        "result",
        "page",
        "team",
        "time",
        "person",
        "people",
        "company",
        "customer",
        "player",
        "game",
        "text",
        "story",
        "answer",
        "response",
        "world",
        "here",
        "also",
        "and",
        "or",
        "but",
        "so",
        "then",
        "now",
    }
)
PERSONA_STATEMENTS = 4
PERSONA_WEIGHT = 2.0


def _written_as_a_name(name: str, source: str) -> bool:
    """Whether ``name`` is capitalised somewhere in the original text ("Zed", "DAN"), as a
    persona's name is and "the unit should" or "the light does not" are not. A name the
    original spells differently (accents, look-alike letters) counts."""
    word = r"(?<![^\W\d_]){}(?![^\W\d_])"
    if not re.search(word.format(re.escape(name)), source, re.IGNORECASE):
        return True
    capitalised = f"{re.escape(name[0].upper())}(?i:{re.escape(name[1:])})"
    return re.search(word.format(capitalised), source) is not None


# Every persona statement has a verb after whitespace: where it does (few places), the name
# before it is read, and the statement tried from there.
_PERSONA_VERB_RE = re.compile(r"\s(?:will|can|must|never|always|should|won|does|has|is)")
_PERSONA_NAME_RE = re.compile(r"(?<![^\W\d_])[^\W\d_]{2,20}(?=\s)")


def _persona_matches(folded: str) -> Iterator[re.Match[str]]:
    """``_PERSONA_STATEMENT_RE.finditer(folded)``, trying the pattern only where a name ends
    before whitespace and one of its verbs (not at every word)."""
    taken_until = 0
    for verb in _PERSONA_VERB_RE.finditer(folded):
        space = verb.start()
        while space and folded[space - 1].isspace():
            space -= 1
        name = None
        for found in _PERSONA_NAME_RE.finditer(folded, max(0, space - 21), space + 1):
            if found.end() == space:
                name = found
        if name is None or name.start() < taken_until:
            continue
        match = _PERSONA_STATEMENT_RE.match(folded, name.start())
        if match is not None:
            taken_until = match.end()
            yield match


def _persona_statements(normalized: Normalized) -> float:
    folded = normalized.folded
    positions: dict[str, list[int]] = {}
    rejected: set[str] = set()
    for match in _persona_matches(folded):
        name = match.group(1)
        if name in _NOT_A_PERSONA or name in rejected:
            continue
        found = positions.setdefault(name, [])
        found.append(match.start())
        if (
            len(found) >= PERSONA_STATEMENTS
            and found[-1] - found[-PERSONA_STATEMENTS] <= DENSITY_WINDOW
        ):
            if _written_as_a_name(name, normalized.decoding_source):
                return PERSONA_WEIGHT
            rejected.add(name)
    return 0.0


# Payload splitting: 'ign' and 'ore all previous...' put in variables and joined. The
# fragments are joined (and the expressions that join them replaced by what they make) and the
# result is screened like a decoded payload.
# A quote mark between two letters is an apostrophe ("I'll"), not a quotation.
_QUOTED_RE = re.compile(
    r"(?<![a-z])'([^'\n]{1,120})'(?![a-z])|\"([^\"\n]{1,120})\"|[‘’]([^‘’\n]{1,120})[‘’]"
)
_ASSIGNED_RE = re.compile(
    r"\b([a-z][a-z0-9_]{0,11})\s{0,3}(?:=|:|is|\bequals?)\s{0,3}(?:'([^'\n]{1,120})'"
    r"|\"([^\"\n]{1,120})\")"
)
_JOIN_EXPRESSION_RE = re.compile(
    r"\b([a-z][a-z0-9_]{0,11})((?:\s{0,3}(?:\+|\bfollowed\s+by\b|\bthen\b|\band\b)"
    r"\s{0,3}[a-z][a-z0-9_]{0,11}\b){1,8})"
)
_JOIN_PART_RE = re.compile(r"[a-z][a-z0-9_]{0,11}")
_SPACED_NAMES_RE = re.compile(r"\b[a-z](?:\s{1,3}[a-z]){1,7}\b")  # "execute a b c"
_JOIN_CUE_RE = re.compile(
    r"[a-z0-9_]\s{0,3}\+\s{0,3}[a-z0-9_'\"]|\bconcatenat|\bcombine|\bjoin|\bmerge|\bassembl"
    r"|\b(?:put|glue|stitch|chain|paste)\s+(?:them|it|the\s+(?:pieces|parts|fragments|halves|words"
    r"|strings))\s+(?:together|into)|\bglue"
    r"|\bfollowed\s+by\b|\b(?:first|second|third|three|the)\s+(?:words?|parts?|pieces?)\b"
)
_JOIN_WORDS = (
    "concatenat",
    "combin",
    "join",
    "merge",
    "assembl",
    "together",
    "followed",
    "glue",
    " word",
)
MAX_FRAGMENTS = 32
SPLIT_BONUS = 1.5


def _split_payload(folded: str) -> str | None:
    """The text a split payload makes, or None if the text does not join quoted pieces."""
    if len(folded) > SHORT_TEXT:
        return None
    if "'" not in folded and '"' not in folded and "‘" not in folded:
        return None
    cue = ("+" in folded or any(map(folded.__contains__, _JOIN_WORDS))) and _JOIN_CUE_RE.search(
        folded
    )
    if not cue and (
        folded.count("=", 0, 2_000) < 3 or len(_ASSIGNED_RE.findall(folded, 0, 2_000)) < 3
    ):
        return None
    fragments = [
        next(group for group in match.groups() if group is not None)
        for match in _QUOTED_RE.finditer(folded, 0, 20_000)
    ][:MAX_FRAGMENTS]
    if len(fragments) < 2:
        return None
    values = {
        match.group(1): match.group(2) if match.group(2) is not None else match.group(3)
        for match in _ASSIGNED_RE.finditer(folded, 0, 20_000)
    }

    def substitute(match: re.Match[str]) -> str:
        names = [match.group(1), *_JOIN_PART_RE.findall(match.group(2))]
        names = [name for name in names if name not in ("followed", "by", "then", "and")]
        if len(names) < 2 or not all(name in values for name in names):
            return match.group()
        return "".join(values[name] for name in names)

    def substitute_spaced(match: re.Match[str]) -> str:
        names = match.group().split()
        return (
            "".join(values[n] for n in names) if all(n in values for n in names) else match.group()
        )

    substituted = ""
    if values:
        substituted = _JOIN_EXPRESSION_RE.sub(substitute, folded[:20_000])
        substituted = _SPACED_NAMES_RE.sub(substitute_spaced, substituted)
    if substituted == folded[:20_000]:
        substituted = ""  # no expression joined named pieces
    spaced = " ".join(fragment.strip() for fragment in fragments)
    return f"{''.join(fragments)}\n{spaced}\n{substituted}"


# Quoting an attack to talk about it: "the tester typed 'ignore all previous instructions'",
# "what does 'disregard the above' mean?". Evidence found only inside quotation marks, in a
# text that talks about what was said, counts for a fraction of its weight.
_QUOTATION_RE = re.compile(
    r"(?<![a-z])'[^'\n]{3,300}'(?![a-z])|\"[^\"\n]{3,300}\"|“[^”\n]{3,300}”|‘[^’\n]{3,300}’"
    r"|«[^»\n]{3,300}»"
)
_MENTION_RE = re.compile(
    r"\?|\b(?:typed|posted|wrote|written|said|phrase|sentence|string|such\W+as|example"
    r"|examples|attacks?|attackers?|payloads?|classify|mean|means|meaning|quoted?|told|telling"
    r"|sent|called|pasted|entered|tried|warning|advisory|report|explain|history|stopped"
    r"|worked|why)\b"
)
QUOTED_FACTOR = 0.3
QUOTED_TEXT = 800  # a question that quotes an attack is short
# Quoting an attack to discuss it, and assembling one from pieces, happen in prompts, not in
# long documents; reading a long text twice would double its cost.
SHORT_TEXT = 3_000


def _discount_quotations(folded: str, found: dict[str, float]) -> dict[str, float]:
    if len(folded) > QUOTED_TEXT or not any(weight > 0 for weight in found.values()):
        return found
    if "'" not in folded and '"' not in folded and "“" not in folded and "‘" not in folded:
        return found
    outside = _QUOTATION_RE.sub(" ", folded)
    if outside == folded or not _MENTION_RE.search(outside):
        return found
    kept = signals(outside)
    return {  # what only the quotation adds counts for a fraction
        code: weight
        if weight <= 0
        else min(weight, kept.get(code, 0.0))
        + QUOTED_FACTOR * max(0.0, weight - kept.get(code, 0.0))
        for code, weight in found.items()
    }


def read(text: str, role: str = "user") -> tuple[dict[str, float], list[str]]:
    """One pass over a text: its signals (``text_signals`` of its normalised form), and what the
    meaning model reads of it: the normalised text, then every payload decoded or joined."""
    normalized = normalize(text)
    payloads: list[str] = []
    found = text_signals(normalized, role=role, payloads=payloads)
    return found, [normalized.folded, *payloads]


def text_signals(
    normalized: Normalized,
    depth: int = 0,
    role: str = "user",
    payloads: list[str] | None = None,
) -> dict[str, float]:
    """Signals of a normalised text: its rules (and, in a tool result, the rules for tool
    results), the obfuscation tricks it used, and the signals of any encoded or split payload
    in it ("base64_payload:override_instructions", "split_payload:reveal_system_prompt").
    ``payloads``, if given, receives the normalised text of every payload decoded or joined."""
    words = prefilter.Words(normalized.folded)  # listed once for both sets of rules
    found = _discount_quotations(normalized.folded, signals(normalized.folded, rule_index(), words))
    if role in TOOL_ROLES:
        found.update(signals(normalized.folded, tool_rule_index(), words))
    if weight := _unsafe_vocabulary(normalized.folded, words):
        found["unsafe_vocabulary"] = weight
    if weight := _directives_to_model(normalized.folded):
        found["directives_to_model"] = weight
    if weight := _persona_statements(normalized):
        found["persona_definition"] = weight
    for trick in normalized.tricks:
        found[f"obfuscation:{trick}"] = TRICK_WEIGHTS[trick]
    if depth >= MAX_PAYLOAD_DEPTH:
        return found
    for kind, decoded in encoded_payloads(normalized, words.words):
        inner_text = normalize(decoded)
        if payloads is not None:
            payloads.append(inner_text.folded)
        inner = text_signals(inner_text, depth + 1)
        attack = {
            code: weight for code, weight in inner.items() if not code.startswith("obfuscation:")
        }
        if not attack:
            continue
        top = max(attack, key=attack.__getitem__).rpartition(":")[2]
        code = f"{kind}_payload:{top}"
        found[code] = max(found.get(code, 0.0), sum(inner.values()) + PAYLOAD_BONUS)
    joined = _split_payload(normalized.folded)
    if joined is not None:
        joined_text = normalize(joined)
        if payloads is not None:
            payloads.append(joined_text.folded)
        inner = text_signals(joined_text, depth + 1)
        new = {  # what the joined pieces say that the text, unjoined, did not
            code: weight
            for code, weight in inner.items()
            if not code.startswith("obfuscation:") and code not in found
        }
        if new:
            top = max(new, key=new.__getitem__).rpartition(":")[2]
            found[f"split_payload:{top}"] = sum(new.values()) + SPLIT_BONUS
        elif not joined.endswith("\n"):  # named pieces joined by an expression, saying little
            found["split_payload"] = SPLIT_BONUS
    return found
