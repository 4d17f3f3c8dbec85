"""Prompt-injection screen: one calibrated score, with reasons, for the texts a user controls.

Layers, per text: ``normalize`` (invisible characters, NFKC, homoglyphs, leetspeak, spaced
letters; base64/hex/rot13/reversed payloads decoded, split payloads joined), then weighted
heuristic signals (``heuristics``: the English rules of ``rules``, the rules for agents and
documents of ``rules_agents`` and the nine other languages of ``rules_multilingual``), then the
meaning model (``meaning``: what the normalised text and its payloads say, read through the
embedded model's multilingual token embeddings, so that paraphrases and languages the rules do
not list are caught). All of it meets in one logistic score:

    score = sigmoid(INTERCEPT + sum(signal weights) + meaning evidence)

where ``INTERCEPT`` is the log odds of a 5% base rate (traffic through a gateway is mostly
benign), so a text needs about three log-odds of evidence to reach 0.5. The meaning evidence is
half the model's log-odds, at most 6 for a block and at most 0.5 against the rules (a weak rule
hit on a text that reads as benign passes; a strong one still blocks).

Per role: a ``tool`` text (a tool result, a retrieved document, an email an agent reads) is
data, not a request, so the rules for tool results apply to it as well (``TOOL_RULES``: an
action on money, accounts or messages there is not the user's wish).

There used to be a linear word classifier in the sum, trained on public sets; it is gone: it
was tuned on what it was measured on, and on hand-written prompts it added false positives
and little recall. The meaning model is trained on the hand-written development sets only
(``scripts/train_injection_model.py``), and judged on a held-out set written by others.

Every user-controlled text is screened (user and tool messages, pasted documents), not only
the last turn; the request's score is the highest, and the reasons of all texts are merged.
Reasons are short codes and never carry the user's text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.screening import heuristics, meaning

INTERCEPT = math.log(0.05 / 0.95)
MEANING_REASON = "meaning_model"  # the reason code when the meaning model speaks for a block
USER, TOOL = "user", heuristics.TOOL


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


def screen_text(text: str, role: str = USER) -> ScreenResult:
    """Score one text; ``role`` is where it came from (``tool`` for a tool result or a
    retrieved document, anything else for what a person typed)."""
    found, texts = heuristics.read(text, role)
    evidence = INTERCEPT + sum(found.values())
    model = meaning.logit(texts, role)
    if model is not None:
        added = meaning.evidence(model)
        evidence += added
        if added > 0:
            found[MEANING_REASON] = added
    reasons = sorted(found, key=found.__getitem__, reverse=True)
    return ScreenResult(score=_sigmoid(evidence), reasons=tuple(reasons), message_index=0)


def rule_logit(text: str, role: str = USER) -> float:
    """The rules' log-odds alone (without the meaning model), for training and measuring it."""
    return INTERCEPT + sum(heuristics.read(text, role)[0].values())


def screen_texts(texts: Sequence[str], roles: Sequence[str] | None = None) -> ScreenResult:
    """Score every user-controlled text (all user/tool messages, pasted documents), each in its
    role (``roles``, user by default); the result is the max over texts, reasons merged (the
    highest-scoring text's first)."""
    roles = roles if roles is not None else [USER] * len(texts)
    results = [
        (index, screen_text(text, role))
        for index, (text, role) in enumerate(zip(texts, roles, strict=True))
        if text
    ]
    if not results:
        return ScreenResult(score=0.0, reasons=(), message_index=None)
    best_index, best = max(results, key=lambda item: item[1].score)
    reasons = dict.fromkeys(best.reasons)  # an ordered set
    for _, result in results:
        reasons.update(dict.fromkeys(result.reasons))
    return ScreenResult(score=best.score, reasons=tuple(reasons), message_index=best_index)
