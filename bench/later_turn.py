"""What a later turn of a long conversation costs the gateway's CPU, in process, A/B.

    .venv/bin/python bench/later_turn.py [--sizes 10000,100000,400000] [--reps 15]
        [--rounds 3] [--base REV|DIR|none] [--locmem] [--stages] [--py-spy FILE] [--profile N]

Where ``bench/long_context.py`` measures latency through uvicorn (and needs a quiet machine),
this drives the ASGI application in process (no HTTP server, no client in the measured process)
against the mock upstream, and measures the CPU time (``time.process_time``) of each request:

- a first turn (a system prompt and one user message of N characters of documentation) stores
  its screen verdicts and PII findings;
- then, alternated ``--reps`` times, the later turn (that history, an assistant reply and a new
  ~300-character question) and the new question alone.

"later minus new" (medians) is what the history still costs a later turn, the figure issue 21
bounds at 2 ms. With ``--base`` each round runs the base tree (default: the committed ``HEAD``,
exported) and this working tree alternately, each in a fresh child process, so a difference is
the code's and not the machine's drift. ``--stages`` prints the CPU of each stage of a later
turn, ``--py-spy FILE`` samples later turns only, ``--profile N`` prints a cProfile (CPU clock)
of the later turns at N characters.

Production shape (PostgreSQL, Redis, injection screen in block mode, PII masking on), in the
database ``BENCH_DB`` (default ``llmp_bench_later``, created and dropped) and the Redis db of
``BENCH_REDIS_URL`` (default db 12, flushed); ``--locmem`` keeps the verdicts in the process
(no Redis), as the embedded default does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/run.py: processes, database, configuration

run.BENCH_DB = os.environ.get("BENCH_DB", "llmp_bench_later")
run.REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")

SYSTEM = "You are a careful assistant for the documentation team. Answer briefly."
_PRIVACY_SNIPPET = """
from privacy.models import PrivacyPolicy
from llmplatform.models import Tenant
PrivacyPolicy.objects.update_or_create(tenant=Tenant.objects.get(slug="bench"),
                                       defaults={"upstream_pii": "mask"})
"""


# --- the child: one tree, in process ---------------------------------------------------------


def _scope(key: str, length: int) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(length).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


async def _post(app, key: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    delivered = False
    never = asyncio.Event()

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    status, headers, chunks = 0, {}, []

    async def send(message: dict) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(_scope(key, len(body)), receive, send)
    return status, headers, b"".join(chunks)


FAULTS: list[int] = []  # minor page faults of each request
KERNEL_MS: list[float] = []  # its CPU in the kernel, ms


async def _timed(app, key: str, body: bytes) -> tuple[float, float, float]:
    """(CPU ms, wall ms, self-reported overhead ms) of one request."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu, wall = time.process_time(), time.perf_counter()
    status, headers, content = await _post(app, key, body)
    cpu, wall = (time.process_time() - cpu) * 1000, (time.perf_counter() - wall) * 1000
    after = resource.getrusage(resource.RUSAGE_SELF)
    FAULTS.append(after.ru_minflt - before.ru_minflt)
    KERNEL_MS.append((after.ru_stime - before.ru_stime) * 1000)
    if status != 200:
        raise RuntimeError(f"gateway answered {status}: {content[:300]!r}")
    return cpu, wall, float(headers.get("x-llmp-overhead-ms", "nan"))


# Where a later turn's CPU goes: functions of the request path, each timed on its own (a
# function called inside another is counted in both).
_STAGES = (
    ("gateway.api.views", "parse_json_body"),
    ("gateway.api.views", "control_free_json"),
    ("gateway.api.views", "parse_chat_request"),
    ("gateway.pipeline.verdicts", "text_digest"),
    ("gateway.pipeline.verdicts", "look_up"),
    ("gateway.pipeline.pii", "protect"),
    ("gateway.pipeline.verdicts.Findings", "mask"),
    ("gateway.pipeline.pii", "redact"),
    ("gateway.pipeline.chat", "count_redactions"),
    ("gateway.pipeline.guard", "screen_input"),
    ("gateway.cache", "make_key"),
    ("gateway.providers.openai_compatible", "_encode"),
    ("gateway.pipeline.chat.ChatCall", "prepare"),
    ("gateway.pipeline.chat.ChatCall", "dispatch"),
    ("gateway.pipeline.chat.ChatCall", "relay"),
    ("gateway.pipeline.chat.ChatCall", "answer"),
)


def _time_stages() -> dict[str, float]:
    """Wrap the functions of ``_STAGES`` so each adds the CPU it used to ``spent[name]``."""
    import functools
    import importlib
    import inspect

    spent: dict[str, float] = {}
    for module_name, attr in _STAGES:
        try:
            owner: object = importlib.import_module(module_name)
        except ImportError:
            module_name, _, class_name = module_name.rpartition(".")
            owner = getattr(importlib.import_module(module_name), class_name, None)
        real = getattr(owner, attr, None)
        if real is None:
            continue
        name = f"{attr}"
        spent[name] = 0.0
        if inspect.isasyncgenfunction(real):

            def wrap(real=real, name=name):
                @functools.wraps(real)
                async def timed(*args, **kwargs):
                    agen = real(*args, **kwargs)
                    while True:
                        started = time.process_time()
                        try:
                            item = await agen.__anext__()
                        except StopAsyncIteration:
                            spent[name] += time.process_time() - started
                            return
                        spent[name] += time.process_time() - started
                        yield item

                return timed

        elif inspect.iscoroutinefunction(real):

            def wrap(real=real, name=name):
                @functools.wraps(real)
                async def timed(*args, **kwargs):
                    started = time.process_time()
                    try:
                        return await real(*args, **kwargs)
                    finally:
                        spent[name] += time.process_time() - started

                return timed

        elif hasattr(real, "__enter__") or not callable(real):
            continue
        else:

            def wrap(real=real, name=name):
                @functools.wraps(real)
                def timed(*args, **kwargs):
                    started = time.process_time()
                    try:
                        return real(*args, **kwargs)
                    finally:
                        spent[name] += time.process_time() - started

                return timed

        setattr(owner, attr, wrap())
    return spent


def _body(messages: list[dict]) -> bytes:
    import orjson

    return orjson.dumps({"model": "default", "messages": messages, "temperature": 0.7})


async def _child(args: argparse.Namespace) -> dict:
    import django

    django.setup()
    from long_context import Texts, documentation  # bench/ is on the path (above)

    from llmplatform.asgi import application

    texts = Texts(documentation())
    key = os.environ["LATER_TURN_KEY"]
    stages = _time_stages() if args.stages else None

    lifespan_in: asyncio.Queue = asyncio.Queue()
    started = asyncio.Event()

    async def lifespan_send(message: dict) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    lifespan_scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    lifespan = asyncio.create_task(application(lifespan_scope, lifespan_in.get, lifespan_send))
    await lifespan_in.put({"type": "lifespan.startup"})
    await started.wait()

    async def settle() -> None:
        await asyncio.sleep(0.08)  # write-behind (20 ms), usage records: outside the measure

    for _ in range(4):  # warm: imports, connections, the guard's worker process
        await _timed(application, key, _body([{"role": "user", "content": texts.take(30_000)}]))
        await _timed(application, key, _body([{"role": "user", "content": run.PROMPT}]))
        await settle()

    results = []
    for size in args.sizes:
        history = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Summarise this document:\n\n" + texts.take(size)},
        ]
        first = await _timed(application, key, _body(history))
        await asyncio.sleep(0.3)  # the verdicts are written behind the answer
        question = texts.take(300)
        later_body = _body(
            [
                *history,
                {"role": "assistant", "content": "The document describes a library module."},
                {"role": "user", "content": question},
            ]
        )
        alone_body = _body(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        )
        later, alone = [], []
        later_faults: list[tuple[int, float]] = []
        alone_faults: list[tuple[int, float]] = []
        for _ in range(2):  # warm this size
            await _timed(application, key, later_body)
            await _timed(application, key, alone_body)
        profiler = None
        if args.profile == size:
            import cProfile

            profiler = cProfile.Profile(time.process_time)
        if args.spin:  # only later turns, back to back (for a sampling profiler)
            for _ in range(args.reps):
                await _timed(application, key, later_body)
            continue
        for _ in range(args.reps):
            await settle()
            if profiler is not None:
                profiler.enable()
            later.append(await _timed(application, key, later_body))
            later_faults.append((FAULTS[-1], KERNEL_MS[-1]))
            if profiler is not None:
                profiler.disable()
            await settle()
            alone.append(await _timed(application, key, alone_body))
            alone_faults.append((FAULTS[-1], KERNEL_MS[-1]))
        if stages is not None:  # CPU per later turn in each stage (median over the turns)
            per_turn: dict[str, list[float]] = {name: [] for name in stages}
            for _ in range(args.reps):
                await settle()
                for name in stages:
                    stages[name] = 0.0
                await _timed(application, key, later_body)
                for name, spent in stages.items():
                    per_turn[name].append(spent * 1000)
            medians = {name: round(statistics.median(t), 3) for name, t in per_turn.items()}
            print(json.dumps({"chars": size, "stages_ms": medians}), file=sys.stderr)
        if profiler is not None:
            import io
            import pstats

            if os.environ.get("LATER_TURN_PROFILE_OUT"):
                profiler.dump_stats(os.environ["LATER_TURN_PROFILE_OUT"])
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats(45)
            print(out.getvalue(), file=sys.stderr)
        row = {
            "chars": size,
            "body_bytes": len(later_body),
            "first_cpu_ms": first[0],
            "later_cpu_ms": statistics.median(x[0] for x in later),
            "alone_cpu_ms": statistics.median(x[0] for x in alone),
            "later_wall_ms": statistics.median(x[1] for x in later),
            "alone_wall_ms": statistics.median(x[1] for x in alone),
            "later_self_ms": statistics.median(x[2] for x in later),
            "alone_self_ms": statistics.median(x[2] for x in alone),
        }
        row["later_faults"] = statistics.median(f for f, _ in later_faults)
        row["alone_faults"] = statistics.median(f for f, _ in alone_faults)
        row["later_system_ms"] = statistics.median(s for _, s in later_faults)
        row["alone_system_ms"] = statistics.median(s for _, s in alone_faults)
        row["later_minus_new_cpu_ms"] = row["later_cpu_ms"] - row["alone_cpu_ms"]
        row["later_minus_new_wall_ms"] = row["later_wall_ms"] - row["alone_wall_ms"]
        row["later_minus_new_self_ms"] = row["later_self_ms"] - row["alone_self_ms"]
        results.append(row)
    await lifespan_in.put({"type": "lifespan.shutdown"})
    await lifespan
    return {"rows": results}


# --- the parent: set up once, then alternate trees -------------------------------------------


def start_mock(procs: run.Processes) -> str:
    """The mock upstream, started and answering; its base URL."""
    port = run.free_port()
    mock = procs.start(
        "mock", [run.PYTHON, str(run.BENCH / "mock_upstream.py"), "--port", str(port)]
    )
    upstream = f"http://127.0.0.1:{port}/v1"
    run.wait_ready("mock", f"{upstream}/models", mock, procs, 20)
    return upstream


def _setup(tmp: Path, upstream_url: str, locmem: bool) -> tuple[dict[str, str], str]:
    env = run.gateway_env(tmp / "data", db_pool=True)
    if locmem:
        env.pop("REDIS_URL", None)
    env["PYTHONPATH"] = str(run.ROOT)
    (tmp / "data").mkdir(exist_ok=True)
    run.reset_database()
    run.flush_redis()
    run.log(f"migrating {run.BENCH_DB}")
    run.manage(["migrate", "--noinput"], env, timeout=600)
    config = run.gateway_config(upstream_url, upstream_url)
    config["tiers"][0]["max_prompt_chars"] = 1_000_000
    config["tiers"][0]["screening_mode"] = "block"
    path = tmp / "gateway.yaml"
    path.write_text(json.dumps(config))
    run.manage(["apply_config", str(path)], env)
    key = run.create_key(env, run.ROOT)
    run.manage(["shell", "-c", _PRIVACY_SNIPPET], env)
    return env, key


def _run_child(
    tree: Path,
    env: dict[str, str],
    key: str,
    args: argparse.Namespace,
    profile: int,
    spy: str = "",
    stages: bool = False,
):
    child_env = {**env, "PYTHONPATH": str(tree), "LATER_TURN_KEY": key}
    prefix: list[str] = []
    if spy:
        exe = run.ensure_py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not available")
        prefix = [str(exe), "record", "--rate", "997", "--format", "raw", "-o", spy, "--"]
    cmd = [
        *prefix,
        run.PYTHON,
        str(Path(__file__).resolve()),
        "--child",
        "--sizes",
        ",".join(map(str, args.sizes)),
        "--reps",
        str(args.reps),
        "--profile",
        str(profile),
        *(["--spin"] if spy else []),
        *(["--stages"] if stages else []),
    ]
    done = subprocess.run(cmd, cwd=tree, env=child_env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"child ({tree}) failed:\n{done.stderr[-4000:]}")
    if profile:
        print(done.stderr, file=sys.stderr)
    if stages:
        for line in done.stderr.splitlines():
            if '"stages_ms"' in line:
                print(line)
    if spy or not done.stdout.strip():
        return {"rows": []}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _base_tree(base: str, tmp: Path) -> Path:
    """A directory as given; ``head`` or any other git revision exported into ``tmp``."""
    if base.startswith("/"):
        return Path(base)
    src = tmp / "base-src"
    src.mkdir()
    archive = subprocess.run(
        [
            "git",
            "-C",
            str(run.ROOT),
            "archive",
            "--format=tar",
            base.upper() if base == "head" else base,
        ],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    return src


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,400000")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--base", default="head", help="a git revision (default HEAD), a directory, or none"
    )
    parser.add_argument("--locmem", action="store_true", help="verdicts in process, no Redis")
    parser.add_argument("--profile", type=int, default=0, help="cProfile later turns of N chars")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--stages", action="store_true", help="CPU per stage of a later turn (this tree only)"
    )
    parser.add_argument(
        "--py-spy",
        metavar="FILE",
        help="only later turns of --sizes, --reps times, sampled by py-spy (collapsed stacks)",
    )
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        print(json.dumps(asyncio.run(_child(args))))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="llmp-later-"))
    procs = run.Processes(tmp)
    trees: list[tuple[str, Path]] = []
    if args.base != "none":
        trees.append(("base", _base_tree(args.base, tmp)))
    trees.append(("this", run.ROOT))
    try:
        upstream = start_mock(procs)
        env, key = _setup(tmp, upstream, args.locmem)
        results: dict[str, list[dict]] = {name: [] for name, _ in trees}
        if args.py_spy:
            _run_child(run.ROOT, env, key, args, 0, spy=args.py_spy)
        if args.stages:
            for name, tree in trees:
                print(f"{name}:")
                _run_child(tree, env, key, args, 0, stages=True)
        if args.profile:
            _run_child(run.ROOT, env, key, args, args.profile)
        for round_ in range(args.rounds):
            order = trees if round_ % 2 == 0 else list(reversed(trees))
            for name, tree in order:
                rows = _run_child(tree, env, key, args, 0)["rows"]
                results[name].append(rows)
                summary = ", ".join(
                    f"{r['chars']:,}: {r['later_minus_new_cpu_ms']:+.2f}" for r in rows
                )
                run.log(f"round {round_ + 1} {name}: later minus new, CPU ms: {summary}")
    finally:
        procs.stop_all()
        run.drop_database()
        run.flush_redis()
    print(report(results, args))
    return 0


def report(results: dict[str, list[list[dict]]], args: argparse.Namespace) -> str:
    """Medians over the rounds of each round's medians."""
    lines = [
        f"Later turn over its new message, {'locmem' if args.locmem else 'Redis'}; "
        f"{args.rounds} rounds x {args.reps} reps; medians (ms)",
        "",
        "| tree | chars | later CPU | new alone CPU | later minus new: CPU | wall | "
        "self-reported | page faults later / alone | kernel CPU later / alone |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rounds in results.items():
        if not rounds:
            continue
        for index, size in enumerate(args.sizes):
            rows = [r[index] for r in rounds]

            def med(field: str, rows: list[dict] = rows) -> float:
                return statistics.median(r[field] for r in rows)

            lines.append(
                f"| {name} | {size:,} | {med('later_cpu_ms'):.2f} | {med('alone_cpu_ms'):.2f} | "
                f"{med('later_minus_new_cpu_ms'):+.2f} | {med('later_minus_new_wall_ms'):+.2f} | "
                f"{med('later_minus_new_self_ms'):+.2f} | "
                f"{med('later_faults'):.0f} / {med('alone_faults'):.0f} | "
                f"{med('later_system_ms'):.2f} / {med('alone_system_ms'):.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
