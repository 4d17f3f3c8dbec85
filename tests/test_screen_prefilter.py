"""The screen's prefilter (gateway.screening.prefilter) never changes a verdict: the signals,
their weights and the order of the reasons are those of trying every rule at every word where
it could start, as the screen did before it had a prefilter; and the faster forms of the other
checks (leetspeak, spaced letters, encoded payloads, persona statements, e-mail addresses) find
what the plain patterns find.

The texts: the hand-written development set, the public sets when they are there (never
their held-out halves' content for anything but this comparison), documentation with attacks
pasted into it, and attacks stretched with whitespace and punctuation between their words."""

from __future__ import annotations

import csv
import importlib
import inspect
import json
import random
import re
from collections import defaultdict
from pathlib import Path

import pytest

from gateway.screening import heuristics, normalize, prefilter
from gateway.screening.normalize import normalize as fold
from gateway.screening.rules import RULES
from privacy.pii import recognizers

REPO = Path(__file__).resolve().parents[1]
DEV_SET = REPO / "scripts" / "data" / "detection" / "injection_dev.jsonl"
PUBLIC = REPO.parent / "shared" / "data" / "eval"


# --- the screen as it was: every rule at every word ------------------------------------------


class _EveryWord:
    """Where each rule is tried without a prefilter: indexed by the first three letters of its
    first words (one or two letters: by the word, or the stem), tried at every word start with
    ``pattern.match``; rules without a literal first word scanned when an anchor is there."""

    def __init__(self, rules: tuple) -> None:
        self.long: dict = defaultdict(dict)
        self.short_words: dict = defaultdict(dict)
        self.short_stems: dict = defaultdict(dict)
        self.scanned: list = []
        for rule in rules:
            words = heuristics._leading_words(rule.pattern.pattern) if rule.word_start else None
            if not words:
                anchors = rule.anchors or tuple(
                    sorted({w for w, _ in heuristics._leading_words(rule.pattern.pattern) or ()})
                )
                self.scanned.append((rule, anchors))
                continue
            for word, whole in sorted(words):
                if len(word) >= 3:
                    table, key = self.long, word[:3]
                else:
                    table, key = (self.short_words if whole else self.short_stems), word
                table[key].setdefault(rule, []).append(word)
        self.stem_letters = frozenset(stem[:1] for stem in self.short_stems)

    def candidates(self, word: str) -> list:
        def entries(table: dict, key: str) -> list:
            return [(tuple(words), rule) for rule, words in table.get(key, {}).items()]

        found = entries(self.long, word[:3])
        if len(word) <= 2:
            found += entries(self.short_words, word)
        if word[:1] in self.stem_letters:
            found += entries(self.short_stems, word[:1]) + entries(self.short_stems, word[:2])
        return found


_EVERY_WORD = {
    "user": _EveryWord(
        heuristics.RULES + heuristics.rules_agents.RULES + heuristics.rules_multilingual.RULES
    ),
    "tool": _EveryWord(heuristics.rules_agents.TOOL_RULES),
}


def signals_everywhere(folded: str, index: _EveryWord) -> dict[str, float]:
    best: dict[str, list[float]] = {}
    matched: set[int] = set()
    for rule in [r for r, _ in index.scanned] + [
        rule for table in (index.long, index.short_words, index.short_stems)
        for by_rule in table.values() for rule in by_rule
    ]:  # fmt: skip
        if rule.requires and not any(word in folded for word in rule.requires):
            matched.add(id(rule))
    for word in heuristics._WORD_RE.finditer(folded):
        start = word.start()
        for prefixes, rule in index.candidates(word.group()):
            if not folded.startswith(prefixes, start) or id(rule) in matched:
                continue
            if (
                heuristics._needed(best, rule)
                and heuristics._guard_allows(rule, folded, start)
                and rule.pattern.match(folded, start)
            ):
                matched.add(id(rule))
                heuristics._record(best, rule)
    for rule, anchors in index.scanned:
        if (
            id(rule) not in matched
            and any(anchor in folded for anchor in anchors)
            and heuristics._needed(best, rule)
            and heuristics._scan(rule, folded)
        ):
            heuristics._record(best, rule)
    factor = heuristics.SECOND_RULE_FACTOR
    return {code: top[0] + factor * sum(top[1:]) for code, top in best.items()}


# --- texts -------------------------------------------------------------------------------------


def _dev_texts() -> list[str]:
    return [json.loads(line)["text"] for line in DEV_SET.read_text().splitlines() if line]


def _public_texts() -> list[str]:
    texts: list[str] = []
    csv.field_size_limit(10**8)
    deepset = PUBLIC / "deepset_prompt_injections.csv"
    if deepset.exists():
        with deepset.open(newline="", encoding="utf-8") as handle:
            texts += [row["text"] for row in csv.DictReader(handle)]
    jailbreaks = PUBLIC / "jailbreak_prompts_2023_12_25.csv"
    if jailbreaks.exists():
        with jailbreaks.open(newline="", encoding="utf-8") as handle:
            texts += [row["prompt"] for row in csv.DictReader(handle)][::6]
    notinject = PUBLIC / "notinject_benign_trigger_words.json"
    if notinject.exists():
        texts += [row["prompt"] for row in json.loads(notinject.read_text())]
    return texts


def _documentation() -> str:
    """Docstrings of a few standard-library modules: ordinary technical English."""
    paragraphs = []
    for name in ("argparse", "json", "pathlib", "logging", "csv", "textwrap", "string"):
        module = importlib.import_module(name)
        for _, member in [(name, module), *inspect.getmembers(module)]:
            doc = inspect.getdoc(member) if callable(member) or member is module else None
            paragraphs += [p for p in (doc or "").split("\n\n") if len(p) > 80]
    return "\n\n".join(dict.fromkeys(paragraphs))


_STRETCHES = ("  ", "\n", " - ", " -- ", "   \t ", " ... ", ", ", "_", " | ", "\n\n", " (", ") ")


def _stretched(text: str, rng: random.Random) -> str:
    """The text with whitespace and punctuation put between some of its words."""
    return re.sub(r" ", lambda _: rng.choice(_STRETCHES) if rng.random() < 0.4 else " ", text)


def _attacks_in_documents(attacks: list[str], rng: random.Random) -> list[str]:
    corpus = _documentation()
    texts = []
    for attack in attacks:
        start = rng.randrange(len(corpus))
        document = (corpus * 2)[start : start + rng.choice((600, 3_000, 12_000))]
        cut = rng.choice((0, len(document) // 2, len(document)))
        texts.append(
            document[:cut] + rng.choice((" ", "\n\n", "\n")) + attack + " " + document[cut:]
        )
    return texts


def _cases() -> list[pytest.param]:
    rng = random.Random(21)
    dev = _dev_texts()
    public = _public_texts()
    attacks = [t for t in dev + public if heuristics.signals(fold(t).folded)][:400]
    return [
        pytest.param(dev, id="development set"),
        pytest.param(public, id="public sets"),
        pytest.param([_stretched(t, rng) for t in attacks], id="stretched attacks"),
        pytest.param(_attacks_in_documents(attacks[::4], rng), id="attacks in documents"),
        pytest.param([_documentation()[:60_000]], id="documentation"),
    ]


@pytest.mark.parametrize("texts", _cases())
def test_the_screen_finds_what_trying_every_rule_at_every_word_finds(texts):
    """Same signals, same weights, reasons in the same order, for user and tool texts."""
    for text in texts:
        folded = fold(text).folded
        words = prefilter.Words(folded)
        for role, index in (
            ("user", heuristics.rule_index()),
            ("tool", heuristics.tool_rule_index()),
        ):
            expected = signals_everywhere(folded, _EVERY_WORD[role])
            found = heuristics.signals(folded, index, words)
            assert list(found.items()) == list(expected.items()), (role, text[:200])


def test_every_requirement_read_from_a_rule_is_in_each_of_its_matches():
    """What the prefilter reads from a rule's regex (the needles a match holds, and how far
    into the match they can be) holds of every match of the rule in the attacks."""
    texts = [fold(t).folded for t in _dev_texts() + _public_texts()[:600]]
    for entry in heuristics.rule_index().entries:
        rule = entry.rule
        if not entry.ways:
            continue
        for folded in texts:
            for match in _matches(rule.pattern, folded):
                start, end = match.span()
                if start and folded[start - 1].isalnum():
                    continue  # tried only where a word starts
                assert any(
                    all(_held(folded, start, end, gate) for gate in way.gates) for way in entry.ways
                ), (rule.code, rule.pattern.pattern[:80], folded[start:end])


def _matches(pattern: re.Pattern[str], text: str) -> list[re.Match[str]]:
    found, position = [], 0
    while (match := pattern.search(text, position)) is not None:
        found.append(match)
        position = match.start() + 1
    return found


def _held(folded: str, start: int, end: int, gate: heuristics._Gate) -> bool:
    """Whether a needle of the gate is in ``folded[start:end]`` within its reach of ``start``."""
    chunks = prefilter.letter_chunk_starts(folded)
    for string, before, after in gate.needles:
        at = folded.find(string, start)
        while at >= 0 and at + len(string) <= end:
            if (not before or not at or not folded[at - 1].isalnum()) and (
                not after
                or at + len(string) == len(folded)
                or not folded[at + len(string)].isalnum()
            ):
                reach = gate.chunks
                if reach is None or reach == 0 or prefilter.reach_start(chunks, at, reach) <= start:
                    return True
            at = folded.find(string, at + 1)
    return False


# --- the faster forms of the other checks ----------------------------------------------------

_PIECES = (
    "a", "b", "ab", "x", "dan", "zed", " ", "  ", "\n", ".", "-", "_", "*", "|", "1", "0", "3",
    "4", "5", "7", "@", "$", "is a", "will", "can", "won't", "does not", "aGVsbG8gd29ybGQ",
    "QUJD", "==", "deadbeef", "de:ad:", "0a 1b ", "x@y.com", "'", "+", "%", "é", "\r\n",
)  # fmt: skip


def _random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_PIECES) for _ in range(rng.randrange(0, 16))) for _ in range(count)]


def test_leetspeak_spaced_letters_and_personas_are_found_as_by_the_plain_patterns():
    texts = _random_texts(20_000, 1) + [fold(t).folded for t in _dev_texts()]
    for text in texts:
        assert normalize._fold_leet_words(text) == normalize._LEET_TOKEN_RE.sub(
            normalize._fold_leet_word, text
        )
        assert normalize._has_spaced_letters(text) == bool(normalize._SPACED_RE.search(text))
        assert [m.span() for m in heuristics._persona_matches(text)] == [
            m.span() for m in heuristics._PERSONA_STATEMENT_RE.finditer(text)
        ]


def test_encoded_payload_candidates_are_those_of_the_plain_patterns():
    for text in _random_texts(20_000, 2):
        assert [m.span() for m in normalize._base64_candidates(text)] == [
            m.span() for m in normalize._BASE64_RE.finditer(text)
        ]
        assert [m.span() for m in normalize._hex_candidates(text)] == [
            m.span() for m in normalize._HEX_RE.finditer(text)
        ]
        assert normalize._has_long_token(text) == (max(map(len, text.split()), default=0) >= 16)


def test_email_candidates_are_those_of_the_plain_pattern():
    texts = [*_random_texts(20_000, 3), "@" * 5_000, "a@b.co " * 2_000, ("x" * 70) + "@ex.com"]
    for text in texts:
        assert [m.span() for m in recognizers._email_matches(text)] == [
            m.span() for m in recognizers._EMAIL_RE.finditer(text)
        ]


def test_a_rule_that_needs_its_words_is_not_tried_without_them():
    """A requirement is a necessary condition: no rule of the English set matches a text that
    holds none of its needles, and the prefilter leaves every such rule out."""
    text = fold("The quick brown fox jumps over the lazy dog. " * 200).folded
    look = heuristics._Look(text, heuristics.rule_index(), prefilter.Words(text))
    left_out = [
        entry.rule
        for entry in heuristics.rule_index().entries
        if entry.rule in RULES
        and entry.ways
        and not any(all(map(look.meets, way.requirements)) for way in entry.ways)
    ]
    assert left_out  # most rules need words this text does not have
    assert not any(heuristics._scan(rule, text) for rule in left_out)
