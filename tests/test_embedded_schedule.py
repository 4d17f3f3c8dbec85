"""The schedule users read is the schedule beat sends: the table in docs/embedded.md and the one
in the README's embedded-default section name every entry of ``beat_schedule`` in
llmplatform/celery.py (task and arguments), none it does not have, and when each runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from celery.schedules import crontab
from django.conf import settings

from llmplatform.celery import app

ROOT = Path(__file__).resolve().parent.parent
HEADER = "| task | when | what |"
DAYS = {"*": "daily", "sun": "Sundays", "mon-sat": "Monday to Saturday"}


def _when(schedule: crontab | float) -> str:
    """How the docs say when an entry runs: "every 15 s", "hourly at :11 and :41",
    "Sundays at 02:23"."""
    if not isinstance(schedule, crontab):
        return f"every {schedule:g} s"
    minute, hour = str(schedule._orig_minute), str(schedule._orig_hour)
    assert (str(schedule._orig_day_of_month), str(schedule._orig_month_of_year)) == ("*", "*")
    if minute.startswith("*/") and hour == "*":
        return f"every {minute[2:]} min"
    if hour == "*":
        return "hourly at " + " and ".join(f":{int(m):02d}" for m in minute.split(","))
    return f"{DAYS[str(schedule._orig_day_of_week)]} at {int(hour):02d}:{int(minute):02d}"


def _code_schedule() -> dict[tuple[str, str], str]:
    entries: dict[tuple[str, str], str] = {}
    for entry in app.conf.beat_schedule.values():
        args = ", ".join(entry.get("args", ()))
        key = (entry["task"], args)
        assert key not in entries, f"{key} is scheduled twice"
        entries[key] = _when(entry["schedule"])
    return entries


def _doc_schedule(path: Path) -> dict[tuple[str, str], str]:
    """The rows of the one table with the schedule's header: (task, arguments) -> when."""
    lines = path.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == HEADER]
    assert len(starts) == 1, f"{path.name}: {len(starts)} schedule tables"
    rows: dict[tuple[str, str], str] = {}
    for line in lines[starts[0] + 2 :]:
        if not line.startswith("|"):
            break
        task_cell, when_cell = (cell.strip() for cell in line.strip("|").split("|")[:2])
        found = re.fullmatch(r"`([\w.]+)`(?: \(`([^`]*)`\))?", task_cell)
        assert found, f"{path.name}: not a task: {task_cell!r}"
        key = (found[1], found[2] or "")
        assert key not in rows, f"{path.name}: {key} twice"
        rows[key] = when_cell
    return rows


@pytest.mark.parametrize("doc", ["docs/embedded.md", "README.md"])
def test_the_documented_schedule_is_the_one_beat_sends(doc: str):
    # The purge's default (hourly) is what the docs describe; a test setting changes it.
    assert not settings.LLMP_RETENTION_PURGE_SECONDS
    code = _code_schedule()
    documented = _doc_schedule(ROOT / doc)

    assert sorted(documented) == sorted(code)  # every entry, none extra
    for key, when in code.items():
        assert documented[key].startswith(when), f"{doc}: {key} runs {when}: {documented[key]!r}"
