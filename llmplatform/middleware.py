from __future__ import annotations

import re
import uuid

import structlog
from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from llmplatform.request_context import request_id_var

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def begin_request(request) -> str:
    """Give the request an id (the caller's ``X-Request-ID`` if well-formed) and bind it to the
    log context and the audit log."""
    incoming = request.headers.get("X-Request-ID", "")
    request_id = incoming if _VALID_REQUEST_ID.match(incoming) else f"req_{uuid.uuid4().hex}"
    request.request_id = request_id
    request_id_var.set(request_id)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    return request_id


class RequestIdMiddleware:
    """Gives every request an id (the caller's ``X-Request-ID`` if well-formed), binds it to the
    log context and the audit log, and returns it in ``X-Request-ID``."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        request_id = begin_request(request)
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response

    async def __acall__(self, request):
        request_id = begin_request(request)
        response = await self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
