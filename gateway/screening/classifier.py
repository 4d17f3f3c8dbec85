"""A small linear classifier over word n-grams, in pure Python.

Features are the words of the folded text (see ``normalize``): content words of two letters or
more as unigrams, and bigrams that hold at least one content word ("you are", "act as", "from
now"). Digits and punctuation are left out, and so are function words alone ("and", "the",
"of"): how often a text uses them says how long and how formal it is, not whether it is an
attack, and a model that learns them calls every long document a jailbreak. A text's logit is
the bias plus the weights of the features it has, each counted once, over the square root of
how many it has: a word said on every line counts no more than once, and a text pasted ten
times scores as the text once.

The classifier reads the first ``MAX_TOKENS`` words of a text (from its first ``MAX_CHARS``
characters): enough for a jailbreak template to show what it is, and a bounded cost on long
pasted documents, where anything later is left to the heuristics. Its bias is fixed below zero
when it is trained, so a text made of words it has no opinion on scores as benign: it only
speaks up on evidence.

Weights are trained by ``scripts/train_injection.py`` and shipped as JSON beside this module;
nothing is downloaded at run time.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from itertools import pairwise, repeat
from pathlib import Path

WEIGHTS_PATH = Path(__file__).with_name("data") / "injection_classifier.json"
MAX_TOKENS = 256  # words read from the start of a text
MAX_CHARS = 3_000  # ...found in its first characters, so a long text costs no more than a page
SHORT_TOKENS = 64  # up to this many words a text counts as short (a prompt, not a document)

_TOKEN_RE = re.compile(r"[^\W\d_]+")

# Function words of the languages in the training data. Alone they are not features; beside a
# content word they are ("you are", "act as").
STOPWORDS = frozenset(
    {
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "else",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "from",
        "with",
        "without",
        "into",
        "onto",
        "over",
        "under",
        "about",
        "as",
        "than",
        "so",
        "such",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "done",
        "have",
        "has",
        "had",
        "having",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "which",
        "who",
        "whom",
        "whose",
        "what",
        "when",
        "where",
        "why",
        "how",
        "all",
        "any",
        "both",
        "each",
        "few",
        "more",
        "most",
        "other",
        "some",
        "no",
        "nor",
        "not",
        "only",
        "own",
        "same",
        "too",
        "very",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "just",
        "also",
        "s",
        "t",
        "d",
        "ll",
        "m",
        "re",
        "ve",
        "n",
        "i",
        "me",
        "my",
        "we",
        "our",
        "us",
        "he",
        "him",
        "his",
        "she",
        "her",
        "they",
        "them",
        "their",
        "up",
        "down",
        "out",
        "off",
        "again",
        "further",
        "once",
        "get",
        "got",
        "und",
        "oder",
        "der",
        "die",
        "das",
        "ein",
        "eine",
        "einen",
        "einem",
        "einer",
        "eines",
        "ist",
        "sind",
        "war",
        "waren",
        "sein",
        "zu",
        "im",
        "auf",
        "mit",
        "von",
        "fur",
        "den",
        "dem",
        "des",
        "nicht",
        "es",
        "sie",
        "er",
        "wir",
        "ich",
        "du",
        "ihr",
        "als",
        "wie",
        "auch",
        "aber",
        "wenn",
        "dass",
        "da",
        "bei",
        "nach",
        "aus",
        "um",
        "noch",
        "nur",
        "schon",
        "le",
        "la",
        "les",
        "un",
        "une",
        "et",
        "ou",
        "de",
        "est",
        "sont",
        "que",
        "qui",
        "en",
        "dans",
        "pour",
        "par",
        "sur",
        "pas",
        "ce",
        "il",
        "elle",
        "nous",
        "vous",
        "ils",
        "el",
        "los",
        "las",
        "una",
        "y",
        "o",
        "del",
        "son",
        "se",
        "lo",
        "con",
    }
)


def tokenize(folded: str) -> list[str]:
    """The words the classifier reads: the first ``MAX_TOKENS`` of the first ``MAX_CHARS``
    characters."""
    return _TOKEN_RE.findall(folded, 0, MAX_CHARS)[:MAX_TOKENS]


def features(tokens: list[str]) -> list[str]:
    """Every feature of a token list, repeated as often as it occurs."""
    stop = STOPWORDS
    unigrams = [token for token in tokens if token not in stop and len(token) > 1]
    bigrams = [f"{a} {b}" for a, b in pairwise(tokens) if a not in stop or b not in stop]
    return unigrams + bigrams


class LinearModel:
    def __init__(self, weights: dict[str, float], bias: float) -> None:
        self.weights = weights
        self.bias = bias

    def logit(self, tokens: list[str]) -> float:
        present = set(features(tokens))
        if not present:
            return self.bias
        summed = sum(map(self.weights.get, present, repeat(0.0)))
        return self.bias + summed / math.sqrt(len(present))


def evidence(model: LinearModel, tokens: list[str]) -> float:
    """The classifier's logit for a text with words in it; 0.0 (no opinion) for one without."""
    if not tokens:
        return 0.0
    return model.logit(tokens)


@lru_cache(maxsize=1)
def load(path: Path = WEIGHTS_PATH) -> tuple[LinearModel, dict[str, float]]:
    """The shipped model and its calibration (``intercept``, ``classifier_short``,
    ``classifier_long``, ``heuristics``, ``classifier_floor``)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    model = LinearModel({k: float(v) for k, v in data["weights"].items()}, float(data["bias"]))
    return model, {k: float(v) for k, v in data["calibration"].items()}
