"""Soak and faults: mixed traffic through two gateway processes, a Celery worker and beat, while
PostgreSQL restarts, Redis restarts, a worker is killed in the middle of its tasks, and the
provider fails and hangs. Bounded (about 6 minutes by default) and on loopback only.

    .venv/bin/python bench/soak.py [--phase-seconds 30] [--concurrency 12]

It needs root on a machine where PostgreSQL, Redis and RabbitMQ run as on these machines (the
restart commands are the ones this workplace documents), and it RESTARTS PostgreSQL and Redis:
never run it next to anything else using them. It uses the database ``llmp_soak`` (created and
dropped), Redis db 13, and RabbitMQ's default vhost and queue (purged at the start).

What it reports, per phase: requests, success rate, error codes, p50/p99 latency and the time to
recover after the fault; and over the whole run: acknowledged conversation records lost (a 200
to a consenting user whose record is not in the database at the end; must be 0) and duplicate
executions of an erasure or a backup (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench

ROOT = bench.ROOT
PYTHON = bench.PYTHON
SOAK_DB = "llmp_soak"
REDIS_URL = "redis://127.0.0.1:6379/13"
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
USERS = [f"soak-user-{i}" for i in range(40)]
ERASED = [f"soak-erased-{i}" for i in range(8)]
CONVERSATIONS_PER_ERASED = 10000  # makes each erasure take long enough to be killed mid-way

PG_START = "pg_ctlcluster --skip-systemctl-redirect {v} main start"
PG_STOP = "pg_ctlcluster --skip-systemctl-redirect {v} main stop -m fast"
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sh(command: str, *, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode:
        raise RuntimeError(f"{command!r} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def pg_version() -> str:
    return sh("ls /etc/postgresql").split()[0]


def pg_ready() -> bool:
    return subprocess.run("pg_isready -h 127.0.0.1 -p 5432 -q", shell=True).returncode == 0


def redis_ready() -> bool:
    return (
        subprocess.run(
            "redis-cli -h 127.0.0.1 ping", shell=True, capture_output=True, text=True
        ).stdout.strip()
        == "PONG"
    )


def wait_until(check, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come back within {seconds:.0f} s")


# ---------------------------------------------------------------------------------------------
# Set-up


def soak_env(tmp: Path, moto_url: str) -> dict[str, str]:
    env = bench.gateway_env(tmp / "data", db_pool=True)
    (tmp / "data").mkdir(exist_ok=True)
    env.update(
        {
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{SOAK_DB}",
            "REDIS_URL": REDIS_URL,
            "CELERY_BROKER_URL": BROKER_URL,
            "PYTHONPATH": str(ROOT),
            # A worker killed in the middle of a request's execution: its claim is taken over
            # after a minute instead of the default.
            "LLMP_PRIVACY_STALL_MINUTES": "1",
            # Backups go to an S3-compatible endpoint on loopback (moto's server).
            "LLMP_BACKUP_BUCKET": "llmp-soak-backups",
            "LLMP_BACKUP_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "soak",
            "AWS_SECRET_ACCESS_KEY": "soak-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "LLMP_USAGE_FLUSH_MS": "200",
        }
    )
    return env


def soak_config(primary_url: str, fallback_url: str) -> dict:
    config = bench.gateway_config(primary_url, fallback_url)
    tier = config["tiers"][0]
    tier["name"] = "soak"
    config["tiers"].append(
        {**tier, "name": "soak-unbudgeted", "daily_budget": 0, "monthly_budget": 0}
    )
    config["providers"] = [
        {
            "name": "primary",
            "kind": "openai",
            "base_url": primary_url,
            "timeouts": {"connect": 2, "read": 5},
        },
        {"name": "secondary", "kind": "openai", "base_url": fallback_url},
    ]
    config["deployments"] = [
        {
            "name": "primary",
            "provider": "primary",
            "model": "mock-model",
            "price": {"input_per_1k": 0.0005, "output_per_1k": 0.0015},
            "timeouts": {"total": 4, "first_token": 4, "idle": 4},
            "retries": {"max_attempts": 2, "backoff_base": 0.1, "backoff_max": 0.5},
            "breaker": {"failure_threshold": 5, "recovery": 5},
        },
        {
            "name": "secondary",
            "provider": "secondary",
            "model": "mock-model",
            "price": {"input_per_1k": 0.0005, "output_per_1k": 0.0015},
        },
    ]
    config["model_aliases"] = [
        {
            "name": "default",
            "description": "Soak: primary with a fallback",
            "versions": [
                {
                    "version": "v1",
                    "deployment": "primary",
                    "weight": 100,
                    "params": {"temperature": 0.7},
                }
            ],
            "fallbacks": ["secondary"],
        }
    ]
    for t in config["tiers"]:
        t["allowed_aliases"] = ["default"]
    return config


_SETUP = """
import json
from gateway import services
from llmplatform.actors import Actor
from gateway.models import Tier
from llmplatform.models import Tenant
out = {}
for slug, tier in (("soak", "soak"), ("soak-free", "soak-unbudgeted")):
    tenant = Tenant.objects.filter(slug=slug).first() or services.tenant_create(
        actor=Actor.system("soak"), name=slug, slug=slug, tier=Tier.objects.get(name=tier))
    key, plaintext = services.api_key_create(actor=Actor.system("soak"), tenant=tenant, name="soak",
                                             scopes=["chat", "models:read", "privacy"])
    out[slug] = plaintext
print("SOAKKEYS " + json.dumps(out))
"""

# Subjects to erase during the worker-kill phase, each with many stored conversations so that
# an erasure is still running when the worker is killed; their requests are approved (verified
# by the tenant's app), so the worker executes them.
_ERASURES = """
import json
from datetime import timedelta
from django.utils import timezone
from llmplatform.models import Tenant
from privacy import crypto, services
from privacy.subject_requests import services as request_services
from llmplatform.actors import Actor
from privacy.models import Conversation, SubjectRequest
tenant = Tenant.objects.get(slug="soak")
ids = []
for external_id in %s:
    subject = services.subject_get_or_create(tenant=tenant, external_id=external_id)
    ciphertext = crypto.encrypt(subject, "soak", aad=crypto.record_aad(subject, "prompt"))
    Conversation.objects.bulk_create([
        Conversation(tenant=tenant, subject=subject, alias="default", request_id=f"seed-{i}",
                     prompt_ciphertext=ciphertext, response_ciphertext=ciphertext,
                     key_id=crypto.ciphertext_key_id(ciphertext),
                     expires_at=timezone.now() + timedelta(days=30))
        for i in range(%d)], batch_size=1000)
    request = request_services.subject_request_create(
        tenant=tenant, kind=SubjectRequest.Kind.ERASURE, law="gdpr",
        source=SubjectRequest.Source.API, external_id=external_id, actor=Actor.system("soak"))
    ids.append(request.pk)
print("SOAKERASURES " + json.dumps(ids))
"""

_APPROVE = """
from privacy.subject_requests import services as request_services
from llmplatform.actors import Actor
from privacy.models import SubjectRequest
for request in SubjectRequest.objects.filter(pk__in=%s):
    request_services.subject_request_approve(actor=Actor.system("soak-officer"), request=request)
"""


# ---------------------------------------------------------------------------------------------
# Traffic


@dataclass
class Result:
    started: float
    ended: float
    status: int
    code: str
    request_id: str
    user: str
    tenant: str
    stream: bool
    degraded: bool = False


@dataclass
class Traffic:
    gateways: list[str]
    keys: dict[str, str]
    concurrency: int
    results: list[Result] = field(default_factory=list)
    running: bool = True

    async def worker(self, index: int, client: httpx.AsyncClient) -> None:
        n = index
        while self.running:
            n += self.concurrency
            tenant = "soak" if n % 2 == 0 else "soak-free"
            user = USERS[n % len(USERS)]
            stream = n % 5 == 0
            url = self.gateways[n % len(self.gateways)] + "/v1/chat/completions"
            body = {
                "model": "default",
                "user": user,
                "stream": stream,
                "messages": [{"role": "user", "content": f"Soak question {n}: what is 2+2?"}],
            }
            started = time.monotonic()
            status, code, request_id, degraded = 0, "", "", False
            try:
                headers = {"Authorization": f"Bearer {self.keys[tenant]}"}
                if stream:
                    async with client.stream("POST", url, json=body, headers=headers) as r:
                        status = r.status_code
                        request_id = r.headers.get("x-request-id", "")
                        text = (await r.aread()).decode(errors="replace")
                        if status == 200 and ('"error"' in text or "[DONE]" not in text):
                            status, code = 599, "stream_broken"
                        elif status != 200:
                            code = _error_code(text)
                else:
                    r = await client.post(url, json=body, headers=headers)
                    status, request_id = r.status_code, r.headers.get("x-request-id", "")
                    if status == 200:
                        degraded = r.json().get("status") == "degraded"
                    else:
                        code = _error_code(r.text)
            except httpx.HTTPError as exc:
                status, code = 0, type(exc).__name__
            self.results.append(
                Result(
                    started,
                    time.monotonic(),
                    status,
                    code,
                    request_id,
                    user,
                    tenant,
                    stream,
                    degraded,
                )
            )

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency * 2)
        async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
            await asyncio.gather(*(self.worker(i, client) for i in range(self.concurrency)))


def _error_code(text: str) -> str:
    with contextlib.suppress(Exception):
        return json.loads(text)["error"]["code"] or "error"
    return "unparsed"


# ---------------------------------------------------------------------------------------------
# Run


@dataclass
class Phase:
    name: str
    started: float = 0.0
    fault_ended: float = 0.0  # when the fault was removed (the service is back)
    ended: float = 0.0
    notes: list[str] = field(default_factory=list)


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def summarise(phase: Phase, results: list[Result]) -> dict:
    window = [r for r in results if phase.started <= r.started < phase.ended]
    ok = [r for r in window if r.status == 200]
    codes = Counter(f"{r.status} {r.code}".strip() for r in window if r.status != 200)
    recovery = None
    if phase.fault_ended:
        after = sorted(
            (r for r in results if r.started >= phase.fault_ended), key=lambda r: r.started
        )
        streak = 0
        for r in after:
            streak = streak + 1 if r.status == 200 else 0
            if streak == 20:
                first = after[after.index(r) - 19]
                recovery = max(first.started - phase.fault_ended, 0.0)
                break
    latencies = [(r.ended - r.started) * 1000 for r in window]
    return {
        "phase": phase.name,
        "requests": len(window),
        "success_rate": len(ok) / len(window) if window else None,
        "errors": dict(codes.most_common()),
        "degraded_200": sum(r.degraded for r in ok),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "recovery_s": recovery,
        "notes": phase.notes,
    }


class Soak:
    def __init__(self, args, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.procs = bench.Processes(tmp)
        self.phases: list[Phase] = []
        self.worker: subprocess.Popen | None = None

    # -- processes ----------------------------------------------------------------------
    def start_worker(self) -> None:
        self.worker = self.procs.start(
            f"worker-{len(self.procs.started)}",
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "llmplatform",
                "worker",
                "-c",
                "2",
                "-l",
                "info",
                "-n",
                f"soak{len(self.procs.started)}@%h",
            ],
            env=self.env,
            cwd=ROOT,
        )

    def manage(self, *args: str, timeout: float = 300) -> str:
        return bench.manage(list(args), self.env, timeout=timeout)

    def setup(self) -> None:
        self.moto_port = bench.free_port()
        self.procs.start(
            "moto",
            [
                str(Path(PYTHON).parent / "moto_server"),
                "-H",
                "127.0.0.1",
                "-p",
                str(self.moto_port),
            ],
        )
        self.primary_port, self.fallback_port = bench.free_port(), bench.free_port()
        for name, port in (("primary", self.primary_port), ("secondary", self.fallback_port)):
            self.procs.start(
                name, [PYTHON, str(ROOT / "bench" / "mock_upstream.py"), "--port", str(port)]
            )
        self.env = soak_env(self.tmp, f"http://127.0.0.1:{self.moto_port}")
        sh(
            f"psql -h 127.0.0.1 -U postgres -d postgres -qc "
            f"'DROP DATABASE IF EXISTS {SOAK_DB} WITH (FORCE)' -c 'CREATE DATABASE {SOAK_DB}'"
        )
        sh("redis-cli -n 13 flushdb")
        log("migrating")
        self.manage("migrate", "--noinput", timeout=600)
        config = self.tmp / "soak.json"
        config.write_text(
            json.dumps(
                soak_config(
                    f"http://127.0.0.1:{self.primary_port}/v1",
                    f"http://127.0.0.1:{self.fallback_port}/v1",
                )
            )
        )
        self.manage("apply_config", str(config))
        out = self.manage("shell", "-c", _SETUP)
        self.keys = json.loads(
            next(line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("SOAKKEYS "))
        )
        self.manage(
            "shell",
            "-c",
            "import boto3, os; boto3.client('s3', endpoint_url=os.environ"
            "['LLMP_BACKUP_ENDPOINT_URL']).create_bucket(Bucket=os.environ"
            "['LLMP_BACKUP_BUCKET'])",
        )
        out = self.manage(
            "shell", "-c", _ERASURES % (json.dumps(ERASED), CONVERSATIONS_PER_ERASED), timeout=600
        )
        self.erasure_ids = json.loads(
            next(
                line.split(" ", 1)[1]
                for line in out.splitlines()
                if line.startswith("SOAKERASURES ")
            )
        )
        subprocess.run(
            [PYTHON, "-m", "celery", "-A", "llmplatform", "purge", "-f"],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )
        self.gateways = []
        for i in range(2):
            port = bench.free_port()
            process = self.procs.start(
                f"gateway-{i}",
                [
                    PYTHON,
                    "-m",
                    "uvicorn",
                    "llmplatform.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                env=self.env,
                cwd=ROOT,
            )
            bench.wait_ready(
                f"gateway-{i}", f"http://127.0.0.1:{port}/healthz", process, self.procs, 90
            )
            self.gateways.append(f"http://127.0.0.1:{port}")
        self.start_worker()
        self.procs.start(
            "beat",
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "llmplatform",
                "beat",
                "-s",
                str(self.tmp / "beat-schedule"),
                "-l",
                "info",
            ],
            env=self.env,
            cwd=ROOT,
        )
        with httpx.Client(timeout=10) as client:
            for user in USERS:
                r = client.post(
                    f"{self.gateways[0]}/v1/privacy/subjects/{user}/consent",
                    json={"purpose": "store_conversations", "granted": True},
                    headers={"Authorization": f"Bearer {self.keys['soak']}"},
                )
                r.raise_for_status()
                r = client.post(
                    f"{self.gateways[0]}/v1/privacy/subjects/{user}/consent",
                    json={"purpose": "store_conversations", "granted": True},
                    headers={"Authorization": f"Bearer {self.keys['soak-free']}"},
                )
                r.raise_for_status()

    # -- faults -------------------------------------------------------------------------
    def upstream_mode(self, mode: str) -> None:
        httpx.post(f"http://127.0.0.1:{self.primary_port}/control", content=mode, timeout=5)

    async def phase(self, name: str, fault=None, heal=None, *, fault_seconds: float = 0) -> None:
        phase = Phase(name, started=time.monotonic())
        self.phases.append(phase)
        log(f"phase {name}")
        if fault is not None:
            await asyncio.to_thread(fault, phase)
            await asyncio.sleep(fault_seconds or self.args.phase_seconds)
            await asyncio.to_thread(heal, phase)
            phase.fault_ended = time.monotonic()
        await asyncio.sleep(self.args.phase_seconds)
        phase.ended = time.monotonic()

    def redis_down(self, phase: Phase) -> None:
        sh("redis-cli -h 127.0.0.1 shutdown nosave", check=False)
        phase.notes.append(
            "Redis shut down (it keeps nothing on disk: counters, cache and "
            "breaker states are lost)"
        )

    def redis_up(self, phase: Phase) -> None:
        sh(REDIS_START)
        wait_until(redis_ready, 30, "Redis")

    def pg_down(self, phase: Phase) -> None:
        sh(PG_STOP.format(v=pg_version()))

    def pg_up(self, phase: Phase) -> None:
        sh(PG_START.format(v=pg_version()))
        wait_until(pg_ready, 60, "PostgreSQL")

    def kill_worker(self, phase: Phase) -> None:
        """Queue the erasures and a backup, then SIGKILL the worker as soon as it is executing
        them (an erasure in progress, or the backup running)."""
        trigger = subprocess.Popen(
            [
                PYTHON,
                "manage.py",
                "shell",
                "-c",
                _APPROVE % json.dumps(self.erasure_ids)
                + "\nfrom deployments.backups import tasks\ntasks.run_scheduled_backup.delay()\n",
            ],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        busy = ["", ""]
        while time.monotonic() < deadline:
            busy = [
                rows[0][0] if rows else "0"
                for rows in (
                    self.query(
                        "SELECT count(*) FROM privacy_subjectrequest WHERE state='in_progress'"
                    ),
                    self.query("SELECT count(*) FROM backups_backup WHERE state='running'"),
                )
            ]
            if busy != ["0", "0"]:
                break
            time.sleep(0.02)
        os.killpg(self.worker.pid, signal.SIGKILL)
        trigger.wait(60)
        phase.notes.append(
            f"worker killed (SIGKILL) while running {busy[0]} erasure(s) and {busy[1]} backup(s)"
        )

    def restart_worker(self, phase: Phase) -> None:
        self.start_worker()

    # -- checks -------------------------------------------------------------------------
    def query(self, sql: str) -> list[list[str]]:
        out = sh(f"psql -h 127.0.0.1 -U postgres -d {SOAK_DB} -AtF '|' -c \"{sql}\"")
        return [line.split("|") for line in out.splitlines() if line]

    def wait_for_erasures(self, seconds: float) -> dict:
        deadline = time.monotonic() + seconds
        ids = ",".join(map(str, self.erasure_ids))
        while time.monotonic() < deadline:
            rows = self.query(
                f"SELECT state, count(*) FROM privacy_subjectrequest WHERE id IN "
                f"({ids}) GROUP BY state"
            )
            states = {state: int(n) for state, n in rows}
            if states.get("completed", 0) == len(self.erasure_ids):
                break
            # What beat does every five minutes, without waiting for it.
            self.manage(
                "shell",
                "-c",
                "from privacy.request_tasks import resume_stalled_subject_requests as t; t.delay()",
                timeout=60,
            )
            time.sleep(10)
        receipts = self.query(
            f"SELECT request_id, count(*) FROM privacy_erasurereceipt WHERE "
            f"request_id IN ({ids}) GROUP BY request_id"
        )
        completes = self.query(
            f"SELECT object_id, count(*) FROM llmplatform_auditevent WHERE "
            f"action='subject_request.complete' AND object_id IN "
            f"({','.join(repr(str(i)) for i in self.erasure_ids)}) "
            f"GROUP BY object_id"
        )
        return {
            "requests": len(self.erasure_ids),
            "states": states,
            "receipts": sum(int(n) for _, n in receipts),
            "duplicate_receipts": sum(int(n) - 1 for _, n in receipts if int(n) > 1),
            "duplicate_completions": sum(int(n) - 1 for _, n in completes if int(n) > 1),
            "conversations_left": int(
                self.query(
                    "SELECT count(*) FROM privacy_conversation c JOIN privacy_datasubject s ON "
                    "s.id = c.subject_id WHERE s.external_id LIKE 'soak-erased-%'"
                )[0][0]
            ),
        }

    def backups(self) -> dict:
        try:
            rows = self.query("SELECT state, count(*) FROM backups_backup GROUP BY state")
            starts = self.query(
                "SELECT object_id, count(*) FROM llmplatform_auditevent WHERE "
                "action='backups.backup.start' GROUP BY object_id"
            )
        except RuntimeError as exc:
            return {"error": str(exc).splitlines()[0]}
        return {
            "states": {state: int(n) for state, n in rows},
            "duplicate_executions": sum(int(n) - 1 for _, n in starts if int(n) > 1),
        }

    def lost_records(self, results: list[Result]) -> dict:
        acknowledged = {
            r.request_id for r in results if r.status == 200 and not r.degraded and r.request_id
        }
        deadline = time.monotonic() + 120
        while True:
            stored = {
                row[0]
                for row in self.query(
                    "SELECT request_id FROM privacy_conversation WHERE request_id LIKE 'req_%'"
                )
            }
            missing = acknowledged - stored
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(5)
        return {
            "acknowledged": len(acknowledged),
            "stored": len(acknowledged & stored),
            "lost": len(missing),
        }

    # -- the run ------------------------------------------------------------------------
    async def traffic_and_faults(self) -> list[Result]:
        traffic = Traffic(self.gateways, self.keys, self.args.concurrency)
        runner = asyncio.create_task(traffic.run())
        s = self.args.phase_seconds
        await self.phase("baseline")
        await self.phase(
            "provider fails (500s)",
            lambda p: self.upstream_mode("fail"),
            lambda p: self.upstream_mode("ok"),
        )
        await self.phase(
            "provider hangs",
            lambda p: self.upstream_mode("hang"),
            lambda p: self.upstream_mode("ok"),
        )
        await self.phase("Redis restart", self.redis_down, self.redis_up, fault_seconds=min(s, 15))
        await self.phase("PostgreSQL restart", self.pg_down, self.pg_up, fault_seconds=min(s, 15))
        await self.phase(
            "worker killed mid-task", self.kill_worker, self.restart_worker, fault_seconds=3
        )
        traffic.running = False
        await runner
        return traffic.results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase-seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=12)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/soak.py restarts PostgreSQL and Redis: run it as root", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="llmp-soak-"))
    soak = Soak(args, tmp)
    started = time.time()
    try:
        soak.setup()
        results = asyncio.run(soak.traffic_and_faults())
        log("traffic stopped; checking records, erasures and backups")
        report = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
            "commit": bench._git_head(),
            "phase_seconds": args.phase_seconds,
            "concurrency": args.concurrency,
            "phases": [summarise(p, results) for p in soak.phases],
            "conversation_records": soak.lost_records(results),
            "erasures": soak.wait_for_erasures(240),
            "backups": soak.backups(),
        }
    finally:
        # Services must be up whatever happened.
        if not redis_ready():
            sh(REDIS_START, check=False)
        if not pg_ready():
            sh(PG_START.format(v=pg_version()), check=False)
        soak.procs.stop_all()
        with contextlib.suppress(Exception):
            sh(
                f"psql -h 127.0.0.1 -U postgres -d postgres -qc "
                f"'DROP DATABASE IF EXISTS {SOAK_DB} WITH (FORCE)'"
            )
    out = ROOT / "bench" / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(render(report))
    print(f"\nResults: {out.relative_to(ROOT)}; logs in {tmp}")
    failed = (
        report["conversation_records"]["lost"]
        or report["erasures"]["duplicate_receipts"]
        or report["erasures"]["duplicate_completions"]
        or report["backups"].get("duplicate_executions")
    )
    return 1 if failed else 0


def render(report: dict) -> str:
    def f(value, digits=1):
        return "-" if value is None else f"{value:,.{digits}f}"

    lines = [
        "| phase | requests | success | p50 ms | p99 ms | recovery s | errors seen |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in report["phases"]:
        errors = ", ".join(f"{k} ×{v}" for k, v in p["errors"].items()) or "none"
        if p["degraded_200"]:
            errors += f"; {p['degraded_200']} degraded 200s"
        rate = "-" if p["success_rate"] is None else f"{p['success_rate'] * 100:.1f}%"
        lines.append(
            f"| {p['phase']} | {p['requests']} | {rate} | {f(p['p50_ms'])} | "
            f"{f(p['p99_ms'])} | {f(p['recovery_s'])} | {errors} |"
        )
    records, erasures = report["conversation_records"], report["erasures"]
    lines += [
        "",
        f"- Conversation records: {records['acknowledged']} acknowledged, {records['stored']} "
        f"stored, **{records['lost']} lost**.",
        f"- Erasures: {erasures['requests']} requests, states {erasures['states']}, "
        f"{erasures['receipts']} receipts, **{erasures['duplicate_receipts']} duplicate "
        f"receipts, {erasures['duplicate_completions']} duplicate completions**, "
        f"{erasures['conversations_left']} conversations of erased subjects left.",
        f"- Backups: {report['backups']} (duplicate executions = backups started more than once).",
    ]
    for p in report["phases"]:
        for note in p["notes"]:
            lines.append(f"- {p['phase']}: {note}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
