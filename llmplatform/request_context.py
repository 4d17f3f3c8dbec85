"""The current request's id, readable from services (for the audit log) without passing it down."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("llmp_request_id", default="")
