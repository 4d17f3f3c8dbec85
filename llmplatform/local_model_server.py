"""The embedded model server: llama-cpp-python's OpenAI-compatible server, started the way this
platform needs it on any CPU. ``runplatform`` runs it as a child process::

    python -m llmplatform.local_model_server --model FILE --host H --port P [--cpu NAME]
    python -m llmplatform.local_model_server --list-cpu

Three things are added to llama-cpp-python's own server:

- **The CPU kernels are chosen at run time.** ``make install`` builds llama.cpp with
  ``GGML_BACKEND_DL`` and ``GGML_CPU_ALL_VARIANTS``: one ``libggml-cpu-<name>.so`` per instruction
  set (x64, sse42, ..., haswell, skylakex, icelake, zen4, ...). ggml scores each variant by the
  CPU's ``cpuid`` and this module loads the best one, or the one ``--cpu`` names. Variants that
  use AMX tiles are never chosen by themselves: ``cpuid`` says the CPU has AMX, not that the
  kernel lets this process use it, and an AMX build crashed on its first token on an Intel
  Xeon that reported it. ``--list-cpu`` prints the variants this CPU runs, best first, so the
  launcher can step down one if the model server crashes.
- **A prompt this model answers.** The GGUF carries no chat template, and it is the pre-trained
  model: under Gemma's chat template it echoes the question back. ``dialogue`` below writes the
  conversation as a plain-text dialogue (``User: ...`` / ``Assistant:``), which it answers.
- **Defaults for what a request leaves out** (sampling and length), chosen for a 270M model:
  see ``ANSWER_DEFAULTS``.
- **Embeddings** (``POST /v1/embeddings``) from a second instance of the same GGUF, opened for
  embeddings on the first such request (``EmbeddingsRoute``). llama.cpp can make both from one
  instance, but then every prompt token of a completion computes the whole vocabulary's
  logits: the process took 1,473 MB instead of 456 MB (PSS) and a long prompt's prefill was
  slower; the second instance adds 335 MB (``bench/local_embeddings.py``; docs/embedded.md has
  the figures). llama_cpp.server's own multi-model setting keeps one model loaded at a time,
  swapping on every request for the other.

Nothing here imports Django: the server starts in well under a second before the model loads.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import importlib.util
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

# Variants whose kernels use AMX tile instructions: only on request (see the module docstring).
AMX_VARIANTS = frozenset({"sapphirerapids"})
# The safe steps down when the chosen variant crashes: AVX2 (any x86-64 CPU since 2013-2015),
# then the plain x86-64 baseline.
FALLBACK_VARIANTS = ("haswell", "x64")
BUILTIN = "builtin"  # a build without run-time dispatch: one libggml-cpu.so

# Applied to a chat or completion request that does not set them. Google's recommended sampling
# for Gemma 3 (temperature 1.0, top_k 64, top_p 0.95, min_p 0) lets a 270M model wander; these
# keep it on topic. A mild repeat penalty stops the loops small models fall into; max_tokens
# bounds an answer that never reaches the end of its turn.
ANSWER_DEFAULTS: dict[str, Any] = {  # measured: see README, "The embedded model"
    "temperature": 0.7,
    "top_k": 64,
    "top_p": 0.95,
    "min_p": 0.05,
    "repeat_penalty": 1.15,
    "max_tokens": 512,
}
_DEFAULTED_PATHS = {"/v1/chat/completions", "/v1/completions"}


# --- CPU variants -----------------------------------------------------------------------------


def llama_lib_dir() -> Path | None:
    """``llama_cpp/lib`` of the installed llama-cpp-python, found without importing it."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


def variant_libraries(lib_dir: Path) -> dict[str, Path]:
    """``{name: path}`` of the CPU variants of a run-time-dispatch build (empty otherwise)."""
    prefix = "libggml-cpu-"
    return {
        path.name[len(prefix) : -len(".so")]: path for path in sorted(lib_dir.glob(f"{prefix}*.so"))
    }


def _score(path: Path) -> int:
    """ggml's own verdict: 0 when this CPU lacks an instruction set the variant needs, else
    higher for a better match."""
    library = ctypes.CDLL(str(path))
    try:
        score_fn = library.ggml_backend_score
    except AttributeError:
        return 0
    score_fn.restype = ctypes.c_int
    return int(score_fn())


def supported_variants(lib_dir: Path) -> list[str]:
    """The variants this CPU runs, in the order to try them: the best non-AMX one, then the safe
    steps down. ``[BUILTIN]`` for a build without run-time dispatch."""
    libraries = variant_libraries(lib_dir)
    if not libraries:
        return [BUILTIN] if (lib_dir / "libggml-cpu.so").exists() else []
    # The variants need libggml-base by its soname; it is not on the loader's search path.
    ctypes.CDLL(str(lib_dir / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    scores = {name: _score(path) for name, path in libraries.items()}
    usable = [name for name, score in scores.items() if score > 0 and name not in AMX_VARIANTS]
    usable.sort(key=lambda name: scores[name], reverse=True)
    order = usable[:1] + [name for name in FALLBACK_VARIANTS if name in usable]
    return list(dict.fromkeys(order))


def load_cpu_backend(lib_dir: Path, requested: str) -> str:
    """Register one CPU variant with ggml before llama.cpp initialises (which would otherwise
    look for variants beside the Python executable and find none). Returns the variant used."""
    libraries = variant_libraries(lib_dir)
    if not libraries:
        if requested not in ("auto", BUILTIN):
            raise SystemExit(
                f"--cpu {requested}: this llama-cpp-python build has no run-time CPU variants "
                "(reinstall it with `make install`)."
            )
        return BUILTIN
    if requested == "auto":
        order = supported_variants(lib_dir)
        if not order:
            raise SystemExit("No CPU variant of llama.cpp runs on this CPU.")
        requested = order[0]
    if requested not in libraries:
        raise SystemExit(
            f"--cpu {requested}: unknown CPU variant; this build has {', '.join(libraries)}."
        )
    ggml = ctypes.CDLL(str(lib_dir / "libggml.so"), mode=ctypes.RTLD_GLOBAL)
    ggml.ggml_backend_load.restype = ctypes.c_void_p
    ggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
    if not ggml.ggml_backend_load(str(libraries[requested]).encode()):
        raise SystemExit(f"llama.cpp could not load its {requested} CPU kernels.")
    return requested


# --- The prompt -------------------------------------------------------------------------------

# The GGUF shipped on PyPI is the pre-trained Gemma 3 270M, not the instruction-tuned one: given
# Gemma's chat template (``<start_of_turn>user ...``) it echoes the question back ("Say hello in
# one sentence. mendatang ..."). As a plain-text dialogue it answers ("The capital of France is
# Paris."), so that is the prompt it gets; a system message takes the preamble's place.
DIALOGUE_PREAMBLE = (
    "The following is a conversation between a user and a helpful, concise assistant."
)
DIALOGUE_STOP = ["\nUser:"]


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, dict) and "text" in part
        )
    return str(content)


def _message_text(message: dict[str, Any]) -> str:
    text = _text(message.get("content")).strip()
    calls = message.get("tool_calls") or []
    rendered = [
        json.dumps(
            {
                "name": (call.get("function") or {}).get("name"),
                "arguments": (call.get("function") or {}).get("arguments"),
            }
        )
        for call in calls
        if isinstance(call, dict)
    ]
    if message.get("role") == "tool":
        text = f"Tool result: {text}"
    return "\n".join(part for part in (text, *rendered) if part)


def dialogue_prompt(messages: Iterable[dict[str, Any]]) -> str:
    """The conversation as a plain-text dialogue ending where the assistant speaks next. System
    (and developer) text leads it; consecutive messages of one side are one turn; tool results
    are the user's side."""
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            if text := _text(message.get("content")).strip():
                system.append(text)
            continue
        side = "Assistant" if role == "assistant" else "User"
        text = _message_text(message)
        if turns and turns[-1][0] == side:
            turns[-1] = (side, f"{turns[-1][1]}\n{text}")
        else:
            turns.append((side, text))
    preamble = "\n".join(system) or DIALOGUE_PREAMBLE
    dialogue = "".join(f"{side}: {text}\n" for side, text in turns)
    return f"{preamble}\n\n{dialogue}Assistant:"


def register_dialogue_format() -> None:
    from llama_cpp.llama_chat_format import ChatFormatterResponse, register_chat_format

    @register_chat_format("dialogue")  # type: ignore[untyped-decorator]  # llama_cpp is untyped
    def format_dialogue(messages: list[dict[str, Any]], **_: Any) -> ChatFormatterResponse:
        return ChatFormatterResponse(prompt=dialogue_prompt(messages), stop=list(DIALOGUE_STOP))


# --- Request defaults -------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def with_defaults(body: bytes, defaults: dict[str, Any]) -> bytes:
    """The request body with ``defaults`` filled in where the request has no value (a JSON
    ``null`` counts as none). Anything that is not a JSON object is passed on untouched, for
    the server to refuse."""
    try:
        request = json.loads(body)
    except ValueError:
        return body
    if not isinstance(request, dict):
        return body
    for name, value in defaults.items():
        if request.get(name) is None:
            request[name] = value
    return json.dumps(request).encode()


class AnswerDefaults:
    """ASGI middleware: fills ``ANSWER_DEFAULTS`` into chat and completion requests."""

    def __init__(self, app: ASGIApp, defaults: dict[str, Any]) -> None:
        self.app = app
        self.defaults = defaults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path") not in _DEFAULTED_PATHS
        ):
            await self.app(scope, receive, send)
            return
        raw, ended = await _read_body(receive)
        if ended is not None:
            await self.app(scope, _replay([ended]), send)
            return
        body = with_defaults(raw, self.defaults)
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        scope = {**scope, "headers": headers}
        await self.app(scope, _replay([{"type": "http.request", "body": body}], receive), send)


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The request's whole body, or the message that ended it first (a disconnect)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", message
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks), None


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


# --- Embeddings -----------------------------------------------------------------------------

EMBEDDINGS_PATH = "/v1/embeddings"
# The embedding instance's context: an input longer than this is refused, not cut short (a
# vector of the first part would be taken for the whole). Enough for a question or a passage;
# a larger one reserves more memory for the longest input.
EMBEDDING_CONTEXT = 512
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit per request


def embedding_model(model_path: Path, threads: int) -> Any:
    """The GGUF opened for embeddings: the hidden state of the last token, the only one that
    has read the whole text in a causal model (the mean over tokens weighs the first words,
    which saw only the beginning, as much as the last). Vectors are L2-normalised on output."""
    import llama_cpp

    return llama_cpp.Llama(
        model_path=str(model_path),
        embedding=True,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST,
        n_ctx=EMBEDDING_CONTEXT,
        n_batch=EMBEDDING_CONTEXT,
        n_ubatch=EMBEDDING_CONTEXT,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )


class EmbeddingsRefused(ValueError):
    """A request the embedding model does not take; the message says why, ``param`` where."""

    def __init__(self, message: str, param: str | None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def embeddings_inputs(body: bytes) -> list[str]:
    """The texts an embeddings request asks for, or ``EmbeddingsRefused``: OpenAI's request
    shape, with text inputs only (token arrays are another model's tokens) and the model's own
    dimensions."""
    try:
        request = json.loads(body)
    except ValueError:
        raise EmbeddingsRefused("The request body is not valid JSON.", None) from None
    if not isinstance(request, dict):
        raise EmbeddingsRefused("The request body must be a JSON object.", None)
    value = request.get("input")
    inputs = [value] if isinstance(value, str) else value
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
        raise EmbeddingsRefused(
            "'input' must be a string or a non-empty array of strings.", "input"
        )
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise EmbeddingsRefused(
            f"'input' has {len(inputs)} items; at most {MAX_EMBEDDING_INPUTS} are taken.", "input"
        )
    for index, text in enumerate(inputs):
        if not text:
            raise EmbeddingsRefused("An input is empty.", f"input[{index}]")
    if request.get("encoding_format") not in (None, "float"):
        raise EmbeddingsRefused("Only 'encoding_format': 'float' is served.", "encoding_format")
    if request.get("dimensions") is not None:
        raise EmbeddingsRefused(
            "This model's embeddings have a fixed size; send the request without 'dimensions'.",
            "dimensions",
        )
    return inputs


def embed_texts(model: Any, inputs: list[str]) -> tuple[list[list[float]], int]:
    """Unit vectors for ``inputs`` and the tokens read; ``EmbeddingsRefused`` for an input
    longer than the context."""
    for index, text in enumerate(inputs):
        tokens = len(model.tokenize(text.encode("utf-8")))
        if tokens > EMBEDDING_CONTEXT:
            raise EmbeddingsRefused(
                f"The input has {tokens} tokens; this model embeds at most {EMBEDDING_CONTEXT}.",
                f"input[{index}]" if len(inputs) > 1 else "input",
                # OpenAI's code for it: the gateway passes a provider's code on to the client.
                "context_length_exceeded",
            )
    vectors, tokens = model.embed(inputs, normalize=True, truncate=False, return_count=True)
    return [[float(x) for x in vector] for vector in vectors], int(tokens)


class EmbeddingsRoute:
    """ASGI middleware: serves ``POST /v1/embeddings`` from the model ``load`` opens (see the
    module docstring), one request at a time in a worker thread, so completions keep streaming.

    The model is opened on the first embeddings request, not at start: a platform that never
    asks for embeddings does not hold the second instance's memory (335 MB of PSS measured), and
    the first request waits for the load."""

    def __init__(self, app: ASGIApp, load: Callable[[], Any], alias: str) -> None:
        self.app = app
        self.load = load
        self.model: Any = None
        self.alias = alias
        self.lock = asyncio.Lock()  # a llama.cpp context serves one call at a time

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path") != EMBEDDINGS_PATH
        ):
            await self.app(scope, receive, send)
            return
        body, ended = await _read_body(receive)
        if ended is not None:
            return  # the client went away
        try:
            inputs = embeddings_inputs(body)
            async with self.lock:
                if self.model is None:
                    self.model = await asyncio.to_thread(self.load)
                vectors, tokens = await asyncio.to_thread(embed_texts, self.model, inputs)
        except EmbeddingsRefused as exc:
            error = {
                "message": str(exc),
                "type": "invalid_request_error",
                "param": exc.param,
                "code": exc.code,
            }
            await _send_json(send, 400, {"error": error})
            return
        reply = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": index, "embedding": vector}
                for index, vector in enumerate(vectors)
            ],
            "model": self.alias,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        await _send_json(send, 200, reply)


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --- Entry point ------------------------------------------------------------------------------


def thread_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmplatform.local_model_server")
    parser.add_argument("--list-cpu", action="store_true", help="print the usable CPU variants")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--alias", default="gemma-3-270m")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--cpu", default="auto", help="a CPU variant (see --list-cpu) or auto")
    args = parser.parse_args(argv)

    lib_dir = llama_lib_dir()
    if lib_dir is None:
        print("llama-cpp-python is not installed.", file=sys.stderr)
        return 2
    if args.list_cpu:
        print(json.dumps(supported_variants(lib_dir)))
        return 0
    if args.model is None:
        parser.error("--model is required")

    variant = load_cpu_backend(lib_dir, args.cpu)
    print(f"local_model_server: CPU kernels: {variant}", flush=True)

    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    register_dialogue_format()
    threads = thread_count()
    app = create_app(
        server_settings=ServerSettings(
            host=args.host,
            port=args.port,
            # By default a new request cancels the one being generated; the gateway serves
            # many clients, so requests wait their turn instead.
            interrupt_requests=False,
        ),
        model_settings=[
            ModelSettings(
                model=str(args.model),
                model_alias=args.alias,
                chat_format="dialogue",
                n_ctx=args.n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        ],
    )
    uvicorn.run(
        EmbeddingsRoute(
            AnswerDefaults(app, ANSWER_DEFAULTS),
            lambda: embedding_model(args.model, threads),
            args.alias,
        ),
        host=args.host,
        port=args.port,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
