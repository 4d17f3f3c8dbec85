"""Person names, found offline without a model.

A regular expression finds runs of capitalised words on one line (with name particles such as
"van der" and initials inside). Each run is then judged from:

- a title before it (Mr., Dr., Frau ...) or a phrase that introduces a name ("my name is",
  "Dear", "Hi", "signed", "User:");
- the 1990 US Census first-name and surname lists;
- whether its words are ordinary English words (a capitalised "Will" or "Grant" at the start of
  a sentence is a verb or a noun far more often than a name) or country names;
- whether the run starts a sentence.

The rules favour precision on ordinary English chat: a single capitalised word that is also an
English word is only taken after a title, and an unknown one only after a phrase that
introduces a name or in the middle of a sentence beside a known name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache, lru_cache

from .entities import PERSON, Entity
from .gazetteer import (
    LOWER,
    UPPER,
    country_names,
    english_words,
    first_names,
    proper_nouns,
    public_figures,
    surnames,
)
from .recognizers import has_non_latin, lowered

_PARTICLES = (
    "van|von|der|den|de|da|di|del|della|du|dos|das|des|la|le|ten|ter|bin|ibn|al|el|zu|af|av"
)
# The rest of a capitalised token after its first letter: "cConnan" of "McConnan", "'Brien",
# "ean-Luc"; or nothing, for an initial ("J", "J.").
_TOKEN_REST = (
    rf"(?:(?:['’][{UPPER}])?[{LOWER}]{{1,30}}(?:[{UPPER}][{LOWER}]{{1,30}})?"
    rf"(?:-[{UPPER}]?[{LOWER}]{{1,30}})?|\.?(?![{UPPER}{LOWER}]))"
)
# Starts with a character class, and checks the character before it with a lookbehind placed
# after it, which lets the regex engine skip fast to upper-case letters.
_RUN_RE = re.compile(
    rf"[{UPPER}](?<![\w'’\-.@/#].)"
    + _TOKEN_REST
    + rf"(?:(?: (?:{_PARTICLES}))* [{UPPER}]"
    + _TOKEN_REST
    + r"){0,5}(?![\w-])"
)


def _words(spaced: str) -> frozenset[str]:
    return frozenset(spaced.split())


TITLES = _words(
    "mr mrs ms miss mx dr prof sir dame lord lady madam madame mme mlle monsieur herr frau "
    "sr sra srta señor señora rev fr capt col gen sgt lt m sig dott herrn"
)
# Capitalised words that are never names in practice, though a few are in the census lists:
# greetings, pronouns, weekdays, months, words of forms and chat transcripts, company words.
_NOT_NAMES = _words(
    "i i'm im me my mine we you your he she they it its the a an this that these those hi "
    "hello hey dear thanks thank regards best cheers sincerely yours ok okay yes no not please "
    "monday tuesday wednesday thursday friday saturday sunday january february march april may "
    "june july august september october november december name names user bot agent customer "
    "assistant address phone email subject re fw fwd from to cc date our their his her "
    "street avenue road lane drive court place boulevard suite apt unit apartment box "
    "inc ltd llc corp corporation company co group bank university college school hospital "
    "services systems solutions technologies associates partners foundation institute "
    "orchestra band club team church museum hotel airport station center centre "
    "north south east west new saint st san santa los las "
    "god jesus christ allah king queen prince princess emperor pope "
    "in on at for and but or if so as by of with when while after before because since what "
    "why how who where which is are was were do does did can could would should "
    # articles and function words of other languages, month abbreviations, payment brands
    "le les un une il lo gli el los las die das ein eine und oder mit von für bei ich du "
    "jan feb mar apr jun jul aug sep sept oct nov dec "
    "visa mastercard amex maestro paypal iban bic swift ssn dob inhaber kunde kundin "
    # greetings and closings of letters in other languages
    "atenciosamente saludos cordialement cordiales salutations grüße gruß mfg saluti cordiali "
    "distinti obrigado obrigada gracias merci danke hola bonjour hallo ciao olá buongiorno "
    "bonsoir querido querida estimado estimada caro cara cher chère liebe lieber "
    # possessives and pronouns of other languages ("Su pedido", "Ihr Termin")
    "su sus tu tus mi mis ihr ihre ihren ihrem ihrer sein seine unser unsere euer eure dein "
    "deine mein meine votre vos notre nos son sa ses mon ma mes ton ta seu sua seus suas "
    "suo tuo mio nostro vostro nuestro nuestra vuestro uw onze mijn jouw "
    # months and weekdays of other languages
    "januar februar märz mai juni juli oktober dezember janvier février mars avril juin "
    "juillet août septembre octobre novembre décembre enero febrero marzo abril mayo junio "
    "julio agosto septiembre octubre noviembre diciembre gennaio febbraio aprile maggio "
    "giugno luglio settembre ottobre dicembre janeiro fevereiro março maio junho julho "
    "setembro outubro novembro dezembro montag dienstag mittwoch donnerstag freitag samstag "
    "sonntag lundi mardi mercredi jeudi vendredi samedi dimanche lunes martes miércoles "
    "jueves viernes sábado domingo "
    # labels of forms, tickets and logs
    "callback rückruf issue ticket status priority note notes reply summary details "
    "nationality nationalité nacionalidad staatsangehörigkeit citizenship gender sex "
    "occupation profession employer department"
)
# Nationalities and peoples: never a person's name alone ("Nationality: Irish").
_DEMONYMS = _words(
    "american british english irish scottish welsh canadian australian german french "
    "spanish italian portuguese dutch belgian swiss austrian swedish norwegian danish "
    "finnish icelandic polish czech slovak hungarian romanian bulgarian greek turkish "
    "russian ukrainian belarusian serbian croatian bosnian slovenian albanian estonian "
    "latvian lithuanian indian pakistani bangladeshi chinese japanese korean vietnamese "
    "thai filipino indonesian malaysian singaporean brazilian mexican argentinian argentine "
    "chilean colombian peruvian venezuelan cuban nigerian kenyan ghanaian ethiopian "
    "egyptian moroccan algerian tunisian saudi emirati iranian iraqi israeli lebanese "
    "syrian jordanian afghan nepali sri lankan south african new zealander european asian "
    "african latino latina hispanic arab jewish muslim christian catholic protestant "
    "deutsch deutsche französisch français française español española italiano italiana "
    "português portuguesa"
)
# Capitalised labels of forms and headers in other languages ("Kontakt:", "Rufnummer:"), and
# big cities that are also in the census name lists ("Sydney", "Paris"): never a name alone.
_LABEL_SUFFIXES = ("nummer", "adresse", "datum", "straße", "strasse", "karte", "zweck", "tag",
                   "geburtsort", "wohnort", "vorname", "nachname", "termin")  # fmt: skip
_CITIES = _words(
    "sydney paris london berlin madrid rome roma milan milano lyon nice lille marseille "
    "toulouse bordeaux nantes kassel köln cologne hamburg münchen munich frankfurt stuttgart "
    "dresden leipzig bremen hannover sevilla seville valencia barcelona bilbao malaga málaga "
    "lisboa lisbon porto brasília rio recife salvador curitiba tokyo osaka kyoto yokohama "
    "mumbai delhi chennai pune bengaluru bangalore kolkata hyderabad toronto montreal "
    "montréal vancouver calgary ottawa melbourne brisbane perth adelaide canberra auckland "
    "dublin cork edinburgh glasgow manchester leeds liverpool bristol birmingham chicago "
    "boston houston dallas austin denver phoenix seattle portland atlanta miami orlando "
    "detroit memphis nashville charlotte raleigh jackson madison lincoln columbus florence "
    "geneva genève zürich zurich vienna wien amsterdam rotterdam brussels bruxelles antwerp "
    "warsaw kraków prague praha budapest athens istanbul cairo lagos nairobi johannesburg "
    "torino turin napoli naples venezia venice bologna genova"
)
# Phrases right before a run that introduce a name: after one of these even an unknown
# capitalised word is taken.
_STRONG_CUES = tuple(
    " " + cue
    for cue in (
        "my name is", "name is", "named", "name:", "call me", "dear", "hi", "hello", "hey",
        "regards", "sincerely", "signed", "contact person:", "patient:", "full name:",
        "first name:", "last name:", "surname:", "attn:", "attn.:", "c/o", "says", "said",
        "wrote", "directed by", "starring", "married", "speak to", "speak with", "talk to",
        "ask for", "user:", "customer:", "client:", "from:", "to:", "cc:", "thanks", "thank you",
        "under", "under my name", "i am", "i'm", "this is", "it's", "name", "your name",
        "last name", "first name", "maiden name", "full name", "my name", "people call me",
        # people named by their role in a form or record, in several languages
        "student:", "traveller:", "traveler:", "passenger:", "guest:", "tenant:", "applicant:",
        "employee:", "beneficiary:", "holder:", "cardholder:", "account holder:", "inhaber",
        "inhaber:", "kunde:", "kundin:", "name :", "nom :", "nom:", "nombre:", "nome:",
        "je m'appelle", "je suis", "ich bin", "ich heiße", "me llamo", "soy", "sou", "mi chiamo",
        "sono", "meu nome é", "mi nombre es", "assigned to:", "reviewer:", "owner:",
        "author:", "debtor:", "creditor:", "payee:", "payer:", "recipient:", "sender:",
        "courier:", "driver:", "contact:", "requester:", "reporter:", "assignee:", "approver:",
        "signed by", "prepared by", "witness:", "emergency contact:", "next of kin:",
        "parent:", "guardian:", "spouse:", "surname", "given name", "given names",
        "family name", "nachname", "vorname", "apellido", "apellidos", "prénom",
        "nom de famille", "c'est", "c’est", "voici", "hier ist", "aquí", "aqui",
        "it is", "ask for", "on behalf of", "attention", "zu händen", "z. hd.", "z.hd.",
        "destinataire:", "empfänger:", "destinatario:", "titular:", "titulaire:",
        "merci", "gracias", "danke", "obrigado", "obrigada", "grazie", "cheers", "thx",
    )
)  # fmt: skip
# Weaker ones: enough for a capitalised word that is not an English word, mid-sentence.
_WEAK_CUES = tuple(
    " " + cue
    for cue in (
        "by", "with", "and", "to", "for", "from", "of", "about", "as", "met", "meet",
        "told", "asked", "called", "see", "saw", "tell", "ask", "contact", "email", "call",
        "text", "visit", "mr", "mrs", "ms", "dr", "son", "daughter", "wife", "husband", "mother",
        "father", "brother", "sister", "friend", "colleague", "boss", "manager", "doctor",
        "page", "ping", "ring", "message", "or", "cc", "thank", "dm", "invite", "remind",
    )
)  # fmt: skip
_NON_WORD_RE = re.compile(r"[^\w:/'’]+")
_SENTENCE_END = frozenset('.!?\n"“”>:;*•()[]')
_TITLE_RE = re.compile(
    r"(?:"
    + "|".join(
        sorted({t.capitalize() for t in TITLES} | {"MR", "MRS", "MS", "DR"}, key=len, reverse=True)
    )
    + r")\.? "
)


@cache
def _capitalised_words() -> frozenset[str]:
    """Capitalised English words: alone, one is not taken for a name without a title or a
    phrase that introduces a name."""
    return frozenset(w.capitalize() for w in english_words())


@cache
def _plain_words() -> frozenset[str]:
    """Capitalised English words that are in neither census list: a run of only these
    ("Developer Mode") is not a name."""
    return _capitalised_words() - first_names() - surnames()


def find_people(text: str) -> Iterator[Entity]:
    capitalised = _capitalised_words()
    plain = _plain_words()
    first = first_names()
    title_ends: set[int] | None = None
    found: list[Entity] = []
    rejected: list[tuple[int, int]] = []  # unknown single words, kept for the list rule below
    for run in _RUN_RE.finditer(text):
        value = run.group()
        if " " not in value:
            # Most runs are one ordinary word starting a sentence: decide those fast.
            lower_value = value.lower()
            if (
                (len(value) <= 2 and not value[:1].isalpha())
                or lower_value in _NOT_NAMES
                or lower_value in _CITIES
                or lower_value.endswith(_LABEL_SUFFIXES)
            ):
                continue
            if value in capitalised and (value not in first or len(value) <= 2):
                if title_ends is None:
                    title_ends = _title_ends(text)
                if run.start() not in title_ends:
                    continue
        elif all(word in plain or word.lower() in _NOT_NAMES for word in value.split(" ")):
            continue
        if title_ends is None:
            title_ends = _title_ends(text)
        entity = _judge_run(text, run.start(), value, run.start() in title_ends)
        if entity is not None:
            found.append(entity)
        elif " " not in value and value.lower() not in english_words():
            rejected.append((run.start(), run.end()))
    if rejected and found:
        found.extend(_listed_with_names(text, found, rejected))
    if has_non_latin(text):
        if any(c in text for c in _CJK_NAME_MARKS):
            found.extend(_cjk_names(text))
        if _ARABIC_OR_DEVANAGARI_RE.search(text):
            found.extend(_cued_script_names(text))
    lower = lowered(text)
    strong = "name" in lower or "call me" in lower
    if strong or _WEAK_CUE_GATE_RE.search(text, 0, _WEAK_CUE_REACH):
        found.extend(_lower_case_names(text, strong))
    yield from found


_LIST_SEPARATORS = frozenset({", ", " and ", ", and ", " & ", " or ", ", or "})


def _listed_with_names(
    text: str, found: list[Entity], rejected: list[tuple[int, int]]
) -> Iterator[Entity]:
    """Unknown capitalised words listed beside names ("Kónya, Becker and Vasquez") are names."""
    starts = {e.start: e for e in found}
    ends = {e.end: e for e in found}
    proper = proper_nouns()
    changed = True
    accepted: set[tuple[int, int]] = set()
    while changed:  # a list can chain: "A, B, C and Becker"
        changed = False
        for start, end in rejected:
            if (start, end) in accepted or text[start:end] in proper:
                continue
            beside = any(
                (end + len(sep) in starts and text.startswith(sep, end))
                or (start - len(sep) in ends and text.startswith(sep, start - len(sep)))
                for sep in _LIST_SEPARATORS
            )
            if beside:
                entity = Entity(PERSON, start, end, 0.5)
                accepted.add((start, end))
                starts[start] = entity
                ends[end] = entity
                changed = True
                yield entity


# Phrases after which a name may be written in lower case ("my name is lena andersson").
_LOWER_CASE_CUES = ("my name is ", "name is ", "call me ", "name: ", "name? ")
# Weaker ones ("hey its jess again"): only a census first name that is no English word.
# ("its", "it's", "this is", "i'm", "im"), in lower case and followed by a lower-case word, as
# a message's opening ("hey its jess again"): in its first characters.
_WEAK_CUE_REACH = 160
_WEAK_CUE_GATE_RE = re.compile(r"(?<![A-Za-z])(?:it['’]?s|this is|i['’]?m) ([a-z]{2,20})\b")
_LOWER_WORDS_RE = re.compile(rf"[{LOWER}][{LOWER}'’\-]{{1,30}}(?: [{LOWER}][{LOWER}'’\-]{{1,30}})?")


def _lower_case_names(text: str, strong: bool = True) -> Iterator[Entity]:
    lower = lowered(text)
    if len(lower) != len(text):
        return
    first = first_names()
    words = english_words()
    for weak in _WEAK_CUE_GATE_RE.finditer(text, 0, _WEAK_CUE_REACH):
        name = weak.group(1)
        if name.capitalize() in first and name not in words:
            yield Entity(PERSON, weak.start(1), weak.end(1), 0.55)
    for cue in _LOWER_CASE_CUES if strong else ():
        position = lower.find(cue)
        while position >= 0:
            m = _LOWER_WORDS_RE.match(text, position + len(cue))
            if m:
                parts = m.group().split(" ")
                # Keep the first word, and the second if it is not an ordinary English word.
                if len(parts) == 2 and parts[1] in words:
                    parts = parts[:1]
                head = parts[0]
                if head.capitalize() in first or head not in words:
                    end = m.start() + len(" ".join(parts))
                    yield Entity(PERSON, m.start(), end, 0.6)
            position = lower.find(cue, position + 1)


_POSSESSIVES = _words(
    "my your his her our their its su sus tu tus mi mis ihr ihre ihren ihrem ihrer sein seine "
    "unser unsere euer eure dein deine mein meine votre vos notre nos son sa ses mon ma mes "
    "ton ta seu sua seus suas suo tuo mio nostro vostro nuestro nuestra vuestro uw onze mijn "
    "jouw"
)
# Verbs that address someone, capitalised at the start of a sentence: not part of the name.
_ADDRESSING_VERBS = _words(
    "call ask email e-mail text contact message ping page tell meet ring phone thank thanks "
    "cc invite welcome congrats congratulations please remind see visit pay send forward "
    "notify ruf rufen frag fragen schreib appelle appelez demande llama llame pregunta "
    "liga ligue chiama"
)
# Cues after which a public figure's name is someone's own ("my name is Grace Hopper").
_SELF_CUES = tuple(
    " " + cue
    for cue in ("my name is", "name is", "name:", "i am", "i'm", "this is", "dear", "hi",
                "hello", "hey", "signed", "regards", "sincerely", "call me")
)  # fmt: skip


def _is_public_figure(names: list[str]) -> bool:
    full, surnames_only = public_figures()
    if len(names) == 1:
        return names[0] in surnames_only or names[0] in full
    if names[0].rstrip(".") not in _public_first_words():
        return False
    bare = [n.rstrip(".") for n in names]
    # the whole run, or its first words ("Martin Luther King Jr")
    if any(" ".join(bare[:k]) in full for k in range(len(bare), 0, -1)):
        return True
    return len(names) == 1 and names[0] in surnames_only


@cache
def _public_first_words() -> frozenset[str]:
    return frozenset(name.split(" ")[0] for name in public_figures()[0])


_SELF_INTRO_AFTER_RE = re.compile(r" (?:here|speaking|from (?:the )?[A-Z][a-z]+ (?:team|office))\b")
_SIGNATURE_TAIL = 6  # characters after a signing name: punctuation, quotes, line breaks
_SIGNATURE_BEFORE = frozenset(".!?\n-–—,/")


def _is_signature(text: str, start: int, end: int) -> bool:
    """Whether a run ends the text (bar punctuation) after a sentence end, a dash or a line
    break: a name signing a message ("... thanks. Jack", "- Carla Nguyen")."""
    if len(text) - end > _SIGNATURE_TAIL or text[end:].strip(" \t\n.!)\"'") != "":
        return False
    i = start - 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    return i < 0 or text[i] in _SIGNATURE_BEFORE


def _title_ends(text: str) -> set[int]:
    return {
        m.end()
        for m in _TITLE_RE.finditer(text)
        if m.start() == 0 or not text[m.start() - 1].isalnum()
    }


def _cue_index(cues: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The cue phrases by their last word, so that a text is compared only with the phrases
    ending in its own last word (``str.endswith`` with the whole tuple tries every phrase)."""
    index: dict[str, list[str]] = {}
    for cue in cues:
        index.setdefault(cue.rsplit(" ", 1)[-1], []).append(cue)
    return {word: tuple(phrases) for word, phrases in index.items()}


def _ends_with_cue(before: str, index: dict[str, tuple[str, ...]]) -> bool:
    phrases = index.get(before.rsplit(" ", 1)[-1])
    return phrases is not None and before.endswith(phrases)


_STRONG_CUE_INDEX = _cue_index(_STRONG_CUES)
_WEAK_CUE_INDEX = _cue_index(_WEAK_CUES)


def _cue_before(text: str, start: int) -> str:
    """The text before ``start`` on its line, lower-cased, punctuation collapsed to spaces,
    with a leading space, so cue phrases can be checked with ``endswith``."""
    window = max(0, start - 40)
    line_start = max(window, text.rfind("\n", window, start) + 1)
    piece = text[line_start:start].lower()
    if piece.replace(" ", "").isalnum():  # words and spaces only: no regex needed
        return " " + " ".join(piece.split())
    return " " + _NON_WORD_RE.sub(" ", piece).strip()


def _judge_run(text: str, run_start: int, value: str, titled: bool) -> Entity | None:
    entity = _judge_name(text, run_start, value, titled)
    if entity is None:
        return None
    names = [w for w in text[entity.start : entity.end].split(" ") if len(w.rstrip(".")) > 1]
    if (
        _is_public_figure(names) or (len(names) > 1 and _fame_words_near(text, entity))
    ) and not _cue_before(text, entity.start).endswith(_SELF_CUES):
        return None  # "Alan Turing's 1950 paper": public figures in prose are not labelled
    return entity


# Words of a sentence about someone famous ("received the Nobel Prize", "the physicist").
_FAME_WORDS = _words(
    "nobel pulitzer century centuries invented inventor invention discovered discovery "
    "physicist chemist novelist painter composer philosopher mathematician poet playwright "
    "emperor pharaoh dynasty biography biographer famous famously legendary historian "
    "astronaut renowned nobelpreis siècle siglo jahrhundert século secolo"
)
_PUNCTUATION_TO_SPACE = str.maketrans(dict.fromkeys(".,;:!?()[]{}\"'“”‘’«»", " "))
_FAME_WINDOW = 100


def _fame_words_near(text: str, entity: Entity) -> bool:
    """Whether the words around a name (on its line, within a clause's reach) say it is someone
    famous."""
    lower = lowered(text)
    left = max(0, entity.start - _FAME_WINDOW, lower.rfind("\n", 0, entity.start) + 1)
    newline = lower.find("\n", entity.end, entity.end + _FAME_WINDOW)
    right = newline if newline >= 0 else min(len(text), entity.end + _FAME_WINDOW)
    return not _FAME_WORDS.isdisjoint(lower[left:right].translate(_PUNCTUATION_TO_SPACE).split())


def _judge_name(text: str, run_start: int, value: str, titled: bool) -> Entity | None:
    tokens: list[tuple[int, str]] = []
    offset = run_start
    for word in value.split(" "):
        tokens.append((offset, word))
        offset += len(word) + 1
    # Leading titles and non-name words ("Hi", "Dear", "The") are context, not part of a name;
    # so is a verb that addresses someone ("Call Moira", "Ask Linda"). A possessive starts a
    # noun phrase, not a name ("Ihr Termin", "Su pedido").
    while tokens:
        word = tokens[0][1].rstrip(".").lower()
        if word in _POSSESSIVES:
            return None
        if word in TITLES:
            titled = True
        elif (
            word not in _NOT_NAMES
            and not word.endswith(_LABEL_SUFFIXES)
            and not (word in _ADDRESSING_VERBS and len(tokens) > 1)
        ):
            break
        tokens.pop(0)
    # Trailing non-name words and initials end the name ("Ferko Street" -> "Ferko").
    while tokens and (
        len(tokens[-1][1].rstrip(".")) == 1 or tokens[-1][1].rstrip(".").lower() in _NOT_NAMES
    ):
        tokens.pop()
    names = [w for _, w in tokens if len(w.rstrip(".")) > 1 and not w.islower()]
    if not names or len(tokens[0][1].rstrip(".")) == 1:
        return None
    start, end = tokens[0][0], tokens[-1][0] + len(tokens[-1][1])
    lowered = [n.lower() for n in names]
    countries = country_names()
    joined = " ".join(lowered)
    if any(n in countries for n in lowered) or joined in countries or joined in _CITY_NAMES:
        return None
    if any(word.rstrip(".").lower() in _ORG_WORDS for _, word in tokens):
        return None  # "Banco Santander", "Deutsche Bank AG", "Gare du Nord"
    if lowered[0] in _DEMONYMS and all(n in _DEMONYMS for n in lowered):
        return None  # "Irish", "British"
    if len(names) > 1 and lowered[0] in _CITIES:
        return None  # "Paris Gare ...", "London Bridge"
    before = _cue_before(text, start)
    words = english_words()
    first = first_names()
    last = surnames()
    first_is_word = lowered[0] in words
    last_is_word = lowered[-1] in words
    if titled:
        return Entity(PERSON, start, end, 0.85)
    if (
        before.rstrip().endswith(":")
        and len(names) >= 2
        and (names[0] in first or not any(n in words for n in lowered))
    ):
        return Entity(PERSON, start, end, 0.75)  # "Debtor: Lotte Peeters", "gift card: ..."
    if (
        text.startswith(" ", end)
        and _SELF_INTRO_AFTER_RE.match(text, end)
        and not any(n in words for n in lowered)
    ):
        return Entity(PERSON, start, end, 0.7)  # "Sipho here.", "Ana speaking"
    if (
        len(text) - end <= _SIGNATURE_TAIL
        and _is_signature(text, start, end)
        and (names[0] in first or not any(n in words for n in lowered))
    ):
        return Entity(PERSON, start, end, 0.7)  # "... thanks. Jack", "- Carla Nguyen"
    if _ends_with_cue(before, _STRONG_CUE_INDEX) and (
        not all(n in words for n in lowered) or names[0] in first
    ):
        return Entity(PERSON, start, end, 0.8)
    if names[0] in first and not first_is_word:
        return Entity(PERSON, start, end, 0.8 if len(names) > 1 else 0.65)
    proper = proper_nouns()
    if all(n in proper for n in names):
        return None  # "English", "South Africa", "Django"
    sentence_start = _is_sentence_start(text, start)
    line_start = start == 0 or text[start - 1] == "\n" or text[max(0, start - 2) : start] == "> "
    if line_start and not any(n in words for n in lowered):
        if len(names) >= 2 and (end == len(text) or text[end] in "\n,"):
            return Entity(PERSON, start, end, 0.6)  # a line of its own: a signature or a list
        if text.startswith(":", end) and (names[0] in first or _speaker_lines(text) >= 2):
            # A speaker in a transcript, "Ubul: ...", not a form's label ("Kontakt: ...").
            return Entity(PERSON, start, end, 0.55)
    if len(names) >= 2:
        if names[0] in first and names[-1] in last:
            return Entity(PERSON, start, end, 0.75)
        if (names[0] in first or names[-1] in last) and not last_is_word:
            return Entity(PERSON, start, end, 0.7)
        if not any(n in words for n in lowered) and (
            not sentence_start or _ends_with_cue(before, _WEAK_CUE_INDEX)
        ):
            return Entity(PERSON, start, end, 0.55)
        return None
    # A single capitalised word that is not an English word.
    if first_is_word or sentence_start or before.endswith(_PLACE_PREPOSITIONS):
        return None
    if names[0] in last or _ends_with_cue(before, _WEAK_CUE_INDEX):
        return Entity(PERSON, start, end, 0.5)
    return None


# Chinese and Japanese names have no capitals: they are taken after a label ("氏名：", "收件人：",
# "我叫") or before an honorific ("山田太郎様", "王伟先生"), two to four characters (a space
# may separate family and given name).
_CJK_NAME = r"[\u4e00-\u9fff]{1,3}(?:[ 　]?[\u4e00-\u9fff\u3040-\u309f]{1,3})?"
_CJK_LABEL_NAME_RE = re.compile(
    r"(?:氏名|お名前|名前|担当者?|姓名|名字|收件人|联系人|申请人|客户|我叫|我是|申込者|申請者|契約者"
    r"|受取人|送り主|差出人|患者|员工信息|员工|員工|持卡人|户名|戶名|收货人|寄件人|乘客|旅客"
    r"|住户|业主|学生|病人)[:：\s]{0,2}"
    rf"({_CJK_NAME})(?=[\s、。，,:：(（]|です|と申します|$|様|さん|先生)"
)
# "佐藤 美咲です。" / "佐藤 美咲と申します": a family and a given name, spaced, introducing oneself.
_CJK_SELF_NAME_RE = re.compile(
    r"(?:^|(?<=[。、\s]))([\u4e00-\u9fff]{1,3}[ 　][\u4e00-\u9fff\u3040-\u309f]{1,3})"
    r"(?:です|と申します|といいます)"
)
_CJK_HONORIFIC_RE = re.compile(
    rf"(?<![\u4e00-\u9fff])({_CJK_NAME})(?:様|さん|氏|先生|女士|小姐|殿)"
)
_CJK_NAME_MARKS = "名担姓收联申客我様さ氏先女小殿契受送差患员員持户戶寄乘旅住业学病で"

# Arabic and Hindi names have no capitals either: taken after a phrase that introduces one
# ("أنا", "اسمي", "الاسم:", "باسم", "المريض"; "नाम:", "मेरा नाम", "धारक", "श्री") or signing a
# message ("- अंकित वर्मा" at the end): the next one to three words of the script.
_ARABIC_OR_DEVANAGARI_RE = re.compile(r"[\u0600-\u06ff\u0900-\u097f]")

_ARABIC_WORD = r"[\u0621-\u063a\u0641-\u064a\u064b-\u0652]{2,20}"
_DEVANAGARI_WORD = r"[\u0900-\u0963\u0971-\u097f]{2,20}"
_SCRIPT_NAME_RES = (
    re.compile(
        r"(?:(?<![\u0600-\u06ff])(?:أنا|انا|اسمي|الاسم|إسمي|باسم|السيد|السيدة|المريض|المريضة"
        r"|المهندس|المهندسة|الدكتور|الدكتورة|د\.|الموظف|الموظفة|العميل|العميلة|المستلم)"
        r"[:：]?[ \t]{1,2})"
        rf"({_ARABIC_WORD}(?: {_ARABIC_WORD}){{0,2}}?)"
        r"(?=[،,.:؛\n]| (?:هو|هي|في|من|على|ورقم|رقم|تاريخ|بريدي)\b| و|$)"
    ),
    re.compile(
        r"(?:مع تحياتي|تحياتي|مع خالص التحية|مع أطيب التحيات|وشكرا|شكرا|المخلص|المخلصة)"
        rf"[،,:]?[ \t\n]{{1,3}}({_ARABIC_WORD}(?: {_ARABIC_WORD}){{0,2}})[ \t.]*$"
    ),
    re.compile(
        r"(?:धन्यवाद|सादर|आपका|आपकी|भवदीय)[,،।:]?[ \t\n]{1,3}"
        rf"({_DEVANAGARI_WORD}(?: {_DEVANAGARI_WORD}){{0,2}})[ \t.।]*$"
    ),
    re.compile(
        r"(?:नाम[:：]?|मेरा नाम|मेरी नाम|धारक|श्री|श्रीमती|सुश्री|डॉ\.?|ग्राहक[:：]?|प्राप्तकर्ता[:：]?)"
        r"[ \t]{1,2}"
        rf"({_DEVANAGARI_WORD}(?: {_DEVANAGARI_WORD}){{0,2}}?)(?=[,،।.:\n]| (?:है|हूँ|हूं|जी)\b|$)"
    ),
    re.compile(
        rf"(?:^|\s)[-–—][ \t]{{0,2}}({_DEVANAGARI_WORD}(?: {_DEVANAGARI_WORD}){{0,2}}"
        rf"|{_ARABIC_WORD}(?: {_ARABIC_WORD}){{0,2}})[ \t.।]*$"
    ),
)
_SCRIPT_NOT_NAMES = _words("هو هي أنا انا في من على الى إلى है और का की के")


def _cued_script_names(text: str) -> Iterator[Entity]:
    for pattern in _SCRIPT_NAME_RES:
        for m in pattern.finditer(text):
            name = m.group(1)
            if name.split(" ")[0] not in _SCRIPT_NOT_NAMES:
                yield Entity(PERSON, m.start(1), m.end(1), 0.65)


# Words before an honorific that are roles, not names ("ご担当者様", "这位先生").
_CJK_NOT_NAMES = _words(
    "担当者 担当 ご担当者 客 お客 皆 各位 関係者 社長 部長 課長 会員 利用者 学生 老师 这位 那位 "
    "先生 女士 一位 贵宾 顾客 客户 教授 医生 店長 店员"
)


def _cjk_names(text: str) -> Iterator[Entity]:
    seen: set[int] = set()
    for pattern in (_CJK_LABEL_NAME_RE, _CJK_HONORIFIC_RE, _CJK_SELF_NAME_RE):
        for m in pattern.finditer(text):
            name = m.group(1)
            if (
                m.start(1) not in seen
                and len(name.replace(" ", "")) >= 2
                and name not in _CJK_NOT_NAMES
                and not any(name.endswith(w) for w in ("担当者", "担当", "会員", "様"))
            ):
                seen.add(m.start(1))
                yield Entity(PERSON, m.start(1), m.end(1), 0.7)


# Words of organisations' names in several languages: a run with one is not a person.
_ORG_WORDS = _words(
    "bank banco banque banca sparkasse gmbh ag kg sa sas sarl sl srl spa ltda cia inc ltd llc "
    "plc corp co universidad université universität università hospital hôpital krankenhaus "
    "grupo groupe gruppe gruppo fundación fondation stiftung bahn airlines airways telekom "
    # places: stations, airports, buildings, sites
    "gare station terminal airport aeroporto aeropuerto aéroport flughafen bahnhof hbf "
    "plaza mall park bridge tower square hall palace castle cathedral stadium arena "
    "apartments apartment residency residence heights towers estate complex building "
    "nagar colony enclave"
)
# Cities of more than one word that look like a first name and a surname.
_CITY_NAMES = frozenset(
    ("são paulo", "sao paulo", "rio de janeiro", "belo horizonte", "porto alegre", "new york",
     "los angeles", "san francisco", "san diego", "san jose", "buenos aires", "mexico city",
     "hong kong", "tel aviv", "kuala lumpur", "cape town", "new delhi", "santa monica",
     "salt lake city", "las vegas", "saint louis", "st louis", "frankfurt am main")
)  # fmt: skip
# A single word after these is a place far more often than a person ("geboren in Kassel").
_PLACE_PREPOSITIONS = (" in", " en", " à", " em", " aus", " nach", " near", " de", " at",
                       " via", " seen at", " from the", " to the", " geburtsort", " wohnort",
                       " place of birth", " birthplace", " city", " town", " naissance",
                       " nacimiento", " nascita", " nascimento", " city:", " ort")  # fmt: skip
_SPEAKER_LINE_RE = re.compile(rf"^[{UPPER}][{LOWER}]{{1,20}}:", re.MULTILINE)


@lru_cache(maxsize=1)  # asked once per candidate name: scan each text once
def _speaker_lines(text: str) -> int:
    """How many different speakers start lines ("Ubul: ...") in a transcript."""
    return len({m.group() for m in _SPEAKER_LINE_RE.finditer(text)})


def _is_sentence_start(text: str, start: int) -> bool:
    i = start - 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    return i < 0 or text[i] in _SENTENCE_END
