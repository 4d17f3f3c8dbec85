"""Measure the semantic cache's threshold on hand-written question pairs.

    python scripts/eval_semantic_cache.py [--threshold 0.98] [--sweep]

Reads ``scripts/data/semantic_cache/paraphrases.tsv`` (pairs a cached answer may answer: the
same question in other words) and ``near_misses.tsv`` (pairs it must not: mostly the same
words, a different question), embeds both sides with a real sentence-embedding model that
ships with its weights on the package index (WordLlama's ``l2_supercat`` 256-dimensional
static embeddings; nothing is downloaded: the package's own files are loaded, downloads
disabled), and reports, at the threshold (default: the gateway's default,
``gateway.semantic_match.DEFAULT_THRESHOLD``):

- **hits**: paraphrase pairs at or above the threshold (the second question would be answered
  from the first's stored answer);
- **wrong hits**: near-miss pairs at or above it (a wrong answer would be served);
- **repeats served**: ``repeats.tsv``, the same question retyped (case, punctuation, "please"),
  which the exact cache misses.

A pair with the same words in another order is never a hit, whatever its similarity (the
cache's own rule, ``gateway.semantic_match.reordered``); the script applies it too.

``--sweep`` prints both for a range of thresholds. ``--local-model`` measures the embedded
model instead (Gemma 3 270M, opened in process exactly as its server opens it for
``/v1/embeddings``: ``llmplatform.local_model_server.embedding_model``; the GGUF assembled from
the installed package, nothing downloaded). ``--base-url URL --model ALIAS`` measures
another model instead, through any OpenAI-compatible embeddings API (the gateway's, with a key
in ``$LLMP_API_KEY``): the figure for the embeddings alias an officer means to choose.
WordLlama in its own environment: ``pip install -c constraints.txt wordllama`` (the
``semantic-eval`` extra).

The cache compares with the embeddings deployment the officer chooses; run this script's
logic against that model before lowering an alias's threshold.
"""

# This script's output is its printed report.
# ruff: noqa: T201

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "scripts" / "data" / "semantic_cache"
sys.path.insert(0, str(ROOT))

from gateway.semantic_match import DEFAULT_THRESHOLD, reordered, word_order  # noqa: E402


def pairs(name: str) -> list[tuple[str, str]]:
    with (DATA / name).open(newline="", encoding="utf-8") as handle:
        return [(row[0], row[1]) for row in csv.reader(handle, delimiter="\t") if row]


def similarities(embed, rows: list[tuple[str, str]]) -> np.ndarray:
    """Each pair's cosine similarity, as the cache decides: a pair with the same words in
    another order scores 0 (the cache never serves it, ``gateway.semantic_match.reordered``)."""
    left, right = embed([a for a, _ in rows]), embed([b for _, b in rows])
    scores = np.sum(left * right, axis=1)
    for index, (a, b) in enumerate(rows):
        if reordered(word_order(a), word_order(b)):
            scores[index] = 0.0
    return scores


def unit(rows: list[list[float]]) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def gateway_embedder(base_url: str, api_key: str, model: str):
    """Embeddings through an OpenAI-compatible endpoint: the gateway's own ``/v1/embeddings``
    with the alias an officer means to choose (so the figure is for that model)."""
    import httpx

    def embed(texts: list[str]) -> np.ndarray:
        reply = httpx.post(
            f"{base_url.rstrip('/')}/embeddings",
            json={"model": model, "input": texts},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=60,
        )
        reply.raise_for_status()
        data = sorted(reply.json()["data"], key=lambda d: d["index"])
        return unit([d["embedding"] for d in data])

    return embed


def local_embedder():
    """The embedded model's embeddings, as ``/v1/embeddings`` of the model server makes them."""
    import tempfile

    from llmplatform.launcher import ensure_model_file
    from llmplatform.local_model_server import (
        embed_texts,
        embedding_model,
        llama_lib_dir,
        load_cpu_backend,
        thread_count,
    )

    lib_dir = llama_lib_dir()
    if lib_dir is None:
        sys.exit("llama-cpp-python is not installed (make install)")
    load_cpu_backend(lib_dir, "auto")
    path, _ = ensure_model_file(Path(tempfile.gettempdir()) / "llmp-bench-models")
    model = embedding_model(path, thread_count())

    def embed(texts: list[str]) -> np.ndarray:
        return unit(embed_texts(model, texts)[0])

    return embed


def load_model():
    import wordllama
    from wordllama import WordLlama

    # The wheel ships the weights and the tokenizer; pointing the cache at the package's own
    # folder finds both, and disable_download makes a missing file an error, never a fetch.
    return WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--show", action="store_true", help="print every pair's similarity")
    parser.add_argument("--base-url", help="an OpenAI-compatible API, e.g. the gateway's /v1")
    parser.add_argument("--model", help="the embeddings model (alias) at --base-url")
    parser.add_argument("--api-key-env", default="LLMP_API_KEY")
    parser.add_argument(
        "--local-model", action="store_true", help="the embedded model (Gemma 3 270M)"
    )
    args = parser.parse_args()

    if args.base_url:
        if not args.model:
            parser.error("--base-url needs --model")
        embed = gateway_embedder(args.base_url, os.environ[args.api_key_env], args.model)
        print(f"model: {args.model} at {args.base_url}")
    elif args.local_model:
        embed = local_embedder()
        print("model: the embedded Gemma 3 270M (pre-trained), last-token pooling, 640 dimensions")
    else:
        model = load_model()
        embed = lambda texts: model.embed(texts, norm=True)  # noqa: E731
        print("model: WordLlama l2_supercat, 256 dimensions (static embeddings)")
    paraphrases, near_misses = pairs("paraphrases.tsv"), pairs("near_misses.tsv")
    repeats = pairs("repeats.tsv")
    good, bad = similarities(embed, paraphrases), similarities(embed, near_misses)
    same = similarities(embed, repeats)
    print(
        f"pairs: {len(paraphrases)} paraphrases, {len(near_misses)} near misses, "
        f"{len(repeats)} repeats (case, punctuation, a word like 'please')"
    )
    print(
        f"similarity: paraphrases median {np.median(good):.3f} (min {good.min():.3f}, max "
        f"{good.max():.3f}); near misses median {np.median(bad):.3f} (min {bad.min():.3f}, "
        f"max {bad.max():.3f})"
    )
    if args.show:
        for label, rows, scores in (
            ("paraphrase", paraphrases, good),
            ("near miss", near_misses, bad),
        ):
            for (a, b), score in sorted(zip(rows, scores, strict=True), key=lambda x: -x[1]):
                print(f"  {label:10} {score:.3f}  {a} | {b}")
    steps = [*np.arange(0.70, 0.99, 0.02), 0.99, 0.995, 1.0]
    thresholds = sorted({round(float(t), 3) for t in steps}) if args.sweep else []
    if args.threshold not in thresholds:
        thresholds.append(args.threshold)
    print("threshold  hits (of paraphrases)  wrong hits (of near misses)  repeats served")
    for threshold in sorted(thresholds):
        hits = int(np.sum(good >= threshold))
        wrong = int(np.sum(bad >= threshold))
        served = int(np.sum(same >= threshold))
        mark = "  <- default" if threshold == DEFAULT_THRESHOLD else ""
        print(
            f"{threshold:9.3f}  {hits:4d} / {len(good):<17}{wrong:4d} / {len(bad):<24}"
            f"{served:4d} / {len(same)}{mark}"
        )
    wrong_at = int(np.sum(bad >= args.threshold))
    sys.exit(1 if wrong_at else 0)


if __name__ == "__main__":
    main()
