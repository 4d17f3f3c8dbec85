from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

import structlog
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from llmplatform.request_context import client_request_id_var, request_id_var

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

GetResponse = Callable[[HttpRequest], HttpResponseBase]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


class IdentifiedRequest(Protocol):
    """A request after ``begin_request``: the two ids it sets on it."""

    request_id: str
    client_request_id: str


def begin_request(request: HttpRequest) -> str:
    """Give the request our own id and bind it to the log context and the audit log.

    A caller's id (``X-Client-Request-ID``, as OpenAI's API names it, or ``X-Request-ID``) is
    never used as ours: a client could otherwise write any value into audit rows and usage
    records, or reuse another request's id. A well-formed one is kept beside ours, marked as
    the client's (``client_request_id`` in logs and audit rows, echoed in
    ``X-Client-Request-ID``), so the two can be matched."""
    incoming = request.headers.get("X-Client-Request-ID") or request.headers.get("X-Request-ID", "")
    client_id = incoming if _VALID_REQUEST_ID.match(incoming) else ""
    request_id = f"req_{uuid.uuid4().hex}"
    identified = cast(IdentifiedRequest, request)  # what the next two lines make it
    identified.request_id = request_id
    identified.client_request_id = client_id
    request_id_var.set(request_id)
    client_request_id_var.set(client_id)
    structlog.contextvars.clear_contextvars()
    if client_id:
        structlog.contextvars.bind_contextvars(request_id=request_id, client_request_id=client_id)
    else:
        structlog.contextvars.bind_contextvars(request_id=request_id)
    return request_id


def tag_response(request: HttpRequest, response: HttpResponseBase) -> None:
    identified = cast(IdentifiedRequest, request)  # begin_request ran on it first
    response["X-Request-ID"] = identified.request_id
    if identified.client_request_id:
        response["X-Client-Request-ID"] = identified.client_request_id


class RequestIdMiddleware:
    """Gives every request our own id (see ``begin_request``), binds it to the log context and
    the audit log, and returns it in ``X-Request-ID``."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse | AsyncGetResponse) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self.__acall__(request)
        begin_request(request)
        # cast: not is_async, so get_response is the synchronous kind.
        response = cast(HttpResponseBase, self.get_response(request))
        tag_response(request, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        begin_request(request)
        # cast: is_async, so get_response is a coroutine function.
        response = await cast("Awaitable[HttpResponseBase]", self.get_response(request))
        tag_response(request, response)
        return response
