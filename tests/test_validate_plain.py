"""The hand-written check of plain chat requests agrees with the serializer: on any request it
either declines (and the serializer decides) or returns exactly what the serializer would,
types included. And the requests SDKs send in practice take the plain path."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.pipeline.validate import ChatCompletionSerializer, plain_chat_request


def _typed(value: Any) -> Any:
    """A comparable form that tells 1 from 1.0 and True from 1."""
    if isinstance(value, dict):
        return ("dict", sorted((k, _typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, value)


_EDGES = [
    " padded ",
    "",
    "nul\x00",
    "\ud800",
    "a" * 65,
    "a" * 257,
    True,
    False,
    0,
    -1,
    1.5,
    2.5,
    129,
    10**20,
    float("nan"),
    float("inf"),
    "1",
    "0.5",
    None,
    [],
    {},
    ["a"] * 5,
    [1],
    {"include_usage": 1},
    {"include_usage": True, "other": 1},
]
_MESSAGE_EDGES = [
    {"role": "user", "content": "hi", "name": "n"},
    {"role": "tool", "content": "hi"},
    {"role": "bot", "content": "hi"},
    {"role": "user"},
    {"role": "user", "content": None},
    {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    {"role": 1, "content": "hi"},
    {"role": ["user"], "content": "hi"},
    {"content": "hi", "extra": 1},
    "not a message",
]
_FIELDS = [
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "user",
    "stream",
    "stream_options",
]
_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "developer", "user", "assistant"]),
        "content": st.text(max_size=20),
    }
)
_valid = st.fixed_dictionaries(
    {
        "model": st.from_regex(r"[a-z0-9.-]{1,64}", fullmatch=True),
        "messages": st.lists(_message, min_size=1, max_size=4),
    },
    optional={
        "temperature": st.one_of(st.none(), st.floats(0, 2), st.integers(0, 2)),
        "top_p": st.one_of(st.none(), st.floats(0, 1), st.integers(0, 1)),
        "max_tokens": st.one_of(st.none(), st.integers(1, 10**6)),
        "max_completion_tokens": st.one_of(st.none(), st.integers(1, 10**6)),
        "n": st.one_of(st.none(), st.integers(1, 128)),
        "stop": st.one_of(
            st.none(), st.text(max_size=5), st.lists(st.text(max_size=5), max_size=4)
        ),
        "user": st.text(max_size=20),
        "stream": st.one_of(st.none(), st.booleans()),
        "stream_options": st.one_of(
            st.none(), st.fixed_dictionaries({}, optional={"include_usage": st.booleans()})
        ),
    },
)


@st.composite
def _requests(draw: st.DrawFn) -> dict[str, Any]:
    """A valid request, with at most one field (or its first message) set to an edge value."""
    data = draw(_valid)
    target = draw(st.sampled_from([None, "message", *_FIELDS]))
    if target == "message":
        data["messages"][0] = draw(st.sampled_from(_MESSAGE_EDGES))
    elif target is not None:
        data[target] = draw(st.sampled_from(_EDGES))
    return data


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_requests())
def test_the_plain_check_returns_what_the_serializer_would_or_declines(data):
    plain = plain_chat_request(copy.deepcopy(data))
    if plain is None:
        return
    serializer = ChatCompletionSerializer(data=copy.deepcopy(data))
    assert serializer.is_valid(), (data, serializer.errors)
    assert _typed(plain) == _typed(serializer.validated_data)


def test_what_sdks_send_takes_the_plain_path():
    sent_by_clients = [
        {"model": "default", "messages": [{"role": "user", "content": "Hi"}]},
        {
            "model": "default",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": ""},
            ],
            "temperature": 0.7,
            "top_p": 1,
            "max_tokens": 64,
            "n": 1,
            "stop": ["\n\n"],
            "user": "user-42",
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        {"model": "m", "messages": [{"role": "developer", "content": "x"}], "stream": False},
    ]
    for data in sent_by_clients:
        serializer = ChatCompletionSerializer(data=copy.deepcopy(data))
        assert serializer.is_valid()
        assert _typed(plain_chat_request(copy.deepcopy(data))) == _typed(serializer.validated_data)


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(max_codepoint=0x2FF))
    | st.text(st.characters(max_codepoint=0x7F))
    | st.text(st.characters(blacklist_categories=()))  # any code point, surrogates included
)
def test_control_characters_are_removed_the_same_way_from_ascii_and_other_text(text):
    """``clean_text`` looks for a control character in ASCII text with ``bytes.translate`` and
    in other text through its UTF-8 bytes; it removes what the regular expression removes (tab
    and newline stay), whatever the text."""
    import re

    from gateway.pipeline.validate import clean_text

    assert clean_text(text) == re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", "", text)
