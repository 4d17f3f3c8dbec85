"""Reversible pseudonymisation for one request: PII goes upstream as ``<EMAIL_1>``-style
placeholders and comes back as the original values in the reply, streamed or not, plain text or
the JSON text of tool-call arguments."""

from __future__ import annotations

import json
import re
from collections.abc import Collection

from .detector import add_repeats, detect
from .entities import ENTITY_TYPES, DetectorError, Entity

_PLACEHOLDER_RE = re.compile(r"<([A-Z]+(?:_[A-Z]+)*)_([1-9]\d{0,5})>")
# In JSON text a serializer may write "<" and ">" as \u003c and \u003e.
_JSON_PLACEHOLDER_RE = re.compile(
    r"(?:<|\\u003[cC])([A-Z]+(?:_[A-Z]+)*)_([1-9]\d{0,5})(?:>|\\u003[eE])"
)
# The longest tail that can still grow into a placeholder; longer tails are emitted.
_MAX_PARTIAL = 48
_PARTIAL_RE = re.compile(r"<[A-Z_]*\d*")
_JSON_PARTIAL_RE = re.compile(
    r"(?:<|\\u003[cC])[A-Z_]*\d*(?:\\(?:u(?:0(?:0(?:3)?)?)?)?)?|\\(?:u(?:0(?:0(?:3)?)?)?)?"
)


def _overlaps(entity: Entity, spans: list[Entity]) -> bool:
    return any(entity.start < span.end and span.start < entity.end for span in spans)


class Pseudonymizer:
    """Per request: replace entities with stable placeholders ``<EMAIL_1>``, ``<PERSON_2>`` (the
    same value gets the same placeholder in every message of the request), and restore them in
    the reply.

    ``mapping`` maps each placeholder to its original value. It holds PII: keep it in memory for
    the request only.
    """

    def __init__(self, types: Collection[str] | None = None):
        if types is not None:
            unknown = frozenset(types) - ENTITY_TYPES
            if unknown:
                raise DetectorError(f"unknown PII types: {', '.join(sorted(unknown))}")
        self.types = None if types is None else frozenset(types)
        self.mapping: dict[str, str] = {}
        self._placeholders: dict[tuple[str, str], str] = {}
        self._counters: dict[str, int] = {}
        # Placeholder-shaped text the caller wrote itself is never reused for a value, so that
        # restoring cannot turn it into someone's data.
        self._reserved: set[str] = set()

    def pseudonymize(self, text: str, found: list[Entity] | None = None) -> str:
        """``text`` with each detected entity replaced by its placeholder. Numbering is shared
        by all calls on this object. ``found``: what ``detect(text, self.types)`` returned, if
        the caller has it already. Raises ``DetectorError`` if detection fails."""
        self._reserved.update(
            m.group() for m in _PLACEHOLDER_RE.finditer(text) if m.group() not in self.mapping
        )
        entities = detect(text, self.types) if found is None else found
        clashes = [
            Entity(m.group(1), m.start(), m.end(), 1.0)
            for m in _PLACEHOLDER_RE.finditer(text)
            if m.group() in self.mapping
        ]
        if clashes:
            # Placeholder-shaped text the caller wrote that an earlier message's value already
            # stands for (``<EMAIL_1>`` typed after an address became ``<EMAIL_1>``) goes
            # upstream as a placeholder of its own, restored to the text as written.
            entities = sorted(
                [*clashes, *(e for e in entities if not _overlaps(e, clashes))],
                key=lambda e: e.start,
            )
        if self._placeholders:
            # A value found in an earlier message of the request is replaced here too, even
            # where this message's context did not make it recognisable.
            earlier = {value: (kind, 1.0) for kind, value in self._placeholders}
            try:
                entities = add_repeats(text, entities, entities, earlier)
            except Exception as exc:
                raise DetectorError(f"PII repeat search failed ({type(exc).__name__})") from None
        parts: list[str] = []
        position = 0
        for entity in entities:
            parts.append(text[position : entity.start])
            parts.append(self._placeholder_for(entity.type, text[entity.start : entity.end]))
            position = entity.end
        parts.append(text[position:])
        return "".join(parts)

    def _placeholder_for(self, entity_type: str, value: str) -> str:
        key = (entity_type, value)
        placeholder = self._placeholders.get(key)
        if placeholder is None:
            while True:
                number = self._counters.get(entity_type, 0) + 1
                self._counters[entity_type] = number
                placeholder = f"<{entity_type}_{number}>"
                if placeholder not in self._reserved:
                    break
            self._placeholders[key] = placeholder
            self.mapping[placeholder] = value
        return placeholder

    def restore(self, text: str) -> str:
        """Placeholders in ``text`` back to the original values; unknown ones are left as
        they are."""
        if not self.mapping or "<" not in text:
            return text
        return _PLACEHOLDER_RE.sub(self._original, text)

    def restore_json(self, text: str) -> str:
        """Like ``restore``, for JSON text such as tool-call arguments: values are written
        JSON-escaped (an address with a line break stays valid JSON) and ``\\u003c``-escaped
        placeholders are recognised too."""
        if not self.mapping:
            return text
        return _JSON_PLACEHOLDER_RE.sub(self._original_json, text)

    def stream_restorer(self, *, json_string: bool = False) -> StreamRestorer:
        """A restorer for one streamed reply (set ``json_string`` for streamed tool-call
        arguments)."""
        return StreamRestorer(self, json_string=json_string)

    def _original(self, m: re.Match[str]) -> str:
        return self.mapping.get(m.group(), m.group())

    def _original_json(self, m: re.Match[str]) -> str:
        value = self.mapping.get(f"<{m.group(1)}_{m.group(2)}>")
        if value is None:
            return m.group()
        return json.dumps(value, ensure_ascii=False)[1:-1]


class StreamRestorer:
    """Restores placeholders in a reply that arrives in chunks. ``feed`` returns the text that
    is safe to emit now, holding back a tail that may be the start of a placeholder split
    across chunks (``"<EMA"``); ``flush`` returns what is left at the end."""

    def __init__(self, pseudonymizer: Pseudonymizer, *, json_string: bool = False):
        self._pseudonymizer = pseudonymizer
        self._json = json_string
        self._partial = _JSON_PARTIAL_RE if json_string else _PARTIAL_RE
        self._openers = "<\\" if json_string else "<"
        self._buffer = ""

    def feed(self, chunk: str) -> str:
        self._buffer += chunk
        cut = self._safe_length(self._buffer)
        ready, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return self._restore(ready)

    def flush(self) -> str:
        ready, self._buffer = self._buffer, ""
        return self._restore(ready)

    def _restore(self, text: str) -> str:
        if not text:
            return text
        if self._json:
            return self._pseudonymizer.restore_json(text)
        return self._pseudonymizer.restore(text)

    def _safe_length(self, buffer: str) -> int:
        """The length of the longest prefix of ``buffer`` after which no placeholder can
        start that is still incomplete."""
        window_start = max(0, len(buffer) - _MAX_PARTIAL)
        for i in range(window_start, len(buffer)):
            if buffer[i] in self._openers and self._partial.fullmatch(buffer, i):
                return i
        return len(buffer)
