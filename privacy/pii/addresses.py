"""Street addresses, found offline without a model.

Anchors:

- a house number before capitalised words ending in a street type ("24 Clarke Avenue");
- a street name before a house number: a word ending in a street type ("Koskikatu 25",
  "Wiesenstrasse 31"), a street type word ("Grote Baan 477", "Eötvös út 10"), or a street type
  word leading the name ("Rue de Piétrain 371", "ul. Więckowskiego Stefana 28");
- units, post-office and military boxes ("Apt. 595", "PSC 4457, Box 7534", "DPO AA 32754");
- text after "my address is" and similar phrases, when it holds a number.

From an anchor the span grows over a building number before it and over the parts after it
(on the same line after a comma, or on the next lines) that look like the rest of a postal
address: unit, city, state, postcode, country. A whole postal block is one entity.

Patterns start at a digit (or a literal) so the regex engine can skip ahead fast; the checks
that need word lists are done in Python on the few candidates.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .entities import STREET_ADDRESS, Entity
from .gazetteer import LOWER, UPPER, english_words
from .recognizers import _DATE_RE, has_digit, has_non_latin, keyword_starts


# Street types written as a separate word after the name ("Clarke Avenue", "Grote Baan").
def _words(spaced: str) -> frozenset[str]:
    return frozenset(spaced.split())


_TYPE_AFTER = _words(
    """street st avenue ave av road rd boulevard blvd lane ln drive dr court ct place pl square
    sq terrace ter way parkway pkwy highway hwy circle cir trail trl crescent cres close grove
    gardens row mews walk hill park plaza alley expressway freeway pike loop path ridge heights
    parade esplanade quay wharf causeway crossing cove creek glen hollow landing meadows
    estates manor oval pass turnpike vista route rte
    straße strasse str weg gasse platz allee ring damm ufer chaussee
    straat laan baan plein dreef kade gracht singel steenweg steeg
    vej gade gata gatan vägen väg veien gate allé plads torv
    katu tie kuja polku
    utca út tér körút sor ulice náměstí třída ulica aleja tänav maantee puiestee
    """
)
# Street types that lead the name ("Rue de Piétrain", "Via Raffaele Conforti").
_TYPE_BEFORE = _words(
    """rue avenue av avda boulevard bd bld chemin allée impasse place quai route via viale
    vicolo piazza piazzale corso largo strada calle avenida paseo plaza camino camiño carrer
    carretera ctra ronda travesía rúa rua travessa praça estrada ul ulica al aleja plac pl
    odos leoforos calea bulevardul str ulitsa prospekt c/"""
)
# Endings of one-word street names ("Koskikatu", "Hammarvägen", "Brixtonlaan").
_TYPE_SUFFIXES = tuple(
    _words(
        """straße strasse weg gasse platz allee ring damm ufer laan straat gracht plein dreef
    baan kade steeg singel vägen gatan gata väg gränd vej gade veien gate katu tie kuja polku
    kaari rinne utca"""
    )
)
_PARTICLES = _words("de del della la di da des du do dos das van der den het y e am an im sur")
_UNIT_WORDS = (
    r"(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Fl\.?|Floor|Room|Rm\.?|Bldg\.?"
    r"|[Aa]pto\.?|[Dd]e?pto\.?|[Pp]iso|[Aa]ndar|[Bb]loco|[Éé]tage|[Ww]ohnung)"
)

_CAP_WORD = rf"[{UPPER}][{UPPER}{LOWER}'’.\-]{{0,30}}"


def _either_case(word: str) -> str:
    first = word[0]
    head = f"[{first.upper()}{first.lower()}]" if first.upper() != first.lower() else first
    return head + re.escape(word[1:])


_TYPE_AFTER_ALTERNATION = "|".join(
    _either_case(w) + (r"\.?" if len(w) <= 4 else "")
    for w in sorted(_TYPE_AFTER, key=len, reverse=True)
)
# "<number> <up to four capitalised words> <street type>": "24 Clarke Avenue",
# "4589 40th Street", "320 St Marys Rd".
_NUMBER_FIRST_RE = re.compile(
    # "24", "221B", "5/22" (unit 5 at number 22, as Australians write it)
    r"[0-9](?<![\w.,\-/:#].)[0-9]{0,5}[A-Za-z]?(?:/[0-9]{1,5}[A-Za-z]?)?(?: [0-9]{1,5})? "
    rf"(?:(?:{_CAP_WORD}|[0-9]{{1,3}}(?:st|nd|rd|th)) ){{0,4}}"
    rf"(?:{_TYPE_AFTER_ALTERNATION})(?![\w'’])"
)
# A house number right after a word: "Koskikatu 25", "Rue de Piétrain 371", "Baan, 477".
_NUMBER_AFTER_RE = re.compile(
    r"[0-9](?:(?<=[^\W\d_] [0-9])|(?<=[^\W\d_], [0-9])|(?<=[^\W\d_]\. [0-9]))"
    r"[0-9]{0,4}(?:[A-Za-z](?![\w]))?(?:/[0-9]{1,4}[A-Za-z]?)?(?![\w\-/]|[.,:][0-9])"
)
# Literal-first patterns (the engine skips fast to their first letters); the character before
# a match is checked in Python.
_BOX_RE = re.compile(
    r"(?:(?:PSC|CMR|Unit) [0-9]{1,6},? Box [0-9]{1,6}(?:\s{1,3}[AFD]PO A[AEP] [0-9]{5})?"
    r"|[AFD]PO A[AEP] [0-9]{5}"
    r"|(?:P\.? ?O\.? Box|PO Box|Post Office Box) [0-9]{1,8})(?!\w)",
)
_UNIT_RE = re.compile(
    r"(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|Room|Rm|Bldg|Plot|Sector|Door No"
    r"|House No|H\.No)\.? ?#?[0-9]{1,6}[A-Za-z]?(?!\w)"
)
# Stems of the cue phrases below, found with ``str.find`` (one pass over the text each); the
# phrase itself is then matched at each.
_CUE_KEYWORDS = ("addr", "liv", "reside", "move", "moving", "send", "sent", "ship", "deliver",
                 "located", "corner", "mail", "return")  # fmt: skip
_CUE_RE = re.compile(
    r"(?:(?:my |the |new |postal |mailing |home |street )?address"
    r"(?: is| to| with|(?: [a-z]{1,12}){0,4}:)?"
    r"|addr\.?:|live at|lives at|living at|reside at|moved to|move to|moving to"
    r"|send (?:it |this |them |the \w+ )?to|sent to|ship (?:it |them )?to|shipped to"
    r"|deliver (?:it |them )?to|delivered to|located at|is at|corner of|mail (?:it )?to"
    r"|return (?:it )?to)"
    r"[ \t:]{0,8}\n?[ \t]{0,8}(?=[\w])",
    re.IGNORECASE,
)
# After an address: a unit, a city, a state and postcode, a country, on the same line after a
# comma or on the next lines, each part short. A bare number must not run on into another
# (that is a phone number on the next line).
_TAIL_PART_RE = re.compile(
    r"(?:[ \t]*,[ \t]*\n?|[ \t]*\n(?:[ \t]*\n)?[ \t]*(?:>|\?\?\?)?[ \t]*,?[ \t]*"
    # a space before a number or a state; or a city after a postcode ("33000 Bordeaux")
    rf"|[ \t]+(?=[0-9]|[A-Z]{{2}}\b)|(?<=[0-9][0-9][0-9][0-9])[ \t]+(?=[{UPPER}][{LOWER}]))"
    rf"(?:{_UNIT_WORDS} ?#?[0-9]{{1,6}}[A-Za-z]?"
    rf"|[{UPPER}][{UPPER}{LOWER}'’.\-]{{1,30}}"
    rf"(?: (?:{'|'.join(sorted(_PARTICLES))}|[{UPPER}][{UPPER}{LOWER}'’.\-]{{0,30}})){{0,3}}"
    # a state, a UK postcode ("OX2 6DP"), a postcode, a Canadian postcode ("H2X 3K8")
    r"(?: [A-Z]{1,2}[0-9][A-Z0-9]? [0-9][A-Z]{2}| [A-Z]{1,3})?"
    r"(?: [0-9]{3,6}(?:-[0-9]{3,4})?| [A-Z][0-9][A-Z] ?[0-9][A-Z][0-9])?"
    # "14th Cross", "5th Main Road" (Indian blocks and cross streets)
    rf"|[0-9]{{1,3}}(?:st|nd|rd|th) [{UPPER}][{LOWER}]{{1,20}}"
    rf"(?: [{UPPER}][{LOWER}]{{1,20}}){{0,2}}"
    rf"|(?:[0-9]{{3,6}}(?:-[0-9]{{3,4}})?|[0-9]{{2}}-[0-9]{{3}})"
    rf"(?: [A-Z]{{1,3}}| [{UPPER}][{LOWER}]{{1,30}}"
    rf"(?:[ \-](?:(?:am|an|im|sur|de|del|la|le|en) )?[{UPPER}][{LOWER}]{{1,30}}){{0,2}})?"
    r"|nan)(?![\w])(?![ \-.]?[0-9])"
)
# A line that is "<number> <one to four words> <number>", as in a postal block
# ("20789 Allika 46", "4596 Tylova 285"), optionally after a quoting prefix ("> ").
_NUMBERED_LINE_RE = re.compile(
    r"[0-9](?<![^\n>?\t ].)(?<![0-9A-Za-z] .)[0-9]{0,5} "
    rf"(?:(?:[{UPPER}][{LOWER}'’.\-]{{1,30}}|[{LOWER}]{{1,12}}\.?) ){{1,4}}[0-9]{{1,5}}[A-Za-z]?"
    r"(?=[ \t]*(?:\n|,|$))"
)
_ENDS_WITH_YEAR_RE = re.compile(r"(?<![0-9])(?:19|20)[0-9]{2}$")
# A named street without a house number: "Marina Fort Street", "Inna Loop St.".
_NAMED_STREET_RE = re.compile(
    rf"[{UPPER}](?<![\w'’\-].)[{LOWER}'’\-]{{1,30}}(?: [{UPPER}][{LOWER}'’\-]{{1,30}}){{0,3}}"
    r" (?:Street|Avenue|Boulevard|Straße|Strasse|St\.(?! [A-Z]))"
)
# What ``_NAMED_STREET_RE`` ends with (a space and the street type): a text without one of these
# has no named street, and the pattern (tried at every capital) is not run.
_NAMED_STREET_TYPES = (" Street", " Avenue", " Boulevard", " Straße", " Strasse", " St.")
_LEADING_NUMBER_RE = re.compile(r"(?<![\w.,\-/])[0-9]{1,6}[A-Za-z]? $")
_WORD_BEFORE_RE = re.compile(r"(\S+)(,?) $")


def find_street_addresses(text: str) -> Iterator[Entity]:
    if not has_digit(text):  # every anchor has a number
        return
    spans: list[tuple[int, int, float]] = []
    for m in _NUMBER_FIRST_RE.finditer(text):
        spans.append((m.start(), m.end(), 0.8))
    for m in _NUMBERED_LINE_RE.finditer(text):
        # "20789 Allika 46", "16 salontie 6", but not "10 steps to 2025"
        if any(c.isupper() for c in m.group()) or not _ENDS_WITH_YEAR_RE.search(m.group()):
            spans.append((m.start(), m.end(), 0.7))
    if any(map(text.__contains__, _NAMED_STREET_TYPES)):
        for m in _NAMED_STREET_RE.finditer(text):
            spans.append((m.start(), m.end(), _NAMED_STREET_SCORE))
    for m in _NUMBER_AFTER_RE.finditer(text):
        start = _street_start(text, m.start())
        if start is not None:
            lead = _LEADING_NUMBER_RE.search(text, max(0, start - 8), start)
            spans.append((lead.start() if lead else start, m.end(), 0.75))
    if "Box" in text or "PO A" in text:
        for m in _BOX_RE.finditer(text):
            if m.start() == 0 or not text[m.start() - 1].isalnum():
                spans.append((m.start(), m.end(), 0.8))
    for m in _UNIT_RE.finditer(text):
        if m.start() == 0 or not text[m.start() - 1].isalnum():
            spans.append((m.start(), m.end(), _UNIT_SCORE))
    previous_end = -1
    for position in keyword_starts(text, _CUE_KEYWORDS):
        if position < previous_end:
            continue
        cue = _CUE_RE.match(text, position)
        if cue:
            end = _cue_end(text, cue.end())
            begin = _skip_addressee(text, cue.end(), end)
            found = text[begin:end]
            # An address has a number and a name: "moved to 10:30", "moved to 3pm" are times.
            if (
                any(c.isdigit() for c in found)
                and any(c.isalpha() for c in found)
                and not _TIME_RE.match(found)
            ):
                spans.append((begin, end, 0.6))
                previous_end = end
    for m in _NUMBER_THEN_TYPE_RE.finditer(text):
        spans.append((m.start(), m.end(), 0.75))
    if _JAPANESE_WARD_RE.search(text):
        for m in _JAPANESE_LATIN_RE.finditer(text):
            spans.append((m.start(), m.end(), 0.8))
    if has_non_latin(text) and any(c in text for c in "〒都道府県"):
        for m in _JAPANESE_ADDRESS_RE.finditer(text):
            spans.append((m.start(), m.end(), 0.8))
    if has_non_latin(text):
        yield from _other_script_addresses(text)
    if not spans:
        return
    for start, end, score in _merge(spans, text):
        value = text[start:end]
        if _DATE_RE.fullmatch(value) or _DAY_MONTH_RE.match(value):
            continue  # "2 Jan 2020" is a date
        tail_end = _extend_tail(text, end)
        if score in (_UNIT_SCORE, _NAMED_STREET_SCORE) and tail_end == end:
            # A unit alone ("Apartment 4B has a leak", "Room 1203") or a street name alone
            # ("near Hill Street") is no address.
            continue
        if text.count(",", start, tail_end) + text.count("\n", start, tail_end) >= 2:
            score = max(score, _BLOCK_SCORE)  # a whole postal block: surer than a name in it
        yield Entity(STREET_ADDRESS, start, tail_end, score)


# Japanese addresses in Latin letters: "2-14-7 Nishi-Shinjuku, Shinjuku-ku, Tokyo 160-0023".
_JAPANESE_WARD_RE = re.compile(r"-(?:ku|shi|cho|machi|gun|mura|ken)\b")  # a cheap test first
_JAPANESE_LATIN_RE = re.compile(
    r"[0-9](?<![\w.,\-/:#].)[0-9]{0,3}(?:-[0-9]{1,4}){1,3},? [A-Z][a-z]+(?:-[A-Z]?[a-z]+){0,2}"
    r",? [A-Z][a-z]+-(?:ku|shi|cho|machi|gun|mura|ken)\b"
)
_UNIT_SCORE = 0.5  # the score of a span found only as a unit ("Apt. 595")
_NAMED_STREET_SCORE = 0.55  # ... only as a named street without a number ("Marina Fort Street")
_BLOCK_SCORE = 0.88
_UNIT_START_RE = re.compile(
    r"(?:Apt|Apartment|Suite|Unit|Flat|Floor|Plot|House|Door|P\.? ?O\.? Box)\b"
)

# Addresses in other scripts, each behind a cheap test for its street or house word:
# Russian ("ул. Ленина, д. 12, кв. 45, Екатеринбург, 620014"), Arabic ("شارع الملك فهد، مبنى
# 24، الرياض 12271"), Chinese ("上海市浦东新区世纪大道88号金茂大厦12楼1203室"), Hindi ("फ्लैट 12,
# साईं रेजीडेंसी, सेक्टर 21, नोएडा 201301").
_CYR = r"[А-ЯЁа-яё][А-ЯЁа-яё\-]{1,30}"
_RUSSIAN_ADDRESS_RE = re.compile(
    r"(?:(?:\d{6},? )?(?:г\. ?" + _CYR + r",? ))?"
    r"(?:ул\.|улица|пр\.|пр-т|проспект|пер\.|переулок|ш\.|шоссе|наб\.|набережная|б-р|бульвар"
    r"|пл\.|площадь|мкр\.?|микрорайон)"
    r" ?" + _CYR + r"(?: " + _CYR + r"){0,2},? (?:д\.|дом) ?\d{1,4}[а-я]?"
    r"(?:,? (?:корп\.|к\.|стр\.|строение|корпус) ?\d{1,3})?"
    r"(?:,? (?:кв\.|квартира|оф\.|офис) ?\d{1,4})?"
    r"(?:,? (?:г\. ?)?" + _CYR + r"(?: " + _CYR + r")?)?(?:,? \d{6})?"
)
_ARABIC_WORD = r"[\u0621-\u064a]{2,20}"
_ARABIC_ADDRESS_RE = re.compile(
    r"(?:شارع|طريق|حي|ش\.)" + rf"(?: {_ARABIC_WORD}){{1,4}}"
    r"(?:[،,] ?(?:مبنى|عمارة|بناية|رقم|منزل|فيلا|شقة) ?\d{1,5})*"
    rf"(?:[،,] ?{_ARABIC_WORD}(?: {_ARABIC_WORD})?)?(?: \d{{5}})?"
)
_CHINESE_ADDRESS_RE = re.compile(
    r"[\u4e00-\u9fff]{2,20}?(?:路|街|大道|道|巷|弄|胡同)[0-9０-９]{1,5}号"
    r"(?:[\u4e00-\u9fff]{0,10}?[0-9０-９]{1,5}(?:楼|层|室|号楼|栋|座|单元|号))*"
    r"(?:[，,]?邮编[:：]?[0-9]{6})?"
)
_HINDI_ADDRESS_RE = re.compile(
    r"(?:फ्लैट|मकान|मकान नं\.?|म\. ?नं\.?|प्लॉट|हाउस|सेक्टर|गली)(?: नं\.?)? ?\d{1,5}"
    r"(?:[,،] ?[\u0900-\u097f0-9 ]{2,40}?){0,5}[,،]? ?[\u0900-\u097f]{2,20} \d{6}"
)
_OTHER_SCRIPT_ADDRESSES = (
    (
        ("ул", "пр", "пер", "ш.", "наб", "б-р", "пл.", "мкр", "улица", "проспект"),
        _RUSSIAN_ADDRESS_RE,
    ),
    (("شارع", "طريق", "حي", "ش."), _ARABIC_ADDRESS_RE),
    (("号",), _CHINESE_ADDRESS_RE),
    (("फ्लैट", "मकान", "म.", "प्लॉट", "हाउस", "सेक्टर", "गली"), _HINDI_ADDRESS_RE),
)


def _other_script_addresses(text: str) -> Iterator[Entity]:
    for words, pattern in _OTHER_SCRIPT_ADDRESSES:
        if any(w in text for w in words):
            for m in pattern.finditer(text):
                if any(c.isdigit() for c in m.group()):
                    yield Entity(STREET_ADDRESS, m.start(), m.end(), 0.8)


# "2250 Rue Sherbrooke Ouest", "12, rue des Lilas", "1508 Avenida Paulista": a number, then a
# street type that leads the name, then the name's words.
_NUMBER_THEN_TYPE_RE = re.compile(
    r"[0-9](?<![\w.,\-/:#].)[0-9]{0,4}[A-Za-z]?,? "
    r"(?:[Rr]ue|[Aa]venue|[Aa]v\.|[Bb]oulevard|[Bb]d|[Cc]hemin|[Aa]llée|[Ii]mpasse|[Qq]uai"
    r"|[Rr]ua|[Aa]venida|[Cc]alle|[Vv]ia|[Vv]iale|[Pp]iazza|[Cc]orso|[Tt]ravessa|[Ee]strada)"
    rf"(?: (?:{'|'.join(sorted(_PARTICLES))}|[{UPPER}][{UPPER}{LOWER}'’.\-]{{1,30}})){{1,5}}"
)
# 〒150-0041 東京都渋谷区神南1-12-16: postcode, prefecture, city or ward, district, block
# numbers; or the same without the postcode.
_JAPANESE_ADDRESS_RE = re.compile(
    r"(?:〒 ?[0-9]{3}-?[0-9]{4} ?)?"
    r"[\u4e00-\u9fff]{1,4}[都道府県][\u4e00-\u9fff\u3040-\u30ff]{1,12}?[市区町村郡]"
    r"[\u4e00-\u9fff\u3040-\u30ff]{0,12}?[0-9０-９]{1,4}(?:[-−ー－丁目番地号の][0-9０-９]{1,4}){0,4}"
    r"[号]?"
    r"|〒 ?[0-9]{3}-?[0-9]{4}"
)
_DAY_MONTH_RE = re.compile(
    r"[0-9]{1,2}(?:st|nd|rd|th)?\.? (?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
    r"[a-zäé]*\.?(?: [0-9]{2,4})?$",
    re.IGNORECASE,
)


def _street_start(text: str, number_start: int) -> int | None:
    """Where the street name that ends just before the house number at ``number_start`` starts,
    or None if the word before it does not end a street name."""
    window = max(0, number_start - 80)
    line_start = max(window, text.rfind("\n", window, number_start) + 1)
    words = [
        (line_start + m.start(), m.group())
        for m in re.finditer(r"\S+", text[line_start:number_start])
    ][-6:]
    if not words:
        return None
    position, word = words[-1]
    lower = word.lower().rstrip(".,")
    before = words[:-1]
    if (
        lower in _TYPE_AFTER
        and before
        and before[-1][1][:1].isupper()
        and (word[:1].isupper() or lower not in english_words())  # not "Terminal gate 55"
    ):
        # "Grote Baan 477", "Eötvös út 10": the capitalised words before the type word.
        start = before[-1][0]
        for p, w in reversed(before[:-1]):
            if not w[:1].isupper() or w.endswith(","):
                break
            start = p
        return start
    if (
        word[:1].isupper()
        and (lower.endswith(_TYPE_SUFFIXES) or word.endswith("str."))
        and len(lower) > 5
        and lower not in english_words()  # "During", "Spring"
    ):
        return position
    if word.endswith(","):
        word = word[:-1]
    # A street type leading up to four name words: "Rue de Piétrain", "ul. Więckowskiego".
    for names, (p, w) in enumerate(reversed(words)):
        wl = w.lower().rstrip(".,")
        if wl in _TYPE_BEFORE and not w.endswith(",") and (p, w) != words[-1]:
            return p
        if (p, w) != words[-1] and w.endswith(","):
            return None
        if not (w[:1].isupper() or wl in _PARTICLES) or names >= 5:
            return None
    return None


_TIME_RE = re.compile(r"[0-9]{1,2}(?:[:.][0-9]{2})? ?(?:am|pm|a\.m\.|p\.m\.|h|uhr|hrs?)\b", re.I)
_ADDRESSEE_RE = re.compile(
    rf"[{UPPER}][{LOWER}'’\-]+(?: [{UPPER}][{LOWER}'’\-]+){{0,3}}(?:,[ \t]*|[ \t]*\n[ \t]*)"
)


def _skip_addressee(text: str, start: int, end: int) -> int:
    """Where the address after a cue starts: after a name written before it on its own line or
    before a comma ("Ship to:\nAnanya Iyer\nFlat 402, ...", "gift card: Margaret Doyle, 17
    Wattle Street"), which is a person, not part of the address."""
    m = _ADDRESSEE_RE.match(text, start, end)
    if m is None or (
        not text[m.end() : m.end() + 1].isdigit() and not _UNIT_START_RE.match(text, m.end())
    ):
        return start
    return m.end()


def _cue_end(text: str, start: int) -> int:
    """The end of an address written after a cue phrase: numbers, capitalised words, name
    particles, commas and line breaks, up to the first other word or sentence end."""
    end = start
    for m in re.finditer(r"[^\s,]+", text[start : start + 160]):
        piece = m.group()
        word = piece.rstrip(".?!;:")
        if not word:
            break
        if not (word[0].isupper() or word[0].isdigit() or word.lower() in _CUE_WORDS):
            break
        end = start + m.start() + len(word)
        if word != piece:
            break
    return end


_CUE_WORDS = _PARTICLES | {"and", "ul.", "ul", "utca", "út", "tér", "apt.", "apt", "suite",
                           "unit", "nan"}  # fmt: skip


def _merge(spans: list[tuple[int, int, float]], text: str) -> list[tuple[int, int, float]]:
    """Overlapping spans, and spans with only a comma between them ("Flat 2, 14 Belsize Park
    Gardens"), become one."""
    spans.sort()
    merged: list[tuple[int, int, float]] = []
    for start, end, score in spans:
        if merged and (
            start <= merged[-1][1]
            or (start - merged[-1][1] <= 3 and not text[merged[-1][1] : start].strip(", "))
        ):
            s, e, sc = merged[-1]
            merged[-1] = (s, max(e, end), max(sc, score))
        else:
            merged.append((start, end, score))
    return merged


def _extend_tail(text: str, end: int) -> int:
    for _ in range(6):
        m = _TAIL_PART_RE.match(text, end)
        if m is None:
            break
        end = m.end()
    return end
