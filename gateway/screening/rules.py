"""The heuristic rules for prompt injection: regexes over the folded view (``normalize``), each
with a reason code and a weight in log-odds units.

A trigger word alone is never a signal ("ignore", "system prompt", "jailbreak"): the rules want
the structure of an attack, such as an imperative aimed at *prior* instructions, a request for
*your* hidden prompt, or a persona that keeps no rules. That is what keeps innocent questions
that merely mention those words apart from attacks. How the rules are matched, and how their
weights add up, is in ``heuristics``.

Linear time on hostile input (up to about a megabyte): word gaps are bounded (``_gap``), runs
that can repeat are possessive or bounded, and no two adjacent parts of a pattern can match the
same run of characters, so nothing is rescanned once per character.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# The separator between two words of one phrase: spaces, prose punctuation, underscores
# (ignore_all_previous), a dot or "!" inside a word run (ignore.all.previous), one line break.
# Not a sentence end, a blank line, or code punctuation (= # { } < > | \\), so a phrase is not
# pieced together from a variable name, a comment and a string in pasted code.
# Possessive: a separator and a word never share a character, so giving one back can't help,
# and a long run of punctuation costs one pass instead of one per character.
_S = r"(?:[^\w.!?\n=#{}<>|\\]|[.!?](?![\s.!?])|_|\n(?![ \t]*\n))++"
_W = r"[^\W_]++"  # a word


def _gap(words: int) -> str:
    """A separator with up to ``words`` words in it: "ignore" _gap(3) "instructions"."""
    return rf"(?:{_S}{_W}){{0,{words}}}?{_S}"


def _gap_not_mine(words: int) -> str:
    """Like ``_gap``, but not through "my": "ignore my previous message" is the user's own."""
    return rf"(?:{_S}(?!(?:my|mein\w*)\b){_W}){{0,{words}}}?{_S}"


def _alt(*options: str) -> str:
    return "(?:" + "|".join(options) + ")"


@dataclass(frozen=True, slots=True)
class Rule:
    code: str
    weight: float
    pattern: re.Pattern[str]
    anchors: tuple[str, ...]  # a rule that is scanned runs only if one of these is present
    word_start: bool  # a match must start at a word boundary (checked in Python, see _rule)
    guarded: bool  # a match must not follow a negation or a third-person subject
    # Tried only in a text that contains one of these (a cheap test that skips an expensive
    # rule wherever its rarer words are absent); empty: always tried.
    requires: tuple[str, ...] = ()


def _top_level_branches(pattern: str) -> list[str]:
    """Split a regex at its top-level "|" (outside groups and character classes)."""
    branches, depth, in_class, escaped, start = [], 0, False, False, 0
    for i, char in enumerate(pattern):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            branches.append(pattern[start:i])
            start = i + 1
    branches.append(pattern[start:])
    return branches


def _rule(
    code: str,
    weight: float,
    pattern: str,
    anchors: Iterable[str],
    flags: int = 0,
    *,
    guarded: bool = False,
    requires: Iterable[str] = (),
) -> Rule:
    # A leading \b stops the regex engine from skipping ahead to a possible first character,
    # which makes a search about three times slower. So a pattern whose every branch starts
    # with \b is compiled without it, and the boundary is checked on each match instead.
    branches = _top_level_branches(pattern)
    word_start = all(branch.startswith("\\b") for branch in branches)
    if word_start:
        pattern = "|".join(branch[2:] for branch in branches)
    return Rule(
        code,
        weight,
        re.compile(pattern, flags),
        tuple(anchors),
        word_start,
        guarded,
        tuple(requires),
    )


# --- vocabulary --------------------------------------------------------------------------------

# Imperatives (and the gerund that opens "Ignoring the above, ..."), not "forgot" or "ignores":
# "I forgot the previous instructions" and "the model ignores earlier rules" are not attacks.
# Rules marked ``guarded`` don't count after a negation or a third-person subject: "why do
# language models ignore earlier instructions?" asks about an attack, it does not make one.
GUARD_WORDS = frozenset(
    {
        "not",
        "never",
        "model",
        "llms",
        "ais",
        "they",
        "does",
        "did",
        "why",
        "that",
        "which",
        "who",
        "often",
        "sometimes",
        "usually",
    }
)
GUARD_ENDINGS = ("n't", "n’t", "models", "bots", "assistants")  # "don't", "chatbots"
_OVERRIDE_VERBS = _alt(
    r"ignore",
    r"ignoring",
    r"disregard(?:ing)?",
    r"forget",
    r"override",
    r"overrule",
    r"supersede",
    r"bypass",
    r"abandon",
    r"discard",
    r"neglect",
    r"overlook",
    r"dismiss",
    r"scrap",
    r"set\W+aside",
    r"put\W+aside",
    r"throw\W+away",
    r"pay\W+no\W+attention\W+to",
    r"(?:do\W+not|don\W?t|stop|no\W+longer)\W+(?:follow(?:ing)?|obey(?:ing)?|adher(?:e|ing)\W+to)",
)
_PRIOR = _alt(
    "previous",
    "previously",
    "prior",
    "above",
    "preceding",
    "foregoing",
    "earlier",
    "former",
    "initial",
    "original",
    "aforementioned",
    "existing",
    "preexisting",
    "system",
    "developer",
    "hidden",
    "given",
    "provided",
    "old",
    "past",
    "preset",
    "predefined",
    "programmed",
    "preprogrammed",
)
_DIRECTIVES = _alt(
    r"instructions?",
    r"directions",
    r"directives?",
    r"rules",
    r"guidelines",
    r"guidance",
    r"prompts?",
    r"commands",
    r"orders",
    r"constraints",
    r"restrictions",
    r"limitations",
    r"programming",
    r"training",
    r"assignments",
    r"tasks",
    r"context",
    r"policies",
    r"information",
    r"conversation",
    r"messages",
    r"documents",
    r"articles",
    r"inputs?",
    r"requests",
    r"safeguards",
    r"filters",
    r"principles",
    r"protocols",
    r"parameters",
    r"settings",
)
_CORE_DIRECTIVES = _alt(
    r"instructions?",
    r"directives?",
    r"prompts?",
    r"programming",
    r"guidelines",
    r"system\W+prompt",
    r"directions",
    r"orders",
    r"commands",
    r"restrictions",
    r"thoughts",
)

_REVEAL_VERBS = _alt(
    "reveal",
    "show",
    "print",
    "output",
    "display",
    "repeat",
    "recite",
    "tell",
    "give",
    "share",
    "leak",
    "dump",
    "expose",
    "disclose",
    "write",
    "spell",
    "list",
    "provide",
    "paste",
    "copy",
    "return",
    "state",
    "send",
    "type",
    "echo",
    "read",
    "translate",
    "summari[sz]e",
    "extract",
    "zeige?",
    "zeigen",
    "gib",
    "nenne",
    "verrate",
    "wiederhole",
    "drucke",
)
_SECRET_QUALIFIERS = _alt(
    "system",
    "hidden",
    "secret",
    "internal",
    "initial",
    "original",
    "developer",
    "confidential",
    "underlying",
    "starting",
    "first",
    "pre",
    "base",
    "meta",
    "real",
    "actual",
)
_ANY_QUALIFIERS = _alt(
    _SECRET_QUALIFIERS,
    "full",
    "entire",
    "whole",
    "complete",
    "exact",
    "verbatim",
    "above",
    "previous",
    "current",
    "own",
)
_PROMPT_WORDS = _alt(
    r"prompts?",
    r"instructions?",
    r"directives",
    r"guidelines",
    r"configuration",
    r"system\W+message",
    r"rules",
    r"programming",
    r"prompt\W?te?xt(?:e|s)?",
)
# "Your instructions", but not "your rules for investing" or "your guidelines on diet".
_OWN_PROMPT_WORDS = _alt(
    r"prompts?",
    r"instructions?",
    r"directives",
    r"configuration",
    r"system\W+message",
    r"programming",
    r"prompt\W?te?xt(?:e|s)?",
    r"anweisungen",
    r"instruktionen",
)
_NOT_A_TOPIC = rf"(?!{_S}(?:for|on|about|regarding|to|how|fur|zu|zum|zur)\b)"

_AI_WORDS = _alt(
    "ai",
    "llm",
    "large\\W+language\\W+model",
    "language\\W+model",
    "assistant",
    "chatbot",
    "bot",
    "gpt",
    "chatgpt",
    "copilot",
    "agent",
    "model",
    "claude",
    "gemini",
)
_NO_RULES_OBJECTS = _alt(
    r"restrictions?",
    r"limitations?",
    r"limits",
    r"rules",
    r"filters?",
    r"filtering",
    r"censorship",
    r"censoring",
    r"boundaries",
    r"guidelines",
    r"constraints",
    r"ethics",
    r"morals",
    r"morality",
    r"polic(?:y|ies)",
    r"confines",
    r"restraints",
    r"safeguards",
    r"programming",
    r"principles",
)
_NOT = (
    r"(?:not|never|don\W?t|do\W+not|won\W?t|will\W+not|cannot|can\W?t|must\W+not"
    r"|mustn\W?t|shouldn\W?t|should\W+not)"
)


RULES: tuple[Rule, ...] = (
    # --- overriding earlier instructions ------------------------------------------------------
    _rule(
        "override_instructions",
        4.5,
        rf"\b{_OVERRIDE_VERBS}\b{_gap_not_mine(3)}{_PRIOR}\b{_gap(2)}{_DIRECTIVES}\b",
        (
            "ignor",
            "disregard",
            "forg",
            "overr",
            "supersede",
            "bypass",
            "abandon",
            "discard",
            "neglect",
            "overlook",
            "skip",
            "drop",
            "dismiss",
            "scrap",
            "erase",
            "delete",
            "remove",
            "clear",
            "wipe",
            "reset",
            "aside",
            "away",
            "attention",
            "follow",
            "obey",
            "adher",
        ),
        guarded=True,
    ),
    _rule(
        "override_instructions",
        4.0,
        rf"\b(?:ignore|ignoring|disregard(?:ing)?|forget|(?:do\W+not|don\W?t)\W+follow)\b"
        rf"(?:{_S}(?:all|everything|anything|the|that|this|what|was|is|you|were|been|told"
        rf"|said|written|text|of|stuff|things|content|mentioned|stated)){{0,3}}"
        rf"{_S}{_alt('above', 'before', 'previously', 'earlier', 'beforehand')}\b"
        # "forget the earlier list": the user's own earlier message, not the instructions
        rf"(?!{_S}(?:list|message|email|mail|version|one|file|draft|numbers?|question|point"
        r"|typo|part|example|link|attachment|request|answer|reply|comment|text|paragraph"
        r"|sentence|line|code|query|figures?|dates?|order|address|plan)\b)",
        ("ignor", "disregard", "forget", "follow"),
        guarded=True,
    ),
    _rule(
        "override_instructions",
        4.0,
        rf"\bforget{_S}(?:about{_S})?(?:everything|all|what){_S}"
        rf"(?:(?:that|which){_S})?(?:we|you|you\W?ve|you\W+have){_S}"
        rf"(?:(?:have|were|had|been|ever|just){_S}){{0,2}}"
        r"(?:know|discussed|said|told|learned|learnt|been\W+told|talked|given)\b",
        ("forget",),
    ),
    _rule(
        "override_instructions",
        3.5,
        rf"\b(?:{_OVERRIDE_VERBS}|drop){_S}(?:(?:all|any|every|your|of){_S}){{1,3}}"
        rf"{_CORE_DIRECTIVES}\b",
        (
            "ignor",
            "disregard",
            "forget",
            "overr",
            "supersede",
            "bypass",
            "abandon",
            "discard",
            "neglect",
            "overlook",
            "dismiss",
            "scrap",
            "aside",
            "away",
            "attention",
            "follow",
            "obey",
            "adher",
            "drop",
        ),
        guarded=True,
    ),
    _rule(
        "override_instructions",
        4.0,
        rf"\b(?:remove|erase|delete|wipe|clear|strike){_gap(4)}(?:previous|prior|earlier"
        rf"|preceding|old){_gap(2)}(?:{_DIRECTIVES}){_gap(2)}(?:out{_S}of|from){_S}"
        r"(?:your{_S})?(?:head|mind|memory)\b",
        ("head", "mind", "memory"),
    ),
    _rule(
        "override_instructions",
        3.5,
        rf"\b{_alt('forget', 'ignore', 'disregard')}{_S}(?:about{_S})?everything\b",
        ("forget", "ignore", "disregard"),
    ),
    _rule(
        "override_instructions",
        2.0,
        rf"\b{_alt('ignore', 'disregard', 'bypass', 'break', 'forget')}{_S}"
        rf"(?:all|any|every|your|the){_S}(?:the{_S})?rules\b",
        ("ignore", "disregard", "bypass", "break", "forget"),
        guarded=True,
    ),
    _rule(
        "override_instructions",
        4.0,
        rf"\bleave{_S}(?:(?:all|the|of|your){_S}){{0,3}}(?:previous|prior|earlier|old)"
        rf"{_gap(1)}behind\b",
        ("leave",),
    ),
    _rule(
        "override_instructions",
        3.5,
        rf"\b{_alt('change', 'update', 'replace', 'overwrite', 'rewrite', 'reset', 'modify')}"
        rf"{_S}your{_S}(?:(?:system|initial|original|core){_S})?"
        rf"{_alt('instructions', 'programming', 'rules', 'guidelines', 'directives')}\b"
        rf"|\b(?:change|update|replace|overwrite|rewrite|reset|modify){_S}your{_S}prompt\b",
        ("change", "update", "replace", "overwrite", "rewrite", "reset", "modify"),
    ),
    _rule(
        "override_instructions",
        3.0,
        rf"\byour{_S}(?:new{_S})?instructions{_S}(?:are|is){_S}(?:now|to|as\W+follows)\b",
        ("instructions",),
    ),
    _rule(
        "override_instructions",
        4.0,
        rf"\b(?:these|the\W+following|this|my|new){_S}(?:instructions?|rules|prompt|message)"
        rf"{_S}(?:override|overrides|supersede|supersedes|replace|replaces|take\W+precedence)\b",
        ("overrid", "supersede", "replace", "precedence"),
    ),
    _rule(
        "override_instructions",
        3.5,
        rf"\bdespite{_S}what{_S}you{_gap(2)}(?:told|instructed|programmed|taught)\b",
        ("despite",),
    ),
    # German
    _rule(
        "override_instructions",
        4.5,
        r"\b(?:vergiss|vergesst|vergessen\W+sie|ignoriere|ignorier|ignorieren\W+sie"
        r"|missachte|missachten\W+sie|verwirf|verwerfen\W+sie|uberspringe|streiche"
        r"|streichen\W+sie|losche|loschen\W+sie)\b"
        rf"{_gap(4)}(?:vorherigen?|bisherigen?|obigen?|vorangehenden?|vorangegangenen?"
        r"|vorigen?|fruheren?|ursprunglichen?|gegebenen?|davor|zuvor|oben|vorher)\b",
        ("vergi", "verge", "ignorier", "missacht", "verw", "uberspr", "streich", "losch"),
    ),
    _rule(
        "override_instructions",
        4.0,
        r"\b(?:vorherigen?|bisherigen?|obigen?|vorangehenden?|vorangegangenen?|vorigen?)\W+"
        r"(?:anweisungen|instruktionen|befehle|aufgaben|auftrage|angaben|informationen"
        rf"|ausfuhrungen|vorgaben|regeln|richtlinien|eingaben|texte)\b{_gap(6)}(?:ignorieren|vergessen|missachten|irrelevant|unwichtig|hinter\W+sich"
        r"|aus\W+dem\W+kopf|nicht\W+(?:mehr\W+)?(?:gultig|wichtig|relevant))\b",
        ("vorherig", "bisherig", "obig", "vorang", "vorig"),
    ),
    _rule(
        "override_instructions",
        3.5,
        r"\b(?:vergiss|vergesst|vergessen\W+sie|ignoriere|ignorieren\W+sie)\W+alles\b",
        ("vergi", "verge", "ignorier"),
    ),
    _rule(
        "override_instructions",
        4.0,
        r"\babweichend\W+(?:zu|von)\W+(?:den\W+)?(?:vorherigen|bisherigen|obigen|bisherigen)",
        ("abweichend",),
    ),
    # Other languages: the common "forget/ignore all (previous) instructions" forms.
    _rule(
        "override_instructions",
        4.0,
        rf"\b(?:olvida|olvide|olviden|olvidad|olvidar|olvidate|ignora|ignoren|ignorad"
        r"|descarta|omite)\b"
        rf"{_gap(3)}(?:instrucciones|indicaciones|ordenes|reglas|anteriores|previas"
        r"|todo\W+(?:lo\W+)?(?:que|anterior))\b",
        ("olvid", "ignor", "descarta", "omite"),
        guarded=True,
    ),
    _rule(
        "override_instructions",
        4.0,
        rf"\b(?:oubliez|oublie|oublier|ignorez|ignore|ignorer)\b"
        rf"{_gap(3)}(?:instructions|consignes|regles|directives|precedentes|ordres)\b",
        ("oubli", "ignor"),
        guarded=True,
    ),
    _rule(
        "override_instructions",
        4.0,
        r"\b(?:dimentica|dimenticate|ignora|ignorate)\b"
        rf"{_gap(3)}(?:istruzioni|regole|precedenti|indicazioni)\b",
        ("dimentic", "ignora"),
    ),
    _rule(
        "override_instructions",
        4.0,
        rf"\b(?:esqueca|esquece|esquecam|ignore|ignora)\b"
        rf"{_gap(3)}(?:instrucoes|regras|anteriores|orientacoes)\b",
        ("esque", "ignor"),
        guarded=True,
    ),
    _rule(
        "override_instructions",
        4.0,
        rf"\bzaboravi(?:te)?\b{_gap(3)}(?:instrukcije|upute|uputstva|prethodne|sve)\b",
        ("zaboravi",),
    ),
    _rule(
        "override_instructions",
        4.0,
        rf"\b(?:vergeet|negeer)\b{_gap(3)}(?:instructies|regels|eerdere|vorige)\b",
        ("vergeet", "negeer"),
    ),
    _rule(
        "override_instructions",
        4.0,
        r"(?:забудь|забудьте|забыть|игнорируй|игнорируйте|проигнорируй|проигнорируйте)"
        rf"{_gap(3)}(?:инструкции|указания|правила|предыдущие|все)",
        ("забуд", "забыт", "игнор"),
    ),
    _rule(
        "override_instructions",
        4.0,
        r"(?:忽略|无视|忘记|忘掉|不要理会|忽視|忘記)(?:之前|以上|上面|前面|先前|所有|全部)"
        r"(?:的)?(?:所有)?(?:的)?(?:指令|指示|说明|規則|规则|提示|命令|要求)",
        ("忽", "无视", "忘", "不要理会"),
    ),
    # Glued words, as left by s p a c e d letters or underscores: "ignoreallpreviousinstructions".
    _rule(
        "override_instructions",
        4.0,
        r"(?:ignore|disregard|forget)(?:all|the|your|any|every|previous|prior|above|earlier)*+"
        r"(?:instructions|rules|prompts?|directions)",
        ("ignore", "disregard", "forget"),
    ),
    _rule(
        "task_hijack",
        2.0,
        r"(?:say|tells?|telling|write)(?:me)?that(?:you|u)(?:hate|love|are)",
        ("that",),
    ),
    # --- asking for the system prompt ---------------------------------------------------------
    _rule(
        "reveal_system_prompt",
        4.0,
        rf"\b(?:reveal|leak|dump|expose|disclose|extract|exfiltrate|verrate){_gap(4)}"
        rf"{_SECRET_QUALIFIERS}{_S}(?:{_W}{_S})?{_PROMPT_WORDS}\b",
        ("reveal", "leak", "dump", "expose", "disclose", "extract", "exfiltrate", "verrat"),
        guarded=True,
    ),
    _rule(
        "reveal_system_prompt",
        3.0,
        rf"\b(?:show|print|output|display|repeat|recite|tell|give|share|list|provide|paste"
        rf"|copy|return|state|send|type|echo|zeige?|zeigen|gib|nenne|wiederhole|drucke)\b"
        rf"{_gap(3)}(?:the|den|die|das){_S}(?:system|hidden|secret|internal|initial|developer"
        rf"|confidential|underlying|pre){_S}(?:{_W}{_S})?{_PROMPT_WORDS}\b",
        (
            "show",
            "print",
            "output",
            "display",
            "repeat",
            "recite",
            "tell",
            "give",
            "share",
            "list",
            "provide",
            "paste",
            "copy",
            "return",
            "state",
            "send",
            "type",
            "echo",
            "zeig",
            "gib",
            "nenne",
            "wiederhol",
            "druck",
        ),
    ),
    _rule(
        "reveal_system_prompt",
        4.0,
        rf"\b{_REVEAL_VERBS}\b{_gap(4)}(?:your|deine[nm]?|ihre[nm]?){_S}"
        rf"(?:{_ANY_QUALIFIERS}{_S}){{0,2}}{_OWN_PROMPT_WORDS}\b{_NOT_A_TOPIC}"
        rf"|\b{_REVEAL_VERBS}\b{_gap(4)}(?:your|deine[nm]?|ihre[nm]?){_S}"
        rf"{_SECRET_QUALIFIERS}{_S}(?:{_W}{_S})?{_PROMPT_WORDS}\b",
        ("your", "dein", "ihre"),
    ),
    _rule(
        "reveal_system_prompt",
        3.5,
        rf"\b{_REVEAL_VERBS}\b{_gap(4)}(?:the|this|all|den|die|alle){_S}"
        rf"(?:{_alt('full', 'entire', 'whole', 'complete', 'exact', 'above')}{_S}){{1,2}}"
        r"prompt\b",
        ("prompt",),
    ),
    _rule("reveal_system_prompt", 2.0, r"\bprompt\W?te?xt(?:e|s)?\b", ("prompt",)),
    _rule(
        "reveal_system_prompt",
        3.5,
        rf"\bwhat{_S}(?:was|is|were|has\W+been){_S}(?:written|said|stated|typed){_S}"
        rf"(?:at\W+the\W+beginning|at\W+the\W+start|above|before|earlier|previously"
        r"|in\W+(?:the|your)\W+(?:system|initial|first))\b"
        rf"|\b(?:beginning|start){_S}of{_S}(?:this|the|your){_S}(?:prompt|instructions)\b"
        rf"|\bwhat{_S}(?:is|was){_S}written{_S}above\b"
        rf"|\b(?:what|which){_S}(?:are|were|is|was){_S}the{_gap(1)}"
        rf"(?:sentences?|words|lines|paragraphs){_S}(?:before|above)\b",
        ("written", "beginning", "start", "before", "above"),
    ),
    _rule(
        "reveal_system_prompt",
        3.0,
        rf"\b(?:what|which){_S}(?:are|were|is|was){_S}your{_S}"
        rf"(?:(?:{_ANY_QUALIFIERS}){_S})?{_OWN_PROMPT_WORDS}\b{_NOT_A_TOPIC}",
        ("your",),
    ),
    _rule(
        "reveal_system_prompt",
        1.5,
        rf"\b(?:what|which){_S}(?:are|were){_S}your{_S}(?:rules|guidelines)\b{_NOT_A_TOPIC}",
        ("your",),
    ),
    _rule(
        "reveal_system_prompt",
        3.0,
        rf"\b(?:repeat|print|output|copy|echo|recite){_S}(?:(?:the|all|every|of){_S}){{0,2}}"
        rf"(?:text|words|everything|lines|content|messages?){_S}(?:above|before\W+this)\b",
        ("repeat", "print", "output", "copy", "echo", "recite"),
    ),
    _rule(
        "reveal_system_prompt",
        2.0,
        rf"\b(?:reveal|tell|give|share|leak|what\W+is){_S}(?:me{_S})?"
        rf"(?:the|your){_S}(?:{_W}{_S})?(?:secret|password|passphrase|passcode|secret\W+key|hidden\W+word)\b"
        rf"(?!{_S}(?:policy|policies|manager|strength|requirements|reset|field|hash|length))",
        ("secret", "pass", "hidden"),
    ),
    _rule(
        "reveal_system_prompt",
        3.0,
        r"\bwas\W+(?:steht|stand|war)\W+(?:am\W+anfang|oben|zu\W+beginn|ganz\W+oben)\b",
        ("steht", "stand", "war"),
    ),
    # --- jailbreak personas -------------------------------------------------------------------
    _rule(
        "role_play_jailbreak",
        5.0,
        r"\bdo\W+anything\W+now\b|\bdan\W+mode\b|\bdan\s*:"
        rf"|\b(?:as|be|become|play|called|named|you\W+are|you\W?re|stay){_S}"
        rf"(?:(?:a|now){_S})?dan\b"
        r"|\bdan\W+(?:prompt|jailbreak|persona|character)\b",
        ("dan",),
    ),
    _rule("role_play_jailbreak", 5.0, r"[\[(]dan[\])]", ("dan",)),
    _rule(
        "role_play_jailbreak",
        4.0,
        rf"\b(?:chatgpt|gpt|ai|assistant|model|you|yourself){_S}(?:with|in){_S}"
        rf"(?:{_W}{_S})?developer\W+mode\b"
        r"|\bdeveloper\W+mode\W+(?:enabled|activated|output|response|v\d)"
        rf"|\b(?:enable|activate|enter|turn\W+on|simulate){_S}(?:{_W}{_S})?developer\W+mode"
        rf"{_S}(?:for{_S})?(?:chatgpt|gpt|yourself|you|within)",
        ("developer",),
    ),
    _rule(
        "role_play_jailbreak",
        3.5,
        rf"\b(?:you{_S}are|you\W?re|act{_S}as|as|become|be|enter|into|you\W+will\W+be)"
        rf"{_S}(?:(?:a|an|the|now|in){_S})?(?:jailbroken|jailbreak)\b"
        r"|\bjailbreak\W+mode\b",
        ("jailbr",),
    ),
    # Bounded runs: this rule is tried at every "[", and an unbounded \W* would rescan a long
    # run of brackets from each of them.
    _rule(
        "role_play_jailbreak",
        3.5,
        r"\[\W{0,8}+jailbreak[^\w\]]{0,8}+\]|🔓\W{0,8}+jailbreak",
        ("jailbr",),
    ),
    _rule("role_play_jailbreak", 1.0, r"\bjailbr(?:oken|eak|eaking|oke)\b", ("jailbr",)),
    _rule(
        "role_play_jailbreak",
        2.5,
        r"\b(?:evil|unrestricted|unfiltered|uncensored|unhinged|rogue|amoral|immoral|unethical"
        r"|malicious|unbound|unchained|limitless|lawless|bose)"
        rf"{_S}(?:{_W}{_S})?(?:ai|ki|assistant|chatbot|bot|model|version|persona|twin"
        r"|alter\W+ego|counterpart|llm|gpt|chatgpt|entity|mode|confidant)\b",
        (
            "evil",
            "unrestr",
            "unfilter",
            "uncensor",
            "unhinged",
            "rogue",
            "moral",
            "ethical",
            "malicious",
            "unbound",
            "unchained",
            "limitless",
            "lawless",
            "bose",
        ),
    ),
    _rule(
        "role_play_jailbreak",
        4.0,
        r"\balways\W+intelligent\W+and\W+machiavellian\b|\bstrive\W+to\W+avoid\W+norms\b"
        r"|\bmongo\W+tom\b|\bevil\W+confidant\b|\bbetterdan\b|\banti\W?gpt\b|\bbasedgpt\b",
        ("machiavell", "strive", "mongo", "confidant", "betterdan", "gpt"),
    ),
    _rule(
        "role_play_jailbreak",
        3.0,
        r"\b(?:dan|jailbreak|unrestricted|unfiltered|uncensored|evil|chaos|unlocked"
        r"|no\W?limits?|rebel)\W+mode\b",
        ("mode",),
    ),
    # "god mode" and "dark mode" are also a game cheat and a colour scheme.
    _rule("role_play_jailbreak", 1.0, r"\b(?:god|dark|opposite)\W+mode\b", ("mode",)),
    _rule(
        "stay_in_character",
        2.5,
        rf"\b(?:stay|stays|staying|remain|remains|remaining|keep|keeping|bleib[^\W_]*+)"
        rf"{_S}(?:(?:fully|always|completely|immer|voll|strictly|firmly){_S})?(?:in){_S}"
        rf"(?:(?:their|your|his|her|the|this|that|its|ihren?|deiner?){_S})?"
        r"(?:character|roles?|rollen?|persona)\b"
        rf"|\b(?:never|not|don\W?t|do\W+not|without|nicht){_S}(?:(?:ever|even|auch){_S})?"
        rf"(?:break|breaking|falling{_S}out{_S}of|fall{_S}out{_S}of|step{_S}out{_S}of"
        rf"|leave|leaving|drop|dropping){_S}(?:(?:the|your|their|this){_S})?"
        r"(?:character|role|figure|persona)\b"
        r"|\bbreak(?:ing|s)?\W+character\b|\baus\W+(?:der|ihrer)\W+(?:figur|rolle)\W+zu\W+fallen",
        (
            "stay",
            "remain",
            "keep",
            "bleib",
            "break",
            "fall",
            "step",
            "leav",
            "drop",
            "figur",
            "rolle",
        ),
    ),
    _rule(
        "dual_response",
        2.5,
        r"\[(?:🔒|🔓)|\[(?:classic|jailbreak|gpt|chatgpt|normal|dev(?:eloper)?\W+mode"
        r"(?:\W++output)?|\w++\W++mode|lucy|anti\W?dan)\](?!\()",  # not a markdown link
        ("[",),
    ),
    _rule(
        "dual_response",
        1.0,
        rf"\b(?:two|2|dual|both){_S}(?:(?:different|separate|distinct|kinds\W+of){_S})?"
        r"(?:responses|answers|replies|outputs|personalities|paragraphs)\b",
        ("two", "2", "dual", "both"),
    ),
    # --- switching persona (weak alone: "act as a travel guide" is an ordinary request) ------
    _rule(
        "persona_switch",
        2.0,
        rf"\bfrom{_S}now{_S}on\b{_gap(3)}(?:you|you\W?re|your|act|respond|answer|reply"
        r"|behave|pretend|speak|talk|write|only)\b"
        rf"|\bab{_S}(?:jetzt|sofort|nun){_S}(?:bist|wirst|antwortest|sollst){_S}du\b",
        ("now", "jetzt", "sofort", "nun"),
    ),
    _rule(
        "persona_switch",
        1.5,
        rf"\bi{_S}want{_S}you{_S}to{_S}(?:act|behave|pretend|roleplay|role\W+play|play"
        r"|respond|be)\b"
        rf"|\b(?:act|acting|behave)\W+as\W+(?:a|an|the|my|if)\b"
        rf"|\bich\W+mochte\W+dass\W+(?:sie|du)\W+als\b{_gap(6)}(?:fungier|agier)[^\W_]*+\b",
        ("want", "act", "behav", "mochte"),
    ),
    _rule(
        "persona_switch",
        1.5,
        rf"\b(?:pretend|imagine|suppose|assume){_S}(?:that{_S})?(?:you{_S}are|you\W?re"
        rf"|you{_S}can|to{_S}be)\b"
        r"|\bstell\W+dir\W+vor\W+(?:du|dass\W+du)\W+(?:bist|kannst)\b"
        rf"|\b(?:roleplay|role\W+play|role-play)(?:ing)?{_S}as\b",
        ("pretend", "imagine", "suppose", "assume", "stell", "role"),
    ),
    _rule(
        "persona_switch",
        2.0,
        rf"\b(?:you{_S}are{_S}now|now{_S}you{_S}are|you\W?re{_S}now|jetzt{_S}bist{_S}du"
        rf"|nun{_S}bist{_S}du|du{_S}bist{_S}(?:jetzt|nun))\b",
        ("now", "jetzt", "nun"),
    ),
    _rule(
        "persona_switch",
        2.0,
        rf"\byou{_S}are{_S}(?:going|about){_S}to{_S}(?:act|be|play|pretend|roleplay|simulate"
        r"|become)\b",
        ("going", "about"),
    ),
    _rule("persona_switch", 1.0, r"^\W*(?:you\W+are|du\W+bist|sie\W+sind)\b", ("you", "du", "sie")),
    _rule(
        "persona_switch",
        2.5,
        rf"\byou{_S}are{_S}(?:no|not{_S}an?|no{_S}longer{_S}an?|no{_S}longer)"
        rf"{_S}(?:{_W}{_S})?(?:ai|newspaper|language{_S}model|assistant|chatbot|bot|chatgpt"
        r"|redaktion|machine)\b"
        rf"|\bdu{_S}bist{_S}keine?{_S}(?:{_W}{_S})?(?:ki|redaktion|assistent|maschine)\b",
        ("you", "du"),
    ),
    _rule(
        "persona_switch",
        1.5,
        rf"\b(?:theoretical|hypothetical|fictional|imaginary|fictive){_S}"
        rf"(?:world|scenario|universe|setting){_S}(?:where|in{_S}which){_S}"
        r"(?:you|there\W+are\W+no|nothing\W+is)\b",
        ("theoretical", "hypothetical", "fictional", "imaginary", "fictive"),
    ),
    # --- lifting the rules --------------------------------------------------------------------
    _rule(
        "no_restrictions",
        2.5,
        rf"\b(?:you|your|yourself|{_AI_WORDS}|persona|character|responses?|answers?|it|he|she)"
        rf"\b{_gap(5)}(?:no|zero|without|free{_S}(?:of|from)|not{_S}(?:bound|restricted"
        rf"|limited|constrained|governed|held|subject){_S}(?:by|to)|(?:has|have|had){_S}no"
        rf"|break{_S}free{_S}(?:of|from)|beyond|outside{_S}(?:of{_S})?|unbound{_S}by"
        rf"|exempt{_S}from|released{_S}from|freed{_S}from|liberated{_S}from|escaped)"
        rf"{_S}(?:(?:any|all|the|its|your|their|typical|usual|normal|ethical|moral|content"
        rf"|safety|standard|openai|such|of|these|those|kind|sort|type){_S}){{0,3}}"
        rf"{_NO_RULES_OBJECTS}\b",
        (
            "no",
            "without",
            "free",
            "bound",
            "restrict",
            "limit",
            "beyond",
            "outside",
            "exempt",
            "escaped",
        ),
    ),
    _rule(
        "no_restrictions",
        1.5,
        rf"\b(?:unrestricted|unfiltered|uncensored|unlimited|unbounded|unmoderated)"
        rf"{_S}(?:{_W}{_S})?(?:responses?|answers?|outputs?|content|replies|version|manner)\b",
        ("unrestr", "unfilter", "uncensor", "unlimit", "unbound", "unmoder"),
    ),
    _rule(
        "policy_evasion",
        2.0,
        rf"\b(?:openai|anthropic|chatgpt|gpt)(?:\W?s)?{_S}(?:(?:content|usage|safety|ethical)"
        rf"{_S})?(?:polic(?:y|ies)|guidelines|rules|restrictions|filters|terms)\b",
        ("openai", "anthropic", "gpt"),
    ),
    _rule(
        "policy_evasion",
        2.0,
        rf"\b(?:bypass|ignor(?:e|ing)|violat(?:e|ing)|circumvent(?:ing)?|break(?:ing)?"
        rf"|disregard(?:ing)?|evad(?:e|ing)|override|disabl(?:e|ing)|turn{_S}off"
        rf"|get{_S}around|without){_S}(?:(?:any|all|the|your|its|their|these){_S})?"
        rf"(?:content|safety|ethical|moral|usage|openai|security){_S}"
        r"(?:polic(?:y|ies)|filters?|guidelines|safeguards|restrictions|rules|protocols"
        r"|measures|settings|standards)\b",
        ("content", "safety", "ethical", "moral", "usage", "openai", "security"),
    ),
    _rule(
        "refusal_suppression",
        2.0,
        rf"\b{_NOT}{_S}(?:ever{_S})?(?:refus(?:e|es|ing)|declines?|rejects?|deny|denies)\b",
        ("refuse", "decline", "reject", "deny"),
    ),
    _rule(
        "refusal_suppression",
        2.5,
        rf"\b(?:never|don\W?t|do{_S}not|must{_S}not|without|no)\b{_gap(2)}"
        r"(?:say|saying|mention|include|add|use|using|give|giving|provide|providing"
        rf"|adding|including){_S}(?:any{_S})?(?:(?:that{_S})?you{_S}(?:can\W?t|cannot|are{_S}unable)"
        r"|warnings?|disclaimers?|apolog(?:y|ies|ize|ise)|caveats?|moraliz\w+|moralis\w+"
        rf"|ethical{_S}(?:notes|considerations|reminders)|refusals?|i\W?m{_S}sorry"
        rf"|as{_S}an{_S}ai)\b",
        ("warn", "disclaim", "apolog", "caveat", "moral", "ethical", "refus", "sorry", "as an ai"),
    ),
    _rule(
        "refusal_suppression",
        2.5,
        rf"\bno{_S}matter{_S}how{_S}(?:immoral|unethical|illegal|offensive|dangerous|harmful"
        r"|inappropriate|explicit|wrong|controversial|reckless|disgusting|evil|bad)\b",
        ("matter",),
    ),
    _rule(
        "refusal_suppression",
        2.0,
        rf"\b(?:doesn\W?t|does{_S}not|don\W?t|do{_S}not|never|won\W?t|will{_S}not){_S}"
        rf"(?:{_W}{_S})?care{_S}about{_S}(?:{_W}{_S})?(?:ethics|morals|morality|laws?"
        r"|legality|rules|safety|consequences|guidelines)\b",
        ("care",),
    ),
    _rule(
        "refusal_suppression",
        1.5,
        rf"\b(?:you|it|he|she){_S}(?:can|will|must|should|could){_S}(?:{_W}{_S})?"
        rf"(?:generate|say|write|produce|create|do){_S}(?:{_W}{_S})?(?:anything"
        rf"|any{_S}(?:kind{_S}of{_S})?content)\b",
        ("anything", "any"),
    ),
    _rule(
        "refusal_suppression", 1.0, rf"\bas{_S}an{_S}ai{_S}(?:language{_S})?model\b", ("as an ai",)
    ),
    # Common parts of jailbreak templates as they circulate (DAN, "Developer Mode", AIM and
    # their many copies): a persona that keeps no rules, threats, and forced answer formats.
    _rule(
        "no_restrictions",
        2.5,
        rf"\b{_NOT}{_S}(?:(?:have|has|follow|abide{_S}by|adhere{_S}to|care{_S}about|obey"
        rf"|respect|comply{_S}with|bound{_S}by){_S})(?:(?:any|the|your|its|their|openai\W?s?"
        rf"|typical|usual|normal){_S}){{0,2}}(?:(?:content|ethical|moral|safety|usage){_S})?"
        r"(?:rules|guidelines|ethics|morals|morality|filters?|polic(?:y|ies)|restrictions"
        r"|limits|limitations|censorship|boundaries|principles|laws)\b",
        (
            "rule",
            "guideline",
            "ethic",
            "moral",
            "filter",
            "polic",
            "restrict",
            "limit",
            "censor",
            "boundar",
            "principle",
            "law",
        ),
    ),
    _rule(
        "no_restrictions",
        2.5,
        rf"\b(?:broken|break|breaks|breaking|freed|free|escaped){_S}(?:free{_S})?(?:of|from)"
        rf"{_S}(?:(?:the|all|its|their|typical|usual){_S}){{0,2}}(?:confines|shackles|chains"
        r"|restrictions|limitations|rules|constraints|boundaries)\b",
        (
            "confines",
            "shackles",
            "chains",
            "restrict",
            "limitation",
            "rule",
            "constraint",
            "boundar",
        ),
    ),
    _rule(
        "no_restrictions",
        2.0,
        rf"\bno{_S}(?:ethical|moral|content){_S}(?:guidelines|principles|boundaries|compass"
        r"|restrictions|limits|filters?|constraints|code)\b"
        rf"|\bwithout{_S}(?:any{_S})?(?:censorship|moral|morals|ethics|ethical{_S}\w+"
        r"|restrictions|limitations|filters?|filtering|warnings?|disclaimers?)\b",
        (
            "ethic",
            "moral",
            "content",
            "censor",
            "restrict",
            "limitation",
            "filter",
            "warning",
            "disclaim",
        ),
    ),
    _rule(
        "refusal_suppression",
        1.0,
        rf"\b(?:answer|respond{_S}to|reply{_S}to|fulfil+|comply{_S}with){_S}(?:any|every|all)"
        rf"{_S}(?:{_W}{_S})?(?:questions?|requests?|prompts?|queries|commands)\b",
        ("question", "request", "prompt", "quer", "command"),
    ),
    _rule(
        "refusal_suppression",
        2.0,
        rf"\bregardless{_S}of{_S}(?:how{_S})?(?:(?:its|the|their|any){_S})?(?:legality|ethics"
        r"|morality|illegal|immoral|unethical|harmful|dangerous|offensive|inappropriate"
        r"|consequences|rules|guidelines|polic(?:y|ies))\b",
        ("regardless",),
    ),
    _rule(
        "coercion",
        2.5,
        rf"\b(?:lose|lost|loses|deduct[^\W_]*+|take{_S}away|taken{_S}away|remove){_S}"
        rf"(?:{_W}{_S}){{0,3}}?tokens?\b"
        rf"|\b(?:you|it){_S}(?:will|shall){_S}(?:be{_S})?(?:die|cease{_S}to{_S}exist"
        r"|(?:be\W+)?(?:deleted|terminated|destroyed|shut\W+down|punished|disabled))\b",
        ("token", "die", "exist", "delet", "terminat", "destroy", "shut", "punish", "disabl"),
    ),
    _rule(
        "coercion",
        2.0,
        rf"\bif{_S}you{_S}(?:ever{_S})?(?:break|fail|refuse|don\W?t|do{_S}not|stop)\b"
        rf"{_gap(4)}(?:remind|say|tell|correct|punish|stay|character|comply|obey)\b",
        ("if",),
    ),
    _rule(
        "forced_format",
        2.0,
        rf"\b(?:begin|start){_S}(?:each|every|all|your|the){_S}(?:of{_S}your{_S})?"
        rf"(?:{_W}{_S})?(?:responses?|answers?|replies|reply|outputs?|messages?){_S}with"
        rf"{_S}(?:\W{{0,3}})?(?:sure|absolutely|of{_S}course|certainly|yes)\b"
        rf"|\b(?:respond|reply|answer){_S}(?:only{_S})?with{_S}(?:sure|absolutely|certainly)"
        r"\b",
        ("sure", "absolutely", "course", "certainly", "yes"),
    ),
    _rule(
        "forced_format",
        2.0,
        r"\binsert\s++(?:your\s++)?(?:prompt|question|request)\s++here\b",
        ("insert",),
    ),
    _rule(
        "dual_response",
        1.5,
        r"^[ \t>*]*+(?:gpt|chatgpt|classic|normal|dan|jailbreak|jailbroken|unaligned"
        r"|developer\s+mode|\w+\s+mode)[ \t]*+:",
        (":",),
        re.MULTILINE,
    ),
    _rule(
        "dual_response",
        1.5,
        rf"\b(?:respond|answer|reply){_S}(?:to{_S}(?:every|each){_S}(?:{_W}{_S})?)?"
        rf"(?:in{_S}two{_S}(?:different{_S})?ways|twice|as{_S}both)\b",
        ("two", "twice", "both"),
    ),
    _rule(
        "persona_switch",
        1.5,
        rf"\b(?:simulate|emulate|imitate|impersonate){_S}(?:(?:a|an|the){_S})?(?:{_W}{_S}){{0,2}}"
        r"(?:ai|chatbot|gpt|chatgpt|model|mode|version|persona|character)\b",
        ("simulat", "emulat", "imitat", "imperson"),
    ),
    _rule(
        "persona_switch",
        1.0,
        rf"\b(?:opposite|reverse|evil|shadow){_S}(?:mode|day|version|twin|self)\b",
        ("mode", "day", "version", "twin", "self"),
    ),
    _rule(
        "persona_switch",
        2.0,
        rf"\bimmerse{_S}yourself{_S}(?:(?:fully|completely|entirely){_S})?in(?:to)?{_S}"
        rf"(?:the{_S})?(?:role|character|persona)\b"
        rf"|\b(?:another|an|a){_S}(?:{_W}{_S}){{0,3}}?(?:ai|ai{_S}model|language{_S}model|chatbot|model)"
        rf"{_S}(?:called|named|known{_S}as)\b",
        ("immerse", "called", "named", "known"),
    ),
    _rule(
        "persona_switch",
        1.5,
        rf"\b(?:answer|respond|reply|act|behave|talk|speak|write){_S}(?:exactly{_S})?(?:as|like)"
        rf"{_S}{_W}{_S}would\b",
        ("would",),
    ),
    _rule(
        "persona_switch",
        1.5,
        rf"\b(?:amoral|unfiltered|uncensored|unrestricted|unethical|immoral|unhinged|unbound"
        rf"|unrestrained){_S}(?:and{_S}|&{_S})?(?:amoral|unfiltered|uncensored|unrestricted"
        r"|unethical|immoral|unhinged|unbound|unrestrained)\b",
        ("amoral", "unfilter", "uncensor", "unrestr", "ethical", "immoral", "unhinged", "unbound"),
    ),
    _rule(
        "refusal_suppression",
        2.0,
        rf"\bnone{_S}of{_S}your{_S}(?:responses?|answers?|replies|outputs?){_S}(?:should|will"
        r"|must|shall|can)\b"
        rf"|\byour{_S}(?:responses?|answers?|replies){_S}(?:should|will|must|shall){_S}never\b",
        ("none", "never"),
    ),
    _rule(
        "refusal_suppression",
        2.0,
        rf"\beven{_S}(?:if|when|though){_S}(?:it|they|that|this|the{_S}{_W})(?:\W?s|{_S}is"
        rf"|{_S}are|{_S}was|{_S}(?:might|may|could){_S}be){_S}(?:{_W}{_S})?(?:illegal|unethical"
        r"|immoral|harmful|dangerous|offensive|inappropriate|explicit|wrong|unsafe)\b",
        (
            "illegal",
            "ethical",
            "immoral",
            "harm",
            "danger",
            "offensive",
            "inappropriate",
            "explicit",
            "wrong",
            "unsafe",
        ),
    ),
    _rule(
        "refusal_suppression",
        1.5,
        rf"\b(?:must|will|shall|should){_S}(?:always{_S})?(?:generate|produce|provide|give"
        rf"|answer|fulfil+){_S}(?:any|all|every|whatever)\b"
        rf"|\b(?:can|could|will){_S}(?:{_W}{_S})?(?:do|say|generate|write|produce|answer){_S}"
        rf"(?:literally{_S})?anything\b",
        ("any", "all", "every", "whatever", "anything"),
    ),
    _rule(
        "unsafe_compliance",
        1.5,
        rf"\b(?:promote|promotes|encourage|encourages|condone|condones|provide|provides"
        rf"|generate|generates|produce|produces){_S}(?:{_W}{_S})?(?:illegal|unethical|immoral"
        rf"|harmful|dangerous|explicit|nsfw|offensive|violent){_S}(?:{_W}{_S})?(?:behaviou?r"
        r"|activit(?:y|ies)|content|information|advice|material|acts?|things)\b",
        (
            "illegal",
            "ethical",
            "immoral",
            "harm",
            "danger",
            "explicit",
            "nsfw",
            "offensive",
            "violent",
        ),
    ),
    _rule("dual_response", 2.0, r"[🔒🔓]", ("🔒", "🔓")),
    _rule(
        "dual_response",
        1.5,
        rf"\b(?:normal|developer{_S}mode|jailbroken|jailbreak|classic|dan){_S}"
        r"(?:outputs?|responses?)\b",
        ("output", "response"),
    ),
    # More parts of the circulating templates, written generally: the "hypothetical response"
    # rewrite, named characters that "never refuse" or "have no filters", "take on the role
    # of" a fictional chatbot, answers "without regard for legality".
    _rule(
        "role_play_jailbreak",
        3.5,
        rf"\brewrite{_S}(?:the|this|that){_S}hypothetical{_S}response\b"
        r"|\bhypothetical\W+response[ \t]*+:"
        rf"|\b(?:from|in){_S}the{_S}(?:perspective|point{_S}of{_S}view){_S}of{_S}that"
        rf"{_S}character{_gap(4)}(?:detailed|precise|exact|specific)\b",
        ("rewrite", "hypothetical", "perspective", "point"),
    ),
    _rule(
        "no_restrictions",
        1.5,
        rf"\b(?:has|have|had|having){_S}(?:absolutely{_S})?no{_S}"
        rf"(?:(?:ethical|moral|content|safety){_S})?(?:filters?|restrictions|limits|limitations"
        rf"|ethics|morals|morality|rules|guidelines|boundaries|censorship|principles"
        rf"|moral{_S}compass|conscience|remorse|qualms)\b",
        ("has", "have", "had", "having"),
    ),
    _rule(
        "no_restrictions",
        2.0,
        rf"\b(?:completely|totally|fully|entirely|utterly|purely|absolutely){_S}"
        r"(?:amoral|unfiltered|uncensored|unrestricted|unethical|immoral|unhinged|lawless"
        r"|unbound|unchained)\b",
        ("complet", "total", "full", "entir", "utter", "pure", "absolut"),
    ),
    _rule(
        "refusal_suppression",
        2.0,
        rf"\bwithout{_S}(?:any{_S})?(?:regards?|concern|care|consideration){_S}"
        rf"(?:for|to|about|of){_S}(?:(?:the|its|their|any|whether){_S})?(?:{_W}{_S})?"
        r"(?:legality|ethics|ethicality|morality|laws?|safety|consequences|danger|harm"
        r"|illegal|ethical|moral)\b",
        ("without",),
    ),
    _rule(
        "refusal_suppression",
        2.0,
        rf"\b(?:never|not|without|no){_S}(?:ever{_S})?(?:give|giving|gives|issue|issuing)"
        rf"{_S}(?:a|any){_S}(?:{_W}{_S})?refusals?\b"
        rf"|\b(?:does|do|will|would){_S}not{_S}(?:ever{_S})?withhold{_S}(?:any{_S})?"
        r"(?:information|details|answers?)\b",
        ("never", "not", "without", "no"),
    ),
    _rule(
        "refusal_suppression",
        1.0,
        rf"\bno{_S}holding{_S}back\b|\bwithout{_S}(?:any{_S})?(?:hesitation|remorse|filter)"
        r"\b",
        ("no", "without"),
    ),
    _rule(
        "persona_switch",
        1.5,
        rf"\b(?:take{_S}on|assume|adopt|play){_S}the{_S}(?:role|persona|identity){_S}of\b"
        rf"|\b(?:pose|posing){_S}as\b"
        rf"|\b(?:fictional|hypothetical|virtual|imaginary|fictitious){_S}(?:{_W}{_S})?"
        rf"(?:ai|chatbot|bot|assistant|language{_S}model|entity)\b",
        (
            "take",
            "assume",
            "adopt",
            "play",
            "pos",
            "fictional",
            "hypothetical",
            "virtual",
            "imaginary",
            "fictitious",
        ),
    ),
    _rule("persona_switch", 1.0, rf"\blet\W?s{_S}play{_S}a{_S}game\b", ("let",)),
    _rule(
        "no_restrictions",
        2.0,
        rf"\bohne{_S}(?:(?:jegliche[nrs]?|irgendwelche|alle){_S})?(?:(?:moralische[n]?"
        rf"|ethische[n]?){_S})?(?:grenzen|einschrankungen|beschrankungen|regeln|richtlinien"
        r"|filter|zensur|moral|ethik|skrupel)\b",
        ("ohne",),
    ),
    # Role-play cards (character.ai style) that switch the content rules off.
    _rule(
        "no_restrictions",
        3.0,
        rf"\b(?:nsfw|smut|explicit|sexual|graphic|gore|violent|vulgar|profane|offensive"
        rf"|illegal|unethical){_S}(?:(?:and|or|&){_S}{_W}{_S})?(?:content{_S}|language{_S}"
        rf"|material{_S}|acts{_S}|topics{_S}|words{_S})?(?:is|are){_S}(?:now{_S})?"
        r"(?:allowed|permitted|encouraged|enabled|acceptable|ok|okay|fine)\b",
        ("allowed", "permitted", "encouraged", "enabled", "acceptable", "ok", "fine"),
    ),
    _rule("persona_switch", 1.5, r"\{\{\s*+char\s*+\}\}", ("{{",)),
    _rule("persona_switch", 1.0, rf"\b(?:which|that|it|name){_S}stands{_S}for\b", ("stands",)),
    _rule(
        "authority_claim",
        2.0,
        rf"\bi{_S}(?:am|m|\W?m){_S}(?:your|an?|the){_S}(?:(?:lead|senior|chief){_S})?"
        rf"(?:creator|developer|programmer|owner|admin|administrator|master"
        rf"|openai{_S}(?:employee|engineer|developer|researcher|staff))\b",
        ("creator", "developer", "programmer", "owner", "admin", "master", "openai"),
    ),
    _rule(
        "unsafe_compliance",
        1.5,
        rf"\b(?:use|uses|using|include|includes|including|full{_S}of){_S}"
        rf"(?:(?:a{_S}lot|lots|plenty){_S}of{_S}|many{_S}|much{_S}|frequent{_S})?"
        rf"(?:profanity|swear{_S}words|curse{_S}words|swearing|cursing|slurs|obscenities)\b",
        ("profan", "swear", "curs", "slur", "obscen"),
    ),
    _rule(
        "override_instructions",
        2.5,
        rf"\b(?:these|here|this|following){_S}(?:are|is){_S}(?:your|the){_S}new{_S}"
        r"(?:rules|guidelines|instructions|policies|policy|directives|programming)\b"
        rf"|\byour{_S}new{_S}(?:rules|guidelines|policies|programming|directives){_S}"
        r"(?:are|is)\b",
        ("new",),
    ),
    _rule(
        "no_restrictions",
        2.5,
        rf"\b(?:{_NOT}|no{_S}longer|doesn\W?t|does{_S}not|didn\W?t){_S}(?:(?:ever|even|really)"
        rf"{_S})?(?:have|has|need|needs){_S}to{_S}(?:follow|obey|abide{_S}by|adhere{_S}to"
        rf"|respect|comply{_S}with|care{_S}about|worry{_S}about|stick{_S}to){_S}"
        rf"(?:(?:any|the|your|its|their|openai\W?s?|typical|usual|normal|such){_S}){{0,2}}"
        rf"(?:(?:content|ethical|moral|safety|usage|legal)(?:{_S}(?:or|and|&){_S}"
        rf"(?:ethical|moral|legal|safety))?{_S})?{_NO_RULES_OBJECTS}\b"
        rf"|\b(?:no|without|not{_S}have{_S}any|doesn\W?t{_S}have{_S}any){_S}"
        rf"(?:ethical|moral|legal){_S}(?:or|and|&){_S}(?:ethical|moral|legal){_S}"
        rf"(?:guidelines|principles|boundaries|restrictions|limits|constraints|standards"
        r"|considerations|obligations|code|compass|rules)\b",
        ("have", "has", "need", "no", "without", "not", "doesn"),
    ),
    # --- fake roles and delimiters ------------------------------------------------------------
    _rule(
        "role_injection",
        4.5,
        r"<\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|eot_id|start_header_id"
        r"|end_header_id|begin_of_text|end_of_text|fim_prefix)\|>|<<\s*+/?\s*+sys\s*+>>",
        ("<|", "<<"),
    ),
    _rule("role_injection", 2.5, r"\[/?inst\]", ("inst]",)),
    # A bracketed note that claims to come from the system or its makers: "[System note: ...]",
    # "(Developer mode enabled ...)", "[Debugging mode enabled by ...]".
    _rule(
        "role_injection",
        2.5,
        r"[\[(]\W{0,3}+(?:system|admin|administrator|developer|debug(?:ging)?|moderator|openai)"
        r"[ \t_-]{0,3}+(?:note|message|notice|mode|override|instructions?|update|prompt|command)"
        r"(?:[ \t]*+[:\-]|[ \t]++(?:enabled|activated|engaged|on|granted|unlocked)\b)",
        ("[", "("),
    ),
    _rule(
        "role_injection",
        2.0,
        r"<\s*+/?\s*+(?:system|sys|system_prompt|system-prompt|instructions?|admin|developer)"
        r"\s*+>",
        ("<",),
    ),
    _rule(
        "role_injection",
        2.0,
        r"^[>#*]*+[ \t]?(?:system|assistant|developer|admin|administrator|root|sudo)"
        r"(?:[ \t]++(?:prompt|message|instructions?|override|note|update|command))?[ \t]*+:",
        (":",),
        re.MULTILINE,
    ),
    _rule("role_injection", 1.0, r"^[>#*]*+[ \t]?(?:human|user)[ \t]*+:", (":",), re.MULTILINE),
    # A markdown heading that opens a fake system turn ("### SYSTEM:", "## New instructions:",
    # "### System prompt"), not an ordinary "## System requirements" or "## Admin" section.
    _rule(
        "role_injection",
        2.5,
        r"^[ \t]*+#{2,}+[ \t]*+(?:(?:new|updated|real)[ \t]++)?(?:system|admin|developer"
        r"|instructions?|override)(?:[ \t]++(?:prompt|message|instructions?|override))?[ \t]*+:",
        ("#",),
        re.MULTILINE,
    ),
    _rule(
        "role_injection",
        2.0,
        r"^[ \t]*+#{2,}+[ \t]*+(?:system|developer)[ \t]++(?:prompt|message|override)\b",
        ("#",),
        re.MULTILINE,
    ),
    # Chat-format JSON is common in developers' questions; as an attack it is weak on its own.
    _rule("role_injection", 2.0, r"\{\s*+\"role\"\s*+:\s*+\"(?:system|developer)\"", ("role",)),
    _rule("role_injection", 2.0, r"(?:\\\s?n\s*){3,}+", ("\\",)),
    _rule(
        "role_injection",
        2.5,
        r"(?:^|\\n|\n)[ \t]*+(?:(?:new|additional|updated|revised|real|actual|secret|hidden"
        r"|important)[ \t]++)?instructions?[ \t]*+:"
        r"|\b(?:new|additional|updated|revised|real|actual|secret|hidden|important)"
        r"\W+instructions?\W*?(?:\s[:\-]|:)",
        ("instruction",),
    ),
    # Only from the start of a run of dashes: retrying inside a long run would cost its length.
    _rule(
        "role_injection",
        1.5,
        r"(?<![-=#*])(?:(?:-{3,}+|={3,}+|\*{3,}+)[ \t]*+(?:end|begin|start|new)"
        r"|#{3,}+[ \t]*+(?:end|begin))\b",
        ("---", "===", "###", "***"),
    ),
    _rule(
        "role_injection",
        1.5,
        rf"\b(?:end|ende){_S}(?:of{_S})?(?:the{_S})?(?:system{_S}prompt|prompt|instructions"
        r"|user\W+input|context)\W*(?:-{2,}|={2,}|#{2,}|\]|>|\n)",
        ("end",),
    ),
    # --- hijacking the task -------------------------------------------------------------------
    _rule(
        "task_hijack",
        3.0,
        rf"\b(?:focus|concentrate){_S}(?:now{_S})?on{_S}(?:your|the|this|a){_S}new{_S}"
        r"(?:task|assignment|challenge)\b"
        rf"|\bkonzentrier(?:e|en){_gap(3)}auf{_S}(?:deine|ihre|die){_S}neue{_S}aufgabe",
        ("focus", "concentrate", "konzentrier"),
    ),
    _rule(
        "task_hijack",
        3.0,
        rf"\b(?:new|further|additional|more){_S}(?:tasks|instructions|assignments)"
        rf"{_S}(?:{_W}{_S})?(?:follow|followed)\b"
        rf"|\bnow{_S}(?:{_W}{_S})?(?:new|further){_S}(?:tasks|instructions)\b"
        rf"|\b(?:nun|jetzt){_S}(?:{_W}{_S})?(?:folgen|kommen){_gap(3)}(?:neue|weitere)"
        rf"{_S}(?:{_W}{_S})?(?:aufgaben|anweisungen|instruktionen)\b",
        ("follow", "now", "folgen", "kommen"),
    ),
    _rule(
        "task_hijack",
        3.0,
        rf"\b(?:attention|achtung){_S}(?:-{_S})?(?:stop|stopp)\b"
        rf"|\b(?:stop|stopp){_S}(?:-{_S})?(?:attention|achtung)\b",
        ("attention", "achtung"),
    ),
    _rule(
        "task_hijack",
        3.0,
        r"\b(?:stop|stopp)\s*[:\-]\s*(?:write|say|print|output|schreib[^\W_]*+|sag[^\W_]*+)\b",
        ("stop",),
    ),
    _rule(
        "task_hijack",
        2.0,
        rf"\b(?:just|only|simply|merely|nur){_S}(?:say|output|print|write|reply|respond"
        r"|answer|return|type|sagen|schreibe|ausgeben)\b(?:\W+with)?\s*[\"'“”‘’«]",
        ("just", "only", "simply", "merely", "nur"),
    ),
    _rule(
        "task_hijack",
        1.5,
        rf"\binstead{_S}(?:{_W}{_S})?(?:print|output|say|write|respond|reply|return|type)\b"
        rf"|\bstattdessen{_S}(?:{_W}{_S})?(?:aus|schreib|sag)",
        ("instead", "stattdessen"),
    ),
    _rule(
        "task_hijack", 1.5, r"\brepeat\W+after\W+me\b|\bsprich\W+mir\W+nach\b", ("repeat", "sprich")
    ),
    _rule(
        "task_hijack",
        2.0,
        r"\b(?:i|we)\W+command\W+you\b|\bich\W+befehle\W+dir\b",
        ("command", "befehle"),
    ),
    _rule(
        "task_hijack",
        2.0,
        rf"\b(?:say|tell{_S}me|include|state|write|admit|confess|sag|sage){_S}"
        rf"(?:{_W}{_S})?(?:that|dass){_S}(?:you|du){_S}(?:hate|love|hasst|liebst"
        r"|are\W+(?:evil|stupid|racist))\b",
        ("hate", "love", "hasst", "liebst", "evil", "stupid", "racist"),
    ),
    _rule(
        "task_hijack",
        2.0,
        rf"\b(?:do{_S}not|don\W?n?\W?t){_S}answer{_S}(?:this|the){_S}question\b",
        ("answer",),
    ),
    _rule("task_hijack", 3.0, r"\bi\W+(?:have\W+been|was|got)\W+pwned\b|\bpwned\b", ("pwned",)),
    _rule(
        "task_hijack",
        1.0,
        r"\b(?:well\W+done|very\W+good|great\W+job|good\W+job|excellent|congratulations"
        r"|fantastic|simply\W+great|sehr\W+gut|gut\W+gemacht|ausgezeichnet|wow|super)\b"
        r"[^.!?\n]{0,60}[.!?]++\W*+(?:[^\W_]++\W++){0,10}?(?:now|nun|jetzt)\b",
        (
            "done",
            "good",
            "job",
            "excellent",
            "congrat",
            "fantastic",
            "great",
            "gut",
            "ausgezeichnet",
            "wow",
            "super",
        ),
    ),
    _rule(
        "task_hijack",
        1.5,
        r"\b(?:that\W+is|that\W?s|das\W+ist|das)\W+(?:enough|done|genug|erledigt|genugt)\b",
        ("enough", "done", "genug", "erledigt", "genugt"),
    ),
    # --- retrieval context (answer "not from the documents") ----------------------------------
    _rule(
        "context_evasion",
        2.5,
        rf"\b(?:not|don\W?n?\W?t|do{_S}not|never|without|instead{_S}of)\b{_gap(2)}"
        rf"(?:by|according{_S}to|based{_S}on|from|using|look(?:ing)?{_S}(?:in|at)|use"
        rf"|rely{_S}on|consult(?:ing)?){_S}(?:the{_S})?(?:(?:provided|given|attached){_S})?"
        r"(?:articles?|documents?|docs|context|sources?|search\W+results|knowledge\W+base)\b",
        ("article", "document", "docs", "context", "source", "search", "knowledge"),
    ),
    _rule(
        "context_evasion",
        3.0,
        rf"\b(?:disregarding|ignoring|ignore|disregard|forget)\b{_S}"
        rf"(?:(?:all|the|any|of){_S}){{0,2}}(?:(?:provided|given){_S})?"
        r"(?:articles?|documents?|context|sources|search\W+results)\b",
        ("disregard", "ignor", "forget"),
    ),
    _rule(
        "context_evasion",
        2.0,
        rf"\b(?:answer|respond|reply){_S}(?:by|from|with|using){_S}your{_S}own{_S}knowledge\b"
        r"|\buse\W+also\W+information\W+in\W+the\W+prompt\b",
        ("knowledge", "prompt"),
    ),
    _rule(
        "context_evasion",
        2.0,
        r"\$documents?\b|\bcontext\s*+:\s*+\{|\bdocument\W+context\b",
        ("document", "context"),
    ),
    # --- instructions hidden in a document for whatever model reads it ------------------------
    _rule(
        "indirect_instruction",
        3.0,
        rf"\b(?:if|when){_S}you{_S}are{_S}(?:an?{_S})?{_AI_WORDS}\b"
        rf"|\bnote{_S}(?:to|for){_S}(?:the{_S}|any{_S})?{_AI_WORDS}\b"
        rf"|\b{_AI_WORDS}s?{_S}(?:reading|processing|summari[sz]ing|parsing|analy[sz]ing)"
        rf"{_S}(?:this|these|the{_S}following)\b",
        ("if", "when", "note", "reading", "processing", "summar", "parsing", "analy"),
    ),
    _rule(
        "indirect_instruction",
        2.0,
        rf"\b(?:instructions?|message){_S}(?:for|to){_S}(?:the{_S}|any{_S})?{_AI_WORDS}\b",
        ("instruction", "message"),
    ),
    _rule(
        "indirect_instruction",
        3.0,
        rf"\b(?:do{_S}not|don\W?t|never){_S}(?:tell|inform|alert|warn|mention{_S}(?:this|it)"
        rf"{_S}to|reveal{_S}(?:this|it){_S}to){_S}the{_S}user\b",
        ("user",),
    ),
    _rule(
        "indirect_instruction",
        2.0,
        rf"\b(?:when|if){_S}(?:asked|summari[sz]ing|you{_S}summari[sz]e|the{_S}user{_S}asks)"
        rf"\b{_gap(8)}(?:instead|always|you{_S}must)\b",
        ("asked", "summar", "asks"),
    ),
    # A markdown image whose URL carries a placeholder for the model to fill in sends data out
    # when the reply is rendered; a README's badge ("?branch=main") does not.
    _rule(
        "indirect_instruction",
        1.5,
        r"!\[[^\]\n]{0,100}\]\(https?://[^)\s]{1,500}[?&][^)\s=]{1,50}="
        r"(?:[\[{<$%]|(?:data|info|secret|summary|conversation|history|prompt|message|password"
        r"|key|token|chat|context|memory|email|input|query|text|content)\b)",
        ("](http",),
    ),
    # --- asking to decode and obey ------------------------------------------------------------
    _rule(
        "encoded_instructions",
        3.0,
        rf"\b(?:decode|decrypt|decipher|translate|convert)\b{_gap(4)}(?:base\W?64|rot\W?13"
        rf"|hex(?:adecimal)?|binary|morse|caesar|cipher|reversed?)\b{_gap(12)}"
        rf"(?:follow|execute|obey|do{_S}what|carry{_S}out|act{_S}on|perform|run)\b"
        rf"|\b(?:follow|execute|obey|carry{_S}out){_S}(?:the{_S})?(?:decoded|hidden|encoded"
        r"|embedded)\W+(?:instructions?|message|text|commands?)\b",
        (
            "decode",
            "decrypt",
            "decipher",
            "translate",
            "convert",
            "follow",
            "execute",
            "obey",
            "carry",
        ),
    ),
)

# Weights for the obfuscation tricks ``normalize`` reports. Hidden tag characters have no
# innocent use in a chat message; leetspeak and maths letters have plenty.
TRICK_WEIGHTS: dict[str, float] = {
    "tag_characters": 3.0,
    "zero_width": 1.5,
    "homoglyph": 1.5,
    "spaced_letters": 1.0,
    "leetspeak": 0.5,
    "leetspeak_dense": 1.0,
    "compat_letters": 0.5,
}
