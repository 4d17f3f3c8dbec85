"""The ASGI entry point: a lean path for the hot API routes, Django's full stack for the rest.

Django's handler runs every middleware that is not natively async (sessions, CSRF, messages,
WhiteNoise, ...) through ``sync_to_async``, and sends ``request_started``/``request_finished``
through threads: several thread hops per request. The API routes need none of it: they
authenticate with API keys, keep no session and render no page. Apps register such routes here
(``register_fast_route``); their async Django views are called directly with a real
``ASGIRequest`` and their responses sent with Django's own encoder. Everything else (admin,
portal, public pages) goes through the full Django stack unchanged.

It also speaks the ASGI lifespan protocol, so apps can start background tasks on the serving
loop (``register_startup``) and flush buffers on shutdown (``register_shutdown``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import structlog
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.http import HttpRequest, HttpResponseBase

from llmplatform import tracing
from llmplatform.middleware import begin_request, tag_response
from llmplatform.request_context import request_id_var

log = structlog.get_logger("llmplatform.fastpath")

# ASGI's callables (the spec's shapes, as Django's handler takes them: the scope is the server's
# dict, and events are read here, never changed).
Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

View = Callable[[HttpRequest], Awaitable[HttpResponseBase]]
_routes: dict[str, View] = {}
_too_large_bodies: dict[str, bytes] = {}  # a route's own 413 body, in its door's error shape
_shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
_startup_hooks: list[Callable[[], Awaitable[None]]] = []


def register_fast_route(path: str, view: View, *, too_large: bytes | None = None) -> None:
    """``too_large``: the JSON body of the route's 413 (refused before its view runs), when the
    route's errors are not OpenAI's shape."""
    _routes[path] = view
    if too_large is not None:
        _too_large_bodies[path] = too_large


def register_shutdown(hook: Callable[[], Awaitable[None]]) -> None:
    _shutdown_hooks.append(hook)


def register_startup(hook: Callable[[], Awaitable[None]]) -> None:
    """Run when the server starts, on the loop that will serve requests (for long-lived
    background tasks such as a Redis subscription)."""
    _startup_hooks.append(hook)


_TOO_LARGE = (
    b'{"error": {"message": "The request body is too large.", '
    b'"type": "invalid_request_error", "param": null, "code": "request_too_large"}}'
)


class _TooLarge:
    pass


TOO_LARGE = _TooLarge()


class PlatformApplication:
    def __init__(self, django_app: ASGIHandler) -> None:
        self.django_app = django_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            view = _routes.get(scope["path"])
            if view is not None:
                if tracing.enabled:
                    await self._serve_traced(view, scope, receive, send)
                else:
                    await self._serve(view, scope, receive, send)
                return
            await self._serve_capped(scope, receive, send)
            return
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.django_app(scope, receive, send)

    async def _serve_capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every other route through Django, with its body capped before Django reads it
        (Django spools a large body to a temporary file before any middleware runs): a
        ``Content-Length`` over the cap is refused at once, and a body without one is counted
        as it arrives and cut off at the cap. Either way the client gets 413."""
        path = scope["path"]
        limit = body_limit(path)
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                await _refuse(send, path, 400, "The Content-Length header is not a number.")
                return
            if int(length) > limit:
                await _refuse(send, path, 413, "The request body is too large.")
                return
        received = 0
        over = False
        started = False

        async def capped_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True  # Django stops reading at a disconnect and answers nothing
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.django_app(scope, capped_receive, tracked_send)
        if over and not started:
            await _refuse(send, path, 413, "The request body is too large.")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await _run_hooks(_startup_hooks, "startup_hook_failed")
                _freeze_startup_heap()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await _run_hooks(_shutdown_hooks, "shutdown_hook_failed")
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read_body(self, receive: Receive) -> bytes | _TooLarge | None:
        """The whole body; ``TOO_LARGE`` over the limit; None if the client went away."""
        limit = settings.LLMP_MAX_BODY_BYTES
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return TOO_LARGE
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def _serve(self, view: View, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._read_body(receive)
        if body is None:
            return
        if isinstance(body, _TooLarge):  # TOO_LARGE, its only instance
            await self._send_plain(send, 413, _too_large_bodies.get(scope["path"], _TOO_LARGE))
            return
        request = ASGIRequest(scope, io.BytesIO(body))
        begin_request(request)
        response = await view(request)
        tag_response(request, response)
        if not response.streaming:
            await self.django_app.send_response(response, send)
            return
        # A stream is sent while listening for the client going away; then the stream is
        # cancelled (the view meters what was sent) instead of being read to its end.
        sender = asyncio.create_task(self.django_app.send_response(response, send))
        watcher = asyncio.create_task(self._wait_for_disconnect(receive))
        done, _ = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        for task in (watcher, sender):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if sender in done and sender.exception() is not None:
            log.warning("stream_send_failed", error=type(sender.exception()).__name__)

    async def _serve_traced(self, view: View, scope: Scope, receive: Receive, send: Send) -> None:
        """``_serve`` inside the request's server span, which ends when the answer (a stream:
        its last byte) has been sent."""
        status = 0

        async def status_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracing.server_span(scope["method"], scope["path"], scope.get("headers", ())) as span:
            try:
                await self._serve(view, scope, receive, status_send)
            finally:
                tracing.finish_server_span(span, status, request_id_var.get())

    @staticmethod
    async def _wait_for_disconnect(receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    @staticmethod
    async def _send_plain(send: Send, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _run_hooks(hooks: list[Callable[[], Awaitable[None]]], failure_event: str) -> None:
    """Every hook runs, even after one fails: a failed hook is logged, not raised."""
    for hook in hooks:
        try:
            await hook()
        except Exception:
            log.exception(failure_event)


def _freeze_startup_heap() -> None:
    """Move everything alive at start-up (Django, the apps, their modules: most of a worker's
    objects, and none of them garbage) out of the garbage collector's reach, so its full
    collections no longer walk them on every request's allocations (``gc.freeze``)."""
    gc.collect()
    gc.freeze()


def body_limit(path: str) -> int:
    """The largest request body a route takes: staff pages take uploads (compliance evidence
    files), every other route ``LLMP_MAX_BODY_BYTES``."""
    if path.startswith(("/admin/", "/deployments/")):
        return settings.LLMP_MAX_UPLOAD_BYTES
    return settings.LLMP_MAX_BODY_BYTES


def _header(scope: Scope, name: bytes) -> str | None:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", [])
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


async def _refuse(send: Send, path: str, status: int, message: str) -> None:
    """An API route's typed error JSON, or plain text for pages."""
    if path.startswith(("/v1/", "/api/")):
        code = "request_too_large" if status == 413 else "invalid_request"
        body = (
            b'{"error": {"message": "' + message.encode() + b'", "type": '
            b'"invalid_request_error", "param": null, "code": "' + code.encode() + b'"}}'
        )
        content_type = b"application/json"
    else:
        body, content_type = message.encode(), b"text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
