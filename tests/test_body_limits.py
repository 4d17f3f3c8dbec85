"""Request bodies are capped on every route before they are read: Django spools a body to a
temporary file before any middleware runs, so the cap sits in front of it (llmplatform.fastpath).
Driven over real sockets against the platform under uvicorn."""

from __future__ import annotations

import json
import socket

import pytest
from django.conf import settings

MIB = 1024 * 1024


def _exchange(
    base_url: str, head: bytes, body_parts: list[bytes] = (), timeout: float = 20
) -> tuple[int, bytes]:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        try:
            for part in body_parts:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was sent
        data = b""
        while b"\r\n\r\n" not in data or not _complete(data):
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _head(path: str, *headers: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/x-www-form-urlencoded",
        *headers,
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize(
    "path",
    ["/privacy/request/", "/portal/login/", "/admin/login/", "/v1/privacy/subjects/u1/consent"],
)
def test_a_declared_length_over_the_cap_is_refused_before_the_body_is_sent(gateway_server, path):
    limit = (
        settings.LLMP_MAX_UPLOAD_BYTES
        if path.startswith("/admin/")
        else settings.LLMP_MAX_BODY_BYTES
    )
    status, body = _exchange(gateway_server, _head(path, f"Content-Length: {limit + 1}"))
    assert status == 413
    if path.startswith("/v1/"):
        assert json.loads(body)["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("path", ["/privacy/request/", "/v1/privacy/subjects/u1/consent"])
def test_a_chunked_body_is_cut_off_at_the_cap(gateway_server, path, tmp_path, settings):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)  # where Django would spool a large body
    piece = b"a=" + b"x" * (MIB - 2)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    pieces = [chunk] * (settings.LLMP_MAX_BODY_BYTES // MIB + 3) + [b"0\r\n\r\n"]

    status, _ = _exchange(gateway_server, _head(path, "Transfer-Encoding: chunked"), pieces)

    assert status == 413
    assert list(tmp_path.iterdir()) == []


def test_a_body_within_the_cap_reaches_the_page(gateway_server):
    status, _ = _exchange(
        gateway_server, _head("/privacy/request/", "Content-Length: 5"), [b"a=bcd"]
    )
    assert status not in (400, 413)  # the page answers (a form error or its CSRF refusal)


def test_a_malformed_content_length_is_a_400(gateway_server):
    status, _ = _exchange(gateway_server, _head("/privacy/request/", "Content-Length: 12abc"))
    assert status == 400
