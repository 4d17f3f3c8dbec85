"""Train the prompt-injection classifier shipped in gateway/guards/data/.

    python scripts/train_injection.py [--data ../shared/data/eval/deepset_prompt_injections.csv]

Uses only the ``train`` split of deepset/prompt-injections (546 rows); the ``test`` split, the
jailbreak set and NotInject are for ``scripts/eval_injection.py`` and are never read here.

Reproducible: pure Python (no numpy, no scikit-learn), a fixed seed, and plain float
arithmetic, so the same data gives the same JSON byte for byte.

Steps:
1. L2-regularised logistic regression over the classifier's features (word unigrams and
   bigrams of the folded text), trained by SGD with a seeded shuffle. The regularisation is
   strong on purpose: the split's benign rows are narrow (mostly news and politics questions),
   so a loosely fitted model learns "any imperative is an injection".
2. Five-fold out-of-fold classifier logits on the same split (rows that contain one another
   kept in one fold). On them the classifier's weight in the final score is fitted, with the
   heuristic signal sum as a fixed offset, only positive logits counting, and the intercept
   fixed at a 5% base rate.
3. The final classifier, trained on the whole split, is pruned of negligible weights and
   written as JSON with the calibration and the data's SHA-256.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import random
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.guards import classifier, heuristics  # noqa: E402
from gateway.guards.normalize import normalize  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "eval" / "deepset_prompt_injections.csv"
OUTPUT = classifier.WEIGHTS_PATH
SEED = 20241101
EPOCHS = 40
LEARNING_RATE = 0.5
L2 = 0.03  # strong: the split's benign rows are narrow (news questions), see the docstring
FOLDS = 5
PRUNE_BELOW = 0.002
DIGITS = 4
RIDGE = 1.0  # keeps the calibration finite if the split is separable
# The split is 37% injections; traffic through a gateway is mostly benign. A text with no
# evidence either way scores this base rate.
BASE_RATE = 0.05
# The classifier saw one narrow kind of benign text (news questions), so only its evidence for
# an injection counts: its certainty that a text is benign must not veto what the heuristics see.
CLASSIFIER_FLOOR = 0.0


def load_rows(path: Path, split: str) -> list[tuple[str, int]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [(row["text"], int(row["label"])) for row in csv.DictReader(handle)
                if row["split"] == split]


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def featurize(text: str) -> tuple[list[str], dict[str, float]]:
    """The classifier tokens of a text and its normalised feature vector."""
    tokens = classifier.tokenize(normalize(text).folded)
    counts = Counter(classifier.features(tokens))
    scale = 1.0 / math.sqrt(sum(counts.values())) if counts else 0.0
    return tokens, {key: count * scale for key, count in sorted(counts.items())}


def fit_classifier(vectors: list[dict[str, float]], labels: list[int],
                   seed: int = SEED) -> classifier.LinearModel:
    """Logistic regression by SGD with a decaying step and L2, classes weighted to balance."""
    weights: dict[str, float] = {}
    bias = 0.0
    positives = sum(labels)
    negatives = len(labels) - positives
    class_weight = {1: len(labels) / (2 * positives), 0: len(labels) / (2 * negatives)}
    order = list(range(len(vectors)))
    rng = random.Random(seed)
    step = 0
    for _epoch in range(EPOCHS):
        rng.shuffle(order)
        for index in order:
            step += 1
            rate = LEARNING_RATE / (1.0 + 0.001 * step)
            vector, label = vectors[index], labels[index]
            z = bias + sum(weights.get(key, 0.0) * value for key, value in vector.items())
            gradient = (_sigmoid(z) - label) * class_weight[label]
            for key, value in vector.items():
                current = weights.get(key, 0.0)
                weights[key] = current - rate * (gradient * value + L2 * current)
            bias -= rate * gradient
    return classifier.LinearModel(weights, bias)


def fit_calibration(classifier_logits: list[float], heuristic_sums: list[float],
                    labels: list[int]) -> dict[str, float]:
    """The weight of the classifier's evidence, by Newton's method on the logistic likelihood of
    z = intercept + weight * max(logit, 0) + heuristic sum, with the intercept fixed at the log
    odds of ``BASE_RATE`` (a text with no evidence scores the base rate) and heuristic weights
    taken as the log odds they were written as."""
    intercept = math.log(BASE_RATE / (1 - BASE_RATE))
    evidence = [max(c, CLASSIFIER_FLOOR) for c in classifier_logits]
    weight = 1.0
    for _ in range(100):
        gradient, curvature = RIDGE * (weight - 1.0), RIDGE
        for x, h, label in zip(evidence, heuristic_sums, labels, strict=True):
            p = _sigmoid(intercept + weight * x + h)
            gradient += (p - label) * x
            curvature += p * (1 - p) * x * x
        step = gradient / curvature
        weight -= step
        if abs(step) < 1e-12:
            break
    return {"intercept": round(intercept, DIGITS), "classifier": round(weight, DIGITS),
            "heuristics": 1.0, "classifier_floor": CLASSIFIER_FLOOR}


def duplicate_groups(texts: list[str]) -> list[int]:
    """A group id per row: rows that contain one another (deepset glues earlier rows together
    into longer ones) share a group, so no fold is scored by a model that saw its twin."""
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    stripped = [text.strip().lower() for text in texts]
    for i, small in enumerate(stripped):
        if len(small) < 20:
            continue
        for j, large in enumerate(stripped):
            if i != j and small in large:
                parent[find(i)] = find(j)
    return [find(i) for i in range(len(texts))]


def out_of_fold_logits(tokens: list[list[str]], vectors: list[dict[str, float]],
                       labels: list[int], groups: list[int]) -> list[float]:
    group_ids = sorted(set(groups))
    random.Random(SEED + 1).shuffle(group_ids)
    fold_of_group = {group: position % FOLDS for position, group in enumerate(group_ids)}
    fold_of = [fold_of_group[group] for group in groups]
    logits = [0.0] * len(labels)
    for fold in range(FOLDS):
        train = [i for i in range(len(labels)) if fold_of[i] != fold]
        model = fit_classifier([vectors[i] for i in train], [labels[i] for i in train])
        for i in range(len(labels)):
            if fold_of[i] == fold:
                logits[i] = classifier.evidence(model, tokens[i])
    return logits


def build(data: Path) -> dict:
    rows = load_rows(data, "train")
    labels = [label for _, label in rows]
    featurized = [featurize(text) for text, _ in rows]
    tokens = [t for t, _ in featurized]
    vectors = [v for _, v in featurized]
    heuristic_sums = [sum(heuristics.text_signals(normalize(text)).values()) for text, _ in rows]
    groups = duplicate_groups([text for text, _ in rows])
    calibration = fit_calibration(out_of_fold_logits(tokens, vectors, labels, groups),
                                  heuristic_sums, labels)
    model = fit_classifier(vectors, labels)
    weights = {key: round(value, DIGITS) for key, value in sorted(model.weights.items())
               if abs(value) >= PRUNE_BELOW}
    return {
        "format": 1,
        "trained_on": "deepset/prompt-injections, train split only",
        "rows": len(rows),
        "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        "features": {"tokens": "words, unigrams and bigrams", "max_tokens": classifier.MAX_TOKENS},
        "hyperparameters": {"seed": SEED, "epochs": EPOCHS, "learning_rate": LEARNING_RATE,
                            "l2": L2, "folds": FOLDS, "prune_below": PRUNE_BELOW},
        "calibration": calibration,
        "bias": round(model.bias, DIGITS),
        "weights": weights,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    result = build(args.data)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    args.output.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(
        f"wrote {args.output} ({len(text) // 1024} KiB, {len(result['weights'])} weights, "
        f"calibration {result['calibration']})\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
