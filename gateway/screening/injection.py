"""Prompt-injection screen: one calibrated score, with reasons, for the texts a user controls.

Layers, per text: ``normalize`` (invisible characters, NFKC, homoglyphs, leetspeak, spaced
letters; base64/hex/rot13/reversed payloads decoded), then weighted heuristic signals
(``heuristics``) and a small linear classifier (``classifier``). They meet in one logistic
calibration fitted on out-of-fold scores of the training data:

    score = sigmoid(intercept + classifier_weight * max(classifier_logit, floor)
                    + heuristics_weight * sum(signal weights))

where ``classifier_weight`` is one weight for short texts (prompts) and another for long ones
(documents, role-play set-ups), and only the classifier's evidence *for* an injection counts
(``floor`` 0): its certainty that a text is benign never vetoes what the heuristics see, so an
injection hidden in an ordinary-looking document is still caught.

Every user-controlled text is screened (user and tool messages, pasted documents), not only
the last turn; the request's score is the highest, and the reasons of all texts are merged.
Reasons are short codes and never carry the user's text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.screening import classifier, heuristics
from gateway.screening.normalize import normalize

# The shipped weights load at import, so the first request does not pay for it.
_MODEL, _CALIBRATION = classifier.load()
_INTERCEPT = _CALIBRATION["intercept"]
_CLASSIFIER_SHORT = _CALIBRATION["classifier_short"]
_CLASSIFIER_LONG = _CALIBRATION["classifier_long"]
_HEURISTICS_WEIGHT = _CALIBRATION["heuristics"]
_CLASSIFIER_FLOOR = _CALIBRATION["classifier_floor"]


@dataclass(frozen=True, slots=True)
class ScreenResult:
    score: float  # 0..1
    reasons: tuple[str, ...]  # machine codes, strongest first; never the user's text
    message_index: int | None  # which input text scored highest (None if no texts)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def screen_text(text: str, role: str = "user") -> ScreenResult:
    """Score one text."""
    normalized = normalize(text)
    found = heuristics.text_signals(normalized)
    tokens = classifier.tokenize(normalized.folded)
    classifier_logit = classifier.evidence(_MODEL, tokens)
    weight = _CLASSIFIER_SHORT if len(tokens) <= classifier.SHORT_TOKENS else _CLASSIFIER_LONG
    z = (
        _INTERCEPT
        + weight * max(classifier_logit, _CLASSIFIER_FLOOR)
        + _HEURISTICS_WEIGHT * sum(found.values())
    )
    reasons = sorted(found, key=found.__getitem__, reverse=True)
    if classifier_logit > 0:
        reasons.append("classifier")
    return ScreenResult(score=_sigmoid(z), reasons=tuple(reasons), message_index=0)


def screen_texts(texts: Sequence[str]) -> ScreenResult:
    """Score every user-controlled text (all user/tool messages, pasted documents); the result
    is the max over texts, reasons merged (the highest-scoring text's first)."""
    results = [(index, screen_text(text)) for index, text in enumerate(texts) if text]
    if not results:
        return ScreenResult(score=0.0, reasons=(), message_index=None)
    best_index, best = max(results, key=lambda item: item[1].score)
    reasons = dict.fromkeys(best.reasons)  # an ordered set
    for _, result in results:
        reasons.update(dict.fromkeys(result.reasons))
    return ScreenResult(score=best.score, reasons=tuple(reasons), message_index=best_index)
