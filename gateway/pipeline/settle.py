"""Stage "settle": meter the request. Usage records never hold message bodies."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypedDict

import structlog
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Field

from gateway import limits, metrics
from gateway.limits import SPEND, TOKENS, Admission
from gateway.models import UsageRecord
from gateway.pipeline.authenticate import Principal
from gateway.pipeline.route import Target
from gateway.providers.base import ChatMessage, Usage
from llmplatform.db import fresh_db
from privacy.pii import ENTITY_TYPES

log = structlog.get_logger("gateway.request")


class UsageRow(TypedDict):
    """A usage record as a request records it: ``UsageRecord`` column values by attname (the
    other columns take their defaults)."""

    tenant_id: int
    api_key_id: int
    request_id: str
    route: str
    alias: str
    version: str
    deployment: str
    status_code: int
    error_code: str
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    latency_ms: float
    upstream_latency_ms: float
    streamed: bool
    cache_hit: bool
    upstream_attempts: int
    fallback_reason: str
    degraded: bool
    pii_redactions: int
    tool_calls: int
    content_kinds: str


class UsageWriter:
    """Writes usage records in batches, off the request path.

    A request appends its record (a dict of column values: building a model instance per
    request costs more CPU than the insert); a background task writes whatever has gathered
    every ``LLMP_USAGE_FLUSH_MS`` (one COPY on PostgreSQL, one multi-row INSERT elsewhere, from
    one thread with one database connection). On shutdown (ASGI lifespan) the rest is
    written. If the database fails, the batch is kept and retried with the next one, up to
    ``MAX_PENDING`` records. With ``LLMP_USAGE_FLUSH_MS=0`` or ``LLMP_AFTER_ANSWER_INLINE``
    each record is written at once.
    """

    MAX_BATCH = 500
    MAX_PENDING = 50_000

    def __init__(self) -> None:
        self._pending: list[UsageRow] = []
        self._flusher: asyncio.Task[None] | None = None

    async def add(self, record: UsageRow) -> None:
        interval = settings.LLMP_USAGE_FLUSH_MS
        if interval <= 0 or settings.LLMP_AFTER_ANSWER_INLINE:
            await sync_to_async(self._write)([record])
            return
        self._pending.append(record)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_after(interval))

    async def _flush_after(self, interval_ms: int) -> None:
        await asyncio.sleep(interval_ms / 1000)
        await self.flush()

    async def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.MAX_BATCH], self._pending[self.MAX_BATCH :]
            try:
                await sync_to_async(self._write)(batch)
            except Exception:
                log.exception("usage_write_failed", records=len(batch))
                self._pending = (batch + self._pending)[: self.MAX_PENDING]
                return

    @staticmethod
    @fresh_db
    def _write(batch: list[UsageRow]) -> None:
        from django.db import connections
        from django.utils import timezone

        connection = connections[UsageRecord.objects.db]
        now = timezone.now()
        fields = _usage_columns()
        defaults = {
            f.attname: now if f.attname == "created_at" else f.get_default() for f in fields
        }
        columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
        table = connection.ops.quote_name(UsageRecord._meta.db_table)
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # The values as the request recorded them (ints, strings, booleans, floats, a
                # Decimal, a datetime): psycopg writes each as its column's text, so Django's
                # per-field preparation (a tenth of this method's time) is not needed.
                names = [f.attname for f in fields]
                with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for record in batch:
                        copy.write_row([record.get(name, defaults[name]) for name in names])
                return
            rows = [
                [
                    f.get_db_prep_save(record.get(f.attname, defaults[f.attname]), connection)
                    for f in fields
                ]
                for record in batch
            ]
            marks = ", ".join(["%s"] * len(fields))
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)  # noqa: S608


@functools.cache
def _usage_columns() -> list[Field[Any, Any]]:  # each field's own value types
    return [f for f in UsageRecord._meta.concrete_fields if not f.primary_key]


usage_writer = UsageWriter()


_PII_TYPES = "|".join(sorted(ENTITY_TYPES, key=len, reverse=True))
_PII_PLACEHOLDER = re.compile(rf"<(?:{_PII_TYPES})(?:_\d+)?>")


def count_redactions(
    before: list[ChatMessage],
    after: list[ChatMessage],
    added: Callable[[str, str], int] | None = None,
) -> int:
    """PII values the guard replaced: placeholders (``<EMAIL>``, ``<EMAIL_1>``) in the messages
    the provider sees that were not in the messages as sent (tool-call arguments not counted).
    Message by message, so that a text the guard left as it was is not read again; ``added``
    says what one text gained (``TextVerdicts.added_placeholders``, which remembers it for
    long texts)."""
    if len(before) != len(after):
        return count_new_placeholders([m.content for m in before], [m.content for m in after])
    total = 0
    for sent, protected in zip(before, after, strict=True):
        if protected.content is sent.content:
            continue
        if added is not None:
            total += added(sent.content, protected.content)
        else:
            total += placeholders(protected.content) - placeholders(sent.content)
    return max(total, 0)


def placeholders(text: str) -> int:
    """How many PII placeholders ``text`` holds."""
    return len(_PII_PLACEHOLDER.findall(text)) if text else 0


def count_new_placeholders(before: list[str], after: list[str]) -> int:
    """Placeholders in ``after`` that were not in ``before`` (texts as sent, as protected)."""
    found = sum(len(_PII_PLACEHOLDER.findall(text)) for text in after if text)
    if found:
        found -= sum(len(_PII_PLACEHOLDER.findall(text)) for text in before if text)
    return max(found, 0)


def estimate_tokens(text: str) -> int:
    """A rough count for upstreams that report none (about four characters a token)."""
    return max(1, (len(text) + 3) // 4) if text else 0


def chars_to_tokens(chars: int) -> int:
    """``estimate_tokens`` for a count of characters."""
    return max(1, (chars + 3) // 4) if chars else 0


@dataclass(slots=True)
class Meter:
    request_id: str
    route: str
    principal: Principal
    started: float
    alias: str = ""
    target: Target | None = None
    streamed: bool = False
    upstream_ms: float = 0.0
    upstream_called: bool = False
    cache_hit: bool = False
    upstream_attempts: int = 0
    fallback_reason: str = ""
    degraded: bool = False
    # For streams: the gateway's own time up to the first byte, fixed when headers go out.
    overhead_ms: float | None = None
    # What the request reserved against its limits; corrected to actual use when recorded.
    admission: Admission | None = None
    # The version routed to (kept even when a fallback or the cache answered for it), and the
    # PII values the guard masked or pseudonymised.
    version: str = ""
    pii_redactions: int = 0
    # What the request carried (``ParsedChat.content_kinds``) and the tool calls replied.
    content_kinds: tuple[str, ...] = ()
    tool_calls: int = 0
    # Set once the answer's own record is made (a post-call refusal comes after it).
    settled: bool = False

    def overhead_now(self, now: float) -> float:
        """What the gateway itself has spent so far: elapsed time minus time spent upstream."""
        return max((now - self.started) * 1000 - self.upstream_ms, 0.0)

    async def record(
        self, *, status: int, now: float, usage: Usage | None = None, error_code: str = ""
    ) -> None:
        usage = usage or Usage()
        cost = (
            self.target.cost(usage.prompt_tokens, usage.completion_tokens)
            if self.target and not self.cache_hit
            else Decimal(0)
        )
        overhead = self.overhead_ms if self.overhead_ms is not None else self.overhead_now(now)
        if self.admission is not None and self.admission.counters:
            # Tokens as used upstream (none for a cache hit), cost as charged; a failure gives
            # back its whole reservation.
            tokens = 0 if self.cache_hit else usage.total_tokens
            actual = {TOKENS: tokens, SPEND: int(cost * limits.NANO)}
            admission, self.admission = self.admission, None
            if settings.LLMP_AFTER_ANSWER_INLINE:
                await limits.correct(admission, actual)
            else:
                limits.corrections.add(admission, actual)
        metrics.record_request(
            route=self.route,
            status=status,
            tier=self.principal.tier.name,
            alias=self.alias,
            seconds=now - self.started,
            overhead=overhead / 1000,
            upstream=self.upstream_ms / 1000 if self.upstream_called else None,
            deployment=self.target.deployment if self.target else "",
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost=float(cost),
            content_kinds=self.content_kinds,
            tool_calls=self.tool_calls,
        )
        log.info(
            "request_finished",
            route=self.route,
            tenant=self.principal.tenant_slug,
            key_id=self.principal.key_id,
            alias=self.alias,
            deployment=self.target.deployment if self.target else "",
            status=status,
            error_code=error_code or None,
            cache_hit=self.cache_hit,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            latency_ms=round((now - self.started) * 1000, 2),
            overhead_ms=round(overhead, 2),
        )
        await usage_writer.add(
            dict(
                tenant_id=self.principal.tenant_id,
                api_key_id=self.principal.key_id,
                request_id=self.request_id,
                route=self.route,
                alias=self.alias[:64],
                version=(self.version or (self.target.version if self.target else ""))[:64],
                deployment=self.target.deployment if self.target else "",
                status_code=status,
                error_code=error_code[:64],
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost=cost,
                latency_ms=(now - self.started) * 1000,
                upstream_latency_ms=self.upstream_ms,
                streamed=self.streamed,
                cache_hit=self.cache_hit,
                upstream_attempts=min(self.upstream_attempts, 32767),
                fallback_reason=self.fallback_reason[:64],
                degraded=self.degraded,
                pii_redactions=self.pii_redactions,
                tool_calls=self.tool_calls,
                content_kinds=",".join(self.content_kinds)[:100],
            )
        )
