"""What a rule's regex needs before it can match, read from the regex itself.

``heuristics`` tries a rule where a word starts with one of its first words. On a long document
that is almost everywhere: many rules start with "the", "a", "you", "if" or "is", and a
100,000-character manual has thousands of them. But a rule needs more than its first word:
"ignore ... previous ... instructions" needs one of the override verbs, one of the "prior"
words and one of the directive words, each a whole word, in order and a few words apart. This
module reads that from each rule's regex (with Python's own regex parser), once, at import:

- ``requirements``: sets of needles, one of each of which every match holds. A needle is a
  string of letters and digits with what is known of its edges: a whole word (neither side can
  be a letter or digit), the start of a word, or anywhere. With each requirement: at most how
  many whitespace-separated chunks holding a letter a match spans from its start to the end of
  that needle ("ignore all previous instructions": 3 to "previous"; unbounded after an
  unbounded run of words).
- ``first_characters``: the characters a match can start with.

At run time (``Words``, ``NeedleSet``) a text's words are listed once, at C speed
(``str.translate``, ``str.split`` and a ``Counter``), and the needles it holds are found from
them. ``heuristics`` then leaves out every rule one of whose requirements has no needle in the
text, and tries the others only within reach before the occurrences of one requirement (the
cheapest to look at: ``heuristics._Look.cost``).

Every requirement is a necessary condition of the regex, so a rule left out could not have
matched; where a rule is tried, it is tried exactly as before (``pattern.match`` at a word
start where one of its first words begins, or ``pattern.search`` for a scanned rule). So the
signals are the same as trying every rule everywhere: ``tests/test_screen_prefilter.py`` checks
it against that, on the labelled sets. What is estimated (how common a needle is) only decides
where to look first.
"""

from __future__ import annotations

import itertools
import math
import re
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, compress

# Python's regex parser (private, as in ``heuristics``; 3.11 and 3.12). Without it no rule is
# read: no requirement and no known first character, and each rule is tried wherever it was.
try:  # pragma: no branch
    from re import _compiler as _sre_compiler  # type: ignore[attr-defined]
    from re import _constants as _sre  # type: ignore[attr-defined]
    from re import _parser as _sre_parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    _sre = _sre_parser = _sre_compiler = None

# A needle: (letters, bounded before, bounded after). Bounded: the character on that side is
# not a letter or digit, or is the text's edge.
Needle = tuple[str, bool, bool]
Requirement = frozenset[Needle]

MOST_STRINGS = 400  # a finite set of strings larger than this is not spelled out
MOST_RANGE = 5_000  # a character range wider than this is not looked into


def is_letter(char: str) -> bool:
    """A letter or a digit: what ``[^\\W_]`` matches and what separates words here."""
    return char.isalnum()


# --- reading a regex --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Info:
    """What is known of the strings a part of a regex matches."""

    words: frozenset[str] | None  # all of them, if they are few and only letters or digits
    empty: bool  # it may match the empty string
    first_other: bool  # a non-empty match starts with a character that is not a letter
    last_other: bool  # ... and ends with one
    letters: bool  # a match may hold a letter or digit
    space: bool  # a match may hold whitespace
    chunks: float  # at most this many whitespace-separated chunks holding a letter (or inf)
    boundary: bool = False  # a zero-width assertion that no letter is on the other side


_OPAQUE = _Info(None, True, False, False, True, True, math.inf)
_NOTHING = _Info(frozenset({""}), True, True, True, False, False, 0)
_REPEATS: tuple = ()
_BOUNDARIES: frozenset = frozenset()
if _sre is not None:  # pragma: no branch
    _REPEATS = tuple(
        getattr(_sre, name)
        for name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
        if hasattr(_sre, name)
    )
    _BOUNDARIES = frozenset(
        getattr(_sre, name)
        for name in (
            "AT_BOUNDARY",
            "AT_BEGINNING",
            "AT_BEGINNING_LINE",
            "AT_BEGINNING_STRING",
            "AT_END",
            "AT_END_LINE",
            "AT_END_STRING",
        )
        if hasattr(_sre, name)
    )


def _product(sets: list[frozenset[str]]) -> frozenset[str] | None:
    total = 1
    for strings in sets:
        total *= len(strings)
        if total > MOST_STRINGS:
            return None
    return frozenset("".join(parts) for parts in itertools.product(*sets))


def _category(category: object) -> tuple[bool, bool, bool]:
    """Whether a category (``\\d``, ``\\w``...) can match a letter or digit, something
    else, whitespace."""
    name = str(category)
    if name == "CATEGORY_DIGIT":
        return True, False, False
    if name in ("CATEGORY_WORD", "CATEGORY_NOT_SPACE"):
        return True, True, False
    if name in ("CATEGORY_SPACE", "CATEGORY_NOT_WORD", "CATEGORY_LINEBREAK"):
        return False, True, True
    return True, True, True


def _class(items: list) -> tuple[bool, bool, bool, frozenset[str] | None]:
    """A character class: whether it can match a letter or digit, something else, whitespace;
    and its characters if they are few letters."""
    negate = bool(items) and items[0][0] is _sre.NEGATE
    chars: set[str] = set()
    categories: set[object] = set()
    for op, arg in items[1:] if negate else items:
        if op is _sre.LITERAL:
            chars.add(chr(arg))
        elif op is _sre.RANGE and arg[1] - arg[0] <= MOST_RANGE:
            chars.update(map(chr, range(arg[0], arg[1] + 1)))
        elif op is _sre.CATEGORY:
            categories.add(arg)
        else:  # a wide range, or something this does not read: anything
            return True, True, True, None
    if negate:  # everything the items leave out
        names = {str(c) for c in categories}
        letter = not names & {"CATEGORY_WORD", "CATEGORY_NOT_SPACE"}
        other = not ("CATEGORY_NOT_WORD" in names and "_" in chars)
        space = not names & {"CATEGORY_SPACE", "CATEGORY_NOT_WORD", "CATEGORY_NOT_DIGIT"}
        return letter, other, space, None
    letter = any(map(is_letter, chars))
    other = any(not is_letter(c) for c in chars)
    space = any(c.isspace() for c in chars)
    for category in categories:
        can = _category(category)
        letter, other, space = letter or can[0], other or can[1], space or can[2]
    finite = frozenset(chars) if letter and not other and not categories else None
    return letter, other, space, finite


def _char(letter: bool, other: bool, space: bool, finite: frozenset[str] | None) -> _Info:
    return _Info(finite, False, not letter, not letter, letter, space, 1 if letter else 0)


def _edge(infos: Iterable[_Info], side: str) -> bool:
    """Whether a non-empty match of the sequence starts (ends) with a non-letter."""
    for info in infos:
        if not getattr(info, side):
            return False
        if not info.empty:
            return True
    return True


def _chunks(infos: list[_Info]) -> float:
    """At most how many whitespace-separated chunks holding a letter a match of the sequence
    spans: a run of parts that cannot hold whitespace lies in one chunk; a part that can adds
    its own."""
    total: float = 0
    run_letters = False
    for info in infos:
        if info.space:
            total += info.chunks + run_letters
            run_letters = False
        else:
            run_letters = run_letters or info.letters
    return total + run_letters


def _sequence(infos: list[_Info]) -> _Info:
    sets = [info.words for info in infos]
    words = _product(sets) if all(s is not None for s in sets) else None  # type: ignore[arg-type]
    return _Info(
        words,
        all(info.empty for info in infos),
        _edge(infos, "first_other"),
        _edge(reversed(infos), "last_other"),
        any(info.letters for info in infos),
        any(info.space for info in infos),
        _chunks(infos),
    )


_CHARACTERS: dict[tuple, _Info] = {}  # a literal or a class: the same in every regex


class _Reader:
    """Reads one parsed regex; what it works out of a part is kept for the other questions
    asked of the same part (the parse is held, so the parts' ids stay theirs)."""

    def __init__(self, parsed: object) -> None:
        self.parsed = parsed
        self._infos: dict[int, _Info] = {}
        self._sequences: dict[int, _Info] = {}
        self._flat: dict[int, list] = {}

    def flatten(self, items: object) -> list:
        """Groups spliced into the sequence around them (a group only groups, here); a group
        with its own case-insensitive flag is left whole (and read as opaque)."""
        found = self._flat.get(id(items))
        if found is None:
            found = []
            for item in items:  # type: ignore[attr-defined]
                op, arg = item
                if op is _sre.SUBPATTERN and not (arg[1] | arg[2]) & re.IGNORECASE:
                    found.extend(self.flatten(arg[3]))
                elif op is getattr(_sre, "ATOMIC_GROUP", None):
                    found.extend(self.flatten(arg))
                else:
                    found.append(item)
            self._flat[id(items)] = found
        return found

    def info(self, item: tuple) -> _Info:
        found = self._infos.get(id(item))
        if found is None:
            op, arg = item
            if op is _sre.LITERAL or op is _sre.IN:  # the same everywhere: kept for all
                shape = (op, arg) if op is _sre.LITERAL else (op, tuple(arg))
                found = _CHARACTERS.get(shape)
                if found is None:
                    found = _CHARACTERS[shape] = self._read(item)
            else:
                found = self._read(item)
            self._infos[id(item)] = found
        return found

    def sequence(self, items: object) -> _Info:
        found = self._sequences.get(id(items))
        if found is None:
            found = self._sequences[id(items)] = _sequence(
                [self.info(item) for item in self.flatten(items)]
            )
        return found

    def _read(self, item: tuple) -> _Info:
        op, arg = item
        if op is _sre.LITERAL:
            char = chr(arg)
            letter = is_letter(char)
            finite = frozenset({char}) if letter else None
            return _char(letter, not letter, char.isspace(), finite)
        if op is _sre.IN:
            return _char(*_class(arg))
        if op is _sre.NOT_LITERAL or op is _sre.ANY:
            return _char(True, True, True, None)
        if op is _sre.AT:
            return _Info(frozenset({""}), True, True, True, False, False, 0, arg in _BOUNDARIES)
        if op is _sre.ASSERT or op is _sre.ASSERT_NOT:
            return _NOTHING
        if op is _sre.BRANCH:
            infos = [self.sequence(branch) for branch in arg[1]]
            sets = [info.words for info in infos]
            words = None
            if all(s is not None for s in sets):
                words = frozenset().union(*(s for s in sets if s is not None))
                words = words if len(words) <= MOST_STRINGS else None
            return _Info(
                words,
                any(info.empty for info in infos),
                all(info.first_other for info in infos),
                all(info.last_other for info in infos),
                any(info.letters for info in infos),
                any(info.space for info in infos),
                max(info.chunks for info in infos),
            )
        if op in _REPEATS:
            least, most, body_items = arg
            body = self.sequence(body_items)
            unbounded = most == _sre.MAXREPEAT
            words = None
            if body.words is not None and not unbounded and most <= 4:
                options: set[str] = set()
                for times in range(least, most + 1):
                    strings = _product([body.words] * times)
                    if strings is None:
                        break
                    options |= strings
                else:
                    words = frozenset(options) if len(options) <= MOST_STRINGS else None
            if not body.letters or most == 0:
                chunks: float = 0
            elif not body.space:
                chunks = 1  # repeated, it is still one run without whitespace
            else:
                chunks = math.inf if unbounded else most * body.chunks
            return _Info(
                words,
                least == 0 or body.empty,
                body.first_other,
                body.last_other,
                body.letters,
                body.space,
                chunks,
            )
        return _OPAQUE  # a back reference, a conditional, a group with its own flags

    def requirements(self, items: list, before: bool, after: bool) -> list[tuple[Requirement, int]]:
        """Requirements of a flattened sequence of regex items, each with the index of the
        item where it ends; ``before`` (``after``): whether the character before (after) the
        sequence is known not to be a letter or digit, or to be the text's edge."""
        infos = [self.info(item) for item in items]
        count = len(infos)

        def bounded_before(index: int) -> bool:
            for info in reversed(infos[:index]):
                if info.boundary:
                    return True
                if not info.last_other:
                    return False
                if not info.empty:
                    return True
            return before

        def bounded_after(index: int) -> bool:
            for info in infos[index + 1 :]:
                if info.boundary:
                    return True
                if not info.first_other:
                    return False
                if not info.empty:
                    return True
            return after

        found: list[tuple[Requirement, int]] = []
        index = 0
        while index < count:
            info = infos[index]
            if info.words is not None and not info.boundary:
                # A run of parts matching known strings of letters: one of those strings.
                end = index
                while end < count and infos[end].words is not None and not infos[end].boundary:
                    end += 1
                strings = _product([i.words for i in infos[index:end] if i.words is not None])
                if strings is not None and "" not in strings:
                    left, right = bounded_before(index), bounded_after(end - 1)
                    found.append((frozenset((s, left, right) for s in strings), end - 1))
                index = end
                continue
            op, arg = items[index]
            if op is _sre.BRANCH:
                # One requirement of each alternative (its cheapest): one of them is met.
                left, right = bounded_before(index), bounded_after(index)
                picks: list[Requirement] = []
                for branch in arg[1]:
                    inner = self.requirements(self.flatten(branch), left, right)
                    if not inner:
                        break
                    picks.append(min((r for r, _ in inner), key=requirement_cost))
                else:
                    union = frozenset().union(*picks)
                    if union and len(union) <= MOST_STRINGS:
                        found.append((union, index))
            elif op in _REPEATS and arg[0] >= 1:
                # Met by the first round; a second round may follow it.
                body = self.flatten(arg[2])
                left, right = bounded_before(index), bounded_after(index)
                if arg[1] != 1:
                    body_info = self.sequence(arg[2])
                    right = right and body_info.first_other and not body_info.empty
                found.extend((r, index) for r, _ in self.requirements(body, left, right))
            index += 1
        return found

    def first(self, items: list) -> tuple[list[str], bool] | None:
        """The characters (as class syntax) a match of the sequence can start with, and
        whether it can match the empty string; None if not known."""
        parts: list[str] = []
        for op, arg in items:
            if op is _sre.AT or op is _sre.ASSERT or op is _sre.ASSERT_NOT:
                continue
            if op is _sre.LITERAL:
                return [*parts, re.escape(chr(arg))], False
            if op is _sre.IN:
                syntax = None if arg and arg[0][0] is _sre.NEGATE else _class_syntax(arg)
                return None if syntax is None else ([*parts, syntax], False)
            if op is _sre.BRANCH:
                empty = False
                for branch in arg[1]:
                    inner = self.first(self.flatten(branch))
                    if inner is None:
                        return None
                    parts += inner[0]
                    empty = empty or inner[1]
                if not empty:
                    return parts, False
                continue
            if op in _REPEATS:
                inner = self.first(self.flatten(arg[2]))
                if inner is None:
                    return None
                parts += inner[0]
                if arg[0] >= 1 and not inner[1]:
                    return parts, False
                continue
            return None  # any character, a back reference...
        return parts, True


_CATEGORY_SYNTAX = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
}


def _class_syntax(items: list) -> str | None:
    """A character class's items as regex syntax (inside brackets), None if not readable."""
    parts = []
    for op, arg in items:
        if op is _sre.LITERAL:
            parts.append(re.escape(chr(arg)))
        elif op is _sre.RANGE:
            parts.append(f"{re.escape(chr(arg[0]))}-{re.escape(chr(arg[1]))}")
        elif op is _sre.CATEGORY and str(arg) in _CATEGORY_SYNTAX:
            parts.append(_CATEGORY_SYNTAX[str(arg)])
        else:
            return None
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class Way:
    """One way a regex can match: the regex whole, or one of its top-level alternatives."""

    items: list  # its parsed items (``re._parser``), flattened
    # Sets of needles, one of each of which a match holds, each with at most how many chunks
    # holding a letter a match spans from its start to the end of the needle (None: no bound).
    requirements: tuple[tuple[Requirement, int | None], ...]


class Regex:
    """A rule's regex, read (``ways`` is empty if it could not be)."""

    def __init__(self, pattern: re.Pattern[str], word_start: bool) -> None:
        self.ways: tuple[Way, ...] = ()
        self.parsed: list | None = None  # as ``re._parser`` reads it
        # Of the regex whole (see ``Way``).
        self.requirements: tuple[tuple[Requirement, int | None], ...] = ()
        self.first_characters: re.Pattern[str] | None = None
        if _sre_parser is None or pattern.flags & re.IGNORECASE:
            return
        try:
            parsed = _sre_parser.parse(pattern.pattern, pattern.flags)
        except (AttributeError, TypeError, re.error):  # pragma: no cover
            return
        self.parsed = list(parsed)
        reader = _Reader(parsed)
        items = reader.flatten(parsed)
        self.requirements = _with_reach(reader, items, word_start)
        # A match at a place is a match of one of the top-level alternatives there.
        if len(items) == 1 and items[0][0] is _sre.BRANCH:
            branches = [reader.flatten(branch) for branch in items[0][1][1]]
        else:
            branches = [items]
        self.ways = tuple(
            Way(branch, _with_reach(reader, branch, word_start)) for branch in branches
        )
        first = reader.first(items)
        if first is not None and not first[1] and first[0]:
            self.first_characters = re.compile("[" + "".join(first[0]) + "]")


def _with_reach(
    reader: _Reader, items: list, word_start: bool
) -> tuple[tuple[Requirement, int | None], ...]:
    infos = [reader.info(item) for item in items]
    found: dict[Requirement, int | None] = {}
    for requirement, index in reader.requirements(items, word_start, False):
        chunks = _chunks(infos[: index + 1])
        found.setdefault(requirement, None if chunks == math.inf else int(chunks))
    return tuple(found.items())


# How common a needle is in ordinary text, roughly: only used to choose, among the
# requirements a rule has, the one to look for first. Short words are common; these are the
# commonest.
def _words(spaced: str) -> frozenset[str]:
    return frozenset(spaced.split())


_COMMON = _words(
    "a an the to of and or in on at is are be was were it its this that these those i you your "
    "we he she they them his her my me as by for with from not no do does don if then so but all "
    "any can will may must should would could have has had what which who how when where there "
    "here one new set use used get also more other only some such each now just like"
)


def needle_cost(needle: Needle) -> float:
    text, before, after = needle
    if text in _COMMON:
        cost = 1_000.0
    else:
        cost = {1: 800.0, 2: 300.0, 3: 60.0, 4: 15.0, 5: 6.0}.get(len(text), 2.0)
    if not (before and after):
        cost *= 2  # found inside longer words too
    return cost


def requirement_cost(requirement: Iterable[Needle]) -> float:
    return sum(map(needle_cost, requirement))


# --- a text's words ---------------------------------------------------------------------------

# Every character that is not a letter or digit becomes a space (the ASCII ones by a translate
# table, at C speed; others by a regex, on the non-ASCII runs only); split at the spaces, the
# text gives its words (what ``[^\W_]+`` finds) and, between consecutive separators, empty
# strings, so that a word's place is the sum of the lengths before it.
_SEPARATORS = str.maketrans({code: " " for code in range(128) if not is_letter(chr(code))})
_NON_ASCII_RE = re.compile(r"([^\x00-\x7f]+)")
_NOT_A_LETTER_RE = re.compile(r"\W")
_WORD_RE = re.compile(r"[^\W_]+")
COMMON_WORDS = _COMMON


def ascii_runs(text: str) -> list[str]:
    """``text`` cut into its runs of ASCII and of other characters, ASCII first (it may be
    empty): what ``re.split(r"([^\x00-\x7f]+)", text)`` gives. A long text is read with numpy
    (the regex tests every character's class, several milliseconds on 400,000 characters)."""
    if len(text) < _SHORT_TEXT:
        return _NON_ASCII_RE.split(text)
    import numpy as np

    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    other = np.concatenate(([False], codes >= 0x80, [False]))
    edges = np.flatnonzero(other[1:] != other[:-1]).tolist()  # where runs of others begin, end
    pieces: list[str] = []
    position = 0
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        pieces += (text[position:start], text[start:end])
        position = end
    pieces.append(text[position:])
    return pieces


def _separated(text: str) -> str:
    """``text`` with each character that is not a letter or digit replaced by a space."""
    if text.isascii():
        return text.translate(_SEPARATORS)
    pieces = ascii_runs(text)  # ASCII, non-ASCII, ASCII, ...
    return "".join(
        piece.translate(_SEPARATORS) if index % 2 == 0 else _NOT_A_LETTER_RE.sub(" ", piece)
        for index, piece in enumerate(pieces)
    )


class Words:
    """The words of a text (maximal runs of letters and digits), found once, and where the
    needles asked for occur."""

    __slots__ = (
        "_ascii",
        "_chunks",
        "_counted",
        "_counts",
        "_ends",
        "_found",
        "_joined",
        "_parts",
        "_sorted",
        "text",
        "words",
    )

    def __init__(self, text: str) -> None:
        self.text = text
        self._ascii = text.isascii()
        self._parts = _separated(text).split(" ")  # words, and "" between separators
        self.words = set(self._parts)
        self.words.discard("")
        self._sorted: list[str] | None = None
        self._joined: str | None = None
        self._ends: list[int] | None = None
        self._found: dict[str, list[int]] = {}  # needle key -> where it occurs
        self._chunks: list[int] | None = None
        self._counts: Counter[str] | None = None
        self._counted: dict[str, int] = {}

    def reach_start(self, at: int, chunks: int) -> int:
        """``reach_start`` in this text."""
        if self._chunks is None:
            self._chunks = letter_chunk_starts(self.text)
        return reach_start(self._chunks, at, chunks)

    def words_from(self, prefix: str) -> Iterator[str]:
        """The distinct words starting with ``prefix``."""
        if self._sorted is None:
            self._sorted = sorted(self.words)
        words = self._sorted
        at = bisect_left(words, prefix)
        while at < len(words) and words[at].startswith(prefix):
            yield words[at]
            at += 1

    def starts_with(self, prefix: str) -> bool:
        """Whether some word starts with ``prefix``."""
        return next(self.words_from(prefix), None) is not None

    def holds(self, string: str) -> bool:
        """Whether ``string`` is anywhere in the text (one of letters: in one of its words)."""
        if self._ascii and not string.isascii():
            return False
        return string in (self.joined() if string.isalnum() else self.text)

    def joined(self) -> str:
        """The distinct words, one after the other with a space between."""
        if self._joined is None:
            self._joined = " ".join(self.words)
        return self._joined

    def find(self, needle_keys: Iterable[str]) -> None:
        """Find where the needles (``key``) occur, all at once: one pass over the words for
        those that are words or word starts (common words excepted), a search for the rest."""
        wanted: dict[str, list[str]] = {}  # word -> the keys of the needles it is
        for needle_key in needle_keys:
            kind, string = needle_key[0], needle_key[1:]
            if needle_key in self._found or kind == "~" or string in COMMON_WORDS:
                continue  # (those are looked for one by one, when asked for)
            self._found[needle_key] = []
            if kind == "=":
                if string in self.words:
                    wanted.setdefault(string, []).append(needle_key)
            else:
                for word in self.words_from(string):
                    wanted.setdefault(word, []).append(needle_key)
        if not wanted:
            return
        parts = self._parts
        if self._ends is None:
            self._ends = list(accumulate(map(len, parts)))
        ends = self._ends
        found = self._found
        for index in compress(range(len(parts)), map(wanted.__contains__, parts)):
            word = parts[index]
            start = ends[index] - len(word) + index
            for needle_key in wanted[word]:
                found[needle_key].append(start)
        for keys in wanted.values():
            for needle_key in keys:
                found[needle_key].sort()

    def occurrences(self, needle_key: str) -> list[int]:
        """Where the needle (``key``) occurs, in order."""
        found = self._found.get(needle_key)
        if found is None:
            if needle_key[0] == "~" or needle_key[1:] in COMMON_WORDS:
                found = occurrences(self.text, from_key(needle_key))
                self._found[needle_key] = found
            else:
                self.find((needle_key,))
                found = self._found[needle_key]
        return found

    def count(self, needle_key: str) -> int:
        """How often the needle (``key``) occurs (for a string that may be anywhere, a guess:
        only used to choose where to look)."""
        counted = self._counted.get(needle_key)
        if counted is not None:
            return counted
        found = self._found.get(needle_key)
        kind, string = needle_key[0], needle_key[1:]
        if found is not None:
            counted = len(found)
        elif kind == "~":  # how many distinct words hold it, times a few
            counted = 4 * self.joined().count(string) + 1
        else:
            if self._counts is None:
                self._counts = Counter(self._parts)
            if kind == "=":
                counted = self._counts.get(string, 0)
            else:
                counted = sum(self._counts[word] for word in self.words_from(string))
        self._counted[needle_key] = counted
        return counted


def key(needle: Needle) -> str:
    """A needle as one string (cheap to hash): "=word" whole, "<word" at a word start,
    "~word" anywhere (a needle known only to end a word is looked for anywhere)."""
    text, before, after = needle
    return ("=" if after else "<") + text if before else "~" + text


_END = ""  # marks, in a trie node, that a needle ends there (its key)


def from_key(needle_key: str) -> Needle:
    kind, text = needle_key[0], needle_key[1:]
    return text, kind != "~", kind == "="


class NeedleSet:
    """The needles of a set of rules, and which of them a text holds: whole words by a set
    intersection; word starts by walking each distinct word down a trie of them, or (when the
    text has many distinct words) by a binary search of the sorted words for each. Needles with
    letters outside ASCII are not looked for in an ASCII text."""

    def __init__(self, needles: Iterable[Needle]) -> None:
        needles = set(needles)
        self.whole = {n[0]: key(n) for n in needles if n[1] and n[2]}
        self._whole_words = frozenset(self.whole)
        starts = sorted({(n[0], key(n)) for n in needles if n[1] and not n[2]})
        self._starts = (tuple(s for s in starts if s[0].isascii()), tuple(starts))
        self._tries = tuple(_trie(found) for found in self._starts)

    def present(self, words: Words) -> frozenset[str]:
        """The keys of the whole-word and word-start needles ``words``'s text holds (a needle
        that may be anywhere is looked for when asked: ``Words.holds``)."""
        whole = self.whole
        found = [whole[word] for word in self._whole_words & words.words]
        which = 0 if words.text.isascii() else 1
        starts = self._starts[which]
        if len(words.words) * 4 < len(starts):
            trie = self._tries[which]
            for word in words.words:
                node = trie
                for char in word:
                    node = node.get(char)  # type: ignore[assignment]
                    if node is None:
                        break
                    if _END in node:
                        found.append(node[_END])
        else:
            found += [k for string, k in starts if words.starts_with(string)]
        return frozenset(found)


def _trie(needles: Iterable[tuple[str, str]]) -> dict:
    root: dict = {}
    for string, needle_key in needles:
        node = root
        for char in string:
            node = node.setdefault(char, {})
        node[_END] = needle_key
    return root


def compile_uncached(pattern: str) -> re.Pattern[str]:
    """``re.compile``, past ``re``'s cache (512 patterns): the thousands of patterns the rules'
    needles and first words make, compiled as texts first need them, would push out those of
    ``phonenumbers`` (the PII detector), which compiles them again each time they are gone.
    The caller keeps what it compiles."""
    if _sre_compiler is None:  # pragma: no cover
        return re.compile(pattern)
    return _sre_compiler.compile(pattern, 0)


_NEEDLE_RES: dict[Needle, re.Pattern[str]] = {}


def needle_pattern(needle: Needle) -> re.Pattern[str]:
    """Where ``needle`` (at a word start) occurs, compiled once (``occurrences``)."""
    found = _NEEDLE_RES.get(needle)
    if found is None:
        string, _, after = needle
        # The word start is checked after the whole string (a lookbehind over it and the
        # character before), so the engine finds the string as fast as ``str.find`` does.
        literal = re.escape(string)
        pattern = rf"{literal}(?<![^\W_]{literal})" + (r"(?![^\W_])" if after else "")
        found = _NEEDLE_RES[needle] = compile_uncached(pattern)
    return found


def occurrences(text: str, needle: Needle) -> list[int]:
    """Where ``needle`` starts in ``text``, its edges as it says."""
    string, before, after = needle
    if before:  # letters at a word start: occurrences cannot overlap
        return [match.start() for match in needle_pattern(needle).finditer(text)]
    found = []
    size = len(string)
    at = text.find(string)
    while at >= 0:
        if not after or at + size >= len(text) or not is_letter(text[at + size]):
            found.append(at)
        at = text.find(string, at + 1)
    return found


# --- chunks: how far back a match can start ------------------------------------------------

_LETTER, _SPACE = 1, 2
_classes: object = None  # per BMP code point: _LETTER | _SPACE bits (numpy, built once)


def _character_classes() -> object:
    global _classes
    if _classes is None:
        import numpy as np  # only texts a rule looks back in need it

        table = np.zeros(0x10000, dtype=np.uint8)
        for code in range(0x10000):
            char = chr(code)
            table[code] = (_LETTER if char.isalnum() else 0) | (_SPACE if char.isspace() else 0)
        _classes = table
    return _classes


def warm_up() -> None:
    """Build the table of character classes now (numpy's import and a pass over the BMP, about
    0.25 s of CPU), not in the screen of the first long text a rule looks back in."""
    _character_classes()


# A chunk holding a letter or digit, matched from its start (a run of punctuation before the
# letter is read once).
_LETTER_CHUNK_RE = re.compile(r"(?<!\S)(?:[^\s\w]|_)*+[^\W_]")
_SHORT_TEXT = 20_000  # below this, the chunks are found by a regex; above, with numpy


def letter_chunk_starts(text: str) -> list[int]:
    """Where each whitespace-separated chunk holding a letter or digit starts, in order."""
    if len(text) < _SHORT_TEXT:
        return [match.start() for match in _LETTER_CHUNK_RE.finditer(text)]
    import numpy as np

    table = _character_classes()
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if len(codes) and int(codes.max()) >= 0x10000:  # beyond the BMP: classes one by one
        classes = np.zeros(len(codes), dtype=np.uint8)
        low = codes < 0x10000
        classes[low] = table[codes[low]]  # type: ignore[index]
        for code in np.unique(codes[~low]).tolist():
            char = chr(code)
            bits = (_LETTER if char.isalnum() else 0) | (_SPACE if char.isspace() else 0)
            classes[codes == code] = bits
    else:
        classes = table[codes]  # type: ignore[index]
    space = (classes & _SPACE).astype(bool)
    letters = np.concatenate(([0], np.cumsum(classes & _LETTER, dtype=np.int64)))
    solid = ~space
    begins = solid.copy()
    begins[1:] &= space[:-1]
    ends = solid.copy()
    ends[:-1] &= space[1:]
    starts = np.flatnonzero(begins)
    stops = np.flatnonzero(ends) + 1
    return starts[letters[stops] > letters[starts]].tolist()


def reach_start(starts: list[int], at: int, chunks: int) -> int:
    """The earliest start of a match that holds a letter at ``at`` and spans at most ``chunks``
    (at least 1) whitespace-separated chunks holding a letter or digit (``starts``: where
    they start, ``letter_chunk_starts``): the start of the ``chunks``-th such chunk before the
    one holding ``at``, or 0 if there are fewer."""
    holding = bisect_right(starts, at) - 1  # the chunk holding ``at`` (it holds a letter)
    return starts[holding - chunks] if holding >= chunks else 0
