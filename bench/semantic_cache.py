"""The semantic cache's index: lookup and insert cost with 100,000 entries in one tenant.

    .venv/bin/python bench/semantic_cache.py                      # 100,000 x 384
    .venv/bin/python bench/semantic_cache.py --entries 20000 --dims 256 --queries 500
    REDIS_URL=redis://127.0.0.1:6379/11 .venv/bin/python bench/semantic_cache.py

Vectors are synthetic but shaped like question embeddings: ``--topics`` topic centres, each
entry a centre plus noise (questions cluster by topic; uniformly random 384-dimensional vectors
are the hardest case for a graph index and unlike any embedding model's output). Queries are
stored entries plus a little noise (a paraphrase) or fresh ones.

Measured, one query at a time on one thread:

- **numpy**: brute force, ``argmax(matrix @ query)`` over the float32 matrix;
- **usearch**: the HNSW index ``gateway.semantic_cache`` keeps per bucket (cosine, float32, the
  library's defaults), built by adding every entry (the insert cost), then searched for the
  nearest one;
- with ``REDIS_URL``: the store's share of a lookup, as ``gateway.semantic_cache`` does it (one
  pipelined round trip for the bucket's and the tenant's new ids, then the winner's answer),
  over a bucket of that many entries;
- with ``--others``, the choices that were not taken, each where it imports (none is a
  dependency of the project; install them beside it, e.g. ``pip install --target DIR faiss-cpu
  hnswlib sqlite-vec pysqlite3-binary`` and ``PYTHONPATH=DIR``): faiss-cpu's HNSW
  (``IndexHNSWFlat``, M 32, efSearch 64, inner product on unit vectors), hnswlib (cosine, M 16,
  ef_construction 200, ef 50), and sqlite-vec for the embedded mode (a ``vec0`` table in an
  in-memory database, its exact k-nearest query; through ``pysqlite3`` when this Python's
  ``sqlite3`` cannot load extensions).

Prints p50/p99 in milliseconds and the memory of each, and writes JSON under
``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from usearch.index import Index


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {
        "p50_ms": round(statistics.median(ms), 4),
        "p99_ms": round(percentile(ms, 0.99), 4),
    }


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--topics", type=int, default=2_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--skip-numpy", action="store_true")
    parser.add_argument(
        "--others", action="store_true", help="also faiss-cpu, hnswlib and sqlite-vec"
    )
    args = parser.parse_args()

    rng = np.random.default_rng(7)
    centres = unit(rng.standard_normal((args.topics, args.dims)))
    topic = rng.integers(0, args.topics, args.entries)
    matrix = unit(centres[topic] + 0.6 * unit(rng.standard_normal((args.entries, args.dims))))
    picked = rng.integers(0, args.entries, args.queries)
    queries = unit(matrix[picked] + 0.15 * unit(rng.standard_normal((args.queries, args.dims))))
    result: dict[str, object] = {
        "entries": args.entries,
        "dims": args.dims,
        "topics": args.topics,
        "queries": args.queries,
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0],
    }

    if not args.skip_numpy:
        samples, right = [], 0
        for expected, query in zip(picked, queries, strict=True):
            started = time.perf_counter()
            found = int(np.argmax(matrix @ query))
            samples.append(time.perf_counter() - started)
            right += found == expected
        result["numpy"] = {
            **figures(samples),
            "memory_mb": round(matrix.nbytes / 2**20, 1),
            "recall_at_1": float(right) / args.queries,
        }
        print("numpy brute force", result["numpy"], flush=True)

    index = Index(ndim=args.dims, metric="cos", dtype="f32")
    started = time.perf_counter()
    batch = 1_000
    for start in range(0, args.entries, batch):
        stop = min(start + batch, args.entries)
        index.add(np.arange(start, stop, dtype=np.uint64), matrix[start:stop], threads=1)
    build = time.perf_counter() - started
    samples, right, exact = [], 0, []
    for expected, query in zip(picked, queries, strict=True):
        started = time.perf_counter()
        matches = index.search(query, 1)
        samples.append(time.perf_counter() - started)
        right += int(matches.keys[0]) == expected
        exact.append(1.0 - float(matches.distances[0]))
    one_insert = []
    extra = unit(rng.standard_normal((200, args.dims)))
    for offset, vector in enumerate(extra):
        started = time.perf_counter()
        index.add(args.entries + offset, vector)
        one_insert.append(time.perf_counter() - started)
    result["usearch"] = {
        **figures(samples),
        "recall_at_1": float(right) / args.queries,
        "build_s": round(build, 2),
        "insert": figures(one_insert),
        "memory_mb": round(index.memory_usage / 2**20, 1),
    }
    print("usearch HNSW", result["usearch"], flush=True)

    if args.others:
        extra = unit(rng.standard_normal((200, args.dims)))
        for name, run in (("faiss", _faiss), ("hnswlib", _hnswlib), ("sqlite_vec", _sqlite_vec)):
            try:
                result[name] = run(matrix, picked, queries, extra)
            except ImportError as exc:
                result[name] = {"skipped": f"not installed: {exc}"}
            print(name, result[name], flush=True)

    if os.environ.get("REDIS_URL"):
        import redis

        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        tenant, bucket = "bench", "bench-bucket"
        entry = "llmp:sc:bench:e:{}"
        pipe = client.pipeline(transaction=False)
        for i in range(args.entries):
            pipe.hset(entry.format(i), mapping={"v": matrix[i].tobytes(), "a": b"x" * 300})
            pipe.rpush(f"llmp:sc:bench:l:{bucket}", i)
            if i % 5_000 == 4_999:
                pipe.execute()
        pipe.execute()
        samples = []
        for expected in picked[:500]:
            started = time.perf_counter()
            pipe = client.pipeline(transaction=False)
            pipe.lrange(f"llmp:sc:bench:l:{bucket}", args.entries, -1)
            pipe.lrange(f"llmp:sc:bench:x:{tenant}", 0, -1)
            pipe.execute()
            client.hget(entry.format(int(expected)), "a")
            samples.append(time.perf_counter() - started)
        result["redis_store_round_trips"] = figures(samples)
        print("redis store share of a lookup", result["redis_store_round_trips"], flush=True)
        keys = [entry.format(i) for i in range(args.entries)]
        for start in range(0, len(keys), 10_000):
            client.delete(*keys[start : start + 10_000])
        client.delete(f"llmp:sc:bench:l:{bucket}", f"llmp:sc:bench:x:{tenant}")

    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"semantic_cache-{args.entries}x{args.dims}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"written {path}")


def _searched(search, picked: np.ndarray, queries: np.ndarray) -> tuple[dict[str, float], float]:
    samples, right = [], 0
    for expected, query in zip(picked, queries, strict=True):
        started = time.perf_counter()
        found = search(query)
        samples.append(time.perf_counter() - started)
        right += found == expected
    return figures(samples), float(right) / len(picked)


def _inserted(add, extra: np.ndarray, first_id: int) -> dict[str, float]:
    samples = []
    for offset, vector in enumerate(extra):
        started = time.perf_counter()
        add(first_id + offset, vector)
        samples.append(time.perf_counter() - started)
    return figures(samples)


def _faiss(matrix: np.ndarray, picked, queries, extra) -> dict[str, object]:
    import faiss

    faiss.omp_set_num_threads(1)
    hnsw = faiss.IndexHNSWFlat(matrix.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efSearch = 64  # as usearch's default expansion (faiss's own default, 16, misses)
    index = faiss.IndexIDMap(hnsw)
    started = time.perf_counter()
    index.add_with_ids(matrix, np.arange(len(matrix), dtype=np.int64))
    build = time.perf_counter() - started
    lookup, recall = _searched(lambda q: int(index.search(q[None, :], 1)[1][0][0]), picked, queries)
    insert = _inserted(
        lambda i, v: index.add_with_ids(v[None, :], np.array([i], dtype=np.int64)),
        extra,
        len(matrix),
    )
    return {**lookup, "recall_at_1": recall, "build_s": round(build, 2), "insert": insert}


def _hnswlib(matrix: np.ndarray, picked, queries, extra) -> dict[str, object]:
    import hnswlib

    index = hnswlib.Index(space="cosine", dim=matrix.shape[1])
    index.init_index(max_elements=len(matrix) + len(extra), M=16, ef_construction=200)
    index.set_num_threads(1)
    started = time.perf_counter()
    index.add_items(matrix, np.arange(len(matrix)))
    build = time.perf_counter() - started
    index.set_ef(50)
    lookup, recall = _searched(lambda q: int(index.knn_query(q, k=1)[0][0][0]), picked, queries)
    insert = _inserted(lambda i, v: index.add_items(v[None, :], [i]), extra, len(matrix))
    return {**lookup, "recall_at_1": recall, "build_s": round(build, 2), "insert": insert}


def _sqlite_vec(matrix: np.ndarray, picked, queries, extra) -> dict[str, object]:
    import sqlite3

    import sqlite_vec

    connect = sqlite3.connect
    if not hasattr(sqlite3.connect(":memory:"), "enable_load_extension"):
        from pysqlite3 import dbapi2  # this Python's sqlite3 cannot load extensions

        connect = dbapi2.connect
    db = connect(":memory:")
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    db.execute(f"CREATE VIRTUAL TABLE entries USING vec0(embedding float[{matrix.shape[1]}])")
    started = time.perf_counter()
    db.executemany(
        "INSERT INTO entries (rowid, embedding) VALUES (?, ?)",
        ((i, matrix[i].tobytes()) for i in range(len(matrix))),
    )
    db.commit()
    build = time.perf_counter() - started
    query = "SELECT rowid FROM entries WHERE embedding MATCH ? AND k = 1"
    lookup, recall = _searched(
        lambda q: int(db.execute(query, (q.tobytes(),)).fetchone()[0]), picked[:200], queries[:200]
    )
    insert = _inserted(
        lambda i, v: db.execute(
            "INSERT INTO entries (rowid, embedding) VALUES (?, ?)", (i, v.tobytes())
        ),
        extra,
        len(matrix),
    )
    return {
        **lookup,
        "recall_at_1": recall,
        "build_s": round(build, 2),
        "insert": insert,
        "queries": 200,
    }


if __name__ == "__main__":
    main()
