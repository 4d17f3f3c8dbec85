"""Long prompts and agent loops through the gateway: what governance adds as a conversation grows.

    .venv/bin/python bench/long_context.py [--quick] [--offload process|thread|off]

Starts the mock upstream (``mock_upstream.py``) and this gateway in its production shape
(PostgreSQL, Redis, ``uvicorn --workers 2``, the injection screen on in block mode, PII masking
on), the same way ``run.py`` does, and measures, one request at a time:

1. the latency the gateway adds (its latency minus the upstream's own for the same body,
   p50) for a system prompt and one user message of 1k, 10k, 100k and 400k characters of
   ordinary English documentation (docstrings of Python's standard library, read from this
   interpreter: nothing is downloaded), on a first turn, and on a later turn of the same
   conversation (the history plus a new ~300-character question), next to a request carrying
   only that new question;
2. a 20-turn agent loop: a task with a 100k-character retrieved document, then each turn a
   tool call and a 2,000-character tool result added to the history; the gateway's overhead
   summed over the loop against its first turn;
3. the p99 of small requests (concurrency 4) alone, and while 400k-character requests run
   beside them.

Prints a markdown table and the targets (issue 21), and writes the JSON to ``bench/results/``.
Uses the database ``llmp_bench_long`` (created and dropped) and Redis db 13 (flushed), or those
named by ``BENCH_DB`` and ``BENCH_REDIS_URL``; stops every process it started, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib
import inspect
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/run.py: processes, database, gateway start-up

# Its own database and Redis db, unless named (BENCH_DB, BENCH_REDIS_URL, as for run.py).
run.BENCH_DB = os.environ.get("BENCH_DB", "llmp_bench_long")
run.REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")

SIZES = (1_000, 10_000, 100_000, 400_000)
SYSTEM = "You are a careful assistant for the documentation team. Answer briefly."
TARGET_FIRST_TURN_100K_MS = 20.0
TARGET_LATER_TURN_MS = 2.0
TARGET_LOOP_RATIO = 3.0
TARGET_P99_INCREASE_MS = 10.0
_MODULE_NAMES = (
    "argparse collections json logging pathlib subprocess unittest email.message http.client "
    "sqlite3 decimal datetime textwrap csv itertools functools typing asyncio threading zipfile "
    "tarfile shutil os re string statistics fractions calendar heapq bisect difflib gzip "
    "hashlib socket ssl urllib.parse configparser tempfile glob fnmatch pickle copy pprint enum "
    "dataclasses contextlib abc inspect ast dis tokenize locale gettext codecs io time random "
    "math operator weakref types queue sched selectors signal mmap wave colorsys imaplib "
    "smtplib poplib ftplib uuid ipaddress mailbox mimetypes base64 binascii struct array shelve "
    "zlib bz2 lzma netrc plistlib secrets hmac platform ctypes concurrent.futures "
    "multiprocessing sysconfig code timeit trace tracemalloc cProfile pstats zipapp runpy "
    "importlib pkgutil keyword symtable token pyclbr compileall"
)
MODULES = _MODULE_NAMES.split()


def documentation() -> str:
    """Paragraphs of the standard library's docstrings: ordinary technical English. Left out:
    doctest lines, and paragraphs addressing "you" or spelling out single letters, so that the
    text is not a role definition (the screen would rightly score one)."""
    seen: dict[str, None] = {}
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for _, obj in [(name, module), *inspect.getmembers(module)]:
            try:
                doc = inspect.getdoc(obj)
            except Exception:  # noqa: S112 - some objects raise on introspection; skip them
                continue
            for paragraph in (doc or "").split("\n\n"):
                paragraph = " ".join(paragraph.split())
                if (
                    len(paragraph) > 120
                    and ">>>" not in paragraph
                    and not re.search(r"\byou\b", paragraph, re.I)
                    and not re.search(r"(?:\b\w\b\W+){3,}", paragraph)
                ):
                    seen[paragraph] = None
    return "\n\n".join(seen)


class Texts:
    """Texts of a given length, each new (a nonce and a rotating start), so no cache of the
    gateway (responses or verdicts) has seen one before unless the bench resends it."""

    def __init__(self, corpus: str) -> None:
        self.corpus = corpus
        self.offset = 0

    def take(self, chars: int) -> str:
        head = f"Document {uuid.uuid4().hex[:12]}.\n\n"
        need = max(0, chars - len(head))
        doubled = self.corpus * (need // len(self.corpus) + 2)
        start = self.offset % len(self.corpus)
        self.offset += 7919
        return head + doubled[start : start + need]


def chat_body(messages: list[dict]) -> dict:
    return {"model": "default", "messages": messages, "temperature": 0.7}


class Measure:
    """One request at a time to the gateway and to the upstream directly, with the same body."""

    def __init__(self, gateway_url: str, key: str, direct_url: str) -> None:
        self.gateway_url, self.direct_url = gateway_url, direct_url
        self.client = httpx.Client(timeout=120)
        self.headers = {"Authorization": f"Bearer {key}"}

    def gateway(self, body: dict) -> tuple[float, float]:
        """(latency ms, the gateway's self-reported overhead ms)."""
        data = json.dumps(body).encode()
        started = time.perf_counter()
        response = self.client.post(
            self.gateway_url,
            content=data,
            headers={**self.headers, "Content-Type": "application/json"},
        )
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"gateway answered {response.status_code}: {response.text[:300]}")
        return elapsed, float(response.headers.get("x-llmp-overhead-ms", "nan"))

    def direct(self, body: dict) -> float:
        data = json.dumps({**body, "model": "mock-model"}).encode()
        started = time.perf_counter()
        response = self.client.post(
            self.direct_url, content=data, headers={"Content-Type": "application/json"}
        )
        elapsed = (time.perf_counter() - started) * 1000
        response.raise_for_status()
        return elapsed

    def added(self, body: dict) -> tuple[float, float]:
        """(added ms = gateway minus direct for this body, self-reported overhead ms)."""
        direct = self.direct(body)
        latency, overhead = self.gateway(body)
        return latency - direct, overhead


def p50(values: list[float]) -> float:
    return statistics.median(values)


def sizes_table(measure: Measure, texts: Texts, reps: int) -> list[dict]:
    rows = []
    for size in SIZES:
        first, later, alone, first_self, later_self = [], [], [], [], []
        for _ in range(reps):
            history = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Summarise this document:\n\n" + texts.take(size)},
            ]
            added, own = measure.added(chat_body(history))
            first.append(added)
            first_self.append(own)
            time.sleep(0.1)  # the verdicts are written behind the answer (20 ms window)
            question = texts.take(300)
            turn = [
                *history,
                {"role": "assistant", "content": "The document describes a library module."},
                {"role": "user", "content": question},
            ]
            added, own = measure.added(chat_body(turn))
            later.append(added)
            later_self.append(own)
            # Another question of the same length: the worker that took the later turn keeps
            # the verdicts of its short texts, and would find this one's already.
            alone_question = texts.take(len(question))
            only = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": alone_question},
            ]
            alone.append(measure.added(chat_body(only))[0])
        row = {
            "chars": size,
            "first_turn_added_ms": p50(first),
            "first_turn_self_ms": p50(first_self),
            "later_turn_added_ms": p50(later),
            "later_turn_self_ms": p50(later_self),
            "new_message_alone_added_ms": p50(alone),
        }
        row["later_minus_new_ms"] = row["later_turn_added_ms"] - row["new_message_alone_added_ms"]
        rows.append(row)
        run.log(f"{size:>7} chars: {json.dumps({k: round(v, 2) for k, v in row.items()})}")
    return rows


def agent_loop(measure: Measure, texts: Texts, turns: int = 20) -> dict:
    history: list[dict] = [
        {"role": "system", "content": SYSTEM + " Use the tools to answer."},
        {
            "role": "user",
            "content": "Using the manual below, find every deprecated function and check each "
            "one with the search tool.\n\n" + texts.take(100_000),
        },
    ]
    added_per_turn, self_per_turn = [], []
    for turn in range(turns):
        body = {**chat_body(history), "tools": TOOLS}
        added, own = measure.added(body)
        added_per_turn.append(added)
        self_per_turn.append(own)
        call_id = f"call_{turn}"
        history += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": "search_docs",
                            "arguments": json.dumps({"query": f"deprecated function {turn}"}),
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": texts.take(2_000)},
        ]
        time.sleep(0.05)
    return {
        "turns": turns,
        "added_ms": added_per_turn,
        "self_ms": self_per_turn,
        "total_added_ms": sum(added_per_turn),
        "first_added_ms": added_per_turn[0],
        "ratio_added": sum(added_per_turn) / added_per_turn[0],
        "total_self_ms": sum(self_per_turn),
        "ratio_self": sum(self_per_turn) / self_per_turn[0],
        "final_history_chars": sum(len(json.dumps(m)) for m in history),
    }


async def _small_load(url: str, key: str, seconds: float, concurrency: int = 4) -> list[float]:
    latencies: list[float] = []
    body = json.dumps(chat_body([{"role": "user", "content": run.PROMPT}])).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=60) as client:

        async def one_client() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                if response.status_code == 200:
                    latencies.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.01)

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return latencies


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 100 else max(values)


def stall_test(measure: Measure, texts: Texts, key: str, seconds: float) -> dict:
    baseline = asyncio.run(_small_load(measure.gateway_url, key, seconds))
    stop = threading.Event()
    long_done: list[float] = []

    def long_requests() -> None:
        client = Measure(measure.gateway_url, key, measure.direct_url)
        while not stop.is_set():
            body = chat_body([{"role": "user", "content": "Summarise:\n" + texts.take(400_000)}])
            long_done.append(client.gateway(body)[0])

    thread = threading.Thread(target=long_requests, daemon=True)
    thread.start()
    time.sleep(0.5)
    beside = asyncio.run(_small_load(measure.gateway_url, key, seconds))
    stop.set()
    thread.join(120)
    return {
        "small_requests_alone": len(baseline),
        "small_requests_beside": len(beside),
        "long_requests_beside": len(long_done),
        "long_latency_p50_ms": p50(long_done) if long_done else None,
        "p50_alone_ms": p50(baseline),
        "p99_alone_ms": p99(baseline),
        "p50_beside_ms": p50(beside),
        "p99_beside_ms": p99(beside),
        "p99_increase_ms": p99(beside) - p99(baseline),
    }


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append((time.perf_counter() - started - 0.001) * 1000)


async def _lag_trial(mode: str, text: str, pool: object) -> dict:
    """How late a 1 ms timer of the event loop fires while the guard works on ``text``: what
    a small request beside it would wait, before any other cost."""
    from gateway.pipeline import text_checks

    lags: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticker(lags, stop))
    await asyncio.sleep(0.2)
    idle = list(lags)
    lags.clear()
    jobs = ([(text, "user")], [(text, None)])
    started = time.perf_counter()
    if mode == "off":
        text_checks.check_texts(*jobs)
    elif mode == "thread":
        await asyncio.to_thread(text_checks.check_texts, *jobs)
    else:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(pool, text_checks.check_texts, *jobs)  # type: ignore[arg-type]
    work = (time.perf_counter() - started) * 1000
    stop.set()
    await ticker
    return {
        "mode": mode,
        "work_ms": work,
        "lag_p50_ms": p50(lags),
        "lag_p99_ms": p99(lags),
        "lag_max_ms": max(lags),
        "idle_lag_p99_ms": p99(idle),
    }


def loop_lag(texts: Texts, rounds: int = 2) -> list[dict]:
    """The screen and the PII detector on one 400k-character text, in the event loop, in a
    thread and in a worker process (``LLMP_GUARD_OFFLOAD``), with a timer ticking beside."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    sys.path.insert(0, str(run.ROOT))
    from gateway.pipeline import text_checks

    text = texts.take(400_000)
    text_checks.warm_up()
    context = multiprocessing.get_context("forkserver")
    results = []
    with ProcessPoolExecutor(1, mp_context=context, initializer=text_checks.warm_up) as pool:
        pool.submit(text_checks.warm_up).result()
        for _ in range(rounds):
            for mode in ("off", "thread", "process"):
                result = asyncio.run(_lag_trial(mode, text, pool))
                run.log(f"loop lag: {json.dumps({k: v for k, v in result.items()})}")
                results.append(result)
    return results


# The agent loop's one tool (also bench/turn_stages.py's).
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_docs",
            "description": "Search the library's documentation.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    }
]


_PRIVACY_SNIPPET = """
from privacy.models import PrivacyPolicy
from llmplatform.models import Tenant
PrivacyPolicy.objects.update_or_create(tenant=Tenant.objects.get(slug="bench"),
                                       defaults={"upstream_pii": "mask"})
"""


def configure(config: dict) -> dict:
    """``run.py``'s configuration with room for 400k-character prompts."""
    tier = config["tiers"][0]
    tier["max_prompt_chars"] = 1_000_000
    tier["screening_mode"] = "block"
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions, shorter stall test")
    parser.add_argument("--offload", choices=("process", "thread", "off"), default="process")
    parser.add_argument("--source", default="worktree", help="worktree, head or a directory")
    parser.add_argument(
        "--loop-lag-only",
        action="store_true",
        help="only the event-loop lag beside a 400k-character guard pass, per offload mode",
    )
    args = parser.parse_args()
    reps = 3 if args.quick else 5
    stall_seconds = 8.0 if args.quick else 15.0

    corpus = documentation()
    run.log(f"corpus: {len(corpus):,} characters of standard-library docstrings")
    texts = Texts(corpus)
    if args.loop_lag_only:
        for result in loop_lag(texts):
            print(
                f"| {result['mode']} | {result['work_ms']:.0f} ms | {result['lag_p50_ms']:.2f} ms "
                f"| {result['lag_p99_ms']:.2f} ms | {result['lag_max_ms']:.1f} ms "
                f"| {result['idle_lag_p99_ms']:.2f} ms |"
            )
        return 0
    results: dict = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "offload": args.offload,
        "quick": args.quick,
        "cpu": run._cpu_model(),
        "cores": run.CORES,
    }
    tmp = Path(tempfile.mkdtemp(prefix="llmp-long-"))
    procs = run.Processes(tmp)
    original_config, original_env = run.gateway_config, run.gateway_env
    run.gateway_config = lambda fast, slow: configure(original_config(fast, slow))

    def env_with_offload(data_dir: Path, db_pool: bool) -> dict[str, str]:
        env = original_env(data_dir, db_pool)
        env["LLMP_GUARD_OFFLOAD"] = args.offload
        return env

    run.gateway_env = env_with_offload
    try:
        fast_port, slow_port = run.free_port(), run.free_port()
        mock = procs.start(
            "mock", [run.PYTHON, str(run.BENCH / "mock_upstream.py"), "--port", str(fast_port)]
        )
        slow = procs.start(
            "mock-slow", [run.PYTHON, str(run.BENCH / "mock_upstream.py"), "--port", str(slow_port)]
        )
        fast_url = f"http://127.0.0.1:{fast_port}/v1"
        run.wait_ready("mock", f"{fast_url}/models", mock, procs, 20)
        run.wait_ready("mock-slow", f"http://127.0.0.1:{slow_port}/v1/models", slow, procs, 20)
        target = run.start_gateway(
            args.source, tmp, procs, fast_url, f"http://127.0.0.1:{slow_port}/v1", db_pool=True
        )
        env = env_with_offload(tmp / f"data-{Path(args.source).name}", True)
        env["PYTHONPATH"] = str(run.gateway_source(args.source, tmp))
        run.manage(["shell", "-c", _PRIVACY_SNIPPET], env, cwd=run.gateway_source(args.source, tmp))
        key = target.headers[0].split(" ", 2)[2]
        measure = Measure(target.url, key, f"{fast_url}/chat/completions")
        # Warm both workers (and their guard worker processes) on long and short prompts.
        for _ in range(6):
            measure.added(chat_body([{"role": "user", "content": texts.take(30_000)}]))
            measure.added(chat_body([{"role": "user", "content": run.PROMPT}]))
        time.sleep(6)  # the privacy policy reaches the auth cache of both workers (5 s)
        results["sizes"] = sizes_table(measure, texts, reps)
        results["agent_loop"] = agent_loop(measure, texts)
        run.log(
            f"agent loop: total {results['agent_loop']['total_added_ms']:.1f} ms, "
            f"ratio {results['agent_loop']['ratio_added']:.2f}"
        )
        results["stall"] = stall_test(measure, texts, key, stall_seconds)
        run.log(f"stall: {json.dumps(results['stall'])}")
    finally:
        procs.stop_all()
        run.drop_database()
        run.flush_redis()
    print(report(results))
    run.RESULTS.mkdir(exist_ok=True)
    out = run.RESULTS / f"long-context-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    run.log(f"results in {out}")
    return 0


def report(results: dict) -> str:
    lines = [
        f"Long context, offload={results['offload']}, {results['cpu']}, {results['cores']} cores",
        "",
        "| prompt | first turn: added (p50) | self-reported | later turn: added | "
        "new message alone: added | later minus new |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["sizes"]:
        lines.append(
            f"| {row['chars']:,} chars | {row['first_turn_added_ms']:.1f} ms | "
            f"{row['first_turn_self_ms']:.1f} ms | {row['later_turn_added_ms']:.1f} ms | "
            f"{row['new_message_alone_added_ms']:.1f} ms | {row['later_minus_new_ms']:+.1f} ms |"
        )
    loop, stall = results["agent_loop"], results["stall"]
    row_100k = next(r for r in results["sizes"] if r["chars"] == 100_000)
    worst_later = max(r["later_minus_new_ms"] for r in results["sizes"])
    checks = [
        ("100k first turn added", row_100k["first_turn_added_ms"], TARGET_FIRST_TURN_100K_MS, "ms"),
        ("later turn over its new message (worst size)", worst_later, TARGET_LATER_TURN_MS, "ms"),
        ("20-turn loop / first turn (added)", loop["ratio_added"], TARGET_LOOP_RATIO, "x"),
        ("p99 of small requests, increase", stall["p99_increase_ms"], TARGET_P99_INCREASE_MS, "ms"),
    ]
    lines += [
        "",
        f"Agent loop ({loop['turns']} turns, history {loop['final_history_chars']:,} chars at the "
        f"end): added {loop['total_added_ms']:.1f} ms in all, first turn "
        f"{loop['first_added_ms']:.1f} ms ({loop['ratio_added']:.2f}x); self-reported "
        f"{loop['total_self_ms']:.1f} ms ({loop['ratio_self']:.2f}x).",
        f"Small requests (concurrency 4): p50 {stall['p50_alone_ms']:.1f} ms / p99 "
        f"{stall['p99_alone_ms']:.1f} ms alone; p50 {stall['p50_beside_ms']:.1f} ms / p99 "
        f"{stall['p99_beside_ms']:.1f} ms beside {stall['long_requests_beside']} 400k-character "
        "requests.",
        "",
        "| target | measured | goal | met |",
        "|---|---|---|---|",
    ]
    for name, value, goal, unit in checks:
        lines.append(
            f"| {name} | {value:.2f} {unit} | <= {goal} {unit} "
            f"| {'yes' if value <= goal else 'NO'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
