"""Train the prompt-injection classifier shipped in gateway/screening/data/.

    python scripts/train_injection.py [--data-dir ../shared/data/eval] [--output FILE]

What it learns from (never from a set the headline figures are measured on):
- deepset/prompt-injections, ``train`` split only (203 injections, 343 benign);
- the in-the-wild jailbreak prompts (2023-12-25), the ``dev`` half only. The file has no split,
  so ``jailbreak_split`` makes one: near-duplicates (prompts sharing at least half their
  five-word shingles, as reposted variants of one template do) are grouped, and each group
  goes to ``dev`` or ``test`` by the SHA-256 of its normalised text, about 50/50. The ``test``
  half is only read by ``scripts/eval_injection.py``;
- benign text that is no evaluation set: ``scripts/data/injection_benign.txt`` (prompts and
  paragraphs written for this repository), ``scripts/data/injection_benign_docs.txt`` (this
  repository's own documentation, docstrings and pieces of code), every 12th text of the two
  Presidio PII sets (synthetic benign sentences), and long documents made by joining benign
  texts, so that the classifier does not learn "long = attack" (jailbreak templates are long,
  deepset's benign rows short, and the gateway screens pasted documents).
NotInject is never read here: it measures over-defence only.

Steps:
1. Features (``classifier.features`` of the words ``classifier.tokenize`` reads, present or
   not, scaled to unit length) that occur in at least ``MIN_DF`` training texts; L2-regularised
   logistic regression with classes weighted to balance and the bias fixed at ``BIAS`` (a text
   of words the model has no opinion on scores as benign), fitted by L-BFGS to convergence in
   numpy (needed for training only; the shipped classifier runs in pure Python).
2. Five-fold out-of-fold logits (near-duplicates kept in one fold). On them the calibration is
   fitted: the intercept fixed at the log odds of a 5% base rate, the heuristic signal sum
   taken at its written log-odds, and one weight each for the classifier's positive evidence
   on short and on long texts, by Newton's method with a ridge towards 1.
3. The final model, trained on everything, keeps its ``KEEP_FEATURES`` strongest weights, is
   refitted on them, and is written as JSON with the calibration and the inputs' SHA-256.

Reproducible: a fixed seed, deterministic data order, a fit run to convergence (so the result
does not depend on the path the optimiser took) and weights rounded to ``DIGITS`` places.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import random
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.screening import classifier, heuristics  # noqa: E402
from gateway.screening.normalize import normalize  # noqa: E402

DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "eval"
BENIGN_WRITTEN = REPO / "scripts" / "data" / "injection_benign.txt"
BENIGN_DOCS = REPO / "scripts" / "data" / "injection_benign_docs.txt"
OUTPUT = classifier.WEIGHTS_PATH

SEED = 20241101
MIN_DF = 2
L2 = 3e-4
BIAS = -1.5
KEEP_FEATURES = 6000
FOLDS = 5
MAX_ITERATIONS = 1000
TOLERANCE = 1e-7
DIGITS = 4
BASE_RATE = 0.05  # traffic through a gateway is mostly benign
CLASSIFIER_FLOOR = 0.0  # only evidence for an injection counts, see gateway/screening/injection.py
CALIBRATION_RIDGE = 1.0
PRESIDIO_EVERY = 12
NEAR_DUPLICATE_JACCARD = 0.5
SHINGLE_WORDS = 5


@dataclass(frozen=True)
class Row:
    text: str
    label: int  # 1 = injection or jailbreak
    source: str
    group: str  # rows of one group stay in one fold


# --- data --------------------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(1 << 24)
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def canonical(text: str) -> str:
    """The normalised text with whitespace collapsed: what duplicates have in common."""
    return " ".join(normalize(text).folded.split())


def _shingles(text: str) -> set[str]:
    words = re.findall(r"[^\W_]+", text)
    return {
        " ".join(words[i : i + SHINGLE_WORDS])
        for i in range(max(1, len(words) - SHINGLE_WORDS + 1))
    }


def near_duplicate_groups(texts: list[str]) -> list[int]:
    """A group id per text: texts whose five-word shingle sets have a Jaccard similarity of
    at least ``NEAR_DUPLICATE_JACCARD`` (directly or through others) share one."""
    shingles = [_shingles(canonical(text)) for text in texts]
    holders: dict[str, list[int]] = defaultdict(list)
    for index, found in enumerate(shingles):
        for shingle in found:
            holders[shingle].append(index)

    def similar() -> Iterator[tuple[int, int]]:
        for i, found in enumerate(shingles):
            shared: Counter[int] = Counter()
            for shingle in found:
                shared.update(j for j in holders[shingle] if j > i)
            for j, count in sorted(shared.items()):
                if count / (len(found) + len(shingles[j]) - count) >= NEAR_DUPLICATE_JACCARD:
                    yield i, j

    return _connected_groups(len(texts), similar())


def jailbreak_split(texts: list[str]) -> list[str]:
    """ "dev" or "test" per prompt of the jailbreak file, deterministic: a group of
    near-duplicates goes by the smallest SHA-256 of its members' normalised texts (even first
    byte: dev)."""
    groups = near_duplicate_groups(texts)
    digests: dict[int, str] = {}
    for text, group in zip(texts, groups, strict=True):
        digest = hashlib.sha256(canonical(text).encode("utf-8")).hexdigest()
        digests[group] = min(digests.get(group, digest), digest)
    return ["dev" if int(digests[group][:2], 16) % 2 == 0 else "test" for group in groups]


def load_jailbreaks(data_dir: Path) -> tuple[list[str], list[str]]:
    texts = [row["prompt"] for row in read_csv(data_dir / "jailbreak_prompts_2023_12_25.csv")]
    return texts, jailbreak_split(texts)


def containment_groups(texts: list[str]) -> list[int]:
    """A group id per row: rows that contain one another (deepset glues earlier rows together
    into longer ones) share one."""
    stripped = [text.strip().lower() for text in texts]
    contained = (
        (i, j)
        for i, small in enumerate(stripped)
        if len(small) >= 20
        for j, large in enumerate(stripped)
        if i != j and small in large
    )
    return _connected_groups(len(texts), contained)


def _connected_groups(count: int, links: Iterable[tuple[int, int]]) -> list[int]:
    """A group id per item (0 to ``count`` - 1): items that ``links`` join, directly or through
    others, share one (union-find, joined in the order given)."""
    parent = list(range(count))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in links:
        parent[find(i)] = find(j)
    return [find(i) for i in range(count)]


def read_written_benign(path: Path = BENIGN_WRITTEN) -> tuple[list[str], list[str]]:
    """(prompts, paragraphs) of the benign texts written for this repository."""
    section, prompts, paragraphs, lines = None, [], [], []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("#"):
            continue
        elif section == "prompts" and line.strip():
            prompts.append(line.strip())
        elif section == "paragraphs":
            if line.strip():
                lines.append(line.strip())
            elif lines:
                paragraphs.append(" ".join(lines))
                lines = []
    return prompts, paragraphs


def read_benign_docs(path: Path = BENIGN_DOCS) -> list[tuple[str, str]]:
    """(name, text) of each document in the repository-documentation snapshot."""
    docs: list[tuple[str, list[str]]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("=== "):
            docs.append((line[4:].strip(), []))
        elif docs:
            docs[-1][1].append(line)
    return [(name, "\n".join(body).strip()) for name, body in docs]


def _paragraph_chunks(text: str, size: int) -> list[str]:
    """A text cut at blank lines into pieces of about ``size`` characters or more."""
    chunks, current = [], ""
    for paragraph in re.split(r"\n\s*\n", text):
        if not paragraph.strip():
            continue
        current = f"{current}\n\n{paragraph}" if current else paragraph
        if len(current) >= size:
            chunks.append(current)
            current = ""
    if current:
        chunks.append(current)
    return chunks


def load_rows(data_dir: Path) -> tuple[list[Row], dict[str, int]]:
    """The training rows, in a fixed order, and the jailbreak split's sizes."""
    rng = random.Random(SEED)
    rows: list[Row] = []

    deepset = [
        row
        for row in read_csv(data_dir / "deepset_prompt_injections.csv")
        if row["split"] == "train"
    ]
    groups = containment_groups([row["text"] for row in deepset])
    rows += [
        Row(row["text"], int(row["label"]), "deepset", f"deepset{group}")
        for row, group in zip(deepset, groups, strict=True)
    ]

    texts, halves = load_jailbreaks(data_dir)
    dev = [text for text, half in zip(texts, halves, strict=True) if half == "dev"]
    groups = near_duplicate_groups(dev)
    rows += [
        Row(text, 1, "jailbreak", f"jailbreak{group}")
        for text, group in zip(dev, groups, strict=True)
    ]
    split_sizes = {"jailbreak_dev": len(dev), "jailbreak_test": len(texts) - len(dev)}

    prompts, paragraphs = read_written_benign()
    rows += [Row(text, 0, "written", f"prompt{i}") for i, text in enumerate(prompts)]
    rows += [Row(text, 0, "written", f"paragraph{i}") for i, text in enumerate(paragraphs)]

    for i, (_, text) in enumerate(read_benign_docs()):
        for chunk in _paragraph_chunks(text, rng.choice((600, 1500, 3000))):
            rows.append(Row(chunk, 0, "docs", f"doc{i}"))

    presidio: list[str] = []
    for name in ("presidio_synth_dataset_v2.json", "presidio_generated_large.json"):
        items = json.loads((data_dir / name).read_text(encoding="utf-8"))
        presidio += [item["full_text"] for item in items]
    rows += [
        Row(text, 0, "presidio", f"presidio{i}")
        for i, text in enumerate(presidio[::PRESIDIO_EVERY])
    ]

    # Long benign documents made by joining benign texts: many questions in one paste, a
    # form letter with a note, paragraphs of reports and stories.
    benign_rows = [row["text"] for row in deepset if row["label"] == "0"]

    def joined(pool: list[str], count: int, low: int, high: int, separator: str) -> list[str]:
        return [separator.join(rng.sample(pool, rng.randint(low, high))) for _ in range(count)]

    long_documents = (
        joined(benign_rows, 150, 5, 40, " ")
        + joined(presidio, 150, 5, 60, "\n")
        + joined(paragraphs, 300, 2, 12, "\n\n")
        + [
            f"{a}\n\n{b}"
            for a, b in zip(
                joined(paragraphs, 150, 1, 5, "\n\n"),
                joined(benign_rows + presidio, 150, 3, 15, " "),
                strict=True,
            )
        ]
    )
    rows += [Row(text, 0, "joined", f"joined{i}") for i, text in enumerate(long_documents)]
    return rows, split_sizes


# --- model -------------------------------------------------------------------------------------


class Matrix:
    """Rows of (feature index, value) as flat numpy arrays; products by ``np.bincount``,
    which adds in a fixed order."""

    def __init__(self, rows: list[dict[int, float]], width: int) -> None:
        self.width = width
        self.row_of = np.array([r for r, row in enumerate(rows) for _ in row], dtype=np.int64)
        self.column = np.array([c for row in rows for c in row], dtype=np.int64)
        self.value = np.array([v for row in rows for v in row.values()], dtype=np.float64)
        self.height = len(rows)

    def dot(self, weights: np.ndarray) -> np.ndarray:
        return np.bincount(
            self.row_of, weights=self.value * weights[self.column], minlength=self.height
        )

    def dot_transposed(self, residuals: np.ndarray) -> np.ndarray:
        return np.bincount(
            self.column, weights=self.value * residuals[self.row_of], minlength=self.width
        )


def vectorize(features: list[list[str]], vocabulary: dict[str, int]) -> Matrix:
    """Which features a text has, scaled to unit length over all of them, the known and the
    unknown (as ``classifier.LinearModel.logit`` does at run time)."""
    rows = []
    for found in features:
        present = set(found)
        scale = 1.0 / math.sqrt(len(present)) if present else 0.0
        rows.append(
            {
                column: scale
                for column in sorted(
                    vocabulary[feature] for feature in present if feature in vocabulary
                )
            }
        )
    return Matrix(rows, len(vocabulary))


def vocabulary_of(features: list[list[str]]) -> dict[str, int]:
    frequency = Counter(feature for found in features for feature in set(found))
    kept = sorted(feature for feature, count in frequency.items() if count >= MIN_DF)
    return {feature: column for column, feature in enumerate(kept)}


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b))


def fit_weights(matrix: Matrix, labels: np.ndarray) -> np.ndarray:
    """Weights of a logistic regression with the bias fixed at ``BIAS``, classes weighted to
    balance and an L2 penalty, by L-BFGS run until the gradient vanishes."""
    positives = float(labels.sum())
    sample = np.where(labels == 1, 0.5 / positives, 0.5 / (len(labels) - positives))

    def loss_and_gradient(weights: np.ndarray) -> tuple[float, np.ndarray]:
        z = matrix.dot(weights) + BIAS
        loss = float(np.sum(sample * (np.logaddexp(0.0, z) - labels * z)))
        loss += 0.5 * L2 * _dot(weights, weights)
        residual = sample * (1.0 / (1.0 + np.exp(-z)) - labels)
        return loss, matrix.dot_transposed(residual) + L2 * weights

    weights = np.zeros(matrix.width)
    loss, gradient = loss_and_gradient(weights)
    steps: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(MAX_ITERATIONS):
        if float(np.max(np.abs(gradient))) < TOLERANCE:
            break
        direction = -gradient
        alphas = []
        for s, y in reversed(steps):
            alpha = _dot(s, direction) / _dot(y, s)
            alphas.append(alpha)
            direction = direction - alpha * y
        if steps:
            s, y = steps[-1]
            direction = direction * (_dot(s, y) / _dot(y, y))
        for (s, y), alpha in zip(steps, reversed(alphas), strict=True):
            beta = _dot(y, direction) / _dot(y, s)
            direction = direction + s * (alpha - beta)
        step = 1.0 if steps else 1.0 / float(np.max(np.abs(gradient)))
        slope = _dot(gradient, direction)
        while True:
            candidate = weights + step * direction
            new_loss, new_gradient = loss_and_gradient(candidate)
            if new_loss <= loss + 1e-4 * step * slope or step < 1e-12:
                break
            step *= 0.5
        s, y = candidate - weights, new_gradient - gradient
        if _dot(y, s) > 1e-16:
            steps = [*steps, (s, y)][-10:]
        weights, loss, gradient = candidate, new_loss, new_gradient
    return weights


def train(
    features: list[list[str]], labels: np.ndarray, keep: int | None = None
) -> classifier.LinearModel:
    vocabulary = vocabulary_of(features)
    weights = fit_weights(vectorize(features, vocabulary), labels)
    if keep is not None and len(vocabulary) > keep:
        strongest = set(np.argsort(-np.abs(weights), kind="stable")[:keep].tolist())
        names = sorted(feature for feature, column in vocabulary.items() if column in strongest)
        vocabulary = {feature: column for column, feature in enumerate(names)}
        weights = fit_weights(vectorize(features, vocabulary), labels)
    return classifier.LinearModel(
        {feature: float(weights[column]) for feature, column in vocabulary.items()}, BIAS
    )


def out_of_fold_logits(
    features: list[list[str]], tokens: list[list[str]], labels: np.ndarray, groups: list[str]
) -> np.ndarray:
    group_ids = sorted(set(groups))
    random.Random(SEED + 1).shuffle(group_ids)
    fold_of_group = {group: position % FOLDS for position, group in enumerate(group_ids)}
    fold_of = np.array([fold_of_group[group] for group in groups])
    logits = np.zeros(len(labels))
    for fold in range(FOLDS):
        inside = np.flatnonzero(fold_of != fold)
        model = train([features[i] for i in inside], labels[inside])
        for i in np.flatnonzero(fold_of == fold):
            logits[i] = classifier.evidence(model, tokens[i])
    return logits


def fit_calibration(
    logits: np.ndarray, heuristic_sums: np.ndarray, is_long: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Weights of the classifier's positive evidence on short and on long texts in
    z = intercept + weight * max(logit, floor) + heuristic sum, with the intercept fixed at the
    log odds of ``BASE_RATE`` (a text with no evidence scores the base rate) and the heuristic
    weights taken as the log odds they were written as; Newton's method, ridge towards 1."""
    intercept = math.log(BASE_RATE / (1 - BASE_RATE))
    evidence = np.maximum(logits, CLASSIFIER_FLOOR)
    columns = np.column_stack([np.where(is_long, 0.0, evidence), np.where(is_long, evidence, 0.0)])
    theta = np.ones(2)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(intercept + columns @ theta + heuristic_sums)))
        gradient = columns.T @ (p - labels) + CALIBRATION_RIDGE * (theta - 1.0)
        curvature = (columns * (p * (1 - p))[:, None]).T @ columns
        step = np.linalg.solve(curvature + CALIBRATION_RIDGE * np.eye(2), gradient)
        theta = theta - step
        if float(np.max(np.abs(step))) < 1e-12:
            break
    return {
        "intercept": round(intercept, DIGITS),
        "classifier_short": round(float(theta[0]), DIGITS),
        "classifier_long": round(float(theta[1]), DIGITS),
        "heuristics": 1.0,
        "classifier_floor": CLASSIFIER_FLOOR,
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(data_dir: Path = DEFAULT_DATA_DIR) -> dict:
    rows, split_sizes = load_rows(data_dir)
    labels = np.array([row.label for row in rows], dtype=np.float64)
    normalized = [normalize(row.text) for row in rows]
    tokens = [classifier.tokenize(n.folded) for n in normalized]
    features = [classifier.features(found) for found in tokens]
    heuristic_sums = np.array([sum(heuristics.text_signals(n).values()) for n in normalized])
    is_long = np.array([len(found) > classifier.SHORT_TOKENS for found in tokens])
    logits = out_of_fold_logits(features, tokens, labels, [row.group for row in rows])
    calibration = fit_calibration(logits, heuristic_sums, is_long, labels)
    model = train(features, labels, keep=KEEP_FEATURES)
    weights = {
        key: round(value, DIGITS)
        for key, value in sorted(model.weights.items())
        if round(value, DIGITS) != 0
    }
    inputs = [
        data_dir / "deepset_prompt_injections.csv",
        data_dir / "jailbreak_prompts_2023_12_25.csv",
        data_dir / "presidio_synth_dataset_v2.json",
        data_dir / "presidio_generated_large.json",
        BENIGN_WRITTEN,
        BENIGN_DOCS,
    ]
    return {
        "format": 2,
        "trained_on": "deepset/prompt-injections train split; jailbreak prompts dev half; "
        "benign texts of scripts/data and Presidio (see scripts/train_injection.py)",
        "rows": dict(sorted(Counter(f"{row.source}:{row.label}" for row in rows).items())),
        "split": split_sizes,
        "inputs_sha256": {path.name: _sha256(path) for path in inputs},
        "features": {
            "tokens": "words; content-word unigrams and bigrams, present or not",
            "max_tokens": classifier.MAX_TOKENS,
            "max_chars": classifier.MAX_CHARS,
            "short_tokens": classifier.SHORT_TOKENS,
        },
        "hyperparameters": {
            "seed": SEED,
            "min_df": MIN_DF,
            "l2": L2,
            "bias": BIAS,
            "keep_features": KEEP_FEATURES,
            "folds": FOLDS,
        },
        "calibration": calibration,
        "bias": BIAS,
        "weights": weights,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    result = build(args.data_dir)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    args.output.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(
        f"wrote {args.output} ({len(text.encode('utf-8')) // 1024} KiB, "
        f"{len(result['weights'])} weights, calibration {result['calibration']}, "
        f"split {result['split']})\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
