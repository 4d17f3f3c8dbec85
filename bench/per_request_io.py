"""What one request costs Redis and PostgreSQL: round trips and commands, statements and rows
written, for a plain answer, a streamed one, a cache hit and an answer stored with the user's
consent. The figures behind docs/capacity.md.

    .venv/bin/python bench/per_request_io.py [--requests 300] [--concurrency 8]

It starts the mock upstream and this gateway in its production shape (PostgreSQL, Redis,
``uvicorn --workers 2``, the benchmark's tier and aliases, as ``bench/run.py`` does), then for
each kind of request sends ``--requests`` of them and counts, over that run and the second after
it (usage records and limit corrections are written in batches after the answers):

- Redis, as the server saw it: ``MONITOR`` on the gateway's database, top-level commands (what
  clients sent) and the commands Lua scripts ran inside them.
- Redis round trips, as the gateway sent them: each worker counts its connections' writes (one
  per command, one per pipeline), through a ``sitecustomize`` this script puts on the gateway's
  ``PYTHONPATH`` (nothing of it is in the project).
- PostgreSQL: rows added to the tables a request writes (``count(*)`` before and after);
  statements, from the server's own log (``log_statement = all`` set on this
  database only, for the run) by kind (SELECT, INSERT, UPDATE, DELETE, BEGIN/COMMIT, ...), and
  rows written and transactions committed (``pg_stat_database``), per table
  (``pg_stat_user_tables``).

It uses the database ``llmp_scale`` (created and dropped) and a redis-server of its own on a free
loopback port (so Redis's CPU and commands are the gateway's alone); it needs to read
PostgreSQL's log (``--pg-log``, this machine's by default). Everything stays on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench

ROOT = bench.ROOT
PYTHON = bench.PYTHON
DB = "llmp_scale"
REDIS_DB = 0  # of the script's own redis-server
PG_LOG = "/var/log/postgresql/postgresql-15-main.log"
SETTLE_SECONDS = 2.5  # the usage writer flushes every second (LLMP_USAGE_FLUSH_MS)
PG_STATS_SETTLE_SECONDS = 11.0
USER = "io-user"

# Counts each Redis write (a command, or a whole pipeline) per process; SIGUSR1 dumps the count.
SITECUSTOMIZE = """
import json, os, signal
_count = {"round_trips": 0}
def _dump(*_):
    path = os.path.join(os.environ["LLMP_IO_PROBE_DIR"], f"{os.getpid()}.json")
    with open(path, "w") as f:
        json.dump(_count, f)
signal.signal(signal.SIGUSR1, _dump)
def _wrap(cls, is_async):
    original = cls.send_packed_command
    if is_async:
        async def send(self, *a, **k):
            _count["round_trips"] += 1
            return await original(self, *a, **k)
    else:
        def send(self, *a, **k):
            _count["round_trips"] += 1
            return original(self, *a, **k)
    cls.send_packed_command = send
try:
    import redis.asyncio.connection as _a, redis.connection as _s
    _wrap(_a.AbstractConnection, True)
    _wrap(_s.AbstractConnection, False)
except Exception:
    pass
"""

_KEY = """
from gateway import services
from llmplatform.actors import Actor
from gateway.models import Tier
from llmplatform.models import Tenant
tenant = Tenant.objects.filter(slug="bench").first() or services.tenant_create(
    actor=Actor.system("bench"), name="Benchmark", slug="bench",
    tier=Tier.objects.get(name="bench"))
key, plaintext = services.api_key_create(actor=Actor.system("bench"), tenant=tenant, name="io",
                                         scopes=["chat", "models:read", "privacy"])
print("IOKEY " + plaintext)
"""


def log(message: str) -> None:
    print(f"[io {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def psql(sql: str, db: str = DB) -> list[list[str]]:
    done = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-AtF", "|", "-c", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.split("|") for line in done.stdout.splitlines() if line]


def pg_counters() -> dict[str, int]:
    row = psql(
        "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database "
        f"WHERE datname = '{DB}'"
    )[0]
    return dict(zip(("commits", "inserted", "updated", "deleted"), map(int, row), strict=True))


COUNTED_TABLES = ("gateway_usagerecord", "privacy_conversation", "llmplatform_auditevent")


def row_counts() -> Counter[str]:
    """Exact, unlike pg_stat_*: the rows in the tables a request may add to."""
    sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in COUNTED_TABLES)
    return Counter({name: int(n) for name, n in psql(sql)})


def row_sizes() -> dict[str, float]:
    """Bytes per row on disk, indexes and TOAST included, of the tables that grow per request."""
    out = {}
    for name in COUNTED_TABLES[:2]:
        ((total, count),) = psql(f"SELECT pg_total_relation_size('{name}'), count(*) FROM {name}")
        if int(count):
            out[name] = round(int(total) / int(count))
    return out


def table_writes() -> Counter[str]:
    rows = psql("SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables")
    return Counter({name: int(n) for name, n in rows})


_STATEMENT = re.compile(rf"@{DB} LOG:  (?:statement|execute [^:]*): \s*(\w+)", re.IGNORECASE)


def statements_since(offset: int, pg_log: Path) -> Counter[str]:
    with pg_log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    kinds: Counter[str] = Counter()
    for match in _STATEMENT.finditer(text):
        word = match.group(1).upper()
        kinds["BEGIN/COMMIT" if word in ("BEGIN", "COMMIT", "ROLLBACK") else word] += 1
    return kinds


class Monitor:
    """``redis-cli monitor``, kept to the gateway's database."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Monitor:
        self.file = self.path.open("wb")
        self.process = subprocess.Popen(
            ["redis-cli", "-u", self.url, "monitor"], stdout=self.file, start_new_session=True
        )
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        time.sleep(0.3)
        self.process.terminate()
        self.process.wait(5)
        self.file.close()

    def counts(self) -> tuple[Counter[str], Counter[str]]:
        top: Counter[str] = Counter()
        lua: Counter[str] = Counter()
        pattern = re.compile(rf'^\d+\.\d+ \[{REDIS_DB} (\S+)\] "(\w+)"')
        for line in self.path.read_text(errors="replace").splitlines():
            match = pattern.match(line)
            if match:
                (lua if match.group(1) == "lua" else top)[match.group(2).upper()] += 1
        return top, lua


def round_trips(pids: list[int], probe_dir: Path) -> int:
    for path in probe_dir.glob("*.json"):
        path.unlink()
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while len(list(probe_dir.glob("*.json"))) < len(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return sum(json.loads(p.read_text())["round_trips"] for p in probe_dir.glob("*.json"))


async def send(url: str, key: str, bodies: list[dict], concurrency: int) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    queue = list(bodies)
    headers = {"Authorization": f"Bearer {key}"}

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            data = queue.pop()
            try:
                if data.get("stream"):
                    async with client.stream("POST", url, json=data, headers=headers) as r:
                        text = (await r.aread()).decode()
                        ok = r.status_code == 200 and "[DONE]" in text
                else:
                    r = await client.post(url, json=data, headers=headers)
                    ok = r.status_code == 200
            except httpx.HTTPError as exc:  # counted, and shown in the outcomes
                outcomes[type(exc).__name__] += 1
                continue
            outcomes["ok" if ok else f"status {r.status_code}"] += 1
            outcomes[f"x-cache {r.headers.get('x-cache', '-')}"] += 1

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return outcomes


def kinds(n: int) -> dict[str, list[dict]]:
    def chat(i: int, **extra: object) -> dict:
        return {
            "model": "default",
            "temperature": 0.7,
            "messages": [{"role": "user", "content": f"{bench.PROMPT} ({i})"}],
            **extra,
        }

    cached = {
        "model": "default",
        "temperature": 0,
        "messages": [{"role": "user", "content": bench.PROMPT + " (cache)"}],
    }
    return {
        "plain": [chat(i) for i in range(n)],
        "streamed": [chat(i, stream=True) for i in range(n)],
        "cache hit": [dict(cached) for _ in range(n)],
        "consent storage": [chat(i, user=USER) for i in range(n)],
    }


def pg_backends() -> list[int]:
    return [int(pid) for (pid,) in psql(f"SELECT pid FROM pg_stat_activity WHERE datname = '{DB}'")]


def redis_cpu(url: str) -> float:
    import redis

    with redis.Redis.from_url(url) as client:
        info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def measure(args, tmp: Path, url: str, key: str, pids: list[int], probe_dir: Path) -> list[dict]:
    """Each kind twice: once under MONITOR (which commands, top level or inside Lua), once
    without it (round trips, statements, rows, CPU), since MONITOR costs Redis CPU itself."""
    pg_log = Path(args.pg_log)
    rows = []
    for name, bodies in kinds(args.requests).items():
        n = len(bodies)
        if name == "cache hit":  # the entry the hits read
            asyncio.run(send(url, key, bodies[:1], 1))
        time.sleep(SETTLE_SECONDS)
        with Monitor(tmp / f"monitor-{name.replace(' ', '-')}.log", args.redis_url) as monitor:
            asyncio.run(send(url, key, bodies, args.concurrency))
            time.sleep(SETTLE_SECONDS)
        top, lua = monitor.counts()
        # pg_stat_* lag: a backend reports its counts at most once a second, and an idle one
        # only after PGSTAT_IDLE_INTERVAL (10 s).
        time.sleep(PG_STATS_SETTLE_SECONDS)
        before_pg, before_tables, before_rows = pg_counters(), table_writes(), row_counts()
        before_rt = round_trips(pids, probe_dir)
        backends = pg_backends()
        before_cpu = (
            bench._cpu_by_pid(pids),
            bench._cpu_by_pid(backends),
            redis_cpu(args.redis_url),
        )
        offset = pg_log.stat().st_size
        started = time.monotonic()
        outcomes = asyncio.run(send(url, key, bodies, args.concurrency))
        seconds = time.monotonic() - started
        time.sleep(SETTLE_SECONDS)
        rt = round_trips(pids, probe_dir) - before_rt
        added = row_counts() - before_rows
        statements = statements_since(offset, pg_log)
        after_cpu = (
            bench._cpu_by_pid(pids),
            bench._cpu_by_pid(sorted(set(backends) | set(pg_backends()))),
            redis_cpu(args.redis_url),
        )
        time.sleep(PG_STATS_SETTLE_SECONDS)
        after_pg, after_tables = pg_counters(), table_writes()
        writes = after_tables - before_tables
        rows.append(
            {
                "kind": name,
                "requests": n,
                "outcomes": dict(outcomes),
                "seconds": round(seconds, 2),
                "redis_round_trips": rt / n,
                "redis_commands": sum(top.values()) / n,
                "redis_lua_commands": sum(lua.values()) / n,
                "redis_by_command": {k: v / n for k, v in top.most_common()},
                "redis_inside_lua": {k: v / n for k, v in lua.most_common()},
                "redis_cpu_ms": (after_cpu[2] - before_cpu[2]) * 1000 / n,
                "pg_statements": sum(statements.values()) / n,
                "pg_by_kind": {k: v / n for k, v in statements.most_common()},
                "pg_commits": (after_pg["commits"] - before_pg["commits"]) / n,
                "pg_rows_written": sum(
                    after_pg[k] - before_pg[k] for k in ("inserted", "updated", "deleted")
                )
                / n,
                "pg_rows_by_table": {k: v / n for k, v in writes.most_common() if v},
                "rows_added": {k: v / n for k, v in added.most_common()},
                "pg_backend_cpu_ms": bench.cpu_used_s(before_cpu[1], after_cpu[1]) * 1000 / n,
                "gateway_cpu_ms": bench.cpu_used_s(before_cpu[0], after_cpu[0]) * 1000 / n,
            }
        )
        log(f"{name}: {dict(outcomes)}")
    return rows


def table(rows: list[dict]) -> str:
    head = (
        "| per request | Redis round trips | Redis commands (+ inside Lua) | Redis CPU ms | "
        "PG statements | PG commits | PG rows written | PG CPU ms | gateway CPU ms |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['redis_round_trips']:.2f} | {r['redis_commands']:.2f} "
            f"(+{r['redis_lua_commands']:.1f}) | {r['redis_cpu_ms']:.3f} | "
            f"{r['pg_statements']:.2f} | {r['pg_commits']:.3f} | {r['pg_rows_written']:.2f} | "
            f"{r['pg_backend_cpu_ms']:.3f} | {r['gateway_cpu_ms']:.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pg-log", default=PG_LOG)
    args = parser.parse_args()
    bench.BENCH_DB = DB
    tmp = Path(tempfile.mkdtemp(prefix="llmp-io-"))
    probe_dir = tmp / "probe"
    probe_dir.mkdir()
    (tmp / "site").mkdir()
    (tmp / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    procs = bench.Processes(tmp)
    try:
        redis_port = bench.free_port()
        procs.start(
            "redis",
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(redis_port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
            ],
        )
        args.redis_url = bench.REDIS_URL = f"redis://127.0.0.1:{redis_port}/{REDIS_DB}"
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(redis_port), "ping"], capture_output=True
            ).returncode
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        port, slow = bench.free_port(), bench.free_port()
        for name, p in (("upstream", port), ("upstream-slow", slow)):
            procs.start(name, [PYTHON, str(ROOT / "bench" / "mock_upstream.py"), "--port", str(p)])
        env = bench.gateway_env(tmp / "data", db_pool=True)
        (tmp / "data").mkdir()
        env.update(
            {
                "PYTHONPATH": f"{tmp / 'site'}:{ROOT}",
                "LLMP_IO_PROBE_DIR": str(probe_dir),
            }
        )
        bench.reset_database()
        bench.flush_redis()
        log("migrating")
        bench.manage(["migrate", "--noinput"], env, timeout=600)
        config = tmp / "gateway.json"
        config.write_text(
            json.dumps(
                bench.gateway_config(f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{slow}/v1")
            )
        )
        bench.manage(["apply_config", str(config)], env)
        out = bench.manage(["shell", "-c", _KEY], env)
        key = next(line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("IOKEY "))
        psql(f"ALTER DATABASE {DB} SET log_statement = 'all'", db="postgres")
        gport = bench.free_port()
        gateway = procs.start(
            "gateway",
            [
                PYTHON,
                "-m",
                "uvicorn",
                "llmplatform.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(gport),
                "--workers",
                "2",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
                # As bench/run.py: a busy worker must not be replaced in the middle of a run.
                "--timeout-worker-healthcheck",
                str(bench.HEALTHCHECK_SECONDS),
            ],
            env=env,
            cwd=ROOT,
        )
        base = f"http://127.0.0.1:{gport}"
        bench.wait_ready("gateway", f"{base}/healthz", gateway, procs, 90)
        pids = [p for p in bench.process_tree(gateway.pid) if p != gateway.pid]
        httpx.post(
            f"{base}/v1/privacy/subjects/{USER}/consent",
            json={"purpose": "store_conversations", "granted": True},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        ).raise_for_status()
        url = f"{base}/v1/chat/completions"
        log("warming (every worker: connections, caches, scripts)")
        asyncio.run(send(url, key, kinds(60)["plain"] + kinds(20)["streamed"], 4))
        rows = measure(args, tmp, url, key, pids, probe_dir)
        sizes = row_sizes()
    finally:
        procs.stop_all()
        with contextlib.suppress(subprocess.CalledProcessError):
            psql(f"ALTER DATABASE {DB} RESET log_statement", db="postgres")
        bench.drop_database()
    print(table(rows))
    print(f"bytes per row on disk, indexes included: {sizes}")
    results = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": bench._git_head(),
        "machine": bench._cpu_model(),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rows": rows,
        "bytes_per_row": sizes,
    }
    bench.RESULTS.mkdir(exist_ok=True)
    out_path = bench.RESULTS / f"per-request-io-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out_path.write_text(json.dumps(results, indent=2))
    log(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
