"""Liveness and readiness. Readiness asks every registered probe (the gateway registers its
provider probe), so the kernel needs no knowledge of the apps above it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse

ReadinessProbe = Callable[[], Awaitable[tuple[bool, str]]]
_probes: dict[str, ReadinessProbe] = {}


def register_readiness_probe(name: str, probe: ReadinessProbe) -> None:
    _probes[name] = probe


async def healthz(request):
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


async def readyz(request):
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
    return JsonResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status=200 if ready else 503)
