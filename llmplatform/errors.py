"""What a service raises when it refuses what it was asked, for a reason its caller may be told.

``message`` is written for whoever asked (an officer, a tenant's member, an app's developer):
it never holds a secret, a key, another tenant's data or a detail of the platform's insides,
and no more personal data than the caller sent. ``code`` names the reason for programs.

Each door maps the family to its own shape: the API to OpenAI's error JSON with the status of
the subclass (``gateway.errors.api_error_for``), the portal and the admin to a form error or a
message. Any other exception is a bug: the API answers it with a bare 500 and the pages with
Django's error page, neither with its message.
"""

from __future__ import annotations


class DomainError(Exception):
    """A service's refusal; see the module docstring."""

    code = "refused"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        #: the input the refusal is about (an API parameter, a form field), when there is one
        self.param = param


class InvalidInput(DomainError):
    """What was sent is not acceptable (a bad value, a missing reason)."""

    code = "invalid_value"


class Conflict(DomainError):
    """The object's state does not allow it now (already rotated, disabled, erased, changed
    meanwhile)."""

    code = "conflict"


class NotFound(DomainError):
    """No such object, or one the caller may not see (the two look the same)."""

    code = "not_found"


class Forbidden(DomainError):
    """The caller may not do this."""

    code = "insufficient_permissions"
