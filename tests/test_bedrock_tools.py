"""Agent traffic through the Bedrock adapter: OpenAI tools, tool calls and results, images and
embeddings, translated to Converse/InvokeModel and back, against the real local server of
``tests.upstreams`` (which refuses what Bedrock refuses: see its docstring) through boto3."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.providers.base import (
    ChatMessage,
    ChatRequest,
    EmbeddingRequest,
    UnsupportedByProvider,
    UpstreamBadResponse,
    UpstreamUnavailable,
)
from tests import test_providers_bedrock as bedrock_tests
from tests.test_providers_bedrock import MODEL, collect

# The Bedrock tests' fixtures: fake AWS credentials (autouse), the fake server and adapters.
_aws_environment = bedrock_tests._aws_environment
upstream = bedrock_tests.upstream
make_adapter = bedrock_tests.make_adapter

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
CLOCK_TOOL = {"type": "function", "function": {"name": "clock"}}  # no description, no parameters
# The smallest PNG there is: a 1x1 transparent pixel.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-multilingual-v3"


def chat(*messages: ChatMessage, **extra) -> ChatRequest:
    return ChatRequest(
        model=MODEL, messages=list(messages) or [ChatMessage("user", "weather?")], extra=extra
    )


def call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


# --------------------------------------------------------------------------- requests


async def test_tools_are_declared_in_the_tool_config(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    await adapter.complete(chat(tools=[WEATHER_TOOL, CLOCK_TOOL]))

    assert upstream.requests[-1].json["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]},
                }
            },
            # Bedrock needs a schema and refuses an empty description.
            {
                "toolSpec": {
                    "name": "clock",
                    "inputSchema": {"json": {"type": "object", "properties": {}}},
                }
            },
        ]
    }


@pytest.mark.parametrize(
    ("tool_choice", "converse"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"tool": {"name": "get_weather"}},
        ),
    ],
)
async def test_tool_choice_is_translated(upstream, make_adapter, tool_choice, converse):
    adapter = make_adapter(upstream.base_url)

    await adapter.complete(chat(tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice=tool_choice))

    assert upstream.requests[-1].json["toolConfig"]["toolChoice"] == converse


async def test_without_a_tool_choice_bedrock_decides(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    await adapter.complete(chat(tools=[WEATHER_TOOL]))

    assert "toolChoice" not in upstream.requests[-1].json["toolConfig"]


async def test_tool_choice_none_withholds_the_tools(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    await adapter.complete(chat(tools=[WEATHER_TOOL], tool_choice="none"))

    assert "toolConfig" not in upstream.requests[-1].json


async def test_a_tool_round_trip_becomes_tool_use_and_tool_result_blocks(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    result = await adapter.complete(
        chat(
            ChatMessage("system", "Use the tools."),
            ChatMessage("user", "Weather in Paris and Zürich?"),
            ChatMessage(
                "assistant",
                "Let me look.",
                tool_calls=[
                    call("call_1", "get_weather", '{"city": "Paris"}'),
                    call("call_2", "get_weather", '{"city": "Zürich", "days": 2}'),
                ],
            ),
            ChatMessage("tool", "sunny", tool_call_id="call_1"),
            ChatMessage("tool", "snow", tool_call_id="call_2"),
            tools=[WEATHER_TOOL],
        )
    )

    assert upstream.requests[-1].json["messages"] == [
        {"role": "user", "content": [{"text": "Weather in Paris and Zürich?"}]},
        {
            "role": "assistant",
            "content": [
                {"text": "Let me look."},
                {
                    "toolUse": {
                        "toolUseId": "call_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                },
                {
                    "toolUse": {
                        "toolUseId": "call_2",
                        "name": "get_weather",
                        "input": {"city": "Zürich", "days": 2},
                    }
                },
            ],
        },
        # Both results in one user turn: Bedrock requires the roles to alternate.
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": "sunny"}]}},
                {"toolResult": {"toolUseId": "call_2", "content": [{"text": "snow"}]}},
            ],
        },
    ]
    # The fake model echoes the last user turn: it read the tool results.
    assert result.content == "sunnysnow"


async def test_a_user_message_after_tool_results_joins_their_turn(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    await adapter.complete(
        chat(
            ChatMessage("user", "Weather in Paris?"),
            ChatMessage("assistant", "", tool_calls=[call("call_1", "get_weather", "{}")]),
            ChatMessage("tool", "", tool_call_id="call_1"),
            ChatMessage("user", "And tomorrow?"),
            tools=[WEATHER_TOOL],
        )
    )

    assert upstream.requests[-1].json["messages"][1:] == [
        {
            "role": "assistant",
            "content": [{"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {}}}],
        },
        {
            "role": "user",
            "content": [
                # Bedrock refuses a blank text block, even in a tool result.
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": "(no output)"}]}},
                {"text": "And tomorrow?"},
            ],
        },
    ]


@pytest.mark.parametrize("tools", [None, [WEATHER_TOOL]], ids=["no tools", "tool_choice none"])
async def test_tool_history_goes_as_text_when_no_tools_are_declared(upstream, make_adapter, tools):
    # Bedrock refuses toolUse/toolResult blocks without toolConfig: a final "summarise, no more
    # tools" request after an agent loop must still work.
    adapter = make_adapter(upstream.base_url)
    extra = {"tools": tools, "tool_choice": "none"} if tools else {}

    result = await adapter.complete(
        chat(
            ChatMessage("user", "Weather in Paris?"),
            ChatMessage(
                "assistant", "", tool_calls=[call("call_1", "get_weather", '{"city":"Paris"}')]
            ),
            ChatMessage("tool", "sunny", tool_call_id="call_1"),
            **extra,
        )
    )

    sent = upstream.requests[-1].json
    assert "toolConfig" not in sent
    assert sent["messages"][1:] == [
        {"role": "assistant", "content": [{"text": 'Tool call get_weather: {"city": "Paris"}'}]},
        {"role": "user", "content": [{"text": "Tool result: sunny"}]},
    ]
    assert result.content == "Tool result: sunny"


@pytest.mark.parametrize("arguments", ["[1, 2]", '"Paris"', "{not json", "null"])
async def test_tool_call_arguments_that_are_not_an_object_are_refused(
    upstream, make_adapter, arguments
):
    adapter = make_adapter(upstream.base_url)

    with pytest.raises(UnsupportedByProvider) as caught:
        await adapter.complete(
            chat(
                ChatMessage("user", "Weather?"),
                ChatMessage("assistant", "", tool_calls=[call("c", "get_weather", arguments)]),
                ChatMessage("tool", "sunny", tool_call_id="c"),
                tools=[WEATHER_TOOL],
            )
        )

    assert caught.value.param == "messages[1].tool_calls[0].function.arguments"
    assert caught.value.status == 400
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("media_type", "image_format"),
    [("image/png", "png"), ("image/jpeg", "jpeg"), ("image/gif", "gif"), ("image/webp", "webp")],
)
async def test_an_image_data_url_is_sent_as_its_bytes(
    upstream, make_adapter, media_type, image_format
):
    adapter = make_adapter(upstream.base_url)
    data_url = f"data:{media_type};base64,{base64.b64encode(PNG).decode()}"
    parts = (
        {"type": "text", "text": "What is "},
        {"type": "text", "text": "this?"},
        image(data_url),
    )

    await adapter.complete(chat(ChatMessage("user", "What is this?", parts=parts)))

    text, image_block = upstream.requests[-1].json["messages"][0]["content"]
    assert text == {"text": "What is this?"}  # adjacent text parts are one text
    assert image_block["image"]["format"] == image_format
    # botocore sends the bytes base64-encoded, once: decoding gives the client's image back.
    assert base64.b64decode(image_block["image"]["source"]["bytes"]) == PNG


async def test_an_image_url_is_refused_without_fetching_it(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)
    url = "https://images.example.com/passport-of-jane-doe.png?token=s3cr3t"
    parts = ({"type": "text", "text": "Read this"}, image(url))

    with pytest.raises(UnsupportedByProvider) as caught:
        await adapter.complete(chat(ChatMessage("user", "Read this", parts=parts)))

    assert caught.value.param == "messages[0].content[1]"
    assert "data URL" in str(caught.value)
    assert "example.com" not in str(caught.value) and "s3cr3t" not in str(caught.value)
    assert upstream.requests == []


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
        },
        image("data:image/svg+xml;base64,PHN2Zy8+"),
        image("data:image/png;base64,not base64!"),
    ],
    ids=["audio", "file", "svg image", "broken base64"],
)
async def test_parts_bedrock_cannot_take_are_refused(upstream, make_adapter, part):
    adapter = make_adapter(upstream.base_url)
    parts = ({"type": "text", "text": "hi"}, {"type": "text", "text": "there"}, part)

    with pytest.raises(UnsupportedByProvider) as caught:
        await adapter.complete(
            chat(
                ChatMessage("system", "Be brief."),
                ChatMessage("user", "hithere", parts=parts),
            )
        )

    assert caught.value.param == "messages[1].content[2]"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 3}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {}},
                }
            },
            "response_format",
        ),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy"}}, "audio"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        ({"tools": [WEATHER_TOOL, {"type": "function", "function": {}}]}, "tools[1]"),
        ({"tools": [WEATHER_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ],
)
async def test_what_converse_cannot_honour_is_refused_before_any_call(
    upstream, make_adapter, extra, param
):
    adapter = make_adapter(upstream.base_url)

    with pytest.raises(UnsupportedByProvider) as caught:
        await adapter.complete(chat(**extra))
    assert caught.value.param == param
    assert caught.value.code == "unsupported_by_provider"
    with pytest.raises(UnsupportedByProvider):
        await collect(adapter, chat(**extra))

    assert upstream.requests == []


async def test_harmless_parameters_are_accepted_and_not_sent(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    result = await adapter.complete(
        chat(
            n=1,
            logprobs=False,
            top_logprobs=0,
            response_format={"type": "text"},
            seed=7,
            metadata={"team": "a"},
            parallel_tool_calls=False,
            store=False,
            service_tier="auto",
            modalities=["text"],
        )
    )

    assert result.content == "weather?"
    assert set(upstream.requests[-1].json) == {"messages"}


# --------------------------------------------------------------------------- answers


async def test_a_tool_use_answer_becomes_tool_calls(upstream, make_adapter):
    upstream.tool_use = {"name": "get_weather", "input": {"city": "Zürich", "days": 2}}
    adapter = make_adapter(upstream.base_url)

    result = await adapter.complete(chat(tools=[WEATHER_TOOL]))

    choice = result.choices[0]
    assert choice.tool_calls == [
        {
            "id": "tooluse_0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Zürich","days":2}'},
        }
    ]
    assert choice.finish_reason == "tool_calls"
    assert choice.content == ""
    assert result.tool_call_count == 1


async def test_text_and_parallel_tool_calls_come_back_together(upstream, make_adapter):
    upstream.reply = "Let me look."
    upstream.tool_use = [
        {"name": "get_weather", "input": {"city": "Paris"}},
        {"name": "clock", "input": {}},
    ]
    adapter = make_adapter(upstream.base_url)

    result = await adapter.complete(chat(tools=[WEATHER_TOOL, CLOCK_TOOL]))

    assert result.content == "Let me look."
    assert [c["function"]["name"] for c in result.choices[0].tool_calls] == ["get_weather", "clock"]
    assert [json.loads(c["function"]["arguments"]) for c in result.choices[0].tool_calls] == [
        {"city": "Paris"},
        {},
    ]


async def test_an_agent_loop_runs_on_bedrock(upstream, make_adapter):
    """What an OpenAI client does: call the model, run the tool it asked for, send the call and
    its result back, and get the final answer."""
    adapter = make_adapter(upstream.base_url)
    question = ChatMessage("user", "Weather in Paris?")
    upstream.tool_use = {"id": "tooluse_Ab3", "name": "get_weather", "input": {"city": "Paris"}}

    first = await adapter.complete(chat(question, tools=[WEATHER_TOOL]))
    upstream.tool_use = None
    calls = first.choices[0].tool_calls
    final = await adapter.complete(
        chat(
            question,
            ChatMessage("assistant", first.content, tool_calls=calls),
            ChatMessage("tool", "sunny, 24 °C", tool_call_id=calls[0]["id"]),
            tools=[WEATHER_TOOL],
        )
    )

    assert final.content == "sunny, 24 °C"
    assert final.finish_reason == "stop"
    assert upstream.requests[-1].json["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "tooluse_Ab3", "name": "get_weather", "input": {"city": "Paris"}}}
    ]


# --------------------------------------------------------------------------- streams


async def test_a_streamed_tool_call_arrives_in_fragments(upstream, make_adapter):
    upstream.reply = "Let me look."
    arguments = {"city": "Zürich", "days": 2, "units": "metric"}
    upstream.tool_use = [
        {"name": "get_weather", "input": arguments},
        {"id": "tooluse_clock", "name": "clock", "input": {}},
    ]
    adapter = make_adapter(upstream.base_url)

    deltas = await collect(adapter, chat(tools=[WEATHER_TOOL, CLOCK_TOOL]))

    assert "".join(d.content for d in deltas) == "Let me look."
    fragments = [f for d in deltas if d.tool_calls for f in d.tool_calls]
    firsts = [f for f in fragments if "id" in f]
    # The text block is content block 0, but the calls are tool calls 0 and 1.
    assert firsts == [
        {
            "index": 0,
            "id": "tooluse_0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
        {
            "index": 1,
            "id": "tooluse_clock",
            "type": "function",
            "function": {"name": "clock", "arguments": ""},
        },
    ]
    pieces = [f["function"]["arguments"] for f in fragments if f["index"] == 0]
    assert len([p for p in pieces if p]) > 3  # really streamed, not one piece
    assert json.loads("".join(pieces)) == arguments
    assert (
        json.loads("".join(f["function"]["arguments"] for f in fragments if f["index"] == 1)) == {}
    )
    assert all(set(f) == {"index", "function"} for f in fragments if "id" not in f)
    assert deltas[-1].finish_reason == "tool_calls"
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1].usage.completion_tokens > 0


async def test_a_streamed_call_without_input_pieces_has_empty_object_arguments(
    upstream, make_adapter
):
    # "" is not JSON: clients that parse the arguments they put together would fail on it.
    upstream.tool_use = {"name": "clock", "input": {}, "pieces": [""]}
    adapter = make_adapter(upstream.base_url)

    deltas = await collect(adapter, chat(tools=[CLOCK_TOOL]))

    fragments = [f for d in deltas if d.tool_calls for f in d.tool_calls]
    assert "".join(f["function"]["arguments"] for f in fragments) == "{}"
    assert deltas[-1].finish_reason == "tool_calls"


async def test_a_streamed_tool_call_parses_to_what_converse_answers(upstream, make_adapter):
    upstream.tool_use = {"name": "get_weather", "input": {"city": "São Paulo", "days": 3}}
    adapter = make_adapter(upstream.base_url)

    whole = await adapter.complete(chat(tools=[WEATHER_TOOL]))
    deltas = await collect(adapter, chat(tools=[WEATHER_TOOL]))

    streamed = "".join(
        f["function"]["arguments"] for d in deltas if d.tool_calls for f in d.tool_calls
    )
    assert json.loads(streamed) == json.loads(
        whole.choices[0].tool_calls[0]["function"]["arguments"]
    )


# --------------------------------------------------------------------------- embeddings


async def test_titan_embeds_each_input_in_order(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    result = await adapter.embed(
        EmbeddingRequest(model=TITAN, inputs=["red apple", "green pear", "red apple"], dimensions=4)
    )

    assert [len(v) for v in result.vectors] == [4, 4, 4]
    assert result.vectors[0] == result.vectors[2] != result.vectors[1]
    single = await adapter.embed(EmbeddingRequest(model=TITAN, inputs=["green pear"], dimensions=4))
    assert single.vectors == [result.vectors[1]]
    assert result.usage.prompt_tokens == 6
    assert result.upstream_model == TITAN
    received = upstream.requests[0]
    assert (received.method, received.path) == ("POST", f"/model/{TITAN}/invoke")
    assert received.headers["content-type"] == "application/json"
    assert received.headers["accept"] == "application/json"
    assert sorted(r.json["inputText"] for r in upstream.requests[:3]) == [
        "green pear",
        "red apple",
        "red apple",
    ]
    assert all(r.json["dimensions"] == 4 for r in upstream.requests)


async def test_titan_without_dimensions_sends_none(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    result = await adapter.embed(EmbeddingRequest(model=TITAN, inputs=["hello"]))

    assert upstream.requests[-1].json == {"inputText": "hello"}
    assert len(result.vectors[0]) == 8


async def test_cohere_embeds_a_batch_in_one_call(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    result = await adapter.embed(EmbeddingRequest(model=COHERE, inputs=["one two", "three"]))

    assert len(upstream.requests) == 1
    assert upstream.requests[-1].json == {
        "texts": ["one two", "three"],
        "input_type": "search_document",
    }
    assert len(result.vectors) == 2 and result.vectors[0] != result.vectors[1]
    assert result.usage.prompt_tokens == 3  # from Bedrock's token count header


async def test_cohere_tokens_are_estimated_without_the_header(upstream, make_adapter):
    upstream.send_token_count = False
    adapter = make_adapter(upstream.base_url)

    result = await adapter.embed(EmbeddingRequest(model=COHERE, inputs=["x" * 40, "y" * 8]))

    assert result.usage.prompt_tokens == 12  # 48 characters, about 4 a token


async def test_cohere_inputs_beyond_its_batch_limit_take_more_calls(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)
    inputs = [f"text {n}" for n in range(100)]

    result = await adapter.embed(EmbeddingRequest(model=COHERE, inputs=inputs))

    assert [len(r.json["texts"]) for r in upstream.requests] == [96, 4]
    assert len(result.vectors) == 100
    assert result.usage.prompt_tokens == 200


async def test_cohere_v4_takes_dimensions_and_v3_refuses_them(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    result = await adapter.embed(
        EmbeddingRequest(model="cohere.embed-v4:0", inputs=["a", "b"], dimensions=5)
    )
    assert upstream.requests[-1].json["output_dimension"] == 5
    assert [len(v) for v in result.vectors] == [5, 5]

    with pytest.raises(UnsupportedByProvider) as caught:
        await adapter.embed(EmbeddingRequest(model=COHERE, inputs=["a"], dimensions=5))
    assert caught.value.param == "dimensions"
    assert len(upstream.requests) == 1


async def test_other_embedding_models_are_refused(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    with pytest.raises(UnsupportedByProvider) as caught:
        await adapter.embed(EmbeddingRequest(model=MODEL, inputs=["a"]))

    assert caught.value.param == "model"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [("rate_limited", UpstreamUnavailable), ("malformed_json", UpstreamBadResponse)],
)
@pytest.mark.parametrize("model", [TITAN, COHERE])
async def test_embedding_failures_are_mapped(upstream, make_adapter, behaviour, error, model):
    upstream.behaviour = behaviour
    adapter = make_adapter(upstream.base_url)

    with pytest.raises(error):
        await adapter.embed(EmbeddingRequest(model=model, inputs=["a", "b"]))
