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

import base64
import datetime
import ipaddress
import itertools
import re
from collections.abc import Callable, Iterator
from functools import cache

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
    global _last_lowered, _last_has_digit, _last_non_latin
    _last_lowered = ("", "")
    _last_has_digit = ("", False)
    _last_non_latin = ("", False)


@cache
def _ascii_only(keywords: tuple[str, ...]) -> tuple[str, ...]:
    """The keywords an ASCII text can hold."""
    return tuple(k for k in keywords if k.isascii())


@cache
def _latin_only(keywords: tuple[str, ...]) -> tuple[str, ...]:
    """The keywords written in Latin letters (accented ones included)."""
    return tuple(k for k in keywords if all(ord(c) < 0x250 for c in k))


# Letters of scripts other than Latin: Greek, Cyrillic, Hebrew, Arabic, Devanagari, Thai,
# Hangul, kana and CJK ideographs. A text without any (most non-ASCII text is Latin with
# accents, curly quotes or emoji) is not searched for keywords written in them.
_NON_LATIN_RE = re.compile(
    r"[\u0370-\u03ff\u0400-\u04ff\u0590-\u06ff\u0900-\u097f\u0e00-\u0e7f\u1100-\u11ff"
    r"\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]"
)
_last_non_latin: tuple[str, bool] = ("", False)


def has_non_latin(text: str) -> bool:
    """Whether ``text`` has a letter of a script other than Latin (computed once per text)."""
    global _last_non_latin
    cached = _last_non_latin
    if cached[0] is text:
        return cached[1]
    found = not text.isascii() and _NON_LATIN_RE.search(text) is not None
    _last_non_latin = (text, found)
    return found


def keyword_starts(text: str, keywords: tuple[str, ...]) -> list[int]:
    """Sorted start offsets in ``text`` of the lower-case ``keywords``, found in a lower-cased
    copy with ``str.find`` (far faster than a case-insensitive regex)."""
    if text.isascii():  # O(1) in CPython: a flag of the string
        keywords = _ascii_only(keywords)
    elif not has_non_latin(text):
        keywords = _latin_only(keywords)
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


_LOCAL_CHARS = frozenset("_.+%'-")
_LOCAL_MOST = 64  # a local part's longest (``_EMAIL_RE``)


def _email_matches(text: str) -> Iterator[re.Match[str]]:
    """``_EMAIL_RE.finditer(text)``, tried only where a match can start: at the start of the
    run of local-part characters before each "@" (where the lookbehind allows one), when it is
    at most 64 long. A text full of "@" is scanned by the pattern instead."""
    count = text.count("@")
    if count > 64 + len(text) // 64:
        yield from _EMAIL_RE.finditer(text)
        return
    taken_until = 0
    at = text.find("@")
    while at >= 0:
        start = at
        while start and at - start <= _LOCAL_MOST:
            char = text[start - 1]
            if not (char.isalnum() or char in _LOCAL_CHARS):
                break
            start -= 1
        if start < at and at - start <= _LOCAL_MOST and start >= taken_until:
            match = _EMAIL_RE.match(text, start)
            if match is not None:
                taken_until = match.end()
                yield match
        at = text.find("@", at + 1)


def find_emails(text: str) -> Iterator[Entity]:
    if "@" not in text:
        return
    for m in _email_matches(text):
        start = m.start()
        # A local part neither starts nor ends with a dot; a leading quote is prose.
        while text[start] in ".'":
            start += 1
        local = text[start : m.end()].split("@", 1)[0]
        if not local or local.endswith("."):
            continue
        # "user:password@host" or "token@host" inside a URL is credentials (a SECRET), not an
        # email address.
        before = text[max(0, start - 300) : start]
        if "://" in before[max(before.rfind(" "), before.rfind("\n")) + 1 :]:
            continue
        if _is_placeholder_email(text, start, m.end()):
            continue
        if text.startswith(":", m.end()) and text[m.end() + 1 : m.end() + 2].isalnum():
            continue  # an SSH remote, "git@github.com:acme/widgets.git"
        yield Entity(EMAIL, start, m.end(), 1.0)


# Addresses written in documentation and forms as placeholders, not anyone's address.
_PLACEHOLDER_LOCALS = frozenset(
    ("user", "username", "you", "your", "yourname", "your.name", "youremail", "your.email",
     "name", "email", "someone", "somebody", "foo", "bar", "baz", "test", "example", "me",
     "firstname.lastname", "first.last", "firstname", "lastname", "info", "noreply", "no-reply")
)  # fmt: skip
_PLACEHOLDER_DOMAINS = ("example.com", "example.org", "example.net", "domain.com", "email.com",
                        "yourcompany.com", "company.com", "yourdomain.com", "test.com")  # fmt: skip


# Domains reserved for documentation (RFC 2606, RFC 6761): no one's mailbox is there.
_RESERVED_DOMAINS = ("example.com", "example.org", "example.net")
_RESERVED_SUFFIXES = (".example", ".test", ".invalid", ".localhost", ".local")


def _is_placeholder_email(text: str, start: int, end: int) -> bool:
    local, _, domain = text[start:end].lower().partition("@")
    if domain in _RESERVED_DOMAINS or domain.endswith(_RESERVED_SUFFIXES):
        # At a reserved domain, an address in a text that says it is an example or template is
        # a placeholder ("the sample config uses jane.doe@example.com").
        return local in _PLACEHOLDER_LOCALS or documentation_context(text, start, end)
    return local in _PLACEHOLDER_LOCALS and domain in _PLACEHOLDER_DOMAINS


# Words that say a text is documentation, a template or an example, so that values reserved
# for documentation in it (example.com addresses, RFC 5737 IP addresses) are placeholders.
_DOCUMENTATION_RE = re.compile(
    r"\b(?:sample|placeholder|dummy|fake|docs?|documentation|template|tutorial|readme|e\.g\."
    r"|such as|for instance|lorem|illustrat\w*|(?<![@.])example(?!\.[a-z])s?)\b"
)


_CLAUSE_BREAK_RE = re.compile(r"[.!?;](?:\s|$)|\n")
_CLAUSE_WINDOW = 100


def documentation_context(text: str, start: int, end: int) -> bool:
    """Whether the clause around ``text[start:end]`` says it is an example or a template."""
    lower = lowered(text)
    left = max(0, start - _CLAUSE_WINDOW)
    for m in _CLAUSE_BREAK_RE.finditer(lower, left, start):
        left = m.end()
    right = min(len(text), end + _CLAUSE_WINDOW)
    stop = _CLAUSE_BREAK_RE.search(lower, end, right)
    if stop is not None:
        right = stop.start()
    return (
        _DOCUMENTATION_RE.search(lower, left, start) is not None
        or _DOCUMENTATION_RE.search(lower, end, right) is not None
    )


# --- numbers: phone, SSN, card, IPv4 ---------------------------------------------------------

# A run of digit groups, optionally in parentheses, joined by exactly one separator (a space,
# dash, dot or slash) or by nothing right after a closing parenthesis, with an optional
# leading "+" and trailing extension. The separator is never optional between two digit
# groups, so a digit run splits in exactly one way.
_GROUP = r"(?:\(\d{1,5}\)|\d{1,19})"
# The character before and after a number is checked against ASCII letters and digits (and
# accented Latin letters), not ``\w``: in Japanese or Chinese a number sits right beside
# letters of the script ("携帯は090-1234-5678です").
_NUMBER_RE = re.compile(
    r"[0-9(+](?<![A-Za-z0-9_À-ɏ+\-.#$€£].)(?<!\(\(.)(?<![0-9],.)(?<![^/]/.)"
    # the rest of the first group, by what its first character was
    r"(?:(?<=\d)\d{0,18}|(?<=\()\d{1,5}\)|(?<=\+) ?(?:\d{1,19}|\(\d{1,5}\)))"
    r"(?:(?:[ \-./]|(?<=\)))" + _GROUP + r"){0,7}"
    r"(?: ?(?:x|ext\.?|extension) ?\d{1,6})?"
    # not followed by a letter or digit, nor by "-B", "-4" or ".5" (an identifier or a
    # decimal); "-Office" is a label
    r"(?:(?![A-Za-z0-9_À-ɏ]|-[A-Za-z0-9](?![A-Za-z])|[.,/:]\d)"
    # or an IPv4-shaped run with a port: "10.4.2.17:8443"
    r"|(?<=\.\d)(?=:\d)|(?<=\.\d\d)(?=:\d)|(?<=\.\d\d\d)(?=:\d))"
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
# Words near an IPv4-shaped number that say it is a version ("the driver to 4.12.0.7").
_VERSION_CONTEXT_RE = re.compile(
    r"version|release|\bbuild|firmware|driver|\bv\d|\bsdk\b|\bpatch|kernel|\bbios|\bver\b|versión"
    r"|versão|バージョン|إصدار|الإصدار|版本|верси|संस्करण|sürüm"
)
_VERSION_AFTER_RE = re.compile(
    r"[ \t]?(?:release|build|version|update|patch|aktualis|updat|upgrad|installier)"
    r"|-(?:alpha|beta|rc|dev|pre|snapshot)"
)
# Words that say a dotted number is a host's address; one after a version word wins over it
# ("kernel: DROP IN=eth0 SRC=31.13.72.36").
_IP_CONTEXT_RE = re.compile(
    r"\bip\b|ipv4|\bsrc\b|\bdst\b|host|address|\baddr|server|client|gateway|router|\bping"
    r"|\bssh\b|connect|device|signed in|logged in|login|peer|remote|\bnat\b|\bdns\b|proxy"
    r"|firewall|subnet|endpoint|\bnode\b|\bvpn\b|adresse|dirección|endereço|indirizzo|адрес"
)
# Words before a dotted number that make it a section or rule number ("see section 4.2.1.3").
_SECTION_CONTEXT_RE = re.compile(
    r"section|§|chapter|clause|paragraph|abschnitt|kapitel|article|artikel|\bstep\b|table"
    r"|figure|\bfig\.|\brule\b|\bitem\b|\bpoint\b|\bnorm|\biso\b|\brfc\b|\boid\b"
)
# Networks reserved for documentation (RFC 5737): in a text that says it is an example or a
# template, an address in them is a placeholder.
_DOCUMENTATION_NETWORKS = tuple(
    ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
_VERSION_WINDOW = 60


def _is_host_ipv4(text: str, start: int, end: int, candidate: str) -> bool:
    """Whether an IPv4-shaped number is a host's address: not loopback or bind-all, not a
    network block (``10.0.0.0/16``), not a documentation placeholder, not a version or a
    section number by the words around it."""
    address, slash, _prefix = candidate.partition("/")
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    if ip.is_loopback or ip.is_unspecified:
        return False  # 127.0.0.1, 0.0.0.0: the same on every machine, no one's address
    if slash:
        try:
            ipaddress.IPv4Network(candidate)  # strict: the host bits are zero
        except ValueError:
            pass  # a host with its prefix length, as an interface is configured
        else:
            return False  # a network block ("10.0.0.0/16"), no one host
    if any(ip in network for network in _DOCUMENTATION_NETWORKS) and documentation_context(
        text, start, end
    ):
        return False
    lower = lowered(text)
    if _VERSION_BEFORE_RE.search(text, max(0, start - 9), start) or _VERSION_AFTER_RE.match(
        lower, end
    ):
        return False
    window = max(0, start - _VERSION_WINDOW)
    version_at = -1
    for m in _VERSION_CONTEXT_RE.finditer(lower, window, start):
        version_at = m.end()
    ip_at = -1
    for m in _IP_CONTEXT_RE.finditer(lower, window, start):
        ip_at = m.end()
    if version_at >= 0 and ip_at < version_at and "\n" not in lower[version_at:start]:
        return False  # "the driver to 4.12.0.7", "Firmware 5.4.12.3 ..., bitte auf 5.4.13.0"
    if _SECTION_CONTEXT_RE.search(lower, max(0, start - 25), start) and ip_at < 0:
        return False
    # "4.2.1.3" with no word of networking near: a section or a version
    return ip_at >= 0 or any(len(part) > 1 for part in address.split("."))


_VERSION_BEFORE_RE = re.compile(r"(?:\bv|version|release|\bver\.?)\s?$", re.IGNORECASE)

# Words just before (or just after) a number that say it is a phone number, in several
# languages; matched in the lower-cased text.
_PHONE_CONTEXT_BEFORE = re.compile(
    r"phone|\btel\b|tél|telef|teléf|mobil|móvil|cell|celular|portable|handy|\bruf|\bcall"
    r"|ll[aá]m|appel|\bring\b|\bfax|whatsapp|signal|sms|text(?:ing)? me|\btext\b|reach|contact"
    r"|kontakt"
    r"|contato|number|n[uú]mero|numéro|nummer|answering|dial|messag|landline|hotline|\bph\b"
    r"|\b[mtf]:|(?:office|home|work|desk):|fixe|bel me|bellen|携帯|電話|연락|电话|手机"
    r"|телефон|тел\.|моб|फ़ोन|फोन|मोबाइल|هاتف|جوال|رقم|numer|komórk|puhelin|τηλ|nomor|điện thoại"
    r"|\bcep\b|\bgsm\b|\bpage\b|\bpaging\b|call ?back|rückruf|anruf|erreich|\bzap\b|\bwpp\b"
    r"|\bwhats\b|नंबर|नम्बर|номер"
)
_ODD_GROUPS_RE = re.compile(r"[ \-./][0-9][ \-./]")
_DATED_ID_RE = re.compile(r"(?:19|20)[0-9]{2}[-./]?(?:0[1-9]|1[0-2])")
_TWO_DIGIT_GROUPS_RE = re.compile(r"[0-9]{2}(?: [0-9]{2}){5,}")
_SINGLE_DIGIT_GROUP_RE = re.compile(r"(?<![0-9])[0-9](?![0-9])")
_GENERIC_NUMBER_WORD = re.compile(r"number|n[uú]mero|numéro|nummer|नंबर|नम्बर|номер|numer")
_PHONE_CONTEXT_AFTER = re.compile(
    r"^[ \t:,;()\-–]{0,3}(?:office|fax|mobile|cell|home|work|desk|phone|tel)"
)
# Labels of identifiers that are not phone numbers, when they come after any phone word:
# "Part number 8471-3020-15", "Tracking: 7749 8123 5567", "Vorgangsnummer: 2024-000184".
_NOT_PHONE_CONTEXT = re.compile(
    r"order|\bpart\b|track|invoice|\binv\b|ticket|serial|\bmodel|\bsku|\bref\b|referen"
    r"|confirm|receipt|\bbatch|\blot\b|\bbuild|\bcase\b|booking|policy|account|\bacct"
    r"|\bid\b|isbn|version|release|\bpo\b|shipment|parcel|package|pedido|commande|suivi"
    r"|rastreio|seguimiento|factura|fatura|facture|rechnung|bestell|sendung|vorgang|kunden"
    r"|auftrag|artikel|serien|注文|伝票|請求"
    # "the example number 555-0142", but not a domain ("@example.com")
    r"|(?<![@.])\b(?:example|sample|placeholder|dummy|fake)\b(?!\.)"
    # other personal identifiers, reported by their own recognisers
    r"|passport|passeport|pasaporte|passaporte|passaporto|reisepass|paspoort|旅券|licen[cs]e"
    r"|führerschein|\bssn\b|social security|\bdni\b|\bnie\b|\bnif\b|\bcpf\b|aadhaar|\bpan\b"
    # tax and company registration numbers
    r"|\bvat\b|\btax\b|\btva\b|ust-?id|steuer|mwst|\biva\b|\bgst\b|\bein\b|\btin\b|siret|siren"
    r"|\bkvk\b|\babn\b|\bcnpj\b|\bcui\b"
    # orders and invoices in other scripts, draws
    r"|طلب|فاتورة|شحنة|заказ|счёт|счет|накладн|订单|单号|發票|发票|ऑर्डर|चालान|lotter|lotto|draw"
    # case files and protocols
    r"|dossier|protocol|expediente|aktenzeichen|\baz\b|registro|matricule|\bclaim\b|\bfile\b"
    r"|паспорт|पासपोर्ट|جواز|护照|旅券|パスポート|मॉडल|модель|артикул|型番|型号"
)
# Labels of other identifiers right before a card-shaped number: "Serial: 4532-0151-...".
_NOT_CARD_CONTEXT = re.compile(
    r"serial|\bsku\b|\bpart\b|track|\border|invoice|isbn|imei|\bmodel|product|\bbatch|\blot\b"
    r"|seriennummer|sendung|bestell|commande|pedido"
)
_SSN_CONTEXT = re.compile(r"ssn|social security|\bss#|\bsocial\b")
_CARD_CONTEXT = re.compile(
    r"card|credit|debit|\bcc\b|visa|master|amex|american express|discover|jcb|maestro|payment"
)

PHONE_REGIONS = ("US", "CA")  # national numbers without "+" or context are checked against these
# With a phone word near, or written the way a national number is (a trunk "0" and groups),
# a national number is checked against these as well.
CONTEXT_PHONE_REGIONS = (
    "US", "CA", "GB", "DE", "FR", "ES", "IT", "NL", "BE", "CH", "AT", "PT", "IE", "IN", "JP",
    "CN", "BR", "MX", "AU", "RU", "SA", "AE",
)  # fmt: skip
# Kept to about twenty: each region's metadata is a dozen regular expressions, and beyond the
# 512 that Python's regex cache holds, every check would compile them again (measured: the
# PII-dense eval texts ran at half the speed with 38 regions).


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
        if _is_host_ipv4(text, start, end, candidate):
            yield Entity(IP_ADDRESS, start, end, 0.9)
        return
    if (start and text[start - 1] in "@/") or text.startswith(":", end):
        return  # after "@" or "//", or before ":port", only an IP address
    ssn = _SSN_RE.fullmatch(candidate)
    if ssn:
        area, separator, group, serial = ssn.groups()
        # Never issued: area 000, 666 or 900-999, group 00, serial 0000.
        if area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000":
            context = _context_before(text, start, _SSN_CONTEXT)
            if not context and _context_before(text, start, _NOT_PHONE_CONTEXT, 30):
                return  # "part number 219-44-0912", "Order 512-44-7306": another identifier
            if separator == "-":
                yield Entity(US_SSN, start, end, 0.95 if context else 0.85)
                return
            if context:
                yield Entity(US_SSN, start, end, 0.8)
                return
    if _CARD_SHAPE_RE.fullmatch(candidate):
        digits = _NON_DIGIT_RE.sub("", candidate)
        if (
            luhn_valid(digits)
            and not _is_placeholder_card(digits)
            and not _context_before(text, start, _NOT_CARD_CONTEXT, 25)
        ):
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
    if len(_SINGLE_DIGIT_GROUP_RE.findall(body)) >= 4:
        return None  # digits spaced out one by one: find_spoken_phones takes the whole run
    end = start + len(candidate)
    formatted = not body.isdigit()
    lower = lowered(text)
    window = max(0, start - 40)
    context = False
    strong_at = -1  # where the last phone word other than "number" ends
    for m in _PHONE_CONTEXT_BEFORE.finditer(lower, window, start):
        context = True
        if not _GENERIC_NUMBER_WORD.fullmatch(m.group()):
            strong_at = m.end()
    context = context or _PHONE_CONTEXT_AFTER.match(lower[end : end + 12]) is not None
    not_phone_at = -1
    for m in _NOT_PHONE_CONTEXT.finditer(lower, max(0, start - 30), start):
        not_phone_at = m.end()
    if not_phone_at >= 0 and strong_at < not_phone_at:
        # "Part number", "Rechnungsnummer", "Tel. for order": the label of another identifier,
        # unless a phone word comes after it ("Order questions? Call 0800 ...").
        return None
    if not context and not body.startswith(("+", "(")) and _ODD_GROUPS_RE.search(body):
        return None  # "1.2.840.113549": a one-digit group inside is an OID or a version
    if digits >= 12 and _DATED_ID_RE.match(body):
        return None  # "2025031800457": a dated reference, longer than a national number
    if not context and not body.startswith("+") and _TWO_DIGIT_GROUPS_RE.fullmatch(body):
        return None  # "04 11 23 37 41 49": six or more pairs are drawn numbers, not a phone
    if _phone_is_valid(body, PHONE_REGIONS):
        if formatted or context:
            return Entity(PHONE, start, end, 0.9 if context else 0.75)
        return None
    # Written as a national number (a trunk "0", groups, nine digits or more: "030 12345678",
    # "(02) 9876 5432"), which a postcode ("01304-001") is not.
    national = (
        digits >= 9 and body.startswith(("0", "(0")) and not body.startswith("00") and formatted
    )
    if (context or national) and _phone_is_valid(body, CONTEXT_PHONE_REGIONS):
        return Entity(PHONE, start, end, 0.85 if context else 0.7)
    if context and formatted:
        return Entity(PHONE, start, end, 0.6)
    return None


@cache
def _national_lengths() -> dict[str, frozenset[int]]:
    """For each region checked, the lengths its national numbers can have (metadata)."""
    lengths: dict[str, frozenset[int]] = {}
    for region in CONTEXT_PHONE_REGIONS:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        described = metadata.general_desc if metadata else None
        possible = described.possible_length if described else ()
        lengths[region] = frozenset(possible or range(4, 18))
    return lengths


def _phone_is_valid(candidate: str, regions: tuple[str, ...]) -> bool:
    try:
        if candidate.startswith("+"):
            return phonenumbers.is_valid_number(phonenumbers.parse(candidate, None))
        if candidate.startswith("00"):
            return phonenumbers.is_valid_number(phonenumbers.parse("+" + candidate[2:], None))
        # is_valid_number_for_region checks one region's metadata; is_valid_number would
        # first look for the region among all that share the country code (25 for +1).
        digits = len(_NON_DIGIT_RE.sub("", candidate))
        lengths = _national_lengths()
        return any(
            phonenumbers.is_valid_number_for_region(phonenumbers.parse(candidate, region), region)
            for region in regions
            # a cheap test first: the number's length, without a trunk "0", fits the region
            if digits in lengths[region] or digits - 1 in lengths[region]
        )
    except phonenumbers.NumberParseException:
        return False


# --- phone numbers read out: "five five five, two one eight ...", "2 0 6 - 5 5 5 ..." ---------

# Digit words in English, Spanish, French, German, Portuguese and Italian, and what they add.
_DIGIT_WORDS: dict[str, str] = {
    **dict.fromkeys(("zero", "oh", "cero", "zéro", "null", "zero"), "0"),
    **dict.fromkeys(("one", "uno", "un", "eins", "um", "una"), "1"),
    **dict.fromkeys(("two", "dos", "deux", "zwei", "zwo", "dois", "due"), "2"),
    **dict.fromkeys(("three", "tres", "trois", "drei", "três", "tre"), "3"),
    **dict.fromkeys(("four", "cuatro", "quatre", "vier", "quatro", "quattro"), "4"),
    **dict.fromkeys(("five", "cinco", "cinq", "fünf", "cinque"), "5"),
    **dict.fromkeys(("six", "seis", "sechs", "sei"), "6"),
    **dict.fromkeys(("seven", "siete", "sept", "sieben", "sete", "sette"), "7"),
    **dict.fromkeys(("eight", "ocho", "huit", "acht", "oito", "otto"), "8"),
    **dict.fromkeys(("nine", "nueve", "neuf", "neun", "nove"), "9"),
    **dict.fromkeys(("hundred",), "00"),  # "nine hundred" read for 900
}
_REPEAT_WORDS = {"double": 2, "triple": 3}
_SPOKEN_TOKEN = (
    "(?:" + "|".join(sorted({*_DIGIT_WORDS, *_REPEAT_WORDS}, key=len, reverse=True)) + r"|\d)"
)
# Seven or more digit words or single digits, separated by spaces, commas, dashes or dots.
_SPOKEN_PHONE_RE = re.compile(
    r"(?<![\w.,])"
    + _SPOKEN_TOKEN
    + r"(?:(?:[ \t]{0,2}[,\-–.][ \t]{0,2}|[ \t]{1,2})"
    + _SPOKEN_TOKEN
    + r"){5,40}(?![\w]|[.,]\d)"
)
_SPOKEN_START_RE = re.compile(r"(?<![\w.,])" + _SPOKEN_TOKEN)
# A read-out number is only taken after a word that says phone; those words are found first
# with ``str.find`` (fast), and the number is looked for just after each.
_SPOKEN_CUES = ("phon", "call", "number", "número", "numéro", "tel", "tél", "mobil", "móvil",
                "cell", "text me", "can text", "reach me", "llam", "llám", "ring",
                "rückruf")  # fmt: skip
_SPOKEN_WINDOW = 40
# French numbers from 0 to 99 in words, read in pairs ("zéro six, douze, trente-quatre,
# cinquante-six, soixante-dix-huit"): a sequence of at least four after a phone word.
_FR_UNIT = r"(?:un|une|deux|trois|quatre|cinq|six|sept|huit|neuf)"
_FR_TEEN = r"(?:dix|onze|douze|treize|quatorze|quinze|seize|dix-sept|dix-huit|dix-neuf)"
_FR_NUMBER = (
    rf"(?:z[ée]ro|(?:vingt|trente|quarante|cinquante|soixante)(?:[- ]et[- ](?:un|onze)"
    rf"|-{_FR_TEEN}|-{_FR_UNIT})?|quatre-vingts?(?:-{_FR_TEEN}|-{_FR_UNIT})?|{_FR_TEEN}|{_FR_UNIT})"
)
_FRENCH_SPOKEN_RE = re.compile(
    rf"(?<![\w-]){_FR_NUMBER}(?:(?:[ \t]{{0,2}},[ \t]{{0,2}}|[ \t]{{1,2}}){_FR_NUMBER}){{3,11}}"
    r"(?![\w-])"
)


def find_spoken_phones(text: str) -> Iterator[Entity]:
    """Phone numbers written out in words or as spaced digits, after a word that says phone."""
    lower = lowered(text)
    if len(lower) != len(text):
        return
    searched_until = -1
    for position in keyword_starts(text, _SPOKEN_CUES):
        if (position and lower[position - 1].isalpha()) or lower.startswith("tell", position):
            continue  # "hotel", "recall", "string", "tell": not a phone word (the common case)
        start = max(position, searched_until)
        stop = min(len(text), position + _SPOKEN_WINDOW)
        if start >= stop:
            continue
        searched_until = stop
        # Candidate starts are looked for in the window only; the number may run past it.
        for first in _SPOKEN_START_RE.finditer(lower, start, stop):
            m = _SPOKEN_PHONE_RE.match(lower, first.start())
            if m is None:
                continue
            digits = _spoken_digits(m.group())
            if digits is not None and 7 <= len(digits) <= 15:
                yield Entity(PHONE, m.start(), m.end(), 0.8)
                searched_until = m.end()
                break
    if not text.isascii():
        yield from _french_spoken_phones(lower)


def _french_spoken_phones(lower: str) -> Iterator[Entity]:
    """French numbers read out in pairs from the trunk "zéro": ten digits, no phone word needed
    (French prose does not count in pairs from zero)."""
    at = lower.find("zéro")
    while at >= 0:
        m = _FRENCH_SPOKEN_RE.match(lower, at)
        if m is not None and _french_digit_count(m.group()) == 10:
            yield Entity(PHONE, m.start(), m.end(), 0.8)
            at = lower.find("zéro", m.end())
        else:
            at = lower.find("zéro", at + 1)


_FRENCH_GROUP_SPLIT_RE = re.compile(r"[ \t]*,[ \t]*|[ \t]+(?!et\b)(?<!\bet )")


def _french_digit_count(spoken: str) -> int:
    """How many digits a French number read out in groups stands for: "zéro" and the units
    one each, every other group two."""
    count = 0
    for group in _FRENCH_GROUP_SPLIT_RE.split(spoken):
        word = group.strip()
        if not word:
            continue
        count += 1 if word in _FRENCH_ONE_DIGIT else 2
    return count


_FRENCH_ONE_DIGIT = frozenset(
    ("zéro", "zero", "un", "une", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf")
)


_SPOKEN_SPLIT_RE = re.compile(r"[\s,\-–.]+")


def _spoken_digits(spoken: str) -> str | None:
    """The digits a read-out number stands for, or None if it is not one (all words must be
    digit words or repeats; at least half of them digit words or digits)."""
    digits: list[str] = []
    repeat = 1
    for token in _SPOKEN_SPLIT_RE.split(spoken):
        if not token:
            continue
        if token in _REPEAT_WORDS:
            repeat = _REPEAT_WORDS[token]
            continue
        value = token if token.isdigit() else _DIGIT_WORDS.get(token)
        if value is None:
            return None
        digits.append(value[0] * repeat + value[1:] if repeat > 1 else value)
        repeat = 1
    return "".join(digits)


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


def _is_placeholder_card(digits: str) -> bool:
    """A block of two or four digits repeated ("4242 4242 4242 4242", the test number payment
    providers document): a placeholder, no one's card."""
    return any(digits == (digits[:period] * 10)[: len(digits)] for period in (1, 2, 4))


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


# Every IPv6 address has two colons with at most four hex digits between them ("::" or "a:b:"):
# a text without is not searched.
_IPV6_HINT_RE = re.compile(r":[0-9A-Fa-f]{0,4}:")


def find_ipv6_addresses(text: str) -> Iterator[Entity]:
    if ("::" not in text and text.count(":") < 7) or not _IPV6_HINT_RE.search(text):
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
        # Hugging Face, SendGrid, npm (each literal costs a pass over the text, so only common
        # providers have a pattern; others, such as Twilio's SK keys, by their key name)
        (("hf_",), r"h(?<![A-Za-z0-9_].)f_[A-Za-z0-9]{30,60}(?![A-Za-z0-9_])", 0.95),
        (("SG.",), r"S(?<![A-Za-z0-9_.-].)G\.[A-Za-z0-9_\-]{16,32}\.[A-Za-z0-9_\-]{30,50}"
                   r"(?![A-Za-z0-9_-])", 1.0),
        (("npm_",), r"n(?<![A-Za-z0-9_].)pm_[A-Za-z0-9]{36}(?![A-Za-z0-9_])", 1.0),
    )
)  # fmt: skip

# Other providers whose keys start with a prefix of their own: Shopify, DigitalOcean, Groq,
# Replicate, PyPI, Linear, Postman, xAI, Perplexity, Notion, Square, Mailgun, Google OAuth access
# tokens, Vault, Doppler, Stripe webhook secrets, Slack app tokens, GitLab deploy and runner
# tokens, Grafana, Sentry, Tailscale. Each prefix ends with "_", "-" or ".": one pattern finds
# such a joining character followed by a long run of key characters (rare in prose, and fast:
# it starts at a character class), and the word before it picks the provider's pattern.
_PREFIXED_KEYS: dict[str, re.Pattern[str]] = {
    word: re.compile(prefix + rest + r"(?![A-Za-z0-9_\-])")
    for word, prefix, rest in (
        ("shpat_", r"shpat_", r"[a-fA-F0-9]{32}"), ("shpss_", r"shpss_", r"[a-fA-F0-9]{32}"),
        ("shpca_", r"shpca_", r"[a-fA-F0-9]{32}"), ("shppa_", r"shppa_", r"[a-fA-F0-9]{32}"),
        ("dop_", r"dop_v1_", r"[a-f0-9]{64}"), ("doo_", r"doo_v1_", r"[a-f0-9]{64}"),
        ("dor_", r"dor_v1_", r"[a-f0-9]{64}"), ("gsk_", r"gsk_", r"[A-Za-z0-9]{40,60}"),
        ("r8_", r"r8_", r"[A-Za-z0-9]{30,45}"), ("pypi-", r"pypi-AgE", r"[A-Za-z0-9_\-]{50,250}"),
        ("lin_", r"lin_(?:api|oauth)_", r"[A-Za-z0-9]{32,64}"),
        ("PMAK-", r"PMAK-", r"[a-f0-9]{24}-[a-f0-9]{34}"),
        ("xai-", r"xai-", r"[A-Za-z0-9]{40,100}"),
        ("pplx-", r"pplx-", r"[A-Za-z0-9]{40,64}"), ("ntn_", r"ntn_", r"[A-Za-z0-9]{40,60}"),
        ("secret_", r"secret_", r"[A-Za-z0-9]{43}"),
        ("sq0atp-", r"sq0atp-", r"[A-Za-z0-9_\-]{22,60}"),
        ("sq0csp-", r"sq0csp-", r"[A-Za-z0-9_\-]{22,60}"), ("key-", r"key-", r"[a-f0-9]{32}"),
        ("ya29.", r"ya29\.", r"[A-Za-z0-9_\-]{20,500}"),
        ("hvs.", r"hvs\.", r"[A-Za-z0-9_\-]{24,200}"),
        ("hvb.", r"hvb\.", r"[A-Za-z0-9_\-]{24,200}"),
        ("dp.", r"dp\.(?:pt|st|sa|ct)\.", r"[A-Za-z0-9]{40,60}"),
        ("whsec_", r"whsec_", r"[A-Za-z0-9+/=]{24,100}"),
        ("xapp-", r"xapp-", r"\d-[A-Za-z0-9\-]{20,200}"),
        ("gldt-", r"gldt-", r"[A-Za-z0-9_\-]{20,80}"),
        ("glrt-", r"glrt-", r"[A-Za-z0-9_\-]{20,80}"),
        ("glptt-", r"glptt-", r"[A-Za-z0-9_\-]{20,80}"),
        ("glsoat-", r"glsoat-", r"[A-Za-z0-9_\-]{20,80}"),
        ("glcbt-", r"glcbt-", r"[A-Za-z0-9_\-]{20,80}"),
        ("glc_", r"glc_", r"[A-Za-z0-9+/=]{32,400}"),
        ("glsa_", r"glsa_", r"[A-Za-z0-9_]{32,60}"),
        ("sntrys_", r"sntrys_", r"[A-Za-z0-9+/=_]{40,300}"),
        ("sntryu_", r"sntryu_", r"[A-Za-z0-9+/=_]{40,300}"),
        ("tskey-", r"tskey-", r"(?:auth|api|client)-[A-Za-z0-9\-]{20,80}"),
    )
}  # fmt: skip
_JOINED_RUN_RES = (  # one literal first character each: the engine skips to it fast
    re.compile(r"_[A-Za-z0-9_\-.+/=]{18,}"),
    re.compile(r"-[A-Za-z0-9_\-.+/=]{18,}"),
    re.compile(r"\.(?:[a-z]{2}\.)?[A-Za-z0-9_\-]{20,}"),  # "ya29.…", "hvs.…", "dp.pt.…"
)
_PREFIX_LONGEST = max(map(len, _PREFIXED_KEYS))
# Telegram bot tokens ("123456789:AA…"), found from the literal inside them, and Twilio API
# keys ("SK" and 32 hex digits), behind a literal start.
_TELEGRAM_TOKEN_RE = re.compile(r"[0-9]{8,10}:AA[A-Za-z0-9_\-]{33}(?![A-Za-z0-9_\-])")
_TWILIO_KEY_RE = re.compile(r"S(?<![A-Za-z0-9_].)K[a-f0-9]{32}(?![A-Za-z0-9_])")

_SECRET_KEYWORDS = ("pass", "pw", "secret", "api", "access", "token", "bearer", "basic", "kennwort",
                    "contraseña", "senha", "wachtwoord", "lösenord", "clave", "пароль",
                    "パスワード", "密码")  # fmt: skip
# A value after a key name that says it is secret: `password: hunter2!`, `api_key="..."`,
# `aws_secret_access_key = ...`, `mot de passe : ...`, `senha do roteador: ...`. Matched at a
# keyword found above; only the value is reported.
_ASSIGNED_SECRET_RE = re.compile(
    r"(?:pass(?:word|wd|phrase|wort|e)?|pwd|pw|secret(?:[_\- ]?(?:access[_\- ]?)?key)?"
    r"|api[_\- ]?key|access[_\- ]?key|token|kennwort|contrase[ñn]a|senha|wachtwoord|lösenord"
    r"|clave|пароль|パスワード|密码|credentials?)"
    # a few short words between: "senha do roteador:", "password for the wifi is"
    r"(?:[ \t][\w\-]{1,12}){0,3}?"
    r"[\"']?[ \t]{0,3}(?:[:=：]|(?:is|was|es|est|ist|é|è|lautet|wordt|är|er|jest|era)\b)"
    r"[ \t]{0,3}[\"'`]?"
    r"([^\s\"'`,;]{6,256})",
    re.IGNORECASE,
)
# A value right after the key name with only a space between ("Passwort Rheinufer#2291",
# "auth token 04c6b3365a..."): taken only when it mixes letters and digits (see below).
_BARE_SECRET_RE = re.compile(
    r"(?:pass(?:word|wort|wd|e)?|pwd|kennwort|contrase[ñn]a|senha|wachtwoord|lösenord|clave"
    r"|пароль|パスワード|密码|token|secret|api[_\- ]?key|access[_\- ]?key)"
    r"[ \t]{1,3}([^\s\"'`,;]{6,256})",
    re.IGNORECASE,
)
_BEARER_RE = re.compile(r"bearer[ \t]{1,3}([A-Za-z0-9._~+/\-]{16,4096}=*)", re.IGNORECASE)
# HTTP basic authentication: base64 of "user:password".
_BASIC_AUTH_RE = re.compile(r"basic[ \t]{1,3}([A-Za-z0-9+/]{8,1024}={0,2})(?![A-Za-z0-9+/=])", re.I)


def _is_basic_credentials(value: str) -> bool:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    _user, colon, password = decoded.partition(":")
    return bool(colon and password) and decoded.isprintable()


# Credentials in a URL: scheme://user:password@host (the user and password are reported,
# or ":password" with no user), or scheme://token@host (a token-looking user alone).
_URL_CREDENTIALS_RE = re.compile(r"://([^\s:/?#@\[\]]{0,128}):([^\s/@]{1,256})@")
# Webhook URLs whose path is the credential (Slack, Discord, Microsoft Teams and Office 365,
# Zapier, Telegram bots, Google Chat with its key and token), reported whole.
_WEBHOOK_URL_RE = re.compile(
    r"https?://(?:hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_\-]{20,200}"
    r"|(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/[0-9]{5,25}/[A-Za-z0-9_\-]{20,120}"
    r"|[A-Za-z0-9\-]{1,60}\.webhook\.office\.com/webhookb2/[^\s\"'<>]{20,400}"
    r"|outlook\.office(?:365)?\.com/webhook/[^\s\"'<>]{20,400}"
    r"|hooks\.zapier\.com/hooks/catch/[0-9]{3,12}/[A-Za-z0-9]{4,40}/?"
    r"|api\.telegram\.org/bot[0-9]{6,12}:[A-Za-z0-9_\-]{30,40}[^\s\"'<>]{0,200}"
    r"|chat\.googleapis\.com/v1/spaces/[^\s\"'<>?]{1,100}/messages\?[^\s\"'<>]{10,400})"
)
# A token, key, signature or password in a URL's query string: the value is reported.
_URL_QUERY_SECRET_RE = re.compile(
    r"[?&](?:access_token|api_?key|apikey|auth|auth_token|client_secret|key|password|pwd|secret"
    r"|sig|signature|token|x-amz-signature|x-goog-signature)=([^\s&\"'<>#]{12,512})",
    re.IGNORECASE,
)
# A value after "AccountKey=", "SharedAccessKey=" and the like in a connection string.
_CONNECTION_KEY_RE = re.compile(
    r"(?:AccountKey|SharedAccessKey|SharedAccessSignature|Password|Pwd)=([^;\s\"']{8,512})",
    re.IGNORECASE,
)
_URL_TOKEN_RE = re.compile(r"://([A-Za-z0-9_\-.~]{20,256})@")
_PRIVATE_KEY_BEGIN_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]{0,40})PRIVATE KEY( BLOCK)?-----")
# Values that documentation and templates put where a secret goes.
_PLACEHOLDER_RE = re.compile(
    r"your|here|xxxx|\*\*\*|\.\.\.|changeme|change_me|placeholder|redacted|example|dummy"
    r"|<|\{\{|\$\{|replace|insert|todo|fixme|secret_key$|password$",
    re.IGNORECASE,
)
_REPEATED_RUN_RE = re.compile(r"(.)\1{5,}")
# In a key of a provider's format: the documentation's own examples ("AKIAIOSFODNN7EXAMPLE").
_TOKEN_PLACEHOLDER_RE = re.compile(r"your|example|xxxx|placeholder|redacted|dummy", re.I)


def _is_placeholder_secret(value: str) -> bool:
    return _PLACEHOLDER_RE.search(value) is not None or _REPEATED_RUN_RE.search(value) is not None


def _looks_like_secret_value(value: str) -> bool:
    if value.startswith(("<", "{", "$", "%", "*")) or len(set(value)) < 4:
        return False  # a template variable, or "********"
    if (
        "(" in value
        or "[" in value
        or value.startswith(("os.", "process.", "env.", "self.", "settings.", "config."))
    ):
        return False  # code that reads the secret: `api_key = os.environ.get(...)`
    if _is_placeholder_secret(value):
        return False
    if len(value) >= 12:
        return True
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    has_other = any(not c.isalnum() for c in value)
    return has_alpha and (has_digit or has_other)


def _looks_like_bare_secret(value: str) -> bool:
    """A value written after a key name with no ":" or "is": letters and digits together, not
    a word with a number ("v2", "2FA", "resets"), a URL or a path."""
    core = value.rstrip(".)")
    if len(core) < 6 or "://" in core or core.startswith(("/", "~", "#", "@")):
        return False
    return (
        any(c.isdigit() for c in core)
        and any(c.isalpha() for c in core)
        and _looks_like_secret_value(core)
        and core[-1] not in ":?"
        and not core.isdigit()
    )


def _prefixed_keys(text: str) -> Iterator[Entity]:
    for run in itertools.chain.from_iterable(p.finditer(text) for p in _JOINED_RUN_RES):
        joint = run.start()
        start = joint
        while start > 0 and joint - start < _PREFIX_LONGEST and text[start - 1].isalnum():
            start -= 1
        if start and text[start - 1] in "_-.":
            continue
        pattern = _PREFIXED_KEYS.get(text[start : joint + 1])
        if pattern is None:
            continue
        m = pattern.match(text, start)
        if m is not None and not _is_placeholder_secret(m.group()):
            yield Entity(SECRET, start, m.end(), 1.0)
    at = text.find(":AA")
    while at >= 0:
        m = _TELEGRAM_TOKEN_RE.search(text, max(0, at - 10), at + 40)
        if m is not None and not (m.start() and text[m.start() - 1].isalnum()):
            yield Entity(SECRET, m.start(), m.end(), 1.0)
        at = text.find(":AA", at + 1)
    if "SK" in text:
        for m in _TWILIO_KEY_RE.finditer(text):
            if not _is_placeholder_secret(m.group()):
                yield Entity(SECRET, m.start(), m.end(), 1.0)


def find_secrets(text: str) -> Iterator[Entity]:
    for literals, pattern, score in _SECRET_TOKENS:
        if literals and not any(literal in text for literal in literals):
            continue
        for m in pattern.finditer(text):
            if not _REPEATED_RUN_RE.search(m.group()) and not _TOKEN_PLACEHOLDER_RE.search(
                m.group()
            ):
                yield Entity(SECRET, m.start(), m.end(), score)
    yield from _prefixed_keys(text)
    previous_end = -1
    for position in keyword_starts(text, _SECRET_KEYWORDS):
        if position < previous_end:
            continue
        match = _ASSIGNED_SECRET_RE.match(text, position)
        if match and _looks_like_secret_value(match.group(1)):
            yield Entity(SECRET, match.start(1), match.end(1), 0.8)
            previous_end = match.end()
            continue
        match = _BARE_SECRET_RE.match(text, position)
        if match and _looks_like_bare_secret(match.group(1)):
            value_end = match.end(1) - (1 if match.group(1)[-1] in ".)" else 0)
            yield Entity(SECRET, match.start(1), value_end, 0.75)
            previous_end = match.end()
            continue
        match = _BEARER_RE.match(text, position)
        if match:
            yield Entity(SECRET, match.start(1), match.end(1), 0.9)
            previous_end = match.end()
            continue
        match = _BASIC_AUTH_RE.match(text, position)
        if match and _is_basic_credentials(match.group(1)):
            yield Entity(SECRET, match.start(1), match.end(1), 0.9)
            previous_end = match.end()
    if "=" in text and ("Key=" in text or "key=" in text or "ssword=" in text or "wd=" in text):
        for m in _CONNECTION_KEY_RE.finditer(text):
            if _looks_like_secret_value(m.group(1)):
                yield Entity(SECRET, m.start(1), m.end(1), 0.9)
    if "://" in text:
        for m in _WEBHOOK_URL_RE.finditer(text):
            if not _TOKEN_PLACEHOLDER_RE.search(m.group()) and not _REPEATED_RUN_RE.search(
                m.group()
            ):
                yield Entity(SECRET, m.start(), m.end(), 0.95)
        if "=" in text:
            for m in _URL_QUERY_SECRET_RE.finditer(text):
                if _looks_like_secret_value(m.group(1)) and any(c.isdigit() for c in m.group(1)):
                    yield Entity(SECRET, m.start(1), m.end(1), 0.85)
        for m in _URL_CREDENTIALS_RE.finditer(text):
            if not _is_placeholder_secret(m.group(2)):
                yield Entity(SECRET, m.start(1), m.end(2), 0.95)
        for m in _URL_TOKEN_RE.finditer(text):
            token = m.group(1)
            if any(c.isdigit() for c in token) and any(c.isalpha() for c in token):
                yield Entity(SECRET, m.start(1), m.end(1), 0.9)
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

# Month names and abbreviations in English, German, French, Spanish, Portuguese, Italian and
# Dutch (matched case-insensitively).
_MONTH = (
    r"(?:jan(?:uary|uar|vier|eiro)?|ene(?:ro)?|genn(?:aio)?|janv\.?"
    r"|feb(?:ruary|ruar|rero|braio)?|fév(?:rier)?|fev(?:ereiro)?|févr\.?"
    r"|mar(?:ch|zo|ço|s)?|märz|mär|maart"
    r"|apr(?:il|ile)?|avr(?:il)?|abr(?:il)?"
    r"|may|mai|mayo|maio|maggio|mei"
    r"|jun(?:e|i|io|ho)?|juin|giu(?:gno)?"
    r"|jul(?:y|i|io|ho)?|juil(?:let)?|lug(?:lio)?"
    r"|aug(?:ust|ustus)?|août|ago(?:sto)?"
    r"|sep(?:t(?:ember|iembre|embre)?)?|set(?:embro|tembre)?"
    r"|oct(?:ober|obre|ubre)?|okt(?:ober)?|out(?:ubro)?|ott(?:obre)?"
    r"|nov(?:ember|embre|iembre|embro)?"
    r"|dec(?:ember)?|dez(?:ember|embro)?|déc(?:embre)?|dic(?:iembre|embre)?"
    # Swedish, Polish (genitive), Turkish
    r"|januari|februari|augusti|maj|juni|juli"
    r"|stycznia|lutego|marca|kwietnia|maja|czerwca|lipca|sierpnia|września|października"
    r"|listopada|grudnia|ocak|şubat|mart|nisan|mayıs|haziran|temmuz|ağustos|eylül|ekim|kasım"
    r"|aralık"
    # Russian (genitive and nominative)
    r"|января|февраля|марта|апреля|мая|июня|июля|августа|сентября|октября|ноября|декабря"
    r"|январь|февраль|март|апрель|май|июнь|июль|август|сентябрь|октябрь|ноябрь|декабрь"
    # Hindi
    r"|जनवरी|फ़रवरी|फरवरी|मार्च|अप्रैल|मई|जून|जुलाई|अगस्त|सितंबर|सितम्बर|अक्टूबर|अक्तूबर|नवंबर"
    r"|नवम्बर|दिसंबर|दिसम्बर"
    # Arabic: Gregorian, Levantine and Hijri months
    r"|يناير|فبراير|مارس|أبريل|ابريل|مايو|يونيو|يوليو|أغسطس|اغسطس|سبتمبر|أكتوبر|اكتوبر|نوفمبر"
    r"|ديسمبر|كانون الثاني|شباط|آذار|نيسان|أيار|حزيران|تموز|آب|أيلول|تشرين الأول|تشرين الثاني"
    r"|كانون الأول|محرم|صفر|ربيع الأول|ربيع الآخر|ربيع الثاني|جمادى الأولى|جمادى الآخرة"
    r"|جمادى الثانية|رجب|شعبان|رمضان|شوال|ذو القعدة|ذو الحجة)\.?"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th|er|º|°)?"
_ORDINAL_WORDS = (
    r"(?:(?:twenty|thirty)[- ]?)?(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth)"
    r"|tenth|eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth|seventeenth"
    r"|eighteenth|nineteenth|twentieth|thirtieth"
)
# A year in digits, or in English words: "nineteen eighty-two", "nineteen oh five",
# "two thousand and one", "twenty twelve".
_UNITS = r"(?:one|two|three|four|five|six|seven|eight|nine)"
_TEENS = r"(?:ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen)"
_TENS = r"(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)"
_YEAR_WORDS = (
    rf"(?:nineteen|twenty)[ \-](?:{_TENS}(?:[ \-]{_UNITS})?|{_TEENS}|(?:oh|o)[ \-]{_UNITS}|hundred)"
    rf"|two thousand(?:(?: and)? (?:{_TENS}(?:[ \-]{_UNITS})?|{_TEENS}|{_UNITS}))?"
)
# Hijri years (13xx, 14xx) too: "14 رمضان 1410".
_YEAR = rf"(?:1[3-9]\d\d|20\d\d|{_YEAR_WORDS})(?:(?: ?г\.| года| год|년))?"
_DATE_RE = re.compile(
    r"(?<![A-Za-z0-9.])(?:"
    r"\d{1,2}[./\-]\d{1,2}[./\-](?:\d{4}|\d{2})"
    r"|\d{4}[./\-]\d{1,2}[./\-]\d{1,2}"
    r"|\d{4} ?年 ?\d{1,2} ?月 ?\d{1,2} ?日|\d{4}년 ?\d{1,2}월 ?\d{1,2}일"
    r"|(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    rf"|(?:{_DAY}|{_ORDINAL_WORDS})\.?(?: of| de| di)?[ \-/]{_MONTH}"
    rf"(?:[ \-,/]{{1,2}}|,? de |,? del ){_YEAR}"
    rf"|{_MONTH}[ \-/](?:the )?(?:{_DAY}|{_ORDINAL_WORDS}),?[ \-/]{_YEAR}"
    r")(?![A-Za-z0-9])",
    re.IGNORECASE,
)
# Words before a date that say it is a birth date (lower case; "b." only right before it).
_DOB_KEYWORDS = (
    "born", "birth", "dob", "d.o.b", "geb", "né ", "née", "naissance", "naci", "nací", "nac.",
    "nasci", "nato ", "nata ", "рожд", "родил", "生年月日", "誕生", "b. ",
    "ميلاد", "مواليد", "जन्म", "出生", "生日", "生于", "생년월일", "출생", "생일", "doğum", "syntym",
    "födelse", "född", "født", "fødsel", "születés", "γέννηση", "ngày sinh", "bday",
)  # fmt: skip
# ... and after it: "1995年12月3日生まれ".
_DOB_AFTER_KEYWORDS = ("生まれ", "生")
_DOB_WINDOW = 40


_YEAR_OR_DATE_RE = re.compile(r"(?<!\d)(?:1[89]|20)\d\d(?!\d)|\d{1,2}[./\-]\d{1,2}[./\-]")
_SENTENCE_BREAK_RE = re.compile(r"[.!?]\s+[A-Z]|\n")


# Every date read here has four digits in a row (a year) or a digit, a separator and a digit:
# a cheap test (the pattern starts with a digit, so the engine skips to digits), before the
# keywords are looked for.
_DATE_GATE_RE = re.compile(r"[0-9](?:[0-9]{3}|[./\-][0-9])")


def find_dates_of_birth(text: str) -> Iterator[Entity]:
    if not has_digit(text) or _DATE_GATE_RE.search(text) is None:
        lower = lowered(text)
        if "nineteen" not in lower and "two thousand" not in lower:
            return  # no year in digits, nor one in words
    lower = lowered(text)
    taken_until = -1
    for position in keyword_starts(text, _DOB_KEYWORDS):
        if position < taken_until or (
            position and lower[position - 1].isalpha() and lower[position].isascii()
        ):
            continue  # inside a word: "stubborn" (Arabic joins the article: "الميلاد")
        right_after = lower.startswith("b. ", position)  # "b. 19 Aug 1944", nothing between
        limit = min(len(text), position + (3 if right_after else _DOB_WINDOW))
        m = _DATE_RE.search(text, position, limit + 40)
        if m is None or m.start() > limit or not _plausible_birth_year(m.group()):
            continue
        between = text[position : m.start()]
        if _SENTENCE_BREAK_RE.search(between) or _YEAR_OR_DATE_RE.search(between):
            continue  # another sentence, or an earlier date or year ("born in 1990, moved on")
        yield Entity(DATE_OF_BIRTH, m.start(), m.end(), 0.85)
        taken_until = m.end()
    for keyword in _DOB_AFTER_KEYWORDS:
        position = lower.find(keyword)
        while position >= 0:
            last = None
            for last in _DATE_RE.finditer(text, max(0, position - 30), position):  # noqa: B007
                pass
            if (
                last is not None
                and position - last.end() <= 2
                and last.start() >= taken_until
                and _plausible_birth_year(last.group())
            ):
                yield Entity(DATE_OF_BIRTH, last.start(), last.end(), 0.8)
                taken_until = last.end()
            position = lower.find(keyword, position + 1)


_YEAR_IN_DATE_RE = re.compile(r"(?<!\d)(\d{4}|\d{2})(?!\d)")


def _plausible_birth_year(date: str) -> bool:
    """A birth date is not in the future: "born ... 2031" is something else."""
    years = [int(y) for y in _YEAR_IN_DATE_RE.findall(date) if len(y) == 4]
    return not years or max(years) <= _this_year()


def _this_year() -> int:
    return datetime.datetime.now(tz=datetime.UTC).year


# --- passport numbers ------------------------------------------------------------------------

# "passport" in English, French, Spanish, Portuguese, Italian, German, Dutch, Polish, Russian,
# Japanese and Chinese (lower case).
_PASSPORT_KEYWORDS = ("pas", "паспорт", "旅券", "パスポート", "护照", "護照", "여권", "جواز",
                      "पासपोर्ट", "διαβατήριο", "útlevél", "hộ chiếu", "דרכון", "گذرنامه",
                      "หนังสือเดินทาง")  # fmt: skip
# "pas" is found fast and then checked: passport, passeport, pasaporte, passaporte, passaporto,
# (reise)pass, pass-nr, passnummer, paspoort, paszport.
_PASSPORT_WORD_RE = re.compile(
    r"pas(?:s(?:port|eport|aporte|aporto|-?n(?:r|o|umm)|nummer|i\b|\b)|aporte|aport|zport|poort"
    r"|por\b)",
    re.IGNORECASE,
)
# Passport numbers by their shapes: US (9 digits, or a letter and 8), UK (9 digits), Germany
# (9 of C-Z without vowels and digits), France (2 digits, 2 letters, 5 digits), Spain (3
# letters and 6 digits), India (a letter and 7), Japan (2 letters and 7), Brazil and Canada (2
# letters and 6), Australia (1-2 letters and 7), Italy (2 letters and 7), the Netherlands (9,
# letters and digits), China (E or G and 8). One pattern covers them: 6 to 9 upper-case letters
# and digits with at least two digits and a digit among the last four characters.
_PASSPORT_VALUE_RE = re.compile(
    r"(?<![A-Za-z0-9\-/.])(?=[A-Z0-9]*[0-9][A-Z0-9]*[0-9])[A-Z0-9]{6,9}(?![A-Za-z0-9\-/])"
    r"(?![.,]\d)"
)
_PASSPORT_WINDOW = 45


def find_passports(text: str) -> Iterator[Entity]:
    if not has_digit(text):
        return
    taken_until = -1
    for position in keyword_starts(text, _PASSPORT_KEYWORDS):
        if position < taken_until:
            continue
        if text[position] in "pP" and _PASSPORT_WORD_RE.match(text, position) is None:
            continue
        # The number follows within a few words ("passport no.", "the number is"); further
        # ones in the same stretch ("512904837 (USA) / 118203746 (UK)") are passports too.
        limit = min(len(text), position + _PASSPORT_WINDOW)
        search_from = position
        while True:
            m = _PASSPORT_VALUE_RE.search(text, search_from, limit + 9)
            if m is None or m.start() > limit:
                break
            between = text[search_from : m.start()]
            if _SENTENCE_BREAK_RE.search(between):
                break
            value = m.group()
            if not _looks_like_date_or_year(value):
                yield Entity(PASSPORT, m.start(), m.end(), 0.8)
            taken_until = search_from = m.end()
            limit = min(len(text), m.end() + 20)


def _looks_like_date_or_year(value: str) -> bool:
    return value.isdigit() and len(value) in (6, 8) and value[:2] in ("19", "20")
