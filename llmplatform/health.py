"""Liveness and readiness. Readiness asks every registered probe (the gateway registers its
provider probe), so the kernel needs no knowledge of the apps above it."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse

from llmplatform.observability import may_observe

ReadinessProbe = Callable[[], Awaitable[tuple[bool, str]]]
_probes: dict[str, ReadinessProbe] = {}


def register_readiness_probe(name: str, probe: ReadinessProbe) -> None:
    _probes[name] = probe


async def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, "ok"
    except Exception as exc:  # any failure means not ready; the reason is reported
        return False, type(exc).__name__


def _check_cache() -> tuple[bool, str]:
    try:
        cache.set("llmp:readyz", "1", 5)
        return (cache.get("llmp:readyz") == "1"), "ok"
    except Exception as exc:
        return False, type(exc).__name__


async def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, dict[str, object]] = {}
    db_ok, db_detail = await sync_to_async(_check_database)()
    checks["database"] = {"ok": db_ok, "detail": db_detail}
    cache_ok, cache_detail = await sync_to_async(_check_cache)()
    checks["cache"] = {"ok": cache_ok, "detail": cache_detail}
    names = list(_probes)
    results = await asyncio.gather(*(_probes[n]() for n in names), return_exceptions=True)
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            checks[name] = {"ok": False, "detail": type(result).__name__}
        else:
            checks[name] = {"ok": result[0], "detail": result[1]}
    ready = all(c["ok"] for c in checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "not ready"}
    if may_observe(request):  # the details name providers, aliases and processes
        body["checks"] = checks
    return JsonResponse(body, status=200 if ready else 503)


# A worker that has run for this long without running a heartbeat (sent by beat every
# HEARTBEAT_SECONDS) is not doing its work, though its process runs.
HEARTBEAT_GRACE_FACTOR = 3


def celery_readiness(status_path: Path, now: float | None = None) -> tuple[bool, str]:
    """A supervised Celery process (worker or beat): ready while its process runs and, once it
    has run for three heartbeat intervals, while heartbeats keep arriving. The detail names its
    state, restarts and the last heartbeat's age either way."""
    from llmplatform.celery import HEARTBEAT_SECONDS
    from llmplatform.launcher import read_status
    from llmplatform.tasks import last_heartbeat

    now = time.time() if now is None else now
    status = read_status(status_path)
    if status is None:
        return False, "no status from the launcher"
    try:
        beat_at = last_heartbeat()
    except Exception as exc:  # the cache is checked on its own; say why here too
        beat_at, heard = None, f"heartbeat unknown ({type(exc).__name__})"
    else:
        heard = (
            "no heartbeat yet" if beat_at is None else f"last heartbeat {now - beat_at:.0f}s ago"
        )
    state = status.get("state")
    pid = status.get("pid")
    if state == "running" and isinstance(pid, int) and not _alive(pid):
        # Died since the launcher last looked (or the launcher itself is gone).
        return False, f"not running (pid {pid} is gone); {heard}"
    if state != "running":
        return False, f"{state}: {status.get('last_exit') or 'not running'}; {heard}"
    grace = HEARTBEAT_GRACE_FACTOR * HEARTBEAT_SECONDS
    started = status.get("started")
    running_for = now - float(started) if isinstance(started, int | float) else 0.0
    stale = beat_at is None or now - beat_at > grace
    detail = f"running (pid {status.get('pid')}, restarts {status.get('restarts')}); {heard}"
    if running_for > grace and stale:
        return False, f"{detail}: no heartbeat within {grace:.0f}s"
    return True, detail


def celery_probe(status_path: Path) -> ReadinessProbe:
    async def probe() -> tuple[bool, str]:
        return await sync_to_async(celery_readiness)(status_path)

    return probe


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs: exists and (where /proc tells) is not a zombie its parent has not
    reaped yet."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in {"Z", "X"}
