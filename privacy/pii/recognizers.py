"""Recognisers for identifiers with a fixed shape: email, phone, SSN, card, IBAN, IP address,
secrets, dates of birth and passport numbers.

Candidates come from precompiled regular expressions and are then checked in Python (Luhn,
mod-97, ``phonenumbers``, ``ipaddress``, SSN number rules).

Speed and safety on hostile input (up to 1 MB):

- Every repetition is bounded and adjacent parts of a pattern cannot match the same characters,
  so a failed attempt costs a bounded number of steps: linear time overall. Multi-line blocks
  (private keys) are found with ``str.find``, not a lazy ``.*?``.
- Patterns start with a character class and check the character before it with a lookbehind
  placed after it (``\\d(?<![\\w].)``): the regex engine then skips quickly to candidate
  characters, several times faster than a leading lookbehind.
- Phones, SSNs, cards and IPv4 addresses are one pass: every number-shaped run is classified.
- Patterns that need a keyword (``password``, ``born``, ``passport``) first look for the
  keyword in a lower-cased copy with plain literals, the fastest search the engine has.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator

import phonenumbers

from .entities import (
    CREDIT_CARD,
    DATE_OF_BIRTH,
    EMAIL,
    IBAN,
    IP_ADDRESS,
    PASSPORT,
    PHONE,
    SECRET,
    US_SSN,
    Entity,
)

Recognizer = Callable[[str], Iterator[Entity]]

_last_lowered: tuple[str, str] = ("", "")


def lowered(text: str) -> str:
    """``text.lower()``, computed once for the recognisers of one ``detect`` call."""
    global _last_lowered
    cached = _last_lowered  # one read of a tuple: safe if threads interleave
    if cached[0] is text:
        return cached[1]
    lower = text.lower()
    _last_lowered = (text, lower)
    return lower


_ASCII_DIGIT_RE = re.compile(r"[0-9]")
_last_has_digit: tuple[str, bool] = ("", False)


def has_digit(text: str) -> bool:
    """Whether ``text`` has an ASCII digit; most recognisers need one and skip the text if not."""
    global _last_has_digit
    cached = _last_has_digit
    if cached[0] is text:
        return cached[1]
    found = _ASCII_DIGIT_RE.search(text) is not None
    _last_has_digit = (text, found)
    return found


def forget_text() -> None:
    """Drop the one-text caches above, so no text outlives the ``detect`` call that scanned it."""
    global _last_lowered, _last_has_digit
    _last_lowered = ("", "")
    _last_has_digit = ("", False)


def keyword_starts(text: str, keywords: tuple[str, ...]) -> list[int]:
    """Sorted start offsets in ``text`` of the lower-case ``keywords``, found in a lower-cased
    copy with ``str.find`` (far faster than a case-insensitive regex)."""
    lower = lowered(text)
    if len(lower) != len(text):
        # Lower-casing changed the length (a few Unicode letters do), so offsets would not line
        # up: search the text itself, case-insensitively and more slowly.
        pattern = re.compile("|".join(re.escape(k) for k in keywords), re.IGNORECASE)
        return [m.start() for m in pattern.finditer(text)]
    starts: list[int] = []
    for keyword in keywords:
        position = lower.find(keyword)
        while position >= 0:
            starts.append(position)
            position = lower.find(keyword, position + 1)
    starts.sort()
    return starts


# --- email -----------------------------------------------------------------------------------

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL_RE = re.compile(
    r"(?<![\w.+%'-])[\w.+%'-]{1,64}@" + _LABEL + r"(?:\." + _LABEL + r"){0,8}\.[A-Za-z]{2,24}"
    r"(?![\w-])"
)


def find_emails(text: str) -> Iterator[Entity]:
    if "@" not in text:
        return
    for m in _EMAIL_RE.finditer(text):
        start = m.start()
        # A local part neither starts nor ends with a dot; a leading quote is prose.
        while text[start] in ".'":
            start += 1
        local = text[start : m.end()].split("@", 1)[0]
        if not local or local.endswith("."):
            continue
        # "user:password@host" inside a URL is credentials (a SECRET), not an email address.
        before = text[max(0, start - 140) : start]
        if "://" in before[before.rfind(" ") + 1 :] and before.endswith(":"):
            continue
        yield Entity(EMAIL, start, m.end(), 1.0)


# --- numbers: phone, SSN, card, IPv4 ---------------------------------------------------------

# A run of digit groups, optionally in parentheses, joined by exactly one separator (a space,
# dash, dot or slash) or by nothing right after a closing parenthesis, with an optional
# leading "+" and trailing extension. The separator is never optional between two digit
# groups, so a digit run splits in exactly one way.
_GROUP = r"(?:\(\d{1,5}\)|\d{1,19})"
_NUMBER_RE = re.compile(
    r"[0-9(+](?<![\w+\-.(/@#$€£].)(?<![0-9],.)"
    # the rest of the first group, by what its first character was
    r"(?:(?<=\d)\d{0,18}|(?<=\()\d{1,5}\)|(?<=\+) ?(?:\d{1,19}|\(\d{1,5}\)))"
    r"(?:(?:[ \-./]|(?<=\)))" + _GROUP + r"){0,7}"
    r"(?: ?(?:x|ext\.?|extension) ?\d{1,6})?"
    r"(?!\w|-\d|[.,/:]\d)"
)
_EXTENSION_RE = re.compile(r" ?(?:x|ext\.?|extension) ?\d{1,6}$")
_NON_DIGIT_RE = re.compile(r"\D")
_DATE_SHAPE_RE = re.compile(
    r"\d{4}[-./]\d{1,2}[-./]\d{1,2}(?!\d)|\d{1,2}[-./]\d{1,2}[-./](?:\d{4}|\d{2})$"
)
_IPV4_RE = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?")
_SSN_RE = re.compile(r"(\d{3})([- ]?)(\d{2})\2(\d{4})")
_CARD_SHAPE_RE = re.compile(
    r"\d{12,19}"  # unseparated
    r"|\d{4}([ \-])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?"  # 4-4-4-4(-3)
    r"|\d{4}([ \-])\d{4}\2\d{4}\2\d{1,3}"  # 4-4-4-1..3
    r"|\d{4}([ \-])\d{6}\3\d{4,5}"  # 4-6-5 (Amex), 4-6-4 (Diners)
)
_VERSION_BEFORE_RE = re.compile(r"(?:\bv|version|release|\bver\.?)\s?$", re.IGNORECASE)

# Words just before (or just after) a number that say it is a phone number.
_PHONE_CONTEXT_BEFORE = re.compile(
    r"phone|\btel\b|mobile|\bcell|call|fax|whatsapp|signal|sms|text me|reach|contact|number"
    r"|answering|dial|messag|landline|hotline|\bph\b|\b[mtf]:|(?:office|home|work|desk):"
)
_PHONE_CONTEXT_AFTER = re.compile(r"^\W{0,3}(?:office|fax|mobile|cell|home|work|desk|phone|tel)")
_SSN_CONTEXT = re.compile(r"ssn|social security|\bss#|\bsocial\b")
_CARD_CONTEXT = re.compile(
    r"card|credit|debit|\bcc\b|visa|master|amex|american express|discover|jcb|maestro|payment"
)

PHONE_REGIONS = ("US",)  # national numbers without "+" are checked against these regions


def find_numbers(text: str) -> Iterator[Entity]:
    """Phone numbers, US SSNs, card numbers and IPv4 addresses."""
    if not has_digit(text):
        return
    for m in _NUMBER_RE.finditer(text):
        candidate = m.group()
        if len(candidate) < 7:  # shorter than any of them ("1.2.3.4")
            continue
        yield from _classify_number(text, m.start(), candidate)


def _context_before(text: str, start: int, pattern: re.Pattern[str], width: int = 40) -> bool:
    return pattern.search(lowered(text), max(0, start - width), start) is not None


def _classify_number(text: str, start: int, candidate: str) -> Iterator[Entity]:
    end = start + len(candidate)
    if _IPV4_RE.fullmatch(candidate):
        address = candidate.split("/", 1)[0]
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            return
        if not _VERSION_BEFORE_RE.search(text, max(0, start - 9), start):
            yield Entity(IP_ADDRESS, start, end, 0.9)
        return
    ssn = _SSN_RE.fullmatch(candidate)
    if ssn:
        area, separator, group, serial = ssn.groups()
        # Never issued: area 000, 666 or 900-999, group 00, serial 0000.
        if area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000":
            context = _context_before(text, start, _SSN_CONTEXT)
            if separator == "-":
                yield Entity(US_SSN, start, end, 0.95 if context else 0.85)
                return
            if context:
                yield Entity(US_SSN, start, end, 0.8)
                return
    if _CARD_SHAPE_RE.fullmatch(candidate):
        digits = _NON_DIGIT_RE.sub("", candidate)
        if luhn_valid(digits):
            if _card_issuer_known(digits):
                yield Entity(CREDIT_CARD, start, end, 0.95)
                return
            if _context_before(text, start, _CARD_CONTEXT):
                yield Entity(CREDIT_CARD, start, end, 0.85)
                return
    phone = _phone(text, start, candidate)
    if phone is not None:
        yield phone


def _phone(text: str, start: int, candidate: str) -> Entity | None:
    body = _EXTENSION_RE.sub("", candidate)
    digits = len(_NON_DIGIT_RE.sub("", body))
    if digits < 7 or digits > 15 or _DATE_SHAPE_RE.match(body):
        return None
    end = start + len(candidate)
    formatted = not body.isdigit()
    lower = lowered(text)
    context = (
        _PHONE_CONTEXT_BEFORE.search(lower, max(0, start - 40), start) is not None
        or _PHONE_CONTEXT_AFTER.match(lower[end : end + 12]) is not None
    )
    if _phone_is_valid(body):
        if formatted or context:
            return Entity(PHONE, start, end, 0.9 if context else 0.75)
    elif context and formatted:
        return Entity(PHONE, start, end, 0.6)
    return None


def _phone_is_valid(candidate: str) -> bool:
    try:
        if candidate.startswith("+"):
            return phonenumbers.is_valid_number(phonenumbers.parse(candidate, None))
        if candidate.startswith("00"):
            return phonenumbers.is_valid_number(phonenumbers.parse("+" + candidate[2:], None))
        # is_valid_number_for_region checks one region's metadata; is_valid_number would
        # first look for the region among all that share the country code (25 for +1).
        return any(
            phonenumbers.is_valid_number_for_region(phonenumbers.parse(candidate, region), region)
            for region in PHONE_REGIONS
        )
    except phonenumbers.NumberParseException:
        return False


# Issuer prefixes (IIN ranges) and the lengths each uses; a Luhn-valid number outside them is
# only taken for a card when a word like "card" is near.
_CARD_PREFIXES: tuple[tuple[str, str, frozenset[int]], ...] = (
    ("4", "4", frozenset({13, 16, 19})),  # Visa
    ("51", "55", frozenset({16})),  # Mastercard
    ("2221", "2720", frozenset({16})),  # Mastercard 2-series
    ("34", "34", frozenset({15})),  # Amex
    ("37", "37", frozenset({15})),
    ("300", "305", frozenset({14, 16})),  # Diners
    ("36", "36", frozenset({14, 16})),
    ("38", "39", frozenset({14, 16})),
    ("3095", "3095", frozenset({14, 16})),
    ("3528", "3589", frozenset({16, 17, 18, 19})),  # JCB
    ("1800", "1800", frozenset({15})),  # old JCB
    ("2131", "2131", frozenset({15})),
    ("6011", "6011", frozenset({16, 19})),  # Discover
    ("644", "649", frozenset({16, 19})),
    ("65", "65", frozenset({16, 19})),
    ("62", "62", frozenset({16, 17, 18, 19})),  # UnionPay
    ("2200", "2204", frozenset({16, 17, 18, 19})),  # Mir
    ("50", "50", frozenset(range(12, 20))),  # Maestro
    ("56", "58", frozenset(range(12, 20))),
    ("60", "69", frozenset(range(12, 20))),
)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_issuer_known(digits: str) -> bool:
    length = len(digits)
    for low, high, lengths in _CARD_PREFIXES:
        prefix = digits[: len(low)]
        if low <= prefix <= high and length in lengths:
            return True
    return False


# --- IBAN ------------------------------------------------------------------------------------

IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

# Country code, check digits, then the account part, possibly in space-separated groups. The
# greedy match may run into the next word; the country's length decides where the IBAN ends.
# Country code, check digits, then the account part, possibly in space-separated groups. The
# match starts at the first check digit (digits are rare, so the engine skips ahead fast); the
# greedy tail may run into the next word, and the country's length decides where it ends.
_IBAN_RE = re.compile(
    r"[0-9](?<=(?<![A-Za-z0-9])[A-Za-z]{2}[0-9])[0-9](?:[ \-]?[A-Za-z0-9]){11,30}"
)


def iban_valid(compact: str) -> bool:
    country = compact[:2].upper()
    if IBAN_LENGTHS.get(country) != len(compact) or not compact.isalnum():
        return False
    rearranged = (compact[4:] + compact[:4]).upper()
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def find_ibans(text: str) -> Iterator[Entity]:
    if not has_digit(text):
        return
    for m in _IBAN_RE.finditer(text):
        start = m.start() - 2
        raw = text[start : m.end()]
        length = IBAN_LENGTHS.get(raw[:2].upper())
        if length is None:
            continue
        # Walk the match to the character that completes the country's length.
        count = 0
        end = 0
        for i, ch in enumerate(raw):
            if ch.isalnum():
                count += 1
                if count == length:
                    end = i + 1
                    break
        stop = start + end
        if not end or (stop < len(text) and text[stop].isalnum()):
            continue
        if iban_valid(raw[:end].replace(" ", "").replace("-", "")):
            yield Entity(IBAN, start, stop, 1.0)


# --- IPv6 (IPv4 is found with the other numbers) ----------------------------------------------

_IPV6_RE = re.compile(
    r"[0-9A-Fa-f:](?<![\w:.].)(?<=[0-9A-Fa-f:])"
    r"(?=[0-9A-Fa-f]{0,3}:[0-9A-Fa-f]{0,4}:|:)[0-9A-Fa-f:]{1,38}"
    r"(?:(?<=:)\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})?(?![\w:])"
)
_HEX_DIGIT_RE = re.compile(r"[0-9A-Fa-f]")


def find_ipv6_addresses(text: str) -> Iterator[Entity]:
    if "::" not in text and text.count(":") < 7:
        return
    for m in _IPV6_RE.finditer(text):
        value = m.group()
        if len(_HEX_DIGIT_RE.findall(value)) < 3:
            continue
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            continue
        yield Entity(IP_ADDRESS, m.start(), m.end(), 0.9)


# --- secrets ---------------------------------------------------------------------------------

# (literals one of which must be in the text, or none if the pattern starts with a literal
# character and is fast on its own; pattern; score)
_SECRET_TOKENS: tuple[tuple[tuple[str, ...], re.Pattern[str], float], ...] = tuple(
    (literals, re.compile(pattern), score)
    for literals, pattern, score in (
        # AWS access key ids
        ((),
         r"A(?<![A-Za-z0-9].)(?:KIA|SIA|BIA|CCA|GPA|IDA|ROA|IPA|NPA|NVA|PKA)[A-Z0-9]{16}"
         r"(?![A-Za-z0-9])", 1.0),
        # GitHub tokens (classic and fine-grained), GitLab personal access tokens
        ((),
         r"g(?<![A-Za-z0-9_].)h[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9_])", 1.0),
        ((), r"g(?<![A-Za-z0-9_].)ithub_pat_[A-Za-z0-9_]{22,255}(?![A-Za-z0-9_])",
         1.0),
        ((), r"g(?<![A-Za-z0-9_-].)lpat-[A-Za-z0-9_\-]{20,255}(?![A-Za-z0-9_-])", 1.0),
        # Slack, Stripe, Google API keys, OpenAI/Anthropic style keys, JSON web tokens
        ((), r"x(?<![A-Za-z0-9-].)ox[abposr]-[A-Za-z0-9\-]{10,250}(?![A-Za-z0-9-])", 1.0),
        (("_live_", "_test_"),
         r"[srp](?<![A-Za-z0-9_].)k_(?:live|test)_[A-Za-z0-9]{16,250}(?![A-Za-z0-9])", 1.0),
        ((), r"A(?<![A-Za-z0-9_-].)Iza[0-9A-Za-z_\-]{35}(?![A-Za-z0-9_-])", 1.0),
        ((), r"s(?<![A-Za-z0-9_-].)k-(?:[A-Za-z0-9]{1,12}-)?[A-Za-z0-9_\-]{20,250}"
                   r"(?![A-Za-z0-9_-])", 0.95),
        ((), r"e(?<![A-Za-z0-9_-].)yJ[A-Za-z0-9_\-]{8,4096}\.eyJ[A-Za-z0-9_\-]{8,8192}"
                   r"\.[A-Za-z0-9_\-]{8,4096}(?![A-Za-z0-9_-])", 0.95),
    )
)  # fmt: skip

_SECRET_KEYWORDS = ("pass", "pwd", "secret", "api_key", "api-key", "apikey", "api key",
                    "access_key", "access key", "token", "bearer")  # fmt: skip
# A value after a key name that says it is secret: `password: hunter2!`, `api_key="..."`,
# `aws_secret_access_key = ...`. Matched at a keyword found above; only the value is reported.
_ASSIGNED_SECRET_RE = re.compile(
    r"(?:pass(?:word|wd|phrase)?|pwd|secret(?:[_\- ]?(?:access[_\- ]?)?key)?"
    r"|api[_\- ]?key|access[_\- ]?key|token)"
    r"[\"']?[ \t]{0,3}(?:[:=]|(?:is|was)\b)[ \t]{0,3}[\"'`]?([^\s\"'`,;]{6,256})",
    re.IGNORECASE,
)
_BEARER_RE = re.compile(r"bearer[ \t]{1,3}([A-Za-z0-9._~+/\-]{16,4096}=*)", re.IGNORECASE)
# Credentials in a URL: scheme://user:password@host. The user and password are reported.
_URL_CREDENTIALS_RE = re.compile(r"://([^\s:/?#@\[\]]{1,128}):([^\s/?#@]{1,256})@")
_PRIVATE_KEY_BEGIN_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]{0,40})PRIVATE KEY( BLOCK)?-----")


def _looks_like_secret_value(value: str) -> bool:
    if value.startswith(("<", "{", "$", "%", "*")) or len(set(value)) < 4:
        return False  # a template variable, or "********"
    if "(" in value or value.startswith(("os.", "process.", "env.", "self.", "settings.")):
        return False  # code that reads the secret: `api_key = os.environ.get(...)`
    if len(value) >= 12:
        return True
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    has_other = any(not c.isalnum() for c in value)
    return has_alpha and (has_digit or has_other)


def find_secrets(text: str) -> Iterator[Entity]:
    for literals, pattern, score in _SECRET_TOKENS:
        if literals and not any(literal in text for literal in literals):
            continue
        for m in pattern.finditer(text):
            yield Entity(SECRET, m.start(), m.end(), score)
    previous_end = -1
    for position in keyword_starts(text, _SECRET_KEYWORDS):
        if position < previous_end:
            continue
        match = _ASSIGNED_SECRET_RE.match(text, position)
        if match and _looks_like_secret_value(match.group(1)):
            yield Entity(SECRET, match.start(1), match.end(1), 0.8)
            previous_end = match.end()
            continue
        match = _BEARER_RE.match(text, position)
        if match:
            yield Entity(SECRET, match.start(1), match.end(1), 0.9)
            previous_end = match.end()
    if "://" in text:
        for m in _URL_CREDENTIALS_RE.finditer(text):
            yield Entity(SECRET, m.start(1), m.end(2), 0.95)
    if "-----BEGIN" in text:
        yield from _find_private_key_blocks(text)


def _find_private_key_blocks(text: str) -> Iterator[Entity]:
    # If no END marker follows some position, none follows any later one: remember that, so
    # many BEGIN markers without an END cost one search, not one each.
    no_end_after = len(text) + 1
    position = 0
    while True:
        m = _PRIVATE_KEY_BEGIN_RE.search(text, position)
        if m is None:
            return
        end_marker = "-----END " + m.group(1) + "PRIVATE KEY" + (m.group(2) or "") + "-----"
        found = -1 if m.end() >= no_end_after else text.find(end_marker, m.end())
        if found >= 0:
            stop = found + len(end_marker)
        else:
            # A truncated paste is still a key: report it up to the first blank line.
            no_end_after = min(no_end_after, m.end())
            blank = text.find("\n\n", m.end())
            stop = len(text) if blank < 0 else blank
        yield Entity(SECRET, m.start(), stop, 1.0)
        position = stop


# --- dates of birth --------------------------------------------------------------------------

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:1[89]\d\d|20\d\d)"
_DATE = (
    r"(?:\d{1,2}[./\-]\d{1,2}[./\-](?:\d{4}|\d{2})"
    r"|\d{4}[./\-]\d{1,2}[./\-]\d{1,2}"
    rf"|{_DAY}(?: of)?[ \-]{_MONTH}[ \-,]{{1,2}}{_YEAR}"
    rf"|{_MONTH} {_DAY},? {_YEAR})"
)
_DOB_KEYWORDS = ("born", "birth", "dob", "d.o.b", "geboren", "né")
_DOB_RE = re.compile(
    r"(?:(?:born|birth(?: ?date|day)?|dob|geboren|née?)\b|d\.o\.b\.?)"
    r"[ \t:,\-]{0,4}(?:(?:is|was|on|of|the|in|:)[ \t,]{1,3}){0,3}"
    rf"({_DATE})(?!\d)",
    re.IGNORECASE,
)


def find_dates_of_birth(text: str) -> Iterator[Entity]:
    if not has_digit(text):
        return
    for position in keyword_starts(text, _DOB_KEYWORDS):
        m = _DOB_RE.match(text, position)
        if m:
            yield Entity(DATE_OF_BIRTH, m.start(1), m.end(1), 0.85)


# --- passport numbers ------------------------------------------------------------------------

_PASSPORT_RE = re.compile(
    r"(?i:passport)(?i:[ \t]?(?:no\.?|number|num\.?|nr\.?|#|id))?"
    r"[ \t]{0,3}(?i:is|:|#|=)?[ \t]{0,3}"
    r"(?<![A-Za-z0-9])([A-Z0-9]{6,9})(?![A-Za-z0-9])"
)


def find_passports(text: str) -> Iterator[Entity]:
    if not has_digit(text):
        return
    for position in keyword_starts(text, ("passport",)):
        m = _PASSPORT_RE.match(text, position)
        if m and sum(c.isdigit() for c in m.group(1)) >= 5:
            yield Entity(PASSPORT, m.start(1), m.end(1), 0.8)
