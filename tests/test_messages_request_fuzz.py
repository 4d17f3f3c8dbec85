"""Fuzzing the Anthropic Messages door's parser with hypothesis: any JSON body, and bodies close
to a Messages request with any value in any field, parse into a request or are refused with the
typed 400, never another exception (which the door would answer with a 500)."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api.messages_request import parse_messages_request
from gateway.errors import InvalidRequest
from gateway.pipeline.validate import ParsedChat

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=os.environ.get("CI") == "true",  # as tests/test_fuzz.py: CI runs a fixed set
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# Values the parser looks for, so examples reach the deeper branches.
words = st.sampled_from(
    [
        "text",
        "image",
        "tool_use",
        "tool_result",
        "document",
        "base64",
        "url",
        "image/png",
        "user",
        "assistant",
        "auto",
        "any",
        "tool",
        "none",
        "json_schema",
        "custom",
        "disabled",
    ]
)
anything = json_values | words


def _block() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"type": words},
        optional={
            "text": anything,
            "source": st.fixed_dictionaries(
                {"type": words}, optional={"media_type": words, "data": anything, "url": anything}
            )
            | anything,
            "id": anything,
            "name": anything,
            "input": anything,
            "tool_use_id": anything,
            "content": anything | st.lists(st.fixed_dictionaries({"type": words}), max_size=2),
            "is_error": anything,
        },
    )


messages = st.lists(
    st.fixed_dictionaries(
        {"role": words | anything},
        optional={"content": st.text(max_size=20) | st.lists(_block(), max_size=3) | anything},
    ),
    max_size=4,
)
bodies = st.fixed_dictionaries(
    {"model": st.just("default") | anything, "messages": messages | anything},
    optional={
        "max_tokens": st.integers(min_value=-2, max_value=10**6) | anything,
        "system": anything | st.lists(_block(), max_size=2),
        "stop_sequences": anything,
        "temperature": anything,
        "top_p": anything,
        "top_k": anything,
        "metadata": st.fixed_dictionaries({}, optional={"user_id": anything}) | anything,
        "stream": anything,
        "tools": st.lists(
            st.fixed_dictionaries(
                {"name": anything}, optional={"input_schema": anything, "type": anything}
            ),
            max_size=2,
        )
        | anything,
        "tool_choice": st.fixed_dictionaries({"type": words}, optional={"name": anything})
        | anything,
        "thinking": anything,
        "output_config": anything,
        "cache_control": anything,
    },
)


def _parses_or_refuses(body: Any) -> None:
    for count_only in (False, True):
        try:
            parsed = parse_messages_request(dict(body), count_only=count_only)
        except InvalidRequest as exc:
            assert exc.status == 400 and exc.message
        else:
            assert isinstance(parsed, ParsedChat) and parsed.messages


@FUZZ
@given(st.dictionaries(st.text(max_size=12) | words, anything, max_size=6))
def test_any_json_object_parses_or_is_a_typed_400(body):
    _parses_or_refuses(body)


@FUZZ
@given(bodies)
def test_a_near_messages_request_parses_or_is_a_typed_400(body):
    _parses_or_refuses(body)
