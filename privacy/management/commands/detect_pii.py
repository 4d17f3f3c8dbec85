"""``manage.py detect_pii FILE.jsonl``: find PII in each line of a JSON Lines file.

Each input line is ``{"id": ..., "text": ...}``; each output line is
``{"id": ..., "entities": [{"type": ..., "start": ..., "end": ...}], "redacted": "..."}`` with
``start``/``end`` as character (code point) offsets into ``text``, end exclusive. A line that
cannot be read gives ``{"id": ..., "line": N, "error": "..."}`` instead and the rest go on;
error messages never quote the text.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from typing import IO, TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from privacy.pii import ENTITY_TYPES, DetectorError, detect, redact

if TYPE_CHECKING:
    from _typeshed import SupportsWrite


def detect_lines(
    lines: Iterable[str], types: frozenset[str] | None = None
) -> Iterator[dict[str, Any]]:
    """One result object per non-blank input line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        yield _detect_line(number, line, types)


def _detect_line(number: int, line: str, types: frozenset[str] | None) -> dict[str, Any]:
    try:
        item = json.loads(line)
    except ValueError:
        return {"id": None, "line": number, "error": "not valid JSON"}
    if not isinstance(item, dict):
        return {"id": None, "line": number, "error": "not a JSON object"}
    item_id = item.get("id")
    text = item.get("text")
    if not isinstance(text, str):
        problem = "no 'text' field" if text is None else "'text' is not a string"
        return {"id": item_id, "line": number, "error": problem}
    try:
        entities = detect(text, types)
    except DetectorError as exc:
        return {"id": item_id, "line": number, "error": str(exc)}
    return {
        "id": item_id,
        "entities": [{"type": e.type, "start": e.start, "end": e.end} for e in entities],
        "redacted": redact(text, entities),
    }


class Command(BaseCommand):
    help = (
        'Read {"id": ..., "text": ...} lines (a JSON Lines file, or - for standard input) and '
        'write {"id": ..., "entities": [{"type", "start", "end"}], "redacted": ...} lines.'
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="a JSON Lines file, or - for standard input")
        parser.add_argument(
            "--output", "-o", default="-", help="where to write (default: standard output)"
        )
        parser.add_argument(
            "--types",
            help="comma-separated entity types to look for (default: all): "
            + ", ".join(sorted(ENTITY_TYPES)),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        types = None
        if options["types"]:
            types = frozenset(t.strip().upper() for t in options["types"].split(",") if t.strip())
            unknown = types - ENTITY_TYPES
            if unknown:
                raise CommandError(f"Unknown entity types: {', '.join(sorted(unknown))}")
        with ExitStack() as stack:
            source: Iterable[str] = (
                sys.stdin
                if options["file"] == "-"
                else stack.enter_context(self._open(options["file"], "r"))
            )
            sink: SupportsWrite[str] = (
                self.stdout
                if options["output"] == "-"
                else stack.enter_context(self._open(options["output"], "w"))
            )
            lines = errors = 0
            for result in detect_lines(source, types):
                sink.write(json.dumps(result, ensure_ascii=False) + "\n")
                lines += 1
                errors += "error" in result
        self.stderr.write(f"{lines} line(s), {errors} with errors.")

    @staticmethod
    def _open(path: str, mode: str) -> IO[str]:
        try:
            return open(path, mode, encoding="utf-8", newline="\n" if mode == "w" else None)
        except OSError as exc:
            raise CommandError(f"Cannot open {path}: {exc.strerror}") from None
