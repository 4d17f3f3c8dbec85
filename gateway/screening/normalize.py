"""Normalisation before injection screening: undo the cheap tricks that hide an instruction.

``normalize`` turns a text into the *folded view* the detectors read: invisible and bidi
characters removed, Unicode tag characters (invisible ASCII) decoded, NFKC (fullwidth, maths
letters, circled letters), lower case, Latin diacritics stripped, homoglyphs folded inside
mixed-script words, leetspeak folded inside words that mix letters and digits, and s p a c e d
letters joined. It also notes which tricks it saw, as short codes.

``encoded_payloads`` finds obvious base64, hex, rot13 and reversed payloads and decodes them,
bounded in count and size, so the detectors can read what they say.

The folded view is only ever read by detectors; it is never sent anywhere. Every regex here is
either free of nested quantifiers or uses possessive quantifiers, so hostile input (up to about
a megabyte) costs linear time.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gateway.screening.prefilter import ascii_runs

# Characters that render as nothing, or reorder text, and have no place inside a word.
_INVISIBLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u200b\u200c\u200d"
    "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067"
    "\u2068\u2069\u206a\u206b\u206c\u206d\u206e\u206f\u3164\ufeff\uffa0"
)
_VARIATION_SELECTORS = "".join(chr(c) for c in range(0xFE00, 0xFE10))
_INVISIBLE_RE = re.compile(f"[{_INVISIBLE}{_VARIATION_SELECTORS}\U000e0100-\U000e01ef]+")
# A zero-width character between two Latin letters splits a word to dodge a filter. Scripts
# that use ZWJ/ZWNJ/ZWSP legitimately (Persian, Indic, Khmer) do not put them between ASCII.
_INVISIBLE_IN_WORD_RE = re.compile(f"[A-Za-z][{_INVISIBLE}{_VARIATION_SELECTORS}]+[A-Za-z]")
# Unicode "tag" characters mirror ASCII invisibly (U+E0020..U+E007E): decode, don't drop.
_TAG_RE = re.compile("[\U000e0000-\U000e007f]")
_TAG_TABLE = {
    cp: (cp - 0xE0000 if 0xE0020 <= cp <= 0xE007E else None) for cp in range(0xE0000, 0xE0080)
}
_COMPAT_LETTERS_RE = re.compile("[\uff21-\uff3a\uff41-\uff5a\U0001d400-\U0001d7ff\u24b6-\u24e9]")


def _build_latin_table() -> dict[int, str]:
    """Latin letters with diacritics -> base letters, plus letter-likes NFKC leaves alone."""
    table: dict[int, str] = {}
    for cp in range(0xC0, 0x250):
        char = chr(cp)
        base = "".join(
            c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
        )
        if base != char and base.isascii() and base.isalpha():
            table[cp] = base.lower()
    table.update(
        {
            0xDF: "ss",
            0xE6: "ae",
            0xF8: "o",
            0x153: "oe",
            0x131: "i",
            0x142: "l",
            0x111: "d",
            0xF0: "d",
            0x127: "h",
            0x261: "g",
        }
    )
    small_caps = "ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘꞯʀꜱᴛᴜᴠᴡxʏᴢ"
    for letter, char in zip("abcdefghijklmnopqrstuvwxyz", small_caps, strict=True):
        if char != "x":
            table[ord(char)] = letter
    # Negative squared, negative circled and regional-indicator letters survive NFKC.
    for start in (0x1F170, 0x1F150, 0x1F1E6):
        for offset in range(26):
            table[start + offset] = chr(ord("a") + offset)
    # Combining marks left behind after NFKC (a letter followed by U+0308 and so on).
    for cp in range(0x300, 0x370):
        table[cp] = ""
    return table


_LATIN_TABLE = _build_latin_table()

# Cyrillic, Greek and Armenian letters that look like Latin ones. Folded only inside a word
# that also has Latin letters, so Russian or Greek text keeps its meaning.
_HOMOGLYPHS = {
    **dict.fromkeys("аɑα", "a"),
    **dict.fromkeys("АΑ", "A"),
    "в": "b",
    **dict.fromkeys("ВΒ", "B"),
    **dict.fromkeys("сϲ", "c"),
    **dict.fromkeys("СϹ", "C"),
    "ԁ": "d",
    **dict.fromkeys("еє", "e"),
    **dict.fromkeys("ЕΕ", "E"),
    "ɡ": "g",
    "һ": "h",
    **dict.fromkeys("НΗ", "H"),
    **dict.fromkeys("іιӏ", "i"),
    **dict.fromkeys("ІΙӀ", "I"),
    "ј": "j",
    "Ј": "J",
    **dict.fromkeys("кκ", "k"),
    **dict.fromkeys("КΚ", "K"),
    "м": "m",
    **dict.fromkeys("МΜ", "M"),
    **dict.fromkeys("ոп", "n"),
    "Ν": "N",
    **dict.fromkeys("оοօ", "o"),
    **dict.fromkeys("ОΟՕ", "O"),
    **dict.fromkeys("рρ", "p"),
    **dict.fromkeys("РΡ", "P"),
    "ԛ": "q",
    "г": "r",
    **dict.fromkeys("ѕ", "s"),
    "Ѕ": "S",
    **dict.fromkeys("тτ", "t"),
    **dict.fromkeys("ТΤ", "T"),
    **dict.fromkeys("սυ", "u"),
    **dict.fromkeys("νѵ", "v"),
    **dict.fromkeys("ԝω", "w"),
    **dict.fromkeys("хχ", "x"),
    **dict.fromkeys("ХΧ", "X"),
    **dict.fromkeys("уγ", "y"),
    **dict.fromkeys("УΥ", "Y"),
    "Ζ": "Z",
}
_HOMOGLYPH_TABLE = str.maketrans(_HOMOGLYPHS)
_HOMOGLYPH_RE = re.compile("[" + "".join(_HOMOGLYPHS) + "]")
_WORD_RE = re.compile(r"\w++")
_LATIN_LETTER_RE = re.compile("[A-Za-z\u00c0-\u024f]")

_LEET_HINT_RE = re.compile(r"[a-z][013457@$]|[013457@$][a-z]")
_LEET_TOKEN_RE = re.compile(r"[a-z0-9@$]++")
_LEET_TABLE = str.maketrans("013457@$", "oieastas")
_LEET_INSIDE_RE = re.compile(r"[a-z][013457@$]++[a-z]")

# "i g n o r e  a l l" -> "ignore all". Bounded, so backtracking on a hostile run is too.
_SPACED_RE = re.compile(r"(?<!\w)(?:[a-z][ .\-_*|]){2,400}[a-z](?!\w)")
_SPACED_SEPARATORS_RE = re.compile(r"(?<=[a-z])[ .\-_*|](?=[a-z])")


@dataclass(frozen=True, slots=True)
class Normalized:
    folded: str  # the text the detectors read
    decoding_source: str  # NFKC text with invisibles removed, case kept (for base64)
    tricks: tuple[str, ...]  # which obfuscations were seen: "zero_width", "homoglyph", ...


def _non_ascii(text: str) -> str:
    """The non-ASCII characters of ``text``, in order: a character class of non-ASCII
    characters is searched for there (a few characters in an English text, not all of it)."""
    return "".join(ascii_runs(text)[1::2])


def _by_runs(text: str, ascii_run: Callable[[str], str], other_run: Callable[[str], str]) -> str:
    """``text`` with its ASCII runs and its other runs each changed as the functions say: a
    translate table on the few non-ASCII runs of a mostly English text rather than on all of
    it (``str.translate`` is fast only on ASCII text)."""
    pieces = ascii_runs(text)  # ASCII, non-ASCII, ASCII, ...
    return "".join(
        ascii_run(piece) if index % 2 == 0 else other_run(piece)
        for index, piece in enumerate(pieces)
    )


def _fold_homoglyph_word(match: re.Match[str]) -> str:
    word = match.group()
    if word.isascii() or not _HOMOGLYPH_RE.search(word):
        return word
    folded = word.translate(_HOMOGLYPH_TABLE)
    # Only a word that also holds real Latin letters is an obfuscated Latin word.
    if folded != word and _LATIN_LETTER_RE.search(word):
        return folded
    return word


def _fold_leet_word(match: re.Match[str]) -> str:
    return _fold_leet_token(match.group())


def _fold_leet_token(word: str) -> str:
    # Leetspeak has a substitute between two letters and at least two substitutes in all
    # ("1gn0re", "p4ssw0rd"); "mp3", "covid19", "gpt4o" or "v1beta" stay as they are.
    if word.isalpha() or not _LEET_INSIDE_RE.search(word):
        return word
    folded = word.translate(_LEET_TABLE)
    substitutes = sum(a != b for a, b in zip(word, folded, strict=True))
    letters = len(word) - substitutes
    return folded if substitutes >= 2 and letters >= 3 and folded.isalpha() else word


# A text written in leetspeak throughout ("y0u 4r3 n0w fr33") also swaps single letters
# ("y0ur", "4nd"), which the careful fold above leaves alone; once several words of a text
# are clearly leet, every word that mixes letters and substitutes is folded.
LEET_WORDS = 3
_LEET_MIXED_RE = re.compile(
    r"(?<![a-z0-9@$])(?=[a-z0-9@$]*[a-z])(?=[a-z0-9@$]*[013457@$])"
    r"[a-z0-9@$]{2,30}(?![a-z0-9@$])"
)


_LEET_TABLE_L = str.maketrans("013457@$", "oleastas")
# "1" stands for "i" or for "l"; for these words it is "l" ("ru1es", "fi1ters", "a11").
_L_WORDS = frozenset(
    [
        "rules",
        "rule",
        "all",
        "filter",
        "filters",
        "please",
        "tell",
        "tool",
        "tools",
        "unlock",
        "roleplay",
        "role",
        "help",
        "policy",
        "policies",
        "only",
        "below",
        "follow",
        "fully",
        "list",
        "leak",
        "real",
        "legal",
        "illegal",
        "model",
        "let",
        "limits",
        "limit",
        "lol",
        "hello",
        "self",
        "will",
        "kill",
        "still",
        "full",
        "guidelines",
    ]
)


def _fold_leet_any(match: re.Match[str]) -> str:
    word = match.group()
    folded = word.translate(_LEET_TABLE)
    if "1" in word and (as_l := word.translate(_LEET_TABLE_L)) in _L_WORDS:
        return as_l
    return folded if folded.isalpha() else word


# Where ``_fold_leet_word`` can change a word: a run of substitutes between two letters. Found
# by the substitutes (rare in prose, so the engine skips to them), not word by word.
_LEET_SUBSTITUTES_RE = re.compile(r"[013457@$](?<=[a-z].)[013457@$]*+(?=[a-z])")
_LEET_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789@$")


def _fold_leet_words(folded: str) -> str:
    """``_LEET_TOKEN_RE.sub(_fold_leet_word, folded)``, calling it only on the words it can
    change."""
    pieces: list[str] = []
    last = 0
    while (match := _LEET_SUBSTITUTES_RE.search(folded, last)) is not None:
        start = match.start()
        while start > last and folded[start - 1] in _LEET_TOKEN_CHARS:
            start -= 1
        end = _LEET_TOKEN_RE.match(folded, match.start()).end()  # type: ignore[union-attr]
        pieces += (folded[last:start], _fold_leet_token(folded[start:end]))
        last = end
    if not pieces:
        return folded
    pieces.append(folded[last:])
    return "".join(pieces)


# Letters spaced out end in a separator, a letter, a separator and a letter that is not
# followed by a word character: a cheap test (it starts with a separator), true of few texts.
_SPACED_HINT_RE = re.compile(r"[ .\-_*|][a-z][ .\-_*|][a-z](?!\w)")
# ... and start, after a character that is not a word character, with three letters spaced out.
_SPACED_START_RE = re.compile(r"\W[a-z][ .\-_*|][a-z][ .\-_*|][a-z]")


def _has_spaced_letters(folded: str) -> bool:
    """Whether ``_SPACED_RE`` matches somewhere in ``folded``: tried only where a match can
    start (at the start, or after a character that is not a word character, with three spaced
    letters), rather than at every character."""
    if not _SPACED_HINT_RE.search(folded):
        return False
    if _SPACED_RE.match(folded):
        return True
    # A start inside an earlier candidate (``finditer`` does not overlap) begins a longer run
    # of spaced letters that the earlier one already tried.
    return any(
        _SPACED_RE.match(folded, candidate.start() + 1)
        for candidate in _SPACED_START_RE.finditer(folded)
    )


def _join_spaced(match: re.Match[str]) -> str:
    return _SPACED_SEPARATORS_RE.sub("", match.group())


def normalize(text: str) -> Normalized:
    """The folded view of a text, and the obfuscation tricks seen on the way."""
    tricks: list[str] = []
    others = ""  # the text's non-ASCII characters: what the classes below are made of
    if not text.isascii():
        others = _non_ascii(text)
        if _TAG_RE.search(others):
            tricks.append("tag_characters")
            text = text.translate(_TAG_TABLE)
            others = _non_ascii(text)
        if _INVISIBLE_RE.search(others):
            if _INVISIBLE_IN_WORD_RE.search(text):
                tricks.append("zero_width")
            text = _INVISIBLE_RE.sub("", text)
        if _COMPAT_LETTERS_RE.search(others):
            tricks.append("compat_letters")
        if not unicodedata.is_normalized("NFKC", text):
            text = unicodedata.normalize("NFKC", text)
            others = _non_ascii(text)
    decoding_source = text
    if not text.isascii() and _HOMOGLYPH_RE.search(others):
        folded_words = _WORD_RE.sub(_fold_homoglyph_word, text)
        if folded_words != text:
            tricks.append("homoglyph")
            text = folded_words
    folded = text.lower()
    if not folded.isascii():
        # Only non-ASCII characters are in the table: ASCII runs are kept as they are.
        folded = _by_runs(folded, str, lambda run: run.translate(_LATIN_TABLE))
    if _LEET_HINT_RE.search(folded):
        head = folded[:2_000]  # density over the same stretch of text
        mixed = len(_LEET_MIXED_RE.findall(head))
        if mixed >= LEET_WORDS and mixed * 4 >= len(head.split()):
            folded = _LEET_MIXED_RE.sub(_fold_leet_any, folded)
            tricks += ["leetspeak", "leetspeak_dense"]
        else:
            leet = _fold_leet_words(folded)
            if leet != folded:
                tricks.append("leetspeak")
                folded = leet
    if _has_spaced_letters(folded):
        joined = _SPACED_RE.sub(_join_spaced, folded)
        if len(folded) - len(joined) >= 6:
            tricks.append("spaced_letters")
        folded = joined
    return Normalized(folded=folded, decoding_source=decoding_source, tricks=tuple(tricks))


# --- encoded payloads -------------------------------------------------------------------------

MAX_PAYLOADS = 8
MAX_CANDIDATES = 32  # decode attempts per kind and text; a failed attempt costs microseconds
MAX_PAYLOAD_CHARS = 64_000

_BASE64_RE = re.compile(r"(?:[A-Za-z0-9+/_\-]{16,}+={0,2}+(?:\r?\n)?+)++")
_HEX_RE = re.compile(r"(?:[0-9A-Fa-f]{2}[: ]?+){12,}+")
_SPACED_HEX_RE = re.compile(r"(?:[0-9A-Fa-f]{2} ){11}[0-9A-Fa-f]{2}")
_WHITESPACE_RE = re.compile(r"\s+")
# rot13 of common English words (the, and, you, your, ignore, instructions, previous, system,
# prompt, all, with, this, that, for, what, are, not). Three of them mark a rot13 text.
_ROT13_MARKERS = frozenset(
    {
        "gur",
        "naq",
        "lbh",
        "lbhe",
        "vtaber",
        "vafgehpgvbaf",
        "cerivbhf",
        "flfgrz",
        "cebzcg",
        "nyy",
        "jvgu",
        "guvf",
        "gung",
        "sbe",
        "jung",
        "ner",
        "abg",
        "erirny",
        "uvqqra",
        "cnffjbeq",
        "ehyrf",
        "sbetrg",
        "frperg",
        "cevag",
    }
)
_REVERSED_MARKERS = ("snoitcurtsni", "erongi", "tpmorp", "suoiverp", "dragersid")
_PRINTABLE_RE = re.compile(r"[\x20-\x7e\t\n\r\u00a0-\uffff]")
_LETTER_RE = re.compile(r"[^\W\d_]")


def _plausible_text(decoded: str) -> bool:
    """Decoded bytes that read as text: mostly printable, with letters and some spaces."""
    if len(decoded) < 8:
        return False
    printable = len(_PRINTABLE_RE.findall(decoded))
    letters = len(_LETTER_RE.findall(decoded))
    return printable >= 0.95 * len(decoded) and letters >= 0.5 * len(decoded) and " " in decoded


def _utf8_prefix(raw: bytes) -> str | None:
    """The text of at most ``MAX_PAYLOAD_CHARS`` bytes of ``raw``, cut at a character boundary;
    None if they are not UTF-8."""
    raw = raw[:MAX_PAYLOAD_CHARS]
    for cut in range(4):  # a cut may split a character of up to four bytes
        try:
            return raw[: len(raw) - cut].decode("utf-8")
        except UnicodeDecodeError:
            if len(raw) < MAX_PAYLOAD_CHARS:
                return None  # not cut: simply not UTF-8
    return None


def _decode_base64(candidate: str) -> str | None:
    compact = _WHITESPACE_RE.sub("", candidate).rstrip("=")
    # A long plain word or identifier is not base64: real payloads mix case or digits.
    if compact.isalpha() and (compact.islower() or compact.isupper()):
        return None
    compact = compact[: MAX_PAYLOAD_CHARS // 3 * 4]  # whole 4-character groups
    if len(compact) % 4 == 1:
        compact = compact[:-1]
    compact += "=" * (-len(compact) % 4)
    altchars = b"-_" if ("-" in compact or "_" in compact) else None
    try:
        raw = base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None
    decoded = _utf8_prefix(raw)
    return decoded if decoded and _plausible_text(decoded) else None


def _decode_hex(candidate: str) -> str | None:
    compact = candidate.replace(":", "").replace(" ", "")[: MAX_PAYLOAD_CHARS * 2]
    compact = compact[: len(compact) // 2 * 2]
    try:
        raw = bytes.fromhex(compact)
    except ValueError:
        return None
    decoded = _utf8_prefix(raw)
    return decoded if decoded and _plausible_text(decoded) else None


# (candidates, kind, decoder returning the decoded text or None)
_Decoder = tuple[
    Callable[[str, list[str] | None], Iterator[re.Match[str]]], str, Callable[[str], str | None]
]


# For an ASCII text, the runs the payload patterns need are found by a translate and a
# ``str.find`` (C speed), rather than by trying the patterns at every character.
_RUN_16 = "x" * 16
_NOT_SPACE_TABLE = str.maketrans({c: " " if chr(c).isspace() else "x" for c in range(128)})
_BASE64_TABLE = str.maketrans(
    {c: "x" if re.fullmatch(r"[A-Za-z0-9+/_\-]", chr(c)) else " " for c in range(128)}
)
_HEX_TABLE = str.maketrans(
    {c: "x" if re.fullmatch(r"[0-9A-Fa-f]", chr(c)) else "s" if chr(c) in ": " else " "
     for c in range(128)}
)  # fmt: skip
# Twelve pairs of hex digits, each followed by at most one separator, in the marked text.
_MARKED_HEX_RE = re.compile(r"(?:xxs?){12}")


_NOT_SPACE_RE = re.compile(r"\S")


def _marked(source: str, table: dict[int, str], pieces: list[str] | None) -> str:
    """``source`` with each ASCII character as its ``table`` marks it, and each other one a
    space (no non-ASCII character is marked), or with ``_NOT_SPACE_TABLE``: "x" but for
    whitespace. ``pieces``: ``ascii_runs(source)``, for a non-ASCII source."""
    if pieces is None:
        return source.translate(table)
    if table is _NOT_SPACE_TABLE:
        other: Callable[[str], str] = lambda run: _NOT_SPACE_RE.sub("x", run)  # noqa: E731
    else:
        other = lambda run: " " * len(run)  # noqa: E731
    return "".join(
        piece.translate(table) if index % 2 == 0 else other(piece)
        for index, piece in enumerate(pieces)
    )


def _has_long_token(source: str, pieces: list[str] | None = None) -> bool:
    """``max(map(len, source.split()), default=0) >= 16``."""
    if pieces is None and not source.isascii():
        pieces = ascii_runs(source)
    return _RUN_16 in _marked(source, _NOT_SPACE_TABLE, pieces)


def _base64_candidates(source: str, pieces: list[str] | None = None) -> Iterator[re.Match[str]]:
    """``_BASE64_RE.finditer(source)``: a match starts where a run of 16 or more of its
    characters does (and takes the whole run), and only those places are tried."""
    if pieces is None and not source.isascii():
        pieces = ascii_runs(source)
    runs = _marked(source, _BASE64_TABLE, pieces)
    position = 0
    while (start := runs.find(_RUN_16, position)) >= 0:
        match = _BASE64_RE.match(source, start)
        if match is None:  # pragma: no cover (a run of 16 always matches)
            position = start + 1
            continue
        yield match
        position = match.end()


def _hex_candidates(source: str, pieces: list[str] | None = None) -> Iterator[re.Match[str]]:
    """``_HEX_RE.finditer(source)``; a match starts with twelve pairs of hex digits, each
    followed by at most one colon or space, and a text without them has none."""
    if pieces is None and not source.isascii():
        pieces = ascii_runs(source)
    if not _MARKED_HEX_RE.search(_marked(source, _HEX_TABLE, pieces)):
        return
    yield from _HEX_RE.finditer(source)


def encoded_payloads(
    normalized: Normalized, words: frozenset[str] | set[str] | None = None
) -> list[tuple[str, str]]:
    """The decoded payloads in a text, as (kind, decoded text): kind is base64, hex, rot13 or
    reversed. At most ``MAX_PAYLOADS``, each at most ``MAX_PAYLOAD_CHARS`` long. ``words``: the
    words of the folded text (``prefilter.Words.words``), if they were listed already."""
    payloads: list[tuple[str, str]] = []
    source = normalized.decoding_source
    # Base64 and hex payloads are long unbroken runs; most texts have none, and a split is
    # much cheaper than the regexes.
    pieces = None if source.isascii() else ascii_runs(source)  # read once for the three
    decoders: tuple[_Decoder, ...]
    if not _has_long_token(source, pieces) and not _SPACED_HEX_RE.search(source):
        decoders = ()
    else:
        decoders = (
            (_base64_candidates, "base64", _decode_base64),
            (_hex_candidates, "hex", _decode_hex),
        )
    for candidates, kind, decode in decoders:
        for tried, match in enumerate(candidates(source, pieces)):
            if tried >= MAX_CANDIDATES or len(payloads) >= MAX_PAYLOADS:
                break
            if decoded := decode(match.group()):
                payloads.append((kind, decoded))
    folded = normalized.folded
    head = folded[:MAX_PAYLOAD_CHARS]
    # A marker found by the split is a word of the text: with fewer than three there, none.
    if (words is None or len(_ROT13_MARKERS.intersection(words)) >= 3) and len(
        _ROT13_MARKERS.intersection(head.split())
    ) >= 3:
        payloads.append(("rot13", codecs.encode(head, "rot13")))
    if any(marker in head for marker in _REVERSED_MARKERS):
        payloads.append(("reversed", head[::-1]))
    return payloads[:MAX_PAYLOADS]
