"""Word lists for the name and address heuristics, loaded once on first use.

The files under ``data/`` say where they come from in their first lines: US Census 1990 first
names and surnames (public domain) and SCOWL's English word list (permissive licence), split
into lower-case words and proper nouns. Country
names come from ``phonenumbers``' own locale data, so no list is kept for them here.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"


def _read_list(name: str) -> frozenset[str]:
    with (DATA_DIR / name).open(encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip() and not line.startswith("#"))


@cache
def first_names() -> frozenset[str]:
    return _read_list("first_names.txt")


@cache
def surnames() -> frozenset[str]:
    return _read_list("surnames.txt")


@cache
def english_words() -> frozenset[str]:
    """Lower-case English words; a capitalised word that is one is weak evidence of a name."""
    return _read_list("english_words.txt")


@cache
def proper_nouns() -> frozenset[str]:
    """Capitalised words that are places, peoples, languages or brands far more often than
    someone's name ("English", "Texas", "Django")."""
    return _read_list("proper_nouns.txt")


@cache
def public_figures() -> tuple[frozenset[str], frozenset[str]]:
    """Full names of public and historical figures, and surnames that alone name one."""
    full: set[str] = set()
    alone: set[str] = set()
    target = full
    with (DATA_DIR / "public_figures.txt").open(encoding="utf-8") as f:
        for line in f:
            name = line.strip()
            if name == "# surnames":
                target = alone
            elif name and not name.startswith("#"):
                target.add(name)
    return frozenset(full), frozenset(alone)


@cache
def country_names() -> frozenset[str]:
    """English country and territory names, lower-cased."""
    from phonenumbers.geodata.locale import LOCALE_DATA

    names = {names["aa"].lower() for names in LOCALE_DATA.values() if "aa" in names}
    return frozenset(names)


def _char_class(predicate) -> str:
    """A regex character class body for the BMP characters that satisfy ``predicate``, as
    ranges (the stdlib ``re`` has no Unicode property classes)."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF or not predicate(chr(code)):
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    parts = []
    for low, high in ranges:
        lo = "\\" + chr(low) if chr(low) in "\\]^-[" else chr(low)
        hi = "\\" + chr(high) if chr(high) in "\\]^-[" else chr(high)
        parts.append(lo if low == high else f"{lo}-{hi}")
    return "".join(parts)


# Upper-case letters, and letters that may follow them inside a word (lower-case or caseless).
UPPER = _char_class(lambda c: c.isalpha() and c.isupper())
LOWER = _char_class(lambda c: c.isalpha() and not c.isupper())
