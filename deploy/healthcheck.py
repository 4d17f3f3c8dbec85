"""Container health checks (the Dockerfile's HEALTHCHECK and compose.yaml), one per role. They
run every 30 s, so none imports Django.

    python deploy/healthcheck.py web     GET /healthz on this container answers 200
    python deploy/healthcheck.py worker  this container's Celery worker answers a ping
    python deploy/healthcheck.py beat    beat wrote its schedule file in the last 15 minutes
    python deploy/healthcheck.py         the role deploy/docker-entrypoint.sh recorded

Exit status 0 is healthy, 1 is not (with the reason on stderr, which Docker keeps in
``docker inspect``'s health log).
"""

from __future__ import annotations

import glob
import http.client
import os
import socket
import sys
import time
from pathlib import Path

# Both as deploy/docker-entrypoint.sh writes them.
ROLE_FILE = Path(os.environ.get("LLMP_ROLE_FILE", "/tmp/llmp-role"))
BEAT_SCHEDULE = os.environ.get("CELERY_BEAT_SCHEDULE", "/tmp/celerybeat-schedule")
# Beat writes its schedule at least every 3 minutes while it sends tasks (the rollout guard
# runs every 15 s, subject requests every 5 minutes): older than this, it is stuck.
BEAT_STALE_SECONDS = 15 * 60
TIMEOUT = 5.0


def health_host() -> str:
    """A Host header Django accepts: the first of ALLOWED_HOSTS (``localhost`` in the embedded
    mode's default)."""
    hosts = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
    if not hosts or hosts[0] == "*":
        return "localhost"
    host = hosts[0]
    return f"health{host}" if host.startswith(".") else host


def check_web() -> str | None:
    port = int(os.environ.get("LLMP_PORT", "8000"))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        # As the TLS proxy in front would send it, so the check does not depend on /healthz
        # staying exempt from production's HTTPS redirect (SECURE_REDIRECT_EXEMPT).
        connection.request(
            "GET", "/healthz", headers={"Host": health_host(), "X-Forwarded-Proto": "https"}
        )
        response = connection.getresponse()
    except OSError as exc:
        return f"/healthz: {type(exc).__name__}: {exc}"
    finally:
        connection.close()
    return None if response.status == 200 else f"/healthz answered {response.status}"


def setting(name: str) -> str | None:
    """``NAME``, or the content of the file ``NAME_FILE`` names, as llmplatform/env.py reads
    them (the Helm chart gives the broker's URL, which may hold a password, as a file)."""
    value = os.environ.get(name)
    if value is None and os.environ.get(f"{name}_FILE"):
        try:
            value = Path(os.environ[f"{name}_FILE"]).read_text().strip()
        except OSError:
            return None
    return value


def check_worker() -> str | None:
    from celery import Celery

    broker = setting("CELERY_BROKER_URL")
    if not broker:
        return "CELERY_BROKER_URL (or CELERY_BROKER_URL_FILE) is not set"
    name = f"celery@{socket.gethostname()}"
    replies = Celery(broker=broker).control.ping(destination=[name], timeout=TIMEOUT)
    return None if any(name in reply for reply in replies) else f"{name} did not answer a ping"


def check_beat() -> str | None:
    files = glob.glob(f"{BEAT_SCHEDULE}*")
    if not files:
        return f"no {BEAT_SCHEDULE} yet"
    age = time.time() - max(os.path.getmtime(f) for f in files)
    return None if age < BEAT_STALE_SECONDS else f"schedule last written {age:.0f} s ago"


CHECKS = {"web": check_web, "embedded": check_web, "worker": check_worker, "beat": check_beat}


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        role = argv[1]
    else:
        try:
            role = ROLE_FILE.read_text().strip()
        except OSError:
            role = "web"
    check = CHECKS.get(role)
    if check is None:  # migrate, manage, a one-off command: nothing long-running to check
        return 0
    problem = check()
    if problem:
        sys.stderr.write(f"{role}: {problem}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
