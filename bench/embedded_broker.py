"""The embedded default's Celery broker: kombu's filesystem transport (as the platform uses it,
``llmplatform.broker``) against kombu's SQLAlchemy transport on a SQLite file.

    .venv/bin/pip install sqlalchemy        # only for this comparison; not a dependency
    .venv/bin/python bench/embedded_broker.py [--tasks 300] [--latency 30] [--idle 20]

For each transport it starts a Celery worker as ``runplatform`` does (prefork, one child, 8
messages reserved ahead) on a fresh data directory, then measures: the worker's CPU while idle
(polling cost); the time one ``delay()`` takes in the producer; the latency from ``delay()`` to
the task having run, one at a time; how long the worker takes to run a batch queued at once;
and whether every task of two producers publishing at the same time ran exactly once. Prints a
table and writes JSON under ``bench/results/``. Everything runs on this machine; nothing listens
on the network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
TICKS = os.sysconf("SC_CLK_TCK")

# Runs in a producer process: publish N heartbeat tasks, print the median delay() time.
_PRODUCE = """
import sys, time, statistics, django
django.setup()
from llmplatform.tasks import heartbeat
n = int(sys.argv[1]); took = []
for _ in range(n):
    t = time.perf_counter(); heartbeat.delay(); took.append(time.perf_counter() - t)
print(json.dumps({"median_us": statistics.median(took) * 1e6}))
"""
_PRODUCE = "import json\n" + _PRODUCE

# One at a time: delay(), then wait until the shared cache shows the heartbeat ran.
_LATENCY = """
import json, sys, time, statistics, django
django.setup()
from llmplatform.tasks import heartbeat, last_heartbeat
n = int(sys.argv[1]); took = []
for _ in range(n):
    before = last_heartbeat() or 0.0
    t = time.perf_counter(); heartbeat.delay()
    while (last_heartbeat() or 0.0) <= before:
        time.sleep(0.002)
        if time.perf_counter() - t > 30: raise SystemExit("no heartbeat within 30 s")
    took.append(time.perf_counter() - t)
print(json.dumps({"median_ms": statistics.median(took) * 1e3, "max_ms": max(took) * 1e3}))
"""


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children (the prefork pool)."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def _ran(log: Path) -> int:
    text = log.read_text(errors="replace") if log.exists() else ""
    return text.count("] succeeded in ")


def measure(name: str, broker_url: str | None, args: argparse.Namespace) -> dict:
    data = Path(tempfile.mkdtemp(prefix=f"broker-{name}-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLMP_", "DATABASE_", "REDIS_", "CELERY_"))
    }
    env.update(
        {
            "LLMP_DATA_DIR": str(data),
            "DJANGO_SETTINGS_MODULE": "llmplatform.settings",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if broker_url:
        env["CELERY_BROKER_URL"] = broker_url.format(data=data)
        # The same prefetch as the embedded default's file broker. (Its polling interval stays
        # kombu's 1 s: this transport hands every transport option to create_engine, which
        # refuses polling_interval.)
        env["LLMP_CELERY_PREFETCH"] = "8"
    env.update(item.split("=", 1) for item in args.set)
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    log = data / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "llmplatform",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                "1",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    result: dict = {"transport": name}
    try:
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"{name}: the worker did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        time.sleep(2)
        before = _cpu_seconds(worker.pid)
        time.sleep(args.idle)
        result["idle_cpu_percent"] = round((_cpu_seconds(worker.pid) - before) / args.idle * 100, 2)

        def run(script: str, n: int) -> dict:
            done = subprocess.run(
                [PYTHON, "-c", script, str(n)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode:
                raise RuntimeError(f"{name}: {done.stderr[-2000:]}")
            return json.loads(done.stdout.strip().splitlines()[-1])

        latency = run(_LATENCY, args.latency)
        result["latency_median_ms"] = round(latency["median_ms"], 1)
        result["latency_max_ms"] = round(latency["max_ms"], 1)

        # A batch queued at once (the worker is told nothing until it is all queued).
        ran_before = _ran(log)
        os.kill(worker.pid, signal.SIGSTOP)
        produced = run(_PRODUCE, args.tasks)
        result["delay_median_us"] = round(produced["median_us"])
        os.kill(worker.pid, signal.SIGCONT)
        started = time.monotonic()
        while _ran(log) < ran_before + args.tasks:
            if time.monotonic() - started > 600:
                break
            time.sleep(0.05)
        took = time.monotonic() - started
        result["batch_tasks_per_s"] = round(args.tasks / took, 1)

        # Two producers at once while the worker consumes: every task must run exactly once.
        ran_before = _ran(log)
        producers = [
            subprocess.Popen(
                [PYTHON, "-c", _PRODUCE, str(args.tasks)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]
        for producer in producers:
            producer.communicate(timeout=600)
        started = time.monotonic()
        while _ran(log) < ran_before + 2 * args.tasks and time.monotonic() - started < 120:
            time.sleep(0.1)
        time.sleep(3)  # anything beyond the expected count shows as a double delivery
        text = log.read_text(errors="replace")
        result["concurrent_published"] = 2 * args.tasks
        result["concurrent_ran"] = _ran(log) - ran_before
        result["producer_errors"] = sum(1 for p in producers if p.returncode)
        result["worker_errors"] = text.count("ERROR/") + text.count("Traceback")
        result["left_behind"] = _leftovers(name, data)
    finally:
        _stop(worker.pid)
        worker.wait(timeout=20)
        shutil.rmtree(data, ignore_errors=True)
    return result


def _leftovers(name: str, data: Path) -> str:
    """What stays on disk after every message was taken."""
    if name == "filesystem":
        files = [p for folder in ("queue", "taken") for p in (data / "broker" / folder).glob("*")]
        return f"{len(files)} message files"
    import sqlite3

    with sqlite3.connect(data / "broker.sqlite3") as conn:
        rows = conn.execute("SELECT count(*) FROM kombu_message").fetchone()[0]
    return f"{rows} message rows"


def _stop(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        time.sleep(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--latency", type=int, default=30)
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for every process (e.g. "
        "LLMP_BROKER_POLL_SECONDS=0.2, LLMP_CELERY_PREFETCH=1)",
    )
    args = parser.parse_args()
    transports = [("filesystem", None)]
    try:
        import sqlalchemy  # noqa: F401
    except ImportError:
        print(
            "sqlalchemy is not installed: measuring the filesystem transport only "
            "(.venv/bin/pip install sqlalchemy to compare)",
            file=sys.stderr,
        )
    else:
        transports.append(("sqlalchemy-sqlite", "sqla+sqlite:///{data}/broker.sqlite3"))
    results = [measure(name, url, args) for name, url in transports]
    columns = [
        "transport",
        "idle_cpu_percent",
        "delay_median_us",
        "latency_median_ms",
        "latency_max_ms",
        "batch_tasks_per_s",
        "concurrent_published",
        "concurrent_ran",
        "producer_errors",
        "worker_errors",
        "left_behind",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for result in results:
        print("| " + " | ".join(str(result.get(c, "")) for c in columns) + " |")
    out = BENCH / "results" / f"embedded-broker-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"written: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
