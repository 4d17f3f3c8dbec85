"""The embedded model under ``runplatform``: started, self-tested, and restarted when it dies.

- **Start**: ``python -m llmplatform.local_model_server`` with the best CPU kernels this machine
  runs. Once it answers, one tiny completion (the self-test) must come back before the platform
  says it is running. If the server crashes while starting or in the self-test (an illegal
  instruction, a segfault: kernels this CPU does not really run), the next safer CPU variant is
  tried (AVX2, then plain x86-64). If none passes, the launcher stops with a message that says
  what failed and what to do.
- **Restart**: if the server dies while the platform runs, it is started again after a backoff
  (1 s, doubling to 30 s; at most ``MAX_RESTARTS_PER_MINUTE`` starts in any minute, each logged).
  The platform keeps running meanwhile: the API answers 503 (``upstream_unavailable``, with
  ``Retry-After``) and ``/readyz`` names the local model as the part that is down.
- **Status**: the state is written to a small JSON file (``LLMP_LOCAL_MODEL_STATUS_FILE`` in
  the web processes' environment) that ``/readyz`` reads.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from llmplatform.launcher import (
    LOCAL_MODEL_CONTEXT,
    LOCAL_MODEL_ID,
    Child,
    LaunchError,
    RestartPolicy,
    Supervisor,
    log_tail,
    read_status,
    write_status,
)
from llmplatform.local_model_server import BUILTIN, llama_lib_dir

STATUS_FILE_ENV = "LLMP_LOCAL_MODEL_STATUS_FILE"
MODEL_START_TIMEOUT = 180.0
SELF_TEST_TIMEOUT = 120.0
MAX_RESTARTS_PER_MINUTE = 5
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
# A server that has run this long is healthy again: the next crash restarts it at once.
HEALTHY_AFTER = 60.0
# Exits that mean "these kernels do not run on this CPU": step down to safer ones.
_CPU_FAULTS = {-signal.SIGILL, -signal.SIGSEGV, -signal.SIGBUS}

SELF_TEST_REQUEST: dict[str, Any] = {
    "model": LOCAL_MODEL_ID,
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 4,
    "temperature": 0,
}

CommandFactory = Callable[[Path, str, str], list[str]]


def server_command(model_path: Path, url: str, cpu: str) -> list[str]:
    parts = urlsplit(url)
    return [
        sys.executable,
        "-m",
        "llmplatform.local_model_server",
        "--model",
        str(model_path),
        "--alias",
        LOCAL_MODEL_ID,
        "--n-ctx",
        str(LOCAL_MODEL_CONTEXT),
        "--cpu",
        cpu,
        "--host",
        parts.hostname or "127.0.0.1",
        "--port",
        str(parts.port or 80),
    ]


def require_runtime() -> None:
    """Raise ``LaunchError`` saying what to do when llama-cpp-python is not installed."""
    if llama_lib_dir() is None:
        raise LaunchError(
            "llama-cpp-python is not installed. Install it with `make install` (the portable "
            "build) or set LLMP_LOCAL_MODEL=off."
        )


def cpu_variants(requested: str = "auto") -> list[str]:
    """The CPU variants to try, best first (asked of a child process, so a variant library that
    misbehaves while it is scored cannot take the launcher down). A variant named by
    ``LLMP_LOCAL_MODEL_CPU`` is the only one tried."""
    if requested != "auto":
        return [requested]
    try:
        found = subprocess.run(
            [sys.executable, "-m", "llmplatform.local_model_server", "--list-cpu"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        variants = json.loads(found.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return ["auto"]
    return [v for v in variants if isinstance(v, str)] or ["auto"]


class SelfTestFailed(Exception):
    pass


def self_test(url: str, timeout: float = SELF_TEST_TIMEOUT) -> str:
    """One completion of a few tokens. Returns its text; raises ``SelfTestFailed`` saying what
    was wrong. (It also warms the model up: llama.cpp's first evaluation is the slowest.)"""
    try:
        reply = httpx.post(f"{url}/chat/completions", json=SELF_TEST_REQUEST, timeout=timeout)
    except httpx.HTTPError as exc:
        raise SelfTestFailed(f"the test completion got no answer ({type(exc).__name__})") from exc
    if reply.status_code != 200:
        raise SelfTestFailed(
            f"the test completion got HTTP {reply.status_code}: {reply.text[:300]}"
        )
    try:
        body = reply.json()
        text = body["choices"][0]["message"]["content"] or ""
        tokens = int(body["usage"]["completion_tokens"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise SelfTestFailed(
            f"the test completion is not a chat completion: {reply.text[:300]}"
        ) from exc
    if not text.strip() or tokens < 1:
        raise SelfTestFailed("the test completion came back empty")
    return text


@dataclass
class LocalModel:
    supervisor: Supervisor
    model_path: Path
    url: str
    log_path: Path
    status_path: Path
    requested_cpu: str = "auto"
    command: CommandFactory = server_command
    say: Callable[[str], None] = print
    start_timeout: float = MODEL_START_TIMEOUT
    backoff_first: float = BACKOFF_FIRST
    backoff_max: float = BACKOFF_MAX
    max_restarts_per_minute: int = MAX_RESTARTS_PER_MINUTE
    child: Child | None = None
    cpu: str = ""
    restarts: int = 0
    _variants: list[str] = field(default_factory=list)
    _next_start: float | None = None
    _started_at: float = 0.0
    _last_exit: str = ""

    def __post_init__(self) -> None:
        self._policy = RestartPolicy(
            first=self.backoff_first,
            longest=self.backoff_max,
            per_minute=self.max_restarts_per_minute,
            healthy_after=HEALTHY_AFTER,
        )

    # --- Start ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and pass its self-test, stepping down CPU variants on a crash.
        Raises ``LaunchError`` with what to do when it cannot."""
        self._policy.reset()
        self._variants = cpu_variants(self.requested_cpu)
        if self._variants == [BUILTIN]:
            self.say(
                "runplatform: warning: this llama-cpp-python build has no run-time CPU "
                "dispatch (it may be built for another CPU); make local-model-rebuild "
                "installs the portable build"
            )
        failures: list[str] = []
        for variant in self._variants:
            if self.supervisor.stop_requested.is_set():
                return
            outcome = self._start_once(variant)
            if outcome is None:
                return
            failures.append(f"{variant}: {outcome}")
            crashed = self.child is not None and self.child.process.returncode in _CPU_FAULTS
            self._drop_child()
            if not crashed:
                break  # not a CPU problem: a safer variant would fail the same way
            self.say(
                f"runplatform: the local model crashed with the {variant} CPU kernels; "
                "trying safer ones"
            )
        self._write_status("failed", detail="; ".join(failures))
        raise LaunchError(self._failure_message(failures))

    def _start_once(self, variant: str) -> str | None:
        """None when the server runs and passed its self-test, else what went wrong."""
        self._write_status("starting", cpu=variant)
        child = self.supervisor.start(
            "llama.cpp server",
            self.command(self.model_path, self.url, variant),
            log_path=self.log_path,
            restartable=True,
        )
        self.child, self.cpu, self._started_at = child, variant, time.monotonic()
        self.say(
            f"runplatform: started {child.name} (pid {child.pid}, CPU kernels {variant}, "
            f"log {self.log_path})"
        )
        try:
            self.supervisor.wait_until_answers(
                child, f"{self.url}/models", timeout=self.start_timeout
            )
        except LaunchError as exc:
            if child.process.returncode is None:
                return str(exc)  # it did not answer in time
            return f"the server {child.exit_description} while starting"
        if self.supervisor.stop_requested.is_set():
            return None
        try:
            self_test(self.url)
        except SelfTestFailed as exc:
            time.sleep(0.2)  # a crash is seen as an exit, not only as a dropped connection
            child.process.poll()
            if child.process.returncode is not None:
                return f"{exc}; the server {child.exit_description}"
            return str(exc)
        self._write_status("ready")
        return None

    def _failure_message(self, failures: Sequence[str]) -> str:
        tail = log_tail(self.log_path, 15)
        return (
            "The local model failed its start-up self-test.\n  "
            + "\n  ".join(failures)
            + f"\nIts log: {self.log_path}"
            + (f"\nThe end of the log:\n{tail}" if tail else "")
            + "\nWhat to do:"
            "\n  - run without it: LLMP_LOCAL_MODEL=off make run, then point the model alias"
            ' "default" at another provider (Admin > Model aliases, or manage.py apply_config);'
            "\n  - or choose the CPU kernels by hand: LLMP_LOCAL_MODEL_CPU=x64 make run"
            " (python -m llmplatform.local_model_server --list-cpu lists those this CPU runs);"
            "\n  - or rebuild llama-cpp-python: make local-model-rebuild."
        )

    # --- Restart ----------------------------------------------------------------------------

    def watch(self) -> None:
        """Called from the launcher's loop: notice a dead server, and start it again when its
        backoff has passed."""
        if self.supervisor.stop_requested.is_set():
            return
        if self.child is not None:
            if self.child.process.poll() is not None:
                self._after_exit()
            return
        now = time.monotonic()
        start, self._next_start = self._policy.may_start(
            self._next_start, now, "the local model", self.say
        )
        if not start:
            return
        self.restarts += 1
        outcome = self._start_once(self._variants[0] if self._variants else self.cpu)
        if outcome is None:
            assert self.child is not None
            self.say(
                f"runplatform: the local model is back (restart {self.restarts}, "
                f"pid {self.child.pid})"
            )
            return
        self.say(f"runplatform: the restarted local model is not ready: {outcome}")
        if self.child is not None and self.child.process.poll() is not None:
            self._after_exit()  # it died: the same as any other death
        else:
            self._schedule_restart(self._policy.delay_after_exit(0.0), detail=outcome)

    def _after_exit(self) -> None:
        """The server has exited: retire its kernels if they were illegal here, log it, and
        schedule the next start."""
        assert self.child is not None
        ran_for = time.monotonic() - self._started_at
        delay = self._policy.delay_after_exit(ran_for)
        if self.child.process.returncode == -signal.SIGILL and self.cpu in self._variants[:-1]:
            # Kernels this CPU does not run: never go back to them.
            self._variants = self._variants[self._variants.index(self.cpu) + 1 :]
        self._last_exit = self.child.exit_description
        self.say(
            f"runplatform: {self.child.name} (pid {self.child.pid}) {self._last_exit} "
            f"after {ran_for:.0f}s; restarting it in {delay:.0f}s "
            f"(log {self.log_path})"
        )
        self._schedule_restart(delay)

    def _schedule_restart(self, delay: float, *, detail: str = "") -> None:
        self._drop_child()
        self._next_start = time.monotonic() + delay
        self._write_status("restarting", detail=detail)

    def _drop_child(self) -> None:
        if self.child is not None:
            self.supervisor.forget(self.child)
            self.child = None

    # --- Status -----------------------------------------------------------------------------

    def _write_status(self, state: str, *, cpu: str | None = None, detail: str = "") -> None:
        write_status(
            self.status_path,
            {
                "state": state,
                "url": self.url,
                "cpu": cpu or self.cpu,
                "pid": self.child.pid if self.child is not None else None,
                "restarts": self.restarts,
                "last_exit": self._last_exit,
                "detail": detail,
            },
        )


def readiness_from_status(path: Path) -> tuple[bool, str]:
    """For ``/readyz``: whether the supervised local model is serving, and if not, why."""
    status = read_status(path)
    if status is None:
        return False, "no status from the launcher"
    state = status.get("state")
    if state == "ready":
        return True, f"ready (CPU kernels {status.get('cpu')}, restarts {status.get('restarts')})"
    detail = status.get("last_exit") or status.get("detail") or ""
    return False, f"{state}" + (f": {detail}" if detail else "")
