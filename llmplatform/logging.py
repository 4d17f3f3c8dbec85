"""Structured JSON logs: one JSON object per line, with the request id bound on every line."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, Processor

# No log line of ours writes where it was called from, nor the thread or process names:
# looking them up for every record (``findCaller`` walks the stack) is most of what stdlib
# logging costs per line (the logging HOWTO's "Optimization" section).
logging._srcfile = None
logging.logThreads = False
logging.logProcesses = False
logging.logMultiprocessing = False

_shared: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _fallback(value: Any) -> str:
    """What json.dumps cannot write, as structlog's own renderer writes it."""
    method = getattr(value, "__structlog__", None)
    return method() if callable(method) else repr(value)


def _dumps(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=_fallback, option=orjson.OPT_NON_STR_KEYS).decode()


# Marks a record whose message is already the JSON line (structlog's own events).
_RENDERED = "_llmp_rendered"


def _render_for_stdlib(
    logger: Any, method_name: str, event_dict: EventDict
) -> tuple[tuple[str], dict[str, Any]]:
    """The last processor: our events are rendered to their JSON line here, once, and handed to
    stdlib logging marked as rendered, so the handler's formatter writes them as they are
    instead of copying the record and running the processors again (ProcessorFormatter's
    path, kept for records from other libraries). That was about half of a line's cost."""
    return (_dumps(event_dict),), {"extra": {_RENDERED: True}}


structlog.configure(
    processors=[
        # Events below the logger's level are dropped before any work (without it, structlog
        # runs the chain and stdlib discards the result).
        structlog.stdlib.filter_by_level,
        *_shared,
        structlog.processors.format_exc_info,
        _render_for_stdlib,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: our events as rendered, other libraries' records through
    structlog's ProcessorFormatter with the same fields."""

    def __init__(self) -> None:
        super().__init__()
        self._foreign = structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_dumps),
            ],
            foreign_pre_chain=_shared,
        )

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, _RENDERED, False):
            return record.getMessage()
        return self._foreign.format(record)


def json_formatter() -> logging.Formatter:
    return JsonFormatter()


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    # structlog.get_logger, typed for the stdlib configuration above.
    return structlog.stdlib.get_logger(name)
