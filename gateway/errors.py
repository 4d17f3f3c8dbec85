"""OpenAI-style API errors: every failure a client can see is one of these, as
``{"error": {"message", "type", "param", "code"}}`` with the matching status."""

from __future__ import annotations

import orjson
from django.http import HttpResponse

from llmplatform import errors as domain


class ApiError(Exception):
    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> HttpResponse:
        response = HttpResponse(
            orjson.dumps(self.body()), status=self.status, content_type="application/json"
        )
        for name, value in self.headers.items():
            response[name] = value
        return response


class InvalidRequest(ApiError):
    status = 400
    code = "invalid_request"


class AuthenticationFailed(ApiError):
    status = 401
    code = "invalid_api_key"

    def __init__(
        self,
        message: str = "Incorrect or missing API key. Send it as 'Authorization: Bearer llmp_...'.",
    ) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="llmplatform"'})


class PermissionDenied(ApiError):
    status = 403
    type = "permission_error"
    code = "insufficient_permissions"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(ApiError):
    status = 413
    code = "request_too_large"


class InternalError(ApiError):
    """A bug of ours; the client sees no detail."""

    status = 500
    type = "server_error"
    code = "internal_error"


class ServiceUnavailable(ApiError):
    status = 503
    type = "server_error"


class UpstreamFailure(ApiError):
    """A provider failure, as the client sees it (502, 503 or 504)."""

    type = "api_error"


# A service's refusal (llmplatform.errors) as the client sees it: the status of its kind, its
# code and its message, which was written to be shown.
_DOMAIN_ERRORS: tuple[tuple[type[domain.DomainError], type[ApiError]], ...] = (
    (domain.InvalidInput, InvalidRequest),
    (domain.Conflict, Conflict),
    (domain.NotFound, NotFound),
    (domain.Forbidden, PermissionDenied),
)


def api_error_for(exc: domain.DomainError) -> ApiError:
    error = next((api for kind, api in _DOMAIN_ERRORS if isinstance(exc, kind)), InvalidRequest)
    message = exc.message[:1].upper() + exc.message[1:]
    return error(message, code=exc.code, param=exc.param)
