"""Stage "guard output": a reply on its way to the client, plain or streamed.

A reply is a stream of ``ChatDelta`` for one or more choices; a plain answer is the same stream
in one chunk per choice (``as_deltas``), so both go through this one stage. Each text a reply
carries is a *channel* with its own filters: a choice's content, its refusal, and the arguments
of each of its tool calls. On every channel:

1. the leak guard looks for the canary and for a run of the system prompt (on what the provider
   wrote). By policy a leak stops the reply there (finish ``content_filter``) or is flagged;
2. pseudonymised placeholders are turned back into the values they stand for (JSON-escaped in
   tool-call arguments), holding back only what may be an incomplete placeholder.

``Output`` also assembles what the provider wrote (for the cache) and what the client was shown
(for the conversation record and the plain answer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.pipeline import guard, pii
from gateway.providers.base import ChatDelta, ChatResult, Choice, Usage

CONTENT, REFUSAL = "content", "refusal"


def as_deltas(result: ChatResult) -> list[ChatDelta]:
    """A plain answer as a stream: one delta per choice, carrying the whole message."""
    deltas = []
    for choice in result.choices:
        calls = None
        if choice.tool_calls:
            calls = [{"index": n, **call} for n, call in enumerate(choice.tool_calls)]
        deltas.append(
            ChatDelta(
                content=choice.content,
                finish_reason=choice.finish_reason,
                index=choice.index,
                tool_calls=calls,
                refusal=choice.refusal,
                logprobs=choice.logprobs,
            )
        )
    if deltas:
        deltas[-1].usage = result.usage
    return deltas


class Channel:
    """One text of a reply through the leak guard, then the restorer."""

    def __init__(
        self,
        leak: guard.LeakGuard | None,
        restorer: pii.Restorer | None,
        *,
        json_string: bool = False,
    ) -> None:
        self.leak = leak
        self.restorer = restorer
        self.json_string = json_string
        self._stream = restorer.stream(json_string=json_string) if restorer else None

    @property
    def stopped(self) -> bool:
        return self.leak is not None and self.leak.leaked and self.leak.blocking

    def whole(self, text: str) -> str:
        if self.leak is not None:
            text = self.leak.check(text)
        if self.restorer is not None and text:
            text = self.restorer.whole(text, json_string=self.json_string)
        return text

    def feed(self, text: str) -> str:
        if self.leak is not None:
            text = self.leak.feed(text)
        if self._stream is not None and text:
            text = self._stream.feed(text)
        return text

    def flush(self) -> str:
        rest = self.leak.flush() if self.leak is not None else ""
        if self._stream is not None:
            rest = (self._stream.feed(rest) if rest else "") + self._stream.flush()
        return rest


@dataclass(slots=True)
class _Assembly:
    """One choice as it is assembled: what the provider wrote and what the client saw."""

    index: int
    raw: dict[str, list[str]] = field(default_factory=lambda: {CONTENT: [], REFUSAL: []})
    shown: dict[str, list[str]] = field(default_factory=lambda: {CONTENT: [], REFUSAL: []})
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)  # tool index -> call
    raw_arguments: dict[int, list[str]] = field(default_factory=dict)
    shown_arguments: dict[int, list[str]] = field(default_factory=dict)
    logprobs: dict[str, list[Any]] = field(default_factory=dict)
    finish: str | None = None
    finish_sent: bool = False

    def choice(self, raw: bool, *, logprobs: bool = True) -> Choice:
        texts = self.raw if raw else self.shown
        arguments = self.raw_arguments if raw else self.shown_arguments
        calls = [
            {**call, "function": {**call["function"], "arguments": "".join(arguments.get(n, []))}}
            for n, call in sorted(self.calls.items())
        ]
        refusal = "".join(texts[REFUSAL])
        return Choice(
            index=self.index,
            content="".join(texts[CONTENT]),
            finish_reason=self.finish or "stop",
            tool_calls=calls or None,
            refusal=refusal or None,
            logprobs=dict(self.logprobs) if logprobs and self.logprobs else None,
        )


class Output:
    """The output stage for one reply. ``feed`` takes the provider's next delta and returns the
    deltas to send (filtered; a choice's finish comes after what its filters held back);
    ``finish`` returns what is left at the end. ``whole`` marks a plain answer, whose texts
    are checked whole."""

    def __init__(
        self,
        new_leak_guard: Callable[[], guard.LeakGuard] | None,
        restorer: pii.Restorer | None,
        *,
        whole: bool = False,
    ) -> None:
        self._new_leak_guard = new_leak_guard
        self.restorer = restorer
        self.whole = whole
        self.active = new_leak_guard is not None or restorer is not None
        self.channels: dict[tuple[int, str, int], Channel] = {}
        self.choices: dict[int, _Assembly] = {}
        self.usage: Usage | None = None
        self.stopped = False
        self.leak_kind = ""

    @property
    def leaked(self) -> bool:
        return bool(self.leak_kind)

    @property
    def blocking(self) -> bool:
        return any(c.leak is not None and c.leak.blocking for c in self.channels.values())

    def _channel(self, index: int, kind: str, tool: int = 0) -> Channel:
        key = (index, kind, tool)
        channel = self.channels.get(key)
        if channel is None:
            leak = self._new_leak_guard() if self._new_leak_guard is not None else None
            channel = self.channels[key] = Channel(
                leak, self.restorer, json_string=kind == "arguments"
            )
        return channel

    def _pass(self, channel: Channel, text: str) -> str:
        shown = channel.whole(text) if self.whole else channel.feed(text)
        self._note_leak(channel)
        return shown

    def _assembly(self, index: int) -> _Assembly:
        found = self.choices.get(index)
        if found is None:
            found = self.choices[index] = _Assembly(index)
        return found

    def feed(self, delta: ChatDelta) -> list[ChatDelta]:
        if delta.usage is not None:
            self.usage = delta.usage
        if self.stopped:
            return []
        index = delta.index
        choice = self._assembly(index)
        # Logprobs carry the tokens themselves: with a leak guard on they are held until the
        # choice ends, and dropped if it ends in a blocked leak.
        out = ChatDelta(
            index=index, logprobs=delta.logprobs if self._new_leak_guard is None else None
        )
        for kind in (CONTENT, REFUSAL):
            text = getattr(delta, kind)
            if not text:
                continue
            choice.raw[kind].append(text)
            shown = self._pass(self._channel(index, kind), text) if self.active else text
            choice.shown[kind].append(shown)
            setattr(out, kind, shown or (None if kind == REFUSAL else ""))
        if delta.tool_calls:
            out.tool_calls = self._tool_calls(choice, delta.tool_calls)
        if delta.logprobs:
            for key, items in delta.logprobs.items():
                if isinstance(items, list):
                    choice.logprobs.setdefault(key, []).extend(items)
        events = [out] if (out.content or out.refusal or out.tool_calls or out.logprobs) else []
        if self.stopped:
            events.extend(self._stop())
        elif delta.finish_reason:
            choice.finish = delta.finish_reason
            events.extend(self._close(choice))
        return events

    def _tool_calls(
        self, choice: _Assembly, fragments: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        shown_fragments = []
        for fragment in fragments:
            tool = fragment.get("index", 0)
            call = choice.calls.get(tool)
            if call is None:
                function = fragment.get("function") or {}
                call = choice.calls[tool] = {
                    "id": fragment.get("id", ""),
                    "type": "function",
                    "function": {"name": function.get("name", "")},
                }
            function = fragment.get("function") or {}
            shown = {**fragment, "function": {**function}} if function else dict(fragment)
            arguments = function.get("arguments") or ""
            if arguments:
                choice.raw_arguments.setdefault(tool, []).append(arguments)
                text = (
                    self._pass(self._channel(choice.index, "arguments", tool), arguments)
                    if self.active
                    else arguments
                )
                choice.shown_arguments.setdefault(tool, []).append(text)
                shown["function"]["arguments"] = text
            if self.stopped:
                break
            shown_fragments.append(shown)
        return shown_fragments

    def _flush_choice(self, choice: _Assembly) -> list[ChatDelta]:
        """What a choice's filters held back."""
        if not self.active:
            return []
        out = ChatDelta(index=choice.index)
        for kind in (CONTENT, REFUSAL):
            channel = self.channels.get((choice.index, kind, 0))
            if channel is not None:
                rest = channel.flush()
                self._note_leak(channel)
                if rest:
                    choice.shown[kind].append(rest)
                    setattr(out, kind, rest)
        fragments = []
        for tool in sorted(choice.calls):
            channel = self.channels.get((choice.index, "arguments", tool))
            if channel is not None:
                rest = channel.flush()
                self._note_leak(channel)
                if rest:
                    choice.shown_arguments.setdefault(tool, []).append(rest)
                    fragments.append({"index": tool, "function": {"arguments": rest}})
        out.tool_calls = fragments or None
        return [out] if (out.content or out.refusal or out.tool_calls) else []

    def _note_leak(self, channel: Channel) -> None:
        if channel.leak is not None and channel.leak.leaked:
            self.leak_kind = self.leak_kind or channel.leak.kind
            if channel.stopped:
                self.stopped = True

    def _close(self, choice: _Assembly) -> list[ChatDelta]:
        events = self._flush_choice(choice)
        if self.stopped:
            return events + self._stop()
        if self._new_leak_guard is not None and choice.logprobs:
            events.append(ChatDelta(index=choice.index, logprobs=dict(choice.logprobs)))
        choice.finish_sent = True
        events.append(ChatDelta(index=choice.index, finish_reason=choice.finish or "stop"))
        return events

    def _stop(self) -> list[ChatDelta]:
        """A blocked leak ends every choice: ``content_filter``, as OpenAI's filter does."""
        events = []
        for choice in self.choices.values():
            if not choice.finish_sent:
                choice.finish, choice.finish_sent = "content_filter", True
                events.append(ChatDelta(index=choice.index, finish_reason="content_filter"))
        return events

    def finish(self) -> list[ChatDelta]:
        """The end of the provider's stream: every choice not finished yet is closed."""
        if not self.choices:
            self.choices[0] = _Assembly(0)
        events: list[ChatDelta] = []
        for choice in sorted(self.choices.values(), key=lambda c: c.index):
            if not choice.finish_sent and not self.stopped:
                events.extend(self._close(choice))
        if self.stopped:
            events.extend(self._stop())
        return events

    def result(self, *, raw: bool, usage: Usage) -> ChatResult:
        """The reply assembled: as the provider wrote it (``raw``), or as the client saw it."""
        choices = [
            c.choice(raw, logprobs=raw or not (self.leaked and self.blocking))
            for c in sorted(self.choices.values(), key=lambda c: c.index)
        ]
        return ChatResult(choices or [Choice()], usage)

    def written_text(self) -> str:
        """Everything the provider wrote, for a token estimate when it reported none."""
        return "".join(
            text
            for choice in self.choices.values()
            for texts in (choice.raw[CONTENT], choice.raw[REFUSAL], *choice.raw_arguments.values())
            for text in texts
        )

    def shown_texts(self) -> list[tuple[str, str]]:
        """Every text of the reply as the client would get it, with its place
        (``choices[0].message.content``): what a post-call scanner reads."""
        found = []
        for choice in sorted(self.choices.values(), key=lambda c: c.index):
            base = f"choices[{choice.index}].message"
            for kind in (CONTENT, REFUSAL):
                text = "".join(choice.shown[kind])
                if text:
                    found.append((f"{base}.{kind}", text))
            for tool, call in sorted(choice.calls.items()):
                name = call["function"].get("name", "")
                arguments = "".join(choice.shown_arguments.get(tool, []))
                if name or arguments:
                    found.append((f"{base}.tool_calls[{tool}].function", f"{name}({arguments})"))
        return found

    @property
    def tool_call_count(self) -> int:
        return sum(len(c.calls) for c in self.choices.values())
