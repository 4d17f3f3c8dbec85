"""A fast mock OpenAI-compatible upstream for the benchmark, run as its own process.

    python bench/mock_upstream.py --port 9101 [--chunks 8] [--chunk-delay 0] [--workers 1]
                                  [--host 127.0.0.1]

- ``POST /v1/chat/completions``: a fixed answer as JSON, or as SSE (``"stream": true``) in
  ``--chunks`` content chunks, then a finish chunk, a usage chunk when
  ``stream_options.include_usage`` is set, and ``data: [DONE]``. ``--chunk-delay`` seconds
  between chunks keeps streams open (the 1,000-open-streams test uses 1 s x 15).
- ``GET /v1/models``: one model.
- ``POST /control`` with the body ``ok``, ``fail`` or ``hang``: answer normally, fail every chat
  call with a 500, or never answer (the soak-and-fault run's provider faults).

A raw ASGI app (no framework) under uvicorn with uvloop and httptools, so that it is never the
bottleneck: on this machine one worker serves well over 10,000 JSON answers per second. It binds
to loopback unless ``--host`` says otherwise (the image test runs it as a compose service, where
the gateway's container reaches it over the compose network).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

REPLY = "Hello from the benchmark upstream: this is a short fixed answer."
REPLY_WORDS = REPLY.split(" ")
COMPLETION_TOKENS = 16

CHUNKS = 8
CHUNK_DELAY = 0.0
MODE = "ok"  # ok | fail | hang: set through POST /control (one worker only)

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
]


def _pieces(count: int) -> list[str]:
    """The reply split into ``count`` non-empty pieces (word boundaries when possible)."""
    count = max(1, count)
    words = REPLY_WORDS
    if count <= len(words):
        size = -(-len(words) // count)
        groups = [words[i : i + size] for i in range(0, len(words), size)]
        pieces = [" ".join(g) + " " for g in groups]
        pieces[-1] = pieces[-1].rstrip()
        return pieces
    # More chunks than words: one word per chunk, then short filler tokens.
    return [w + " " for w in words] + ["."] * (count - len(words))


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _send_json(send, status: int, payload: dict) -> None:
    data = orjson.dumps(payload)
    headers = [*_JSON_HEADERS, (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _prompt_tokens(request: dict) -> int:
    chars = 0
    for message in request.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
    return max(1, chars // 4)


async def _chat(request: dict, send) -> None:
    model = request.get("model") if isinstance(request.get("model"), str) else "mock"
    created = int(time.time())
    completion_id = f"chatcmpl-mock{time.monotonic_ns()}"
    prompt_tokens = _prompt_tokens(request)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": prompt_tokens + COMPLETION_TOKENS,
    }
    if not request.get("stream"):
        await _send_json(
            send,
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": REPLY},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
        )
        return

    options = request.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    base = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
    }

    def event(choices: list, with_usage: dict | None = None) -> bytes:
        chunk = {**base, "choices": choices}
        if with_usage is not None:
            chunk["usage"] = with_usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    first = True
    for piece in _pieces(CHUNKS):
        if not first and CHUNK_DELAY:
            await asyncio.sleep(CHUNK_DELAY)
        delta = {"role": "assistant", "content": piece} if first else {"content": piece}
        first = False
        await send(
            {
                "type": "http.response.body",
                "more_body": True,
                "body": event([{"index": 0, "delta": delta, "finish_reason": None}]),
            }
        )
    tail = event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    if include_usage:
        tail += event([], usage)
    tail += b"data: [DONE]\n\n"
    await send({"type": "http.response.body", "body": tail})


async def _other_door(path: str, request: dict, send) -> None:
    """A plain answer on OpenAI's Responses API or Anthropic's Messages API, for a proxy (like
    LiteLLM's) that passes those doors through to an upstream that speaks them."""
    model = request.get("model") if isinstance(request.get("model"), str) else "mock"
    text = request.get("input")
    prompt_tokens = max(1, len(text) // 4) if isinstance(text, str) else _prompt_tokens(request)
    stamp = time.monotonic_ns()
    if path.endswith("/responses"):
        payload: dict = {
            "id": f"resp_mock{stamp}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": model,
            "output": [
                {
                    "type": "message",
                    "id": f"msg_mock{stamp}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": REPLY, "annotations": []}],
                }
            ],
            "usage": {
                "input_tokens": prompt_tokens,
                "output_tokens": COMPLETION_TOKENS,
                "total_tokens": prompt_tokens + COMPLETION_TOKENS,
            },
        }
    else:
        payload = {
            "id": f"msg_mock{stamp}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": REPLY}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": COMPLETION_TOKENS},
        }
    await _send_json(send, 200, payload)


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if path == "/control" and method == "POST":
        # The soak-and-fault run (bench/soak.py) switches the upstream between answering
        # ("ok"), failing with 500s ("fail") and never answering ("hang").
        global MODE
        MODE = (await _read_body(receive)).decode().strip() or "ok"
        await _send_json(send, 200, {"mode": MODE})
        return
    if path.endswith("/chat/completions") and method == "POST" and MODE != "ok":
        await _read_body(receive)
        if MODE == "hang":
            await asyncio.sleep(600)
        await _send_json(
            send,
            500,
            {"error": {"message": "injected failure", "type": "server_error", "code": None}},
        )
        return
    if path.endswith("/chat/completions") and method == "POST":
        body = await _read_body(receive)
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            await _send_json(
                send,
                400,
                {
                    "error": {
                        "message": "invalid JSON",
                        "type": "invalid_request_error",
                        "code": None,
                    }
                },
            )
            return
        await _chat(request, send)
    elif path.endswith(("/responses", "/messages")) and method == "POST":
        try:
            request = orjson.loads(await _read_body(receive))
        except orjson.JSONDecodeError:
            request = None
        await _other_door(path, request if isinstance(request, dict) else {}, send)
    elif path.endswith("/models") and method == "GET":
        await _send_json(
            send,
            200,
            {
                "object": "list",
                "data": [
                    {"id": "mock-model", "object": "model", "created": 0, "owned_by": "bench"}
                ],
            },
        )
    elif path in ("/", "/health"):
        await _send_json(send, 200, {"status": "ok"})
    else:
        await _send_json(
            send,
            404,
            {"error": {"message": "not found", "type": "invalid_request_error", "code": None}},
        )


def _configure(chunks: int, chunk_delay: float) -> None:
    global CHUNKS, CHUNK_DELAY
    CHUNKS, CHUNK_DELAY = chunks, chunk_delay


def _factory():
    """For ``--workers`` > 1 uvicorn imports the app by name in each worker process; the
    settings travel in the environment."""
    import os

    _configure(
        int(os.environ.get("MOCK_CHUNKS", CHUNKS)),
        float(os.environ.get("MOCK_CHUNK_DELAY", CHUNK_DELAY)),
    )
    return app


def main() -> None:
    import os
    import sys

    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--chunks", type=int, default=8, help="content chunks per stream")
    parser.add_argument(
        "--chunk-delay", type=float, default=0.0, help="seconds between stream chunks (0 = none)"
    )
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    os.environ["MOCK_CHUNKS"] = str(args.chunks)
    os.environ["MOCK_CHUNK_DELAY"] = str(args.chunk_delay)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    uvicorn.run(
        "mock_upstream:_factory",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
        backlog=4096,
        timeout_keep_alive=60,
    )


if __name__ == "__main__":
    main()
