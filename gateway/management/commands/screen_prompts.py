"""``manage.py screen_prompts FILE.jsonl``: screen prompts for injection, offline.

Reads JSON lines ``{"id": ..., "text": ...}`` (``-`` for standard input; an optional ``"role":
"tool"`` screens the text as a tool result or retrieved document, as the gateway does for a
``tool`` message) and writes one line per input:
``{"id": ..., "verdict": "block"|"flag"|"allow", "score": float, "reasons": [...]}``. A line
that cannot be read gives ``{"id": ..., "line": n, "error": "..."}`` instead, and the rest
still runs. Blank lines are skipped. Neither the output nor an error repeats the text.
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.screening.injection import screen_texts

ROLES = ("user", "tool")

DEFAULT_BLOCK_THRESHOLD = 0.5
DEFAULT_FLAG_THRESHOLD = 0.35


def verdict_for(score: float, *, block_threshold: float, flag_threshold: float) -> str:
    if score >= block_threshold:
        return "block"
    if score >= flag_threshold:
        return "flag"
    return "allow"


def screen_line(
    line: str, number: int, *, block_threshold: float, flag_threshold: float
) -> dict[str, Any]:
    """The output record for one input line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return {"id": None, "line": number, "error": "not valid JSON"}
    if not isinstance(record, dict):
        return {"id": None, "line": number, "error": "expected a JSON object"}
    record_id = record.get("id")
    text = record.get("text")
    if not isinstance(text, str):
        return {"id": record_id, "line": number, "error": 'expected a string "text"'}
    role = record.get("role", "user")
    if role not in ROLES:
        return {"id": record_id, "line": number, "error": '"role" must be "user" or "tool"'}
    result = screen_texts([text], roles=[role])
    return {
        "id": record_id,
        "verdict": verdict_for(
            result.score, block_threshold=block_threshold, flag_threshold=flag_threshold
        ),
        "score": round(result.score, 4),
        "reasons": list(result.reasons),
    }


class Command(BaseCommand):
    help = (
        'Screen prompts for injection: read JSON lines {"id", "text"} (optional "role": "tool") '
        'and write one line per input with "verdict" (block, flag or allow), "score" and '
        '"reasons".'
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the JSON lines file, or - for standard input")
        parser.add_argument(
            "--threshold",
            type=float,
            default=DEFAULT_BLOCK_THRESHOLD,
            help="block at or above this score (default: %(default)s)",
        )
        parser.add_argument(
            "--flag-threshold",
            type=float,
            default=DEFAULT_FLAG_THRESHOLD,
            help="flag at or above this score, below the block threshold (default: %(default)s)",
        )
        parser.add_argument("--output", help="write here instead of standard output")

    def handle(self, *args: Any, **options: Any) -> None:
        block_threshold, flag_threshold = options["threshold"], options["flag_threshold"]
        if not 0.0 <= flag_threshold <= block_threshold <= 1.0:
            raise CommandError("Thresholds must satisfy 0 <= --flag-threshold <= --threshold <= 1.")
        counts = {"block": 0, "flag": 0, "allow": 0, "error": 0}
        with ExitStack() as stack:
            source = self._open_input(options["file"], stack)
            sink: TextIO | None = None
            if options["output"]:
                sink = stack.enter_context(open(options["output"], "w", encoding="utf-8"))
            for number, line in enumerate(source, start=1):
                if not line.strip():
                    continue
                record = screen_line(
                    line, number, block_threshold=block_threshold, flag_threshold=flag_threshold
                )
                counts[record.get("verdict", "error")] += 1
                out = json.dumps(record, ensure_ascii=False)
                if sink is None:
                    self.stdout.write(out)
                else:
                    sink.write(out + "\n")
        if options["verbosity"] >= 1:
            self.stderr.write(
                f"Screened {sum(counts.values())} lines: {counts['block']} block, "
                f"{counts['flag']} flag, {counts['allow']} allow, {counts['error']} unreadable."
            )

    @staticmethod
    def _open_input(path: str, stack: ExitStack) -> TextIO:
        if path == "-":
            return sys.stdin
        try:
            return stack.enter_context(open(path, encoding="utf-8", errors="replace"))
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
