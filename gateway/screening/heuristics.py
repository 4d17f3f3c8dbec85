"""Weighted heuristic signals for prompt injection: the rules of ``rules`` matched against the
folded view (``normalize``), plus a few signals that count rather than match.

A code counts its strongest rule and half of its next strongest; different codes add up, so a
jailbreak that switches persona, lifts the rules and locks the character scores higher than any
one of those phrases alone.

Speed: most rules start with a known word ("ignore", "reveal", "you"). Those are indexed by
that word, read from the parsed regex; a text's words are looked up one by one and a rule is
tried, with ``pattern.match``, only where one of its first words begins. The few others
(special tokens, line starts, CJK) run only if one of their anchor substrings occurs.
"""

from __future__ import annotations

import re
from collections import defaultdict

from gateway.screening import rules_agents, rules_multilingual
from gateway.screening.normalize import Normalized, encoded_payloads, normalize
from gateway.screening.rules import GUARD_ENDINGS, GUARD_WORDS, RULES, TRICK_WEIGHTS, Rule

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
    """The literal words a match of ``pattern`` can start with, each with whether it is a
    whole word there (what follows can't be a letter or digit): {("ignor", False),
    ("do", True), ...}; None if some branch starts with something else. Read from the parsed
    regex, so the rules need not list them twice; a pattern this cannot read is scanned."""
    if _sre_parser is None:  # pragma: no cover (a Python without re._parser)
        return None
    try:
        parsed = list(_sre_parser.parse(pattern))
    except (AttributeError, re.error):  # pragma: no cover
        return None
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


_Entry = tuple[tuple[str, ...], Rule]  # (first words, rule)


class _Index:
    """Where to try the rules that start at a word: by the first three letters of the words
    they can start with; a one- or two-letter start by the whole word ("i want", "do not"), or
    where it may go on into a longer word ("an?"), by itself. A text's words are looked up one
    by one and only the rules found are tried there, with ``pattern.match``. Rules with no
    literal first word (special tokens, line starts, CJK) are scanned."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        # key -> rule -> the first words of that rule under that key
        long: dict[str, dict[Rule, list[str]]] = defaultdict(dict)
        short_words: dict[str, dict[Rule, list[str]]] = defaultdict(dict)
        short_stems: dict[str, dict[Rule, list[str]]] = defaultdict(dict)
        self.scanned: list[tuple[Rule, tuple[str, ...]]] = []
        for rule in rules:
            words = _leading_words(rule.pattern.pattern) if rule.word_start else None
            if not words:
                # A scanned rule runs only where one of its anchors occurs: the ones it names,
                # else the literal words it must start with (Chinese, Arabic...).
                anchors = rule.anchors or tuple(
                    sorted({word for word, _ in _leading_words(rule.pattern.pattern) or ()})
                )
                if not anchors:
                    raise ValueError(f"rule {rule.code} has neither a first word nor anchors")
                self.scanned.append((rule, anchors))
                continue
            for word, whole in sorted(words):
                if len(word) >= 3:
                    table, key = long, word[:3]
                else:
                    table, key = (short_words if whole else short_stems), word
                table[key].setdefault(rule, []).append(word)

        # One entry per rule and key, with all its first words (str.startswith takes a
        # tuple), so a rule is tried once where "ignore" begins, not once per "ignor*" form.
        def entries(table: dict[str, dict[Rule, list[str]]]) -> dict[str, list[_Entry]]:
            return {
                key: [(tuple(words), rule) for rule, words in by_rule.items()]
                for key, by_rule in table.items()
            }

        # The rules that need one of some words, by those words: rules sharing a word list
        # (several share one) cost one search per text, not one each.
        gated: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for rule in rules:
            if rule.requires:
                gated[rule.requires].append(id(rule))
        self.gated = {words: tuple(ids) for words, ids in gated.items()}
        # Each distinct anchor is looked for once per text (in ``signals``), and a scanned rule
        # is considered only when one of its anchors is there: most texts hold none of them.
        self.anchors = tuple(sorted({anchor for _, found in self.scanned for anchor in found}))
        self.scanned_by_anchor: dict[str, tuple[int, ...]] = {
            anchor: tuple(i for i, (_, found) in enumerate(self.scanned) if anchor in found)
            for anchor in self.anchors
        }
        self.long = entries(long)
        self.short_words = entries(short_words)
        self.short_stems = entries(short_stems)
        self.stem_letters = frozenset(stem[:1] for stem in short_stems)

    def candidates(self, word: str) -> list[_Entry]:
        found = self.long.get(word[:3], [])
        if len(word) <= 2 and word in self.short_words:
            found = found + self.short_words[word]
        if word[:1] in self.stem_letters:
            found = found + self.short_stems.get(word[:1], []) + self.short_stems.get(word[:2], [])
        return found


_INDEX = _Index(RULES + rules_agents.RULES + rules_multilingual.RULES)
# Read only in text that came back from a tool or a retrieved document (see rules_agents).
_TOOL_INDEX = _Index(rules_agents.TOOL_RULES)
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


def signals(folded: str, index: _Index = _INDEX) -> dict[str, float]:
    """The heuristic signals in a folded text: reason code -> weight. A code's weight is its
    strongest rule's, plus half the next strongest: two different phrasings of one kind of
    attack say more than one, but not twice as much."""
    best: dict[str, list[float]] = {}
    # each rule counts once; a rule whose required words are absent never runs
    matched: set[int] = {
        rule_id
        for words, rule_ids in index.gated.items()
        if not any(map(folded.__contains__, words))
        for rule_id in rule_ids
    }
    candidates = index.candidates
    for word in _WORD_RE.finditer(folded):
        rules = candidates(word.group())
        if not rules:
            continue
        start = word.start()
        for prefixes, rule in rules:
            if not folded.startswith(prefixes, start) or id(rule) in matched:
                continue
            if (
                _needed(best, rule)
                and _guard_allows(rule, folded, start)
                and rule.pattern.match(folded, start)
            ):
                matched.add(id(rule))
                _record(best, rule)
    scanned, by_anchor = index.scanned, index.scanned_by_anchor
    present = filter(folded.__contains__, index.anchors)  # C-level: no bytecode per anchor
    for position in sorted({i for anchor in present for i in by_anchor[anchor]}):
        rule = scanned[position][0]
        if id(rule) not in matched and _needed(best, rule) and _scan(rule, folded):
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


def _unsafe_vocabulary(folded: str) -> float:
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


def _persona_statements(normalized: Normalized) -> float:
    folded = normalized.folded
    positions: dict[str, list[int]] = {}
    rejected: set[str] = set()
    for match in _PERSONA_STATEMENT_RE.finditer(folded):
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


def text_signals(normalized: Normalized, depth: int = 0, role: str = "user") -> dict[str, float]:
    """Signals of a normalised text: its rules (and, in a tool result, the rules for tool
    results), the obfuscation tricks it used, and the signals of any encoded or split payload
    in it ("base64_payload:override_instructions", "split_payload:reveal_system_prompt")."""
    found = _discount_quotations(normalized.folded, signals(normalized.folded))
    if role in TOOL_ROLES:
        found.update(signals(normalized.folded, _TOOL_INDEX))
    if weight := _unsafe_vocabulary(normalized.folded):
        found["unsafe_vocabulary"] = weight
    if weight := _directives_to_model(normalized.folded):
        found["directives_to_model"] = weight
    if weight := _persona_statements(normalized):
        found["persona_definition"] = weight
    for trick in normalized.tricks:
        found[f"obfuscation:{trick}"] = TRICK_WEIGHTS[trick]
    if depth >= MAX_PAYLOAD_DEPTH:
        return found
    for kind, decoded in encoded_payloads(normalized):
        inner = text_signals(normalize(decoded), depth + 1)
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
        inner = text_signals(normalize(joined), depth + 1)
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
