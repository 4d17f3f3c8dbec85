"""``manage.py runplatform`` as `make run` starts it, in a subprocess, for end-to-end tests."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from django.conf import settings

KEY_PATTERN = re.compile(r"llmp_[A-Za-z0-9]{12}_[A-Za-z0-9]{40}")
STARTED = re.compile(r"runplatform: started (?P<name>.+?) \(pid (?P<pid>\d+)")
PASSWORD = re.compile(r"user (?P<user>\S+), password (?P<password>\S+)")


@dataclass
class RunningPlatform:
    process: subprocess.Popen[str]
    base_url: str
    model_url: str
    env: dict[str, str]
    key: str = ""
    output: list[str] = field(default_factory=list)

    @property
    def child_pids(self) -> dict[str, int]:
        """The newest pid of each child the launcher says it started."""
        return {m["name"]: int(m["pid"]) for line in self.output if (m := STARTED.search(line))}

    @property
    def admin_password(self) -> str | None:
        found = PASSWORD.search("\n".join(self.output))
        return found["password"] if found else None

    def manage(self, *args: str, timeout: float = 120) -> str:
        """Another process of the same platform: ``manage.py ARGS`` with its environment."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=settings.BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


def minimal_env(**extra: str) -> dict[str, str]:
    """Nothing from the test run's environment (DATABASE_URL, REDIS_URL, ...) leaks in: the
    launcher must work with the embedded defaults alone."""
    env = {
        name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@contextmanager
def running_platform(
    env: dict[str, str], *, port: int, model_url: str, timeout: float
) -> Iterator[RunningPlatform]:
    """Start runplatform with ``env``, wait for its banner, yield it; then SIGINT (and SIGKILL
    after 30 s) unless a test stopped it already."""
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runplatform"],
        cwd=settings.BASE_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    running = RunningPlatform(process, f"http://127.0.0.1:{port}", model_url, env)
    deadline = time.monotonic() + timeout
    try:
        while "llmplatform is running" not in "\n".join(running.output[-40:]):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                pytest.fail("runplatform exited before it was ready:\n" + "\n".join(running.output))
            running.output.append(line)
        # The rest of the banner (with the key) follows the headline.
        while not any(line.startswith("  Ctrl-C stops") for line in running.output[-5:]):
            line = lines.get(timeout=10)
            assert line is not None
            running.output.append(line)
    except queue.Empty:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("runplatform was not ready in time:\n" + "\n".join(running.output))
    found = KEY_PATTERN.search("\n".join(running.output))
    assert found, "no demo key in the banner:\n" + "\n".join(running.output)
    running.key = found.group()

    def drain() -> None:  # so a chatty child never blocks on a full pipe
        while (line := lines.get()) is not None:
            running.output.append(line)

    threading.Thread(target=drain, daemon=True).start()
    try:
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
