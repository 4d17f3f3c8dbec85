"""The embedded model's runtime: the portable llama.cpp build that ``make install`` makes, the
CPU kernels chosen at start, Gemma 3's prompt, the answer defaults, and the supervision that
self-tests the model server, steps down to safer kernels when it crashes and restarts it when
it dies (driven with a stand-in server that crashes on purpose; the real model is driven by
``test_launcher.py``)."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from llmplatform import local_model
from llmplatform.launcher import LaunchError, Supervisor, answers
from llmplatform.local_model import LocalModel, read_status, readiness_from_status, self_test
from llmplatform.local_model_server import (
    AMX_VARIANTS,
    ANSWER_DEFAULTS,
    DIALOGUE_PREAMBLE,
    DIALOGUE_STOP,
    AnswerDefaults,
    dialogue_prompt,
    llama_lib_dir,
    load_cpu_backend,
    supported_variants,
    variant_libraries,
    with_defaults,
)
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
STANDIN = Path(__file__).with_name("standin_model_server.py")
X86 = platform.machine().lower() in ("x86_64", "amd64")

# --- The prompt -------------------------------------------------------------------------------


def test_the_conversation_becomes_a_dialogue_that_ends_where_the_assistant_speaks():
    prompt = dialogue_prompt(
        [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi there."},
            {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
        ]
    )

    assert prompt == (
        f"{DIALOGUE_PREAMBLE}\n\nUser: Hello\nAssistant: Hi there.\nUser: How are you?\nAssistant:"
    )


def test_a_system_message_takes_the_preambles_place():
    prompt = dialogue_prompt(
        [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Hello"},
        ]
    )

    assert prompt.startswith("Answer in French.\n\nUser: Hello")
    assert DIALOGUE_PREAMBLE not in prompt


def test_tool_calls_and_results_are_written_out_and_one_side_speaks_once_in_a_row():
    prompt = dialogue_prompt(
        [
            {"role": "user", "content": "one"},
            {"role": "user", "content": "two"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "12 C"},
        ]
    )

    assert "User: one\ntwo\n" in prompt
    assert 'Assistant: {"name": "get_weather", "arguments": "{\\"city\\":\\"Oslo\\"}"}' in prompt
    assert "User: Tool result: 12 C" in prompt
    assert prompt.endswith("Assistant:") and DIALOGUE_STOP == ["\nUser:"]


# --- Answer defaults --------------------------------------------------------------------------


def test_defaults_fill_what_a_request_leaves_out_and_keep_what_it_sets():
    body = json.dumps({"messages": [], "temperature": 0, "max_tokens": None}).encode()

    filled = json.loads(with_defaults(body, ANSWER_DEFAULTS))

    assert filled["temperature"] == 0  # an explicit 0 is a value
    assert filled["max_tokens"] == ANSWER_DEFAULTS["max_tokens"]  # null is none
    assert filled["repeat_penalty"] == ANSWER_DEFAULTS["repeat_penalty"]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b""])
def test_a_body_that_is_not_a_json_object_is_passed_on_untouched(body: bytes):
    assert with_defaults(body, ANSWER_DEFAULTS) == body


def test_the_middleware_rewrites_chat_bodies_with_a_matching_content_length():
    seen: dict[str, Any] = {}

    async def app(scope, receive, send):
        message = await receive()
        seen["body"] = message["body"]
        seen["length"] = dict(scope["headers"])[b"content-length"]

    async def run(path: str) -> None:
        chunks = [
            {"type": "http.request", "body": b'{"messages": [], ', "more_body": True},
            {"type": "http.request", "body": b'"top_k": 5}'},
        ]

        async def receive():
            return chunks.pop(0)

        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "headers": [(b"content-length", b"28")],
        }
        await AnswerDefaults(app, {"top_k": 64, "max_tokens": 9})(scope, receive, None)

    asyncio.run(run("/v1/chat/completions"))

    assert json.loads(seen["body"]) == {"messages": [], "top_k": 5, "max_tokens": 9}
    assert seen["length"] == str(len(seen["body"])).encode()

    asyncio.run(run("/v1/embeddings"))  # other routes are not touched
    assert seen["body"] == b'{"messages": [], '


# --- The installed build ----------------------------------------------------------------------


def _lib_dir() -> Path:
    lib_dir = llama_lib_dir()
    assert lib_dir is not None, "llama-cpp-python is not installed (make install installs it)"
    return lib_dir


def test_make_install_installed_the_portable_build_it_cached():
    key = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "install_local_model.py"), "--print-key"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    assert (Path(sys.prefix) / ".llama-cpp-build").read_text().strip() == key
    if X86:
        assert {"x64", "haswell"} <= variant_libraries(_lib_dir()).keys()


def test_the_cache_key_changes_with_the_flags_the_version_and_the_architecture():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import install_local_model as installer
    finally:
        sys.path.pop(0)
    flags = installer.cmake_flags("x86_64")
    key = installer.build_key("0.3.36", flags, "x86_64")

    assert "-DGGML_NATIVE=OFF" in flags and "-DGGML_CPU_ALL_VARIANTS=ON" in flags
    assert installer.build_key("0.3.36", [*flags, "-DGGML_AMX_TILE=ON"], "x86_64") != key
    assert installer.build_key("0.3.37", flags, "x86_64") != key
    assert installer.build_key("0.3.36", installer.cmake_flags("aarch64"), "aarch64") != key
    assert installer.build_key("0.3.36", flags, "x86_64") == key


def test_an_unknown_cpu_variant_is_refused_with_the_ones_there_are():
    with pytest.raises(SystemExit, match=r"--cpu nope: unknown CPU variant; this build has .*x64"):
        load_cpu_backend(_lib_dir(), "nope")


@pytest.mark.parametrize("value", ["../../etc/x", "zen4 --model /tmp/x", "a" * 41])
def test_the_cpu_setting_is_a_variant_name_or_nothing(monkeypatch, value: str):
    from django.core.exceptions import ImproperlyConfigured

    from llmplatform.launcher import local_model_cpu

    monkeypatch.setenv("LLMP_LOCAL_MODEL_CPU", value)
    with pytest.raises(ImproperlyConfigured, match="LLMP_LOCAL_MODEL_CPU"):
        local_model_cpu()
    monkeypatch.setenv("LLMP_LOCAL_MODEL_CPU", " Haswell ")
    assert local_model_cpu() == "haswell"


@pytest.mark.skipif(not X86, reason="x86 CPU variants")
def test_this_cpu_gets_kernels_it_runs_and_never_amx_by_itself():
    order = supported_variants(_lib_dir())

    assert order and order[-1] == "x64"  # the baseline is always the last step down
    assert not AMX_VARIANTS & set(order)
    assert len(order) == len(set(order))


def _instructions(path: Path) -> str:
    return subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.skipif(not X86, reason="x86 instruction sets")
@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
def test_what_every_cpu_loads_has_no_avx512_or_amx_instructions():
    """libllama, libggml and the baseline and AVX2 kernels load on every CPU (or every AVX2
    CPU): an AVX-512 or AMX instruction in them would crash a CPU without it."""
    lib_dir = _lib_dir()
    variants = variant_libraries(lib_dir)
    shared = [lib_dir / name for name in ("libllama.so", "libggml.so", "libggml-base.so")]
    for path in [*shared, variants["x64"], variants["haswell"]]:
        code = _instructions(path)
        assert "%zmm" not in code, f"{path.name} has AVX-512 instructions"
        assert "%tmm" not in code and "tileloadd" not in code, f"{path.name} has AMX"
    assert "%ymm" not in _instructions(variants["x64"])  # the baseline is SSE only


# --- Supervision (stand-in server) ------------------------------------------------------------


def _standin_command(model_path: Path, url: str, cpu: str) -> list[str]:
    return [
        sys.executable,
        str(STANDIN),
        "--alias",
        "gemma-3-270m",
        "--cpu",
        cpu,
        "--port",
        str(urlsplit(url).port),
    ]


@pytest.fixture
def make_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    supervisors: list[Supervisor] = []

    def make(
        variants: list[str], crash_cpus: str = "", crash_signal: str = "SIGSEGV", **options: Any
    ) -> tuple[LocalModel, list[str]]:
        monkeypatch.setattr(local_model, "cpu_variants", lambda requested="auto": list(variants))
        monkeypatch.setenv("STANDIN_CRASH_CPUS", crash_cpus)
        monkeypatch.setenv("STANDIN_CRASH_SIGNAL", crash_signal)
        supervisor = Supervisor()
        supervisors.append(supervisor)
        said: list[str] = []
        model = LocalModel(
            supervisor,
            model_path=tmp_path / "model.gguf",
            url=f"http://127.0.0.1:{free_port()}/v1",
            log_path=tmp_path / "logs" / "model.log",
            status_path=tmp_path / "run" / "local-model.json",
            command=_standin_command,
            say=said.append,
            start_timeout=30,
            backoff_first=0.2,
            backoff_max=0.4,
            **options,
        )
        return model, said

    yield make
    for supervisor in supervisors:
        supervisor.stop_all(timeout=5)


def _watch_until(model: LocalModel, predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        model.watch()
        time.sleep(0.05)


def test_a_crash_in_the_self_test_steps_down_to_safer_cpu_kernels(make_model):
    model, said = make_model(["zen4", "haswell", "x64"], crash_cpus="zen4,haswell")

    model.start()

    assert model.cpu == "x64", said
    assert self_test(model.url) == "hello from x64"
    assert any("crashed with the zen4 CPU kernels" in line for line in said)
    assert any("crashed with the haswell CPU kernels" in line for line in said)
    assert read_status(model.status_path)["state"] == "ready"
    assert [c.name for c in model.supervisor.children] == ["llama.cpp server"]  # no leftovers


def test_when_every_variant_crashes_the_launch_stops_and_says_what_to_do(make_model):
    model, _ = make_model(["haswell", "x64"], crash_cpus="*", crash_signal="SIGILL")

    with pytest.raises(LaunchError) as raised:
        model.start()

    message = str(raised.value)
    assert "failed its start-up self-test" in message
    assert "haswell:" in message and "x64:" in message and "SIGILL" in message
    assert str(model.log_path) in message
    assert "LLMP_LOCAL_MODEL=off" in message and "LLMP_LOCAL_MODEL_CPU=x64" in message
    assert "crashing on the first completion" in message  # the end of the log is shown
    assert read_status(model.status_path)["state"] == "failed"
    assert model.supervisor.children == []


def test_a_failure_that_is_not_a_crash_does_not_try_other_kernels(make_model):
    model, said = make_model(["zen4", "x64"], crash_cpus="*", crash_signal="SIGTERM")

    with pytest.raises(LaunchError, match="zen4:"):
        model.start()

    assert sum("started llama.cpp server" in line for line in said) == 1


def test_a_killed_model_server_is_restarted_and_readyz_says_so_meanwhile(make_model):
    model, said = make_model(["x64"])
    model.start()
    first_pid = model.child.pid

    os.kill(first_pid, signal.SIGKILL)
    _watch_until(model, lambda: read_status(model.status_path)["state"] == "restarting")
    ready, detail = readiness_from_status(model.status_path)
    assert not ready and detail == "restarting: was killed by SIGKILL"

    _watch_until(model, lambda: read_status(model.status_path)["state"] == "ready")
    assert model.child.pid != first_pid and model.restarts == 1
    assert self_test(model.url) == "hello from x64"
    assert any("was killed by SIGKILL" in line and "restarting it in" in line for line in said)
    assert readiness_from_status(model.status_path) == (True, "ready (CPU kernels x64, restarts 1)")


def test_restarts_are_bounded_per_minute(make_model):
    model, said = make_model(["x64"], max_restarts_per_minute=2)
    model.start()

    for _ in range(2):
        pid = model.child.pid
        os.kill(pid, signal.SIGKILL)
        _watch_until(
            model,
            lambda pid=pid: (
                model.child is not None
                and model.child.pid != pid
                and read_status(model.status_path)["state"] == "ready"
            ),
        )
    os.kill(model.child.pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        model.watch()
        time.sleep(0.05)

    assert model.restarts == 2 and model.child is None
    assert any(
        "2 restarts of the local model in a minute; the next try in" in line for line in said
    )
    assert readiness_from_status(model.status_path)[0] is False


def test_an_illegal_instruction_at_run_time_retires_those_kernels(make_model):
    model, _ = make_model(["zen4", "x64"])
    model.start()
    assert model.cpu == "zen4"

    os.kill(model.child.pid, signal.SIGILL)
    _watch_until(
        model,
        lambda: (
            model.restarts == 1
            and model.child is not None
            and read_status(model.status_path)["state"] == "ready"
        ),
    )

    assert model.cpu == "x64"
    assert self_test(model.url) == "hello from x64"


# --- On CPUs this machine is not (emulated) ---------------------------------------------------

QEMU = shutil.which("qemu-x86_64")


def _qemu() -> str:
    if QEMU is None:
        if os.environ.get("LLMP_REQUIRE_SERVICES") == "1":
            pytest.fail("LLMP_REQUIRE_SERVICES=1 but there is no qemu-x86_64 (qemu-user)")
        pytest.skip("no qemu-x86_64 (apt-get install qemu-user)")
    return QEMU


def _under_qemu(cpu: str, *args: str) -> list[str]:
    """This virtualenv's Python run on an emulated CPU model (qemu's TCG has no AVX-512)."""
    venv_python = Path(sys.prefix) / "bin" / "python"
    return [_qemu(), "-cpu", cpu, "-0", str(venv_python), os.path.realpath(sys.executable), *args]


@pytest.mark.slow
@pytest.mark.skipif(not X86, reason="x86 CPU models")
@pytest.mark.parametrize(
    ("cpu", "expected"),
    [
        ("Haswell-v4", ["haswell", "x64"]),  # AVX2, no AVX-512
        ("Nehalem", ["sse42", "x64"]),  # no AVX at all
        ("qemu64", ["x64"]),
    ],
)
def test_other_cpus_get_the_kernels_they_run(cpu: str, expected: list[str]):
    found = subprocess.run(
        _under_qemu(cpu, "-m", "llmplatform.local_model_server", "--list-cpu"),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=ROOT,
    )

    assert json.loads(found.stdout.strip().splitlines()[-1]) == expected


@pytest.mark.slow
@pytest.mark.skipif(not X86, reason="x86 CPU models")
def test_the_model_answers_on_a_cpu_without_avx512(tmp_path: Path):
    """The whole model server on an emulated Haswell: a build that used this machine's AVX-512
    (or AMX) anywhere on the path would die with an illegal instruction here."""
    from llmplatform.launcher import ensure_model_file

    model_path, _ = ensure_model_file(tmp_path)
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        _under_qemu(
            "Haswell-v4",
            "-m",
            "llmplatform.local_model_server",
            "--model",
            str(model_path),
            "--port",
            str(port),
            "--n-ctx",
            "512",
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 300
        while not answers(f"{url}/models"):
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "the emulated model server did not start"
            time.sleep(0.5)

        text = self_test(url, timeout=300)
        embedded = httpx.post(f"{url}/embeddings", json={"input": "Say hello."}, timeout=300)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        log.close()

    assert text.strip()
    assert embedded.status_code == 200, embedded.text
    assert len(embedded.json()["data"][0]["embedding"]) == 640
    assert "CPU kernels: haswell" in (tmp_path / "server.log").read_text()
