"""Work after the answer: records the client was promised survive a database outage."""

from __future__ import annotations

import asyncio

import pytest
from django.db import OperationalError

from gateway.pipeline import background


@pytest.fixture
def deferred(settings, monkeypatch):
    settings.LLMP_AFTER_ANSWER_INLINE = False  # background mode, as in production
    # Keep the backoff short; the policy (which errors, how long) is the real one.
    monkeypatch.setattr(background, "wait_exponential_jitter", lambda **_: lambda retry_state: 0.01)


async def test_a_promised_record_is_written_once_the_database_is_back(deferred):
    attempts: list[int] = []
    written = asyncio.Event()

    async def store(attempt: int) -> None:
        attempts.append(attempt)
        if len(attempts) < 4:
            raise OperationalError("the database system is starting up")
        written.set()

    await background.after_answer_durably(store, event="test_store_failed")
    await asyncio.wait_for(written.wait(), 5)
    assert attempts == [1, 2, 3, 4]


async def test_other_failures_are_not_retried(deferred):
    attempts: list[int] = []

    async def store(attempt: int) -> None:
        attempts.append(attempt)
        raise ValueError("a bug, not an outage")

    await background.after_answer_durably(store, event="test_store_failed")
    await asyncio.sleep(0.2)
    assert attempts == [1]
