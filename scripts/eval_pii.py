"""Measure the PII detector on Presidio's synthetic evaluation sets, beside a baseline of
regular expressions (the remove_pii() of the deployment guide this project follows).

    .venv/bin/python scripts/eval_pii.py [--data DIR] [--split test|dev|all] [--errors TYPE]
    .venv/bin/python scripts/eval_pii.py --set scripts/data/detection/pii_dev.jsonl [--errors TYPE]

Both files (``presidio_synth_dataset_v2.json``, ``presidio_generated_large.json``) are mapped to
one label set (printed). Each row goes to ``dev`` or ``test`` by a hash of its text, so
duplicates stay on one side; rules were tuned on ``dev`` only, headline figures are ``test``.

Matching is by overlap: a predicted entity is correct if it overlaps a gold span of the same
type (precision); a gold span is found if a predicted entity of its type overlaps it (recall).
Gold labels with no counterpart here (organisations, places, dates, titles ...) are not scored,
but a prediction of a scored type that lands on one counts as a false positive.

With ``--set PATH`` it scores a hand-written JSON Lines file instead (the format of
``scripts/data/detection/``: ``{"id", "text", "spans": [{"start", "end", "type"}],
"hard_negative", "lang"}``), every type the detector knows, the same overlap matching, plus the
share of hard-negative rows with any detection and the MB/s over the file's texts.
"""

# This script's output is its printed report.
# ruff: noqa: T201

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from privacy.pii import detect  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "eval"
FILES = ("presidio_synth_dataset_v2.json", "presidio_generated_large.json")

LABEL_MAP = {
    "PERSON": "PERSON",
    "STREET_ADDRESS": "STREET_ADDRESS",  # synth_dataset_v2
    "ADDRESS": "STREET_ADDRESS",  # generated_large
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "US_SSN": "US_SSN",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP_ADDRESS",
}
SCORED = ("EMAIL", "PHONE", "US_SSN", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "PERSON",
          "STREET_ADDRESS")  # fmt: skip
SET_SCORED = ("EMAIL", "PHONE", "US_SSN", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "SECRET",
              "DATE_OF_BIRTH", "PASSPORT", "PERSON", "STREET_ADDRESS")  # fmt: skip

Span = tuple[str, int, int]


@dataclass
class Row:
    text: str
    gold: list[Span]  # scored types only
    other: list[tuple[int, int]]  # gold spans of unscored labels
    split: str
    hard_negative: bool = False
    lang: str = ""


def load_rows(data_dir: Path) -> tuple[list[Row], Counter[str]]:
    rows: list[Row] = []
    unscored: Counter[str] = Counter()
    for name in FILES:
        for item in json.loads((data_dir / name).read_text(encoding="utf-8")):
            text = item["full_text"]
            gold: list[Span] = []
            other: list[tuple[int, int]] = []
            for span in item["spans"]:
                label = LABEL_MAP.get(span["entity_type"])
                if label is None:
                    unscored[span["entity_type"]] += 1
                    other.append((span["start_position"], span["end_position"]))
                else:
                    gold.append((label, span["start_position"], span["end_position"]))
            digest = hashlib.sha256(text.encode("utf-8")).digest()
            rows.append(Row(text, gold, other, "dev" if digest[0] % 2 == 0 else "test"))
    return rows, unscored


def load_set(path: Path) -> list[Row]:
    """The rows of a hand-written set; a span's offsets are checked against its text."""
    rows: list[Row] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        item = json.loads(line)
        text = item["text"]
        gold: list[Span] = []
        for span in item["spans"]:
            start, end, label = span["start"], span["end"], span["type"]
            if label not in SET_SCORED or not 0 <= start < end <= len(text):
                raise SystemExit(f"{path}:{number}: bad span {span}")
            gold.append((label, start, end))
        negative = bool(item.get("hard_negative"))
        rows.append(Row(text, gold, [], "set", negative, item.get("lang", "")))
    return rows


# --- the baseline: the deployment guide's remove_pii(), its regexes applied in its order ------

SEED_PATTERNS = (
    ("EMAIL", re.compile(r"[\w\.-]+@[\w\.-]+")),
    ("PHONE", re.compile(r"\d{3}-\d{3}-\d{4}")),
    ("US_SSN", re.compile(r"\d{3}-\d{2}-\d{4}")),
    ("CREDIT_CARD", re.compile(r"\d{4}[\s-]\d{4}[\s-]\d{4}[\s-]\d{4}")),
)


def seed_detect(text: str) -> list[Span]:
    """What the baseline's successive ``re.sub`` calls replace: a later pattern cannot match text
    an earlier one already replaced (its replacement has no digits or '@')."""
    found: list[Span] = []
    for label, pattern in SEED_PATTERNS:
        for m in pattern.finditer(text):
            if all(m.end() <= s or m.start() >= e for _, s, e in found):
                found.append((label, m.start(), m.end()))
    return found


def ours_detect(text: str) -> list[Span]:
    return [(e.type, e.start, e.end) for e in detect(text)]


# --- scoring ----------------------------------------------------------------------------------


@dataclass
class Tally:
    gold: Counter[str] = field(default_factory=Counter)
    found: Counter[str] = field(default_factory=Counter)
    predicted: Counter[str] = field(default_factory=Counter)
    correct: Counter[str] = field(default_factory=Counter)
    unscored_predictions: Counter[str] = field(default_factory=Counter)


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def score(
    rows: Iterable[Row], detector: Callable[[str], list[Span]], scored: tuple[str, ...] = SCORED
) -> Tally:
    tally = Tally()
    for row in rows:
        predicted = detector(row.text)
        for label, s, e in row.gold:
            tally.gold[label] += 1
            if any(p == label and _overlaps((s, e), (ps, pe)) for p, ps, pe in predicted):
                tally.found[label] += 1
        for label, s, e in predicted:
            if label not in scored:
                tally.unscored_predictions[label] += 1
                continue
            tally.predicted[label] += 1
            if any(g == label and _overlaps((s, e), (gs, ge)) for g, gs, ge in row.gold):
                tally.correct[label] += 1
    return tally


def prf(correct: int, predicted: int, found: int, gold: int) -> tuple[float, float, float]:
    precision = correct / predicted if predicted else 0.0
    recall = found / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def set_report(rows: list[Row], path: Path, throughput_mb: float) -> None:
    """Per-type and overall figures for a hand-written set, hard negatives flagged, MB/s."""
    ours = score(rows, ours_detect, SET_SCORED)
    print(f"\n### Set: {path.name} ({len(rows)} texts)\n")
    print("| type | support | P | R | F1 |")
    print("|---|---:|---:|---:|---:|")
    for label in SET_SCORED:
        p, r, f = prf(ours.correct[label], ours.predicted[label], ours.found[label],
                      ours.gold[label])  # fmt: skip
        print(f"| {label} | {ours.gold[label]} | {p:.3f} | {r:.3f} | {f:.3f} |")
    p, r, f = prf(sum(ours.correct.values()), sum(ours.predicted.values()),
                  sum(ours.found.values()), sum(ours.gold.values()))  # fmt: skip
    print(f"| **overall (micro)** | {sum(ours.gold.values())} | {p:.3f} | {r:.3f} | {f:.3f} |")
    negatives = [row for row in rows if row.hard_negative]
    flagged = sum(1 for row in negatives if ours_detect(row.text))
    share = flagged / len(negatives) if negatives else 0.0
    print(f"\nHard negatives with any detection: {flagged}/{len(negatives)} ({share:.1%})")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    mbps, total = throughput([row.text for row in rows], int(throughput_mb * 1e6))
    print(f"Throughput (one core, one detect() call per text): {mbps:.1f} MB/s over "
          f"{total / 1e6:.1f} MB")  # fmt: skip


def table(ours: Tally, seed: Tally) -> str:
    lines = [
        "| type | support | ours P | ours R | ours F1 | seed P | seed R | seed F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cells(t: Tally, label: str) -> str:
        p, r, f = prf(t.correct[label], t.predicted[label], t.found[label], t.gold[label])
        if not t.predicted[label] and not t.found[label]:
            return "– | 0.000 | –"
        return f"{p:.3f} | {r:.3f} | {f:.3f}"

    for label in SCORED:
        lines.append(
            f"| {label} | {ours.gold[label]} | {cells(ours, label)} | {cells(seed, label)} |"
        )

    def micro(t: Tally) -> str:
        p, r, f = prf(
            sum(t.correct.values()),
            sum(t.predicted.values()),
            sum(t.found.values()),
            sum(t.gold.values()),
        )
        return f"{p:.3f} | {r:.3f} | {f:.3f}"

    lines.append(
        f"| **overall (micro)** | {sum(ours.gold.values())} | {micro(ours)} | {micro(seed)} |"
    )
    return "\n".join(lines)


# --- throughput -------------------------------------------------------------------------------


def throughput(texts: list[str], min_bytes: int) -> tuple[float, int]:
    """MB/s of ``detect`` over ``texts`` (one call per text, as the gateway calls it per
    message), repeated until at least ``min_bytes`` were scanned."""
    for text in texts[:2000]:  # warm up: phonenumbers loads its metadata on first use
        detect(text)
    total = 0
    started = time.process_time()
    while total < min_bytes:
        for text in texts:
            detect(text)
            total += len(text.encode("utf-8"))
    elapsed = time.process_time() - started
    return total / elapsed / 1e6, total


def chat_texts(data_dir: Path) -> list[str]:
    """Real user-written prompts (the jailbreak and prompt-injection sets): ordinary chat text
    with little PII, for a throughput figure on typical input."""
    texts: list[str] = []
    csv.field_size_limit(10_000_000)
    for name, column in (("jailbreak_prompts_2023_12_25.csv", "prompt"),
                         ("deepset_prompt_injections.csv", "text")):  # fmt: skip
        path = data_dir / name
        if path.exists():
            with path.open(encoding="utf-8", newline="") as f:
                texts.extend(row[column] for row in csv.DictReader(f) if row[column])
    return texts


def _same(a: Span, b: Span) -> bool:
    return a[0] == b[0] and _overlaps(a[1:], b[1:])


def print_errors(rows: list[Row], label: str, limit: int) -> None:
    shown = 0
    for row in rows:
        predicted = [p for p in ours_detect(row.text) if label in ("ALL", p[0])]
        gold = [g for g in row.gold if label in ("ALL", g[0])]
        misses = [g for g in gold if not any(_same(g, p) for p in predicted)]
        wrong = [p for p in predicted if not any(_same(p, g) for g in gold)]
        if misses or wrong:
            print(f"{'[hard negative] ' if row.hard_negative else ''}{row.text[:400]!r}")
            for kind, s, e in misses:
                print(f"    MISS {kind} {row.text[s:e]!r}")
            for kind, s, e in wrong:
                print(f"    FP   {kind} {row.text[s:e]!r}")
            shown += 1
            if shown >= limit:
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", choices=("test", "dev", "all"), action="append")
    parser.add_argument("--set", type=Path, metavar="PATH", help="score a hand-written JSONL set")
    parser.add_argument(
        "--errors", metavar="TYPE", help="print errors for TYPE (or ALL): of --set, or dev split"
    )
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--throughput-mb", type=float, default=5.0)
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="only measure MB/s on ordinary user prompts (the jailbreak and deepset sets)",
    )
    args = parser.parse_args()

    if args.throughput_only:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
        mbps, total = throughput(chat_texts(args.data), int(args.throughput_mb * 1e6))
        print(f"user prompts (jailbreak + deepset sets): {mbps:.1f} MB/s over {total / 1e6:.1f} MB")
        return

    if args.set:
        set_rows = load_set(args.set)
        if args.errors:
            print_errors(set_rows, args.errors, args.limit)
        else:
            set_report(set_rows, args.set, args.throughput_mb)
        return

    rows, unscored = load_rows(args.data)
    if args.errors:
        print_errors([r for r in rows if r.split == "dev"], args.errors, args.limit)
        return

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core

    for split in args.split or ["test", "all"]:
        selected = [r for r in rows if split == "all" or r.split == split]
        ours = score(selected, ours_detect)
        seed = score(selected, seed_detect)
        print(f"\n### Split: {split} ({len(selected)} texts)\n")
        print(table(ours, seed))
        if ours.unscored_predictions:
            extra = ", ".join(f"{k} {v}" for k, v in sorted(ours.unscored_predictions.items()))
            print(f"\nPredictions of types with no gold label (not scored): {extra}")

    print("\n### Label mapping\n")
    for source, target in LABEL_MAP.items():
        print(f"- {source} -> {target}")
    print(
        "- not scored (no counterpart): "
        + ", ".join(f"{k} ({v})" for k, v in sorted(unscored.items()))
    )

    print("\n### Throughput (one core, one detect() call per text)\n")
    eval_texts = [r.text for r in rows]
    mbps, total = throughput(eval_texts, int(args.throughput_mb * 1e6))
    print(f"- PII eval texts, repeated: {mbps:.1f} MB/s over {total / 1e6:.1f} MB")
    chat = chat_texts(args.data)
    if chat:
        mbps, total = throughput(chat, int(args.throughput_mb * 1e6))
        print(
            f"- user prompts (jailbreak + deepset sets): {mbps:.1f} MB/s over {total / 1e6:.1f} MB"
        )


if __name__ == "__main__":
    main()
