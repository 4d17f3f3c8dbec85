"""Structured JSON logs: one JSON object per line, with the request id bound on every line."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import structlog
from structlog.typing import Processor

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

structlog.configure(
    processors=[*_shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)


def _fallback(value: Any) -> str:
    """What json.dumps cannot write, as structlog's own renderer writes it."""
    method = getattr(value, "__structlog__", None)
    return method() if callable(method) else repr(value)


def _dumps(event: Any, **_: Any) -> str:
    # orjson: a log line per request is a measurable share of the gateway's CPU with json.
    return orjson.dumps(event, default=_fallback, option=orjson.OPT_NON_STR_KEYS).decode()


def json_formatter() -> logging.Formatter:
    return structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        foreign_pre_chain=_shared,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    # structlog.get_logger, typed for the stdlib configuration above.
    return structlog.stdlib.get_logger(name)
