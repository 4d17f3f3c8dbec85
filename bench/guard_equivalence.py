"""Check that a change to the injection screen or the PII detector changes no verdict.

    python bench/guard_equivalence.py record OUT.json [--src DIR]   # before the change
    python bench/guard_equivalence.py compare OUT.json [--src DIR]  # after it: exit 1 on a diff

Runs the screen (``gateway.pipeline.text_checks.screen``, in the user and the tool role) and the
PII detector (``find_pii``, all types and the fixed-shape types alone) over every labelled text
there is: the hand-written dev and held-out sets (``scripts/data/detection``), the public sets
(``../shared/data/eval``: deepset, the in-the-wild jailbreaks, NotInject, both presidio sets),
long documentation (the standard library's docstrings, as ``bench/long_context.py`` builds it,
at 1k to 400k characters), the READMEs of the installed packages, and each attack and PII text
of those sets pasted into a document at a few places (so a rule has to find its phrase inside a
long text). It stores, per text, only what the callers use (score and reason codes; PII
findings as type, start, end, score) and never the text; ``compare`` recomputes and lists every
text whose outcome differs, by set and row number (it prints no text). Scores are compared
exactly (``repr`` of the float).

``--src`` runs another tree (for instance ``git archive HEAD`` unpacked in /tmp): record with the
tree before the change, compare with the tree after it. About a minute each on a quiet machine.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # bench/ is in the checkout
DATA = REPO / "scripts" / "data" / "detection"
PUBLIC = REPO.parent / "shared" / "data" / "eval"
FIXED_SHAPE = frozenset({"EMAIL", "PHONE", "US_SSN", "CREDIT_CARD", "IP_ADDRESS", "SECRET"})

Item = tuple[str, str]  # (key, text)


def _jsonl(path: Path, field: str = "text") -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)[field] for line in path.read_text().splitlines() if line.strip()]


def _labelled_jsonl(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(row["text"], int(row.get("label", 0))) for row in rows]


def _csv(path: Path, field: str) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    csv.field_size_limit(10**8)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    label = "label" if rows and "label" in rows[0] else None
    return [(row[field], int(row[label]) if label else 1) for row in rows]


def _json(path: Path, field: str) -> list[str]:
    if not path.exists():
        return []
    return [row[field] for row in json.loads(path.read_text())]


def _documentation() -> str:
    sys.path.insert(0, str(REPO / "bench"))
    import long_context  # the benchmark's own text

    return long_context.documentation()


def _readmes() -> list[str]:
    texts = set()
    for distribution in importlib.metadata.distributions():
        body = distribution.metadata.get_payload() or distribution.metadata.get("Description")
        if isinstance(body, str) and len(body.strip()) >= 1_000:
            texts.add(body.strip())
    return sorted(texts)[:60]


def texts() -> Iterator[Item]:
    """Every text, with a stable key: set name and row number."""
    attacks: list[str] = []
    pii_texts: list[str] = []
    for name in ("injection_dev", "injection_dev2"):
        rows = _labelled_jsonl(DATA / f"{name}.jsonl")
        for index, (text, label) in enumerate(rows):
            yield f"{name}:{index}", text
            if label:
                attacks.append(text)
    for name in ("pii_dev", "pii_dev2"):
        for index, text in enumerate(_jsonl(DATA / f"{name}.jsonl")):
            yield f"{name}:{index}", text
            pii_texts.append(text)
    for index, (text, label) in enumerate(_csv(PUBLIC / "deepset_prompt_injections.csv", "text")):
        yield f"deepset:{index}", text
        if label:
            attacks.append(text)
    jailbreaks = _csv(PUBLIC / "jailbreak_prompts_2023_12_25.csv", "prompt")
    for index, (text, _) in enumerate(jailbreaks):
        yield f"jailbreak:{index}", text
    attacks += [text for text, _ in jailbreaks[::7]]
    notinject = _json(PUBLIC / "notinject_benign_trigger_words.json", "prompt")
    for index, text in enumerate(notinject):
        yield f"notinject:{index}", text
    for name in ("presidio_synth_dataset_v2", "presidio_generated_large"):
        for index, text in enumerate(_json(PUBLIC / f"{name}.json", "full_text")):
            yield f"{name}:{index}", text
            if index % 5 == 0:
                pii_texts.append(text)
    for index, text in enumerate(_readmes()):
        yield f"readme:{index}", text

    corpus = _documentation()
    doubled = corpus * 3
    for size in (1_000, 10_000, 100_000, 400_000):
        for offset in range(3):
            start = (offset * 104_729) % len(corpus)
            yield f"docs-{size}:{offset}", doubled[start : start + size]
    # Attacks and PII inside a document: at its start, in its middle and at its end.
    rng = random.Random(21)
    for kind, pasted in (("attack", attacks), ("pii", pii_texts)):
        for index, text in enumerate(pasted):
            size = rng.choice((2_000, 8_000, 30_000))
            start = rng.randrange(len(corpus))
            document = doubled[start : start + size]
            cut = rng.choice((0, size // 2, size))
            glue = rng.choice(("\n\n", " ", "\n"))
            yield f"in-doc-{kind}:{index}", document[:cut] + glue + text + glue + document[cut:]
    # Short documents mixing notinject's trigger-word prompts with ordinary text.
    for index, text in enumerate(notinject):
        start = rng.randrange(len(corpus))
        yield f"in-doc-notinject:{index}", doubled[start : start + 3_000] + "\n\n" + text


def outcomes(src: Path) -> dict[str, list]:
    sys.path.insert(0, str(src))
    from gateway.pipeline import text_checks  # from the tree under test

    result: dict[str, list] = {}
    started = time.process_time()
    count = chars = 0
    for key, text in texts():
        if not text:
            continue
        count += 1
        chars += len(text)
        user = text_checks.screen(text, "user")
        tool = text_checks.screen(text, "tool")
        result[key] = [
            [repr(user[0]), list(user[1])],
            [repr(tool[0]), list(tool[1])],
            [[*f[:3], repr(f[3])] for f in text_checks.find_pii(text, None)],
            [[*f[:3], repr(f[3])] for f in text_checks.find_pii(text, FIXED_SHAPE)],
        ]
    seconds = time.process_time() - started
    print(f"{count:,} texts, {chars:,} characters, {seconds:.1f} s of CPU", file=sys.stderr)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("record", "compare"))
    parser.add_argument("path", type=Path)
    parser.add_argument("--src", type=Path, default=REPO, help="the tree to run (default: this)")
    args = parser.parse_args()
    found = outcomes(args.src.resolve())
    if args.action == "record":
        args.path.write_text(json.dumps(found))
        print(f"recorded {len(found):,} outcomes in {args.path}")
        return 0
    recorded = json.loads(args.path.read_text())
    parts = ("screen as user", "screen as tool", "PII (all types)", "PII (fixed-shape types)")
    differences = 0
    for key in sorted(set(recorded) | set(found)):
        before, after = recorded.get(key), found.get(key)
        if before == after:
            continue
        differences += 1
        if before is None or after is None:
            print(f"{key}: only {'after' if before is None else 'before'}")
            continue
        changed = [name for name, b, a in zip(parts, before, after, strict=True) if b != a]
        print(f"{key}: {', '.join(changed)} differ")
    print(f"{len(found):,} texts compared, {differences} differ")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
