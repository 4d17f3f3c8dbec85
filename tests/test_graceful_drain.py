"""A web process told to stop (SIGTERM: `docker stop`, a Kubernetes pod ending, a rollout) lets
an answer that is still streaming finish before it exits: the web role as the container runs it
(deploy/docker-entrypoint.sh: uvicorn with two worker processes), a stream open through it, the
signal sent mid-stream, and only then the rest of the upstream's answer released."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from .conftest import free_port, gateway_process_env, route_alias

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

HOLD_AFTER_SIGTERM_SECONDS = 4
ENTRYPOINT = Path(settings.BASE_DIR) / "deploy" / "docker-entrypoint.sh"


class HeldStream:
    """An OpenAI-compatible upstream whose streamed answer stops after its first words until
    the test releases the rest."""

    def __init__(self) -> None:
        self.first_part_sent = threading.Event()
        self.release = threading.Event()
        stream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                self.event({"role": "assistant", "content": ""})
                self.event({"content": "first half,"})
                stream.first_part_sent.set()
                stream.release.wait(timeout=120)
                # A gateway that was cut off has hung up by now; the test says so, not this.
                with contextlib.suppress(ConnectionError):
                    self.event({"content": " second half."})
                    self.event({}, finish="stop")
                    self.wfile.write(b"data: [DONE]\n\n")

            def event(self, delta: dict[str, str], finish: str | None = None) -> None:
                chunk = {
                    "id": "chatcmpl-held",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "upstream-model",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def held_stream() -> Iterator[HeldStream]:
    stream = HeldStream()
    yield stream
    stream.close()


def start_web_role(tmp_path: Path, port: int) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    """`docker-entrypoint.sh web` on loopback, sharing this test's database; its output lines
    arrive in the returned queue."""
    env = gateway_process_env(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "LLMP_HOST": "127.0.0.1",
            "LLMP_PORT": str(port),
            "LLMP_WORKERS": "2",
            "LLMP_GRACEFUL_SHUTDOWN_SECONDS": "120",
            "LLMP_ROLE_FILE": str(tmp_path / "role"),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        }
    )
    process = subprocess.Popen(
        ["/bin/sh", str(ENTRYPOINT), "web"],
        cwd=settings.BASE_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return process, lines


def wait_for_line(lines: queue.Queue[str], text: str, seen: list[str]) -> None:
    while True:
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            pytest.fail(f"no {text!r} from the web process:\n" + "".join(seen))
        seen.append(line)
        if text in line:
            return


def test_an_open_stream_completes_when_the_web_process_gets_sigterm(
    transactional_db, key_a, held_stream, tmp_path
):
    route_alias("default", held_stream.base_url)
    port = free_port()
    process, lines = start_web_role(tmp_path, port)
    seen: list[str] = []
    try:
        wait_for_line(lines, "Application startup complete", seen)
        wait_for_line(lines, "Application startup complete", seen)  # both workers
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client,
            client.stream(
                "POST",
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key_a}"},
                json={
                    "model": "default",
                    "stream": True,
                    "messages": [{"role": "user", "content": "tell me in two halves"}],
                },
            ) as response,
        ):
            assert response.status_code == 200
            assert held_stream.first_part_sent.wait(timeout=60)
            process.send_signal(signal.SIGTERM)
            # The stream is still open when the workers start their graceful shutdown.
            wait_for_line(lines, "Waiting for connections to close", seen)
            # Held well past a graceful-shutdown timeout that is too short (this test fails
            # with LLMP_GRACEFUL_SHUTDOWN_SECONDS=1): the stream must outlive the signal.
            time.sleep(HOLD_AFTER_SIGTERM_SECONDS)
            assert process.poll() is None, "the web process exited with a stream open"
            held_stream.release.set()
            body = response.read().decode()
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    events = [line[len("data: ") :] for line in body.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", body
    text = "".join(
        choice["delta"].get("content") or ""
        for event in events[:-1]
        for choice in json.loads(event)["choices"]
    )
    assert text == "first half, second half."
    finishes = [
        choice.get("finish_reason")
        for event in events[:-1]
        for choice in json.loads(event)["choices"]
    ]
    assert "stop" in finishes
