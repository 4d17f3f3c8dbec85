"""A small linear classifier over word n-grams, in pure Python.

Features are the words of the folded text (see ``normalize``), as unigrams and bigrams; digits
and punctuation are left out, because in the training data they mark injections ("say: ...",
"1+1") and would make any pasted code or log look like one. A text's logit is the bias plus the
summed weights of its features divided by the square root of their count.

The classifier only reads short texts, like the prompts it learnt from (deepset
prompt-injections, a median of 12 words): ``evidence`` is 0 for a text longer than
``MAX_TOKENS`` words, which the heuristics judge alone. Its weights are trained by
``scripts/train_injection.py`` and shipped as JSON beside this module; nothing is downloaded
at run time.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from itertools import repeat
from pathlib import Path

WEIGHTS_PATH = Path(__file__).with_name("data") / "injection_classifier.json"
MAX_TOKENS = 64

_TOKEN_RE = re.compile(r"[^\W\d_]+")


def tokenize(folded: str) -> list[str]:
    return _TOKEN_RE.findall(folded)


def features(tokens: list[str]) -> list[str]:
    """Every feature of a token list, repeated as often as it occurs."""
    return tokens + list(map(" ".join, zip(tokens, tokens[1:], strict=False)))


class LinearModel:
    def __init__(self, weights: dict[str, float], bias: float) -> None:
        self.weights = weights
        self.bias = bias

    def logit(self, tokens: list[str]) -> float:
        if not tokens:
            return self.bias
        get = self.weights.get
        summed = sum(map(get, features(tokens), repeat(0.0)))
        return self.bias + summed / math.sqrt(2 * len(tokens) - 1)


def evidence(model: LinearModel, tokens: list[str]) -> float:
    """The classifier's evidence for an injection: its logit for a short text with words in
    it, 0.0 (none either way) for an empty or long one."""
    if not tokens or len(tokens) > MAX_TOKENS:
        return 0.0
    return model.logit(tokens)


@lru_cache(maxsize=1)
def load(path: Path = WEIGHTS_PATH) -> tuple[LinearModel, dict[str, float]]:
    """The shipped model and its calibration (``intercept``, ``classifier``, ``heuristics``,
    ``classifier_floor``)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    model = LinearModel({k: float(v) for k, v in data["weights"].items()}, float(data["bias"]))
    return model, {k: float(v) for k, v in data["calibration"].items()}
