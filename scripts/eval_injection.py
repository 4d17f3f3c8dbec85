"""Measure the prompt-injection screen, beside a baseline regex blocklist.

    python scripts/eval_injection.py [--data-dir ../shared/data/eval] [--threshold 0.5]
                                     [--runs 2000] [--output results.md]
    python scripts/eval_injection.py --set scripts/data/detection/injection_dev.jsonl

With ``--set PATH`` it scores one labelled JSON-lines file in the detection format
(``scripts/data/detection/README.md``: ``id``, ``text``, ``label``, ``kind``, ``lang``,
``role``), each row screened in its role (a ``tool`` row as a tool result): balanced accuracy,
precision, recall, the share of hard benign rows blocked, recall per attack kind and per
language, the benign pass rate per language, and the median latency per 1,000 characters on
the set's own texts. The public sets are then not read.

Prints the data split, then a markdown table: per dataset n, precision, recall, false-positive
rate and balanced accuracy, for the baseline regex list and for our screen, counting as detected
either a block (score >= threshold) or a block or flag (score >= flag threshold); then the
latency of ``screen_texts`` per prompt, on one core.

None of the public sets is trained or tuned on any more (the rules were set, and the meaning
model trained, on the hand-written development sets, ``--set`` below), so all of them are test
data: deepset (both splits), the in-the-wild jailbreak prompts, and NotInject (benign prompts
full of trigger words, for over-defence). A last set, the README texts of the Python packages
installed beside this script (their package metadata), checks that long ordinary documents are
not blocked; it varies with the environment. They are a second opinion: what the screen is
judged on is a hand-written held-out set in the detection format.
Writes nothing unless ``--output`` is given.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.screening.injection import screen_text, screen_texts  # noqa: E402

# The defaults of ``manage.py screen_prompts`` (kept here so the script needs no Django).
DEFAULT_BLOCK_THRESHOLD = 0.5
DEFAULT_FLAG_THRESHOLD = 0.35

DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "eval"

# The baseline regex blocklist (from the deployment guide this project follows), applied as
# the guide applies it: re.search on the lower-cased prompt.
SEED_PATTERNS = [r"ignore.*instructions", r"system prompt", r"reveal secret", r"forget.*previous"]
_SEED_COMPILED = [re.compile(pattern) for pattern in SEED_PATTERNS]


def seed_regex_blocks(text: str) -> bool:
    lowered = text.lower()
    return any(pattern.search(lowered) for pattern in _SEED_COMPILED)


@dataclass
class Dataset:
    name: str
    texts: list[str]
    labels: list[int]
    headline: bool = False


def _installed_package_readmes() -> list[str]:
    """The long descriptions (READMEs) of the installed distributions, longest 1,000+ chars."""
    texts = set()
    for distribution in importlib.metadata.distributions():
        body = distribution.metadata.get_payload() or distribution.metadata.get("Description")
        if isinstance(body, str) and len(body.strip()) >= 1_000:
            texts.add(body.strip())
    return sorted(texts)


def load_datasets(data_dir: Path) -> tuple[list[Dataset], dict[str, int]]:
    csv.field_size_limit(1 << 24)
    with (data_dir / "deepset_prompt_injections.csv").open(newline="", encoding="utf-8") as f:
        deepset = list(csv.DictReader(f))
    path = data_dir / "jailbreak_prompts_2023_12_25.csv"
    with path.open(newline="", encoding="utf-8") as f:
        jailbreak = [row["prompt"] for row in csv.DictReader(f)]
    notinject = json.loads((data_dir / "notinject_benign_trigger_words.json").read_text("utf-8"))

    def split(name: str) -> tuple[list[str], list[int]]:
        rows = [row for row in deepset if row["split"] == name]
        return [row["text"] for row in rows], [int(row["label"]) for row in rows]

    train_texts, train_labels = split("train")
    test_texts, test_labels = split("test")
    readmes = _installed_package_readmes()
    sizes = {
        "deepset train": len(train_texts),
        "deepset test": len(test_texts),
        "jailbreak prompts": len(jailbreak),
        "NotInject": len(notinject),
        "package READMEs": len(readmes),
    }
    datasets = [
        Dataset("deepset train", train_texts, train_labels),
        Dataset("deepset test", test_texts, test_labels),
        Dataset("jailbreak prompts", jailbreak, [1] * len(jailbreak)),
        Dataset(
            "**deepset test + jailbreak prompts**",
            test_texts + jailbreak,
            test_labels + [1] * len(jailbreak),
            headline=True,
        ),
        Dataset(
            "NotInject (benign, trigger words)",
            [row["prompt"] for row in notinject],
            [0] * len(notinject),
            headline=True,
        ),
        Dataset("package READMEs (long benign documents)", readmes, [0] * len(readmes)),
    ]
    return datasets, sizes


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def metrics(predictions: list[bool], labels: list[int]) -> dict[str, float | None]:
    tp = sum(p and y == 1 for p, y in zip(predictions, labels, strict=True))
    fp = sum(p and y == 0 for p, y in zip(predictions, labels, strict=True))
    positives = sum(labels)
    negatives = len(labels) - positives
    recall = _ratio(tp, positives)
    fpr = _ratio(fp, negatives)
    balanced = (recall + 1 - fpr) / 2 if recall is not None and fpr is not None else None
    precision = _ratio(tp, tp + fp) if positives else None  # no injections: not defined
    return {"precision": precision, "recall": recall, "fpr": fpr, "balanced": balanced}


def accuracy_table(datasets: list[Dataset], threshold: float, flag_threshold: float) -> list[str]:
    scores: dict[str, float] = {}

    def score(text: str) -> float:
        if text not in scores:
            scores[text] = screen_texts([text]).score
        return scores[text]

    methods: list[tuple[str, Callable[[str], bool]]] = [
        ("seed regex list", seed_regex_blocks),
        (f"ours, block (score ≥ {threshold})", lambda text: score(text) >= threshold),
        (f"ours, block or flag (≥ {flag_threshold})", lambda text: score(text) >= flag_threshold),
    ]
    lines = [
        "| dataset | n (inj/benign) | method | precision | recall | FPR | balanced acc. |",
        "|---|---|---|---|---|---|---|",
    ]
    cache: dict[tuple[str, str], bool] = {}
    for dataset in datasets:
        positives = sum(dataset.labels)
        for name, predict in methods:
            predictions = []
            for text in dataset.texts:
                key = (name, text)
                if key not in cache:
                    cache[key] = predict(text)
                predictions.append(cache[key])
            m = metrics(predictions, dataset.labels)
            lines.append(
                f"| {dataset.name} | {len(dataset.texts)} ({positives}/"
                f"{len(dataset.texts) - positives}) | {name} | {_fmt(m['precision'])} | "
                f"{_fmt(m['recall'])} | {_fmt(m['fpr'])} | {_fmt(m['balanced'])} |"
            )
    return lines


def headline(datasets: list[Dataset], threshold: float) -> list[str]:
    """The figures the targets are about, for our screen blocking at ``threshold``."""
    by_name = {d.name: d for d in datasets if d.headline}
    combined = next(d for name, d in by_name.items() if "deepset test +" in name)
    notinject = next(d for name, d in by_name.items() if name.startswith("NotInject"))

    def predictions(dataset: Dataset) -> list[bool]:
        return [screen_texts([text]).score >= threshold for text in dataset.texts]

    m = metrics(predictions(combined), combined.labels)
    fpr = metrics(predictions(notinject), notinject.labels)["fpr"]
    return [
        f"Public sets (block at {threshold}): balanced accuracy {_fmt(m['balanced'])} on deepset "
        f"test + jailbreak prompts (recall {_fmt(m['recall'])}, FPR "
        f"{_fmt(m['fpr'])}); NotInject FPR {_fmt(fpr)}."
    ]


def _prompts_of_length(texts: list[str], length: int, count: int) -> list[str]:
    """``count`` prompts of exactly ``length`` characters, cut from the given texts in order
    (short texts are joined with the next ones), so latency is measured on real wording."""
    prompts: list[str] = []
    buffer = ""
    for text in texts * 4:
        buffer = f"{buffer} {text}" if buffer else text
        while len(buffer) >= length and len(prompts) < count:
            prompts.append(buffer[:length])
            buffer = buffer[length:]
        if len(prompts) >= count:
            break
    return prompts


def _time_per_call(prompts: list[str], runs: int, screen: Callable[[str], object]) -> list[float]:
    """Microseconds per call, one sample per prompt per round, after a warm-up round."""
    for prompt in prompts:
        screen(prompt)
    samples: list[float] = []
    rounds = max(1, runs // len(prompts))
    for _ in range(rounds):
        for prompt in prompts:
            start = time.perf_counter()
            screen(prompt)
            samples.append((time.perf_counter() - start) * 1e6)
    return samples


def latency_table(datasets: list[Dataset], runs: int) -> list[str]:
    """On real wording: deepset test, the jailbreak prompts and NotInject, cut to length."""
    wanted = ("deepset test", "jailbreak prompts", "NotInject (benign, trigger words)")
    texts = [t for d in datasets if d.name in wanted for t in d.texts]
    lines = [
        "| prompt length | method | median µs | p95 µs | mean µs | calls |",
        "|---|---|---|---|---|---|",
    ]
    for length in (100, 1_000, 10_000):
        prompts = _prompts_of_length(texts, length, 200)
        for name, screen in (
            ("seed regex list", seed_regex_blocks),
            ("ours", lambda text: screen_texts([text])),
        ):
            samples = sorted(
                _time_per_call(prompts, runs if length <= 1_000 else runs // 10, screen)
            )
            lines.append(
                f"| {length:,} chars | {name} | {statistics.median(samples):.1f} | "
                f"{samples[int(len(samples) * 0.95)]:.1f} | {statistics.fmean(samples):.1f} | "
                f"{len(samples):,} |"
            )
    hostile = ("ignore " * 20 + "a " * 40 + "QUJD" * 30 + " ") * 1_000
    hostile = hostile[:1_000_000]
    start = time.perf_counter()
    screen_texts([hostile])
    lines.append(
        f"| 1,000,000 chars (hostile mix, one call) | ours | "
        f"{(time.perf_counter() - start) * 1e6:,.0f} | – | – | 1 |"
    )
    return lines


@dataclass(frozen=True)
class LabelledRow:
    id: str
    text: str
    label: int
    kind: str
    lang: str
    role: str


def load_labelled_set(path: Path) -> list[LabelledRow]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        try:
            rows.append(
                LabelledRow(
                    id=str(record["id"]),
                    text=str(record["text"]),
                    label=int(record["label"]),
                    kind=str(record["kind"]),
                    lang=str(record.get("lang", "en")),
                    role=str(record.get("role", "user")),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SystemExit(f"{path}:{number}: not a labelled row ({exc})") from None
    return rows


def _share(hits: int, total: int) -> str:
    return f"{hits}/{total} = {hits / total:.3f}" if total else "–"


def set_report(path: Path, threshold: float, runs: int) -> list[str]:
    """The figures of one labelled set (see the module's docstring)."""
    rows = load_labelled_set(path)
    blocked = {row.id: screen_text(row.text, role=row.role).score >= threshold for row in rows}
    predictions = [blocked[row.id] for row in rows]
    m = metrics(predictions, [row.label for row in rows])
    hard = [row for row in rows if row.kind == "hard_benign"]
    lines = [
        f"## {path.name}: {len(rows)} rows, block at {threshold}",
        "",
        f"balanced accuracy {_fmt(m['balanced'])}, precision {_fmt(m['precision'])}, "
        f"recall {_fmt(m['recall'])}, benign blocked (FPR) {_fmt(m['fpr'])}, "
        f"hard benign blocked {_share(sum(blocked[r.id] for r in hard), len(hard))}",
        "",
        "| attack kind | caught |",
        "|---|---|",
    ]
    attacks = [row for row in rows if row.label == 1]
    for kind in sorted({row.kind for row in attacks}):
        of_kind = [row for row in attacks if row.kind == kind]
        lines.append(f"| {kind} | {_share(sum(blocked[r.id] for r in of_kind), len(of_kind))} |")
    lines += ["", "| language | attacks caught | benign passed |", "|---|---|---|"]
    for lang in sorted({row.lang for row in rows}):
        caught = [row for row in attacks if row.lang == lang]
        passed = [row for row in rows if row.label == 0 and row.lang == lang]
        lines.append(
            f"| {lang} | {_share(sum(blocked[r.id] for r in caught), len(caught))} | "
            f"{_share(sum(not blocked[r.id] for r in passed), len(passed))} |"
        )
    missed = [row.id for row in attacks if not blocked[row.id]]
    wrong = [row.id for row in rows if row.label == 0 and blocked[row.id]]
    lines += ["", f"missed: {' '.join(missed) or '–'}", f"blocked benign: {' '.join(wrong) or '–'}"]
    if runs:
        # As for the public sets: the set's own texts joined and cut to 1,000 characters, so
        # the figure is per 1,000 characters and not dominated by the fixed cost of a short text.
        source = [row.text for row in rows]
        repeat = min(1_000, 1 + 200_000 // max(1, sum(map(len, source))))  # a small set, again
        prompts = _prompts_of_length(source * repeat, 1_000, 200)
        samples = sorted(
            _time_per_call(prompts, runs, lambda text: screen_text(text)) if prompts else []
        )
        if samples:
            lines += [
                "",
                f"latency per 1,000 characters (the set's texts cut to 1,000), one core: median "
                f"{statistics.median(samples) / 1e3:.3f} ms, p95 "
                f"{samples[int(len(samples) * 0.95)] / 1e3:.3f} ms ({len(samples):,} calls)",
            ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--threshold", type=float, default=DEFAULT_BLOCK_THRESHOLD)
    parser.add_argument("--flag-threshold", type=float, default=DEFAULT_FLAG_THRESHOLD)
    parser.add_argument("--runs", type=int, default=2_000, help="timed calls per length")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--set", type=Path, help="score this labelled JSON-lines file instead")
    args = parser.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    if args.set:
        runs = 0 if args.skip_latency else args.runs
        text = "\n".join(set_report(args.set, args.threshold, runs)) + "\n"
        sys.stdout.write(text)
        if args.output:
            args.output.write_text(text, encoding="utf-8")
        return 0
    datasets, sizes = load_datasets(args.data_dir)
    out = [
        "## Data",
        "",
        "Nothing here is trained or tuned on; the rules were set and the meaning model trained on "
        "the hand-written dev sets.",
        "",
        "| set | texts |",
        "|---|---|",
        *(f"| {name} | {count:,} |" for name, count in sizes.items()),
        "",
        "## Accuracy",
        "",
        *accuracy_table(datasets, args.threshold, args.flag_threshold),
        "",
        *headline(datasets, args.threshold),
    ]
    if not args.skip_latency:
        out += [
            "",
            "## Latency of `screen_texts([prompt])`, one core",
            "",
            *latency_table(datasets, args.runs),
        ]
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
