"""Where a first turn or an agent loop's turn spends its time, stage by stage, in process.

    .venv/bin/python bench/turn_stages.py [--mode first|loop] [--size 100000] [--reps 7]
        [--wall] [--profile]

Drives the ASGI application in process (as ``later_turn.py`` does, same set-up: PostgreSQL,
Redis, the guard's worker processes, screen in block mode, PII masking on) and times the
functions of the request path (``later_turn._STAGES`` plus the guard's worker call,
``verdicts._check``, and the store's read and write), medians over ``--reps`` turns:

- ``first``: a system prompt and one new user message of ``--size`` characters each turn;
- ``loop``: an agent loop over a ``--size``-character document, each turn adding a tool call
  and a 2,000-character tool result (as ``long_context.py``'s loop does).

CPU time (``process_time``) by default, so the guard's worker processes do not count: their
work shows as ``_check`` in ``--wall`` mode. ``--profile`` prints a cProfile of the turns.
Database ``BENCH_DB`` (default ``llmp_bench_stages``, created and dropped), Redis db of
``BENCH_REDIS_URL`` (default db 11, flushed).
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
import later_turn  # the in-process driver and its stages
import run  # bench/run.py: processes, database, configuration
from long_context import TOOLS  # the agent loop's tool

run.BENCH_DB = os.environ.get("BENCH_DB", "llmp_bench_stages")
run.REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")

STAGES = (
    *later_turn._STAGES,
    ("gateway.pipeline.verdicts", "_check"),
    ("gateway.pipeline.verdicts", "_read"),
    ("gateway.pipeline.verdicts", "_keep"),
    ("gateway.pipeline.text_checks", "check_texts"),
)


def _loop_body(history: list[dict]) -> bytes:
    import orjson

    return orjson.dumps(
        {"model": "default", "messages": history, "tools": TOOLS, "temperature": 0.7}
    )


async def _child(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from long_context import Texts, documentation

    from llmplatform.asgi import application

    later_turn._STAGES = STAGES
    if args.wall:  # the stages' clock
        later_turn.time = type(  # type: ignore[assignment]
            "Wall",
            (),
            {"process_time": staticmethod(time.perf_counter), "perf_counter": time.perf_counter},
        )
    texts = Texts(documentation())
    key = os.environ["LATER_TURN_KEY"]
    stages = later_turn._time_stages()
    lifespan_in: asyncio.Queue = asyncio.Queue()
    started = asyncio.Event()

    async def lifespan_send(message: dict) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    lifespan = asyncio.create_task(
        application(
            {"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_in.get, lifespan_send
        )
    )
    await lifespan_in.put({"type": "lifespan.startup"})
    await started.wait()
    body = later_turn._body
    for _ in range(4):  # warm: connections, the guard's workers
        await later_turn._timed(
            application, key, body([{"role": "user", "content": texts.take(30_000)}])
        )
        await later_turn._timed(application, key, body([{"role": "user", "content": run.PROMPT}]))
        await asyncio.sleep(0.08)
    history = [
        {"role": "system", "content": later_turn.SYSTEM + " Use the tools to answer."},
        {
            "role": "user",
            "content": "Using the manual below, check each function.\n\n" + texts.take(args.size),
        },
    ]
    if args.mode == "loop":
        await later_turn._timed(application, key, _loop_body(history))
        await asyncio.sleep(0.3)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile(time.perf_counter if args.wall else time.process_time)
    per_stage: dict[str, list[float]] = {name: [] for name in stages}
    turns = []
    for turn in range(args.reps):
        if args.mode == "loop":
            call = f"call_{turn}"
            arguments = json.dumps({"query": f"deprecated function {turn}"})
            history += [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call,
                            "type": "function",
                            "function": {"name": "search_docs", "arguments": arguments},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": call, "content": texts.take(2_000)},
            ]
            request = _loop_body(history)
        else:
            request = body(
                [
                    {"role": "system", "content": later_turn.SYSTEM},
                    {
                        "role": "user",
                        "content": "Summarise this document:\n\n" + texts.take(args.size),
                    },
                ]
            )
        await asyncio.sleep(0.1)  # the write-behind of the turn before
        for name in stages:
            stages[name] = 0.0
        if profiler is not None:
            profiler.enable()
        turns.append(await later_turn._timed(application, key, request))
        if profiler is not None:
            profiler.disable()
        for name, spent in stages.items():
            per_stage[name].append(spent * 1000)
    cpu, wall, own = (statistics.median(t[i] for t in turns) for i in range(3))
    print(f"{args.mode} turns at {args.size:,} chars, medians of {args.reps}:", file=sys.stderr)
    spent = f"wall {wall:.2f} ms" if args.wall else f"CPU {cpu:.2f} ms, wall {wall:.2f} ms"
    print(f"  {spent}, self-reported {own:.2f} ms", file=sys.stderr)
    clock = "wall" if args.wall else "CPU"
    for name, values in per_stage.items():
        print(f"  {name:24s} {statistics.median(values):8.3f} ms {clock}", file=sys.stderr)
    if profiler is not None:
        import io
        import pstats

        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(50)
        print(out.getvalue(), file=sys.stderr)
    await lifespan_in.put({"type": "lifespan.shutdown"})
    await lifespan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("first", "loop"), default="first")
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--wall", action="store_true", help="time the stages by the wall clock")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the turns")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(_child(args))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="llmp-stages-"))
    procs = run.Processes(tmp)
    try:
        upstream = later_turn.start_mock(procs)
        env, key = later_turn._setup(tmp, upstream, False)
        child = [run.PYTHON, __file__, "--child", *sys.argv[1:]]
        done = subprocess.run(
            child,
            cwd=run.ROOT,
            env={**env, "PYTHONPATH": str(run.ROOT), "LATER_TURN_KEY": key},
            capture_output=True,
            text=True,
        )
        report = done.stderr.split(f"{args.mode} turns at", 1)
        if done.returncode or len(report) < 2:
            print(done.stderr[-4000:], file=sys.stderr)
            return 1
        lines = (f"{args.mode} turns at" + report[1]).splitlines()
        print("\n".join(line for line in lines if not line.startswith(("{", "["))))
    finally:
        procs.stop_all()
        run.drop_database()
        run.flush_redis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
