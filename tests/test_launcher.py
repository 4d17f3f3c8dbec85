"""``make run``: the demo bootstrap, ``create_api_key``, and (slow) the whole launcher end to end
with the real Gemma model behind llama.cpp, called with the official ``openai`` SDK."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from gateway import keys
from gateway.admin.providers import semantic_embeddings_problem
from gateway.models import ApiKey, ModelAlias, Provider, Tier
from gateway.providers.capabilities import LOCAL_MODEL_UNSUPPORTED
from llmplatform.launcher import answers
from llmplatform.models import AuditEvent, Tenant
from tests.conftest import free_port
from tests.platform_process import RunningPlatform, minimal_env, running_platform


def _bootstrap(*args: str) -> str:
    out = StringIO()
    call_command("bootstrap_demo", *args, stdout=out)
    return out.getvalue()


def _key_is_valid(plaintext: str) -> bool:
    parts = keys.split(plaintext)
    assert parts is not None
    lookup, secret = parts
    row = ApiKey.objects.get(lookup=lookup)
    return keys.verify(secret, row.secret_hash, row.pepper_id)


# --- bootstrap_demo and create_api_key --------------------------------------------------------


@pytest.fixture
def no_admin_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEMO_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("LLMP_LOCAL_MODEL_URL", raising=False)


def test_bootstrap_demo_twice_makes_one_of_each_and_shows_secrets_once(db, no_admin_password_env):
    first = json.loads(_bootstrap("--json"))
    events_after_first = AuditEvent.objects.count()
    second_text = _bootstrap()

    assert first["api_key_created"] and _key_is_valid(first["api_key"])
    assert first["admin_created"] and first["admin_password"]
    assert first["api_key"] not in second_text
    assert first["admin_password"] not in second_text
    assert f"A demo API key exists for tenant 'demo': {first['api_key_display']}" in second_text
    assert "create_api_key --tenant demo" in second_text
    assert Tenant.objects.filter(slug="demo").count() == 1
    assert ApiKey.objects.filter(tenant__slug="demo").count() == 1
    assert set(Tier.objects.values_list("name", flat=True)) == {"free", "pro", "enterprise"}
    assert Tenant.objects.get(slug="demo").plan.tier.name == "pro"
    version = ModelAlias.objects.get(name="default").versions.get()
    assert (version.version, version.weight) == ("v1", 100)
    assert version.deployment.provider.base_url == "http://127.0.0.1:8081/v1"
    # The local model comes back within seconds after a restart: its breaker probes again soon.
    assert version.deployment.breaker_recovery_seconds == 5.0
    assert AuditEvent.objects.count() == events_after_first  # the second run wrote nothing


def test_bootstrap_demo_writes_an_audit_row_for_each_object_it_creates(db, no_admin_password_env):
    _bootstrap("--json")

    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {
        "tenant.create",
        "api_key.create",
        "user.create_superuser",
        "tier.create",
        "provider.create",
        "modelalias.create",
    } <= actions
    assert set(AuditEvent.objects.values_list("actor", flat=True)) == {"system:bootstrap_demo"}


def test_bootstrap_demo_takes_the_admin_password_from_the_environment_without_echoing_it(
    db, monkeypatch: pytest.MonkeyPatch, django_user_model
):
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "correct-horse-battery")

    output = _bootstrap()

    assert "correct-horse-battery" not in output
    assert django_user_model.objects.get(username="admin").check_password("correct-horse-battery")


def test_bootstrap_demo_points_the_local_provider_at_the_configured_url(
    db, no_admin_password_env, monkeypatch: pytest.MonkeyPatch
):
    _bootstrap("--json")
    monkeypatch.setenv("LLMP_LOCAL_MODEL_URL", "http://127.0.0.1:9999/v1")

    result = json.loads(_bootstrap("--json"))

    assert Provider.objects.get(name="local").base_url == "http://127.0.0.1:9999/v1"
    assert result["updated"] == ["provider local: base_url http://127.0.0.1:9999/v1"]


def test_bootstrap_demo_serves_embeddings_from_the_local_model_under_its_own_alias(
    db, no_admin_password_env
):
    _bootstrap("--json")

    embed = ModelAlias.objects.get(name="embed").versions.get()
    chat = ModelAlias.objects.get(name="default").versions.get()
    assert embed.deployment == chat.deployment
    local = Provider.objects.get(name="local")
    assert "embeddings" not in local.extra["unsupported"]
    # So an officer may choose it as the default alias's semantic-cache embeddings.
    assert semantic_embeddings_problem("default", "embed") is None


def test_bootstrap_demo_lets_an_older_demo_database_serve_embeddings(db, no_admin_password_env):
    _bootstrap("--json")
    older = [*LOCAL_MODEL_UNSUPPORTED, "embeddings"]
    Provider.objects.filter(name="local").update(extra={"unsupported": older})

    result = json.loads(_bootstrap("--json"))

    assert Provider.objects.get(name="local").extra["unsupported"] == LOCAL_MODEL_UNSUPPORTED
    assert result["updated"] == ["provider local: unsupported features declared"]
    # An operator's own declaration is left as it is.
    Provider.objects.filter(name="local").update(extra={"unsupported": ["embeddings"]})
    _bootstrap("--json")
    assert Provider.objects.get(name="local").extra["unsupported"] == ["embeddings"]


def test_create_api_key_prints_a_working_key_once(db, no_admin_password_env):
    _bootstrap("--json")
    out = StringIO()

    call_command(
        "create_api_key",
        "--tenant",
        "demo",
        "--name",
        "ci",
        "--scopes",
        "chat",
        "--expires-days",
        "7",
        "--json",
        stdout=out,
    )

    result = json.loads(out.getvalue())
    assert _key_is_valid(result["key"])
    row = ApiKey.objects.get(name="ci")
    assert row.scopes == ["chat"] and row.expires_at is not None
    assert result["display"] == row.display


def test_create_api_key_rejects_an_unknown_tenant_and_scope(db, no_admin_password_env):
    _bootstrap("--json")

    with pytest.raises(CommandError, match="No tenant"):
        call_command("create_api_key", "--tenant", "nope", "--name", "x", stdout=StringIO())
    with pytest.raises(CommandError, match="Unknown scopes: root"):
        call_command(
            "create_api_key",
            "--tenant",
            "demo",
            "--name",
            "x",
            "--scopes",
            "root",
            stdout=StringIO(),
        )
    assert not ApiKey.objects.filter(name="x").exists()


# --- make run, end to end ---------------------------------------------------------------------

STARTUP_TIMEOUT = 300.0  # assembling the model and starting llama.cpp on a cold machine


def _processes_in_groups(pgids: set[int]) -> list[int]:
    """Live (non-zombie) processes whose process group is one of ``pgids``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) in pgids and state != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    port, model_port = free_port(), free_port()
    model_url = f"http://127.0.0.1:{model_port}/v1"
    env = minimal_env(
        LLMP_DATA_DIR=str(tmp_path_factory.mktemp("llmp-data")),
        LLMP_PORT=str(port),
        LLMP_LOCAL_MODEL_URL=model_url,
    )
    with running_platform(env, port=port, model_url=model_url, timeout=STARTUP_TIMEOUT) as running:
        yield running


def _client(platform: RunningPlatform, key: str | None = None):
    from openai import OpenAI

    return OpenAI(
        base_url=f"{platform.base_url}/v1", api_key=key or platform.key, max_retries=0, timeout=120
    )


HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]


@pytest.mark.slow
def test_the_local_model_server_answers_on_its_own(platform: RunningPlatform):
    reply = httpx.post(
        f"{platform.model_url}/chat/completions",
        timeout=120,
        json={
            "model": "gemma-3-270m",
            "messages": HELLO,
            "max_tokens": 16,
        },
    )

    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"].strip()


@pytest.mark.slow
def test_models_lists_the_default_alias(platform: RunningPlatform):
    ids = [model.id for model in _client(platform).models.list()]

    assert "default" in ids


@pytest.mark.slow
def test_it_answers_a_chat_with_the_local_model(platform: RunningPlatform):
    reply = _client(platform).chat.completions.create(
        model="default", messages=HELLO, max_tokens=24
    )

    assert reply.choices[0].message.content.strip()
    assert reply.usage is not None and reply.usage.completion_tokens > 0


@pytest.mark.slow
def test_it_streams_a_chat_from_the_local_model(platform: RunningPlatform):
    stream = _client(platform).chat.completions.create(
        model="default", messages=HELLO, max_tokens=24, stream=True
    )

    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert text.strip()


@pytest.mark.slow
def test_a_wrong_key_gets_401_with_an_openai_error(platform: RunningPlatform):
    wrong = platform.key[:-4] + ("aaaa" if not platform.key.endswith("aaaa") else "bbbb")

    reply = httpx.post(
        f"{platform.base_url}/v1/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {wrong}"},
        json={"model": "default", "messages": HELLO},
    )

    assert reply.status_code == 401
    error: dict[str, Any] = reply.json()["error"]
    assert {"message", "type", "code"} <= error.keys()
    assert wrong not in reply.text


@pytest.mark.slow
def test_the_local_model_answers_in_turn_without_echoing_the_prompt(platform: RunningPlatform):
    """The prompt the pre-trained model answers: it ends its turn with an answer instead of
    repeating the question (which it does under Gemma's chat template)."""
    reply = _client(platform).chat.completions.create(
        model="default", messages=HELLO, temperature=0, max_tokens=64
    )

    text = reply.choices[0].message.content
    assert text.strip() and reply.choices[0].finish_reason == "stop"
    assert HELLO[0]["content"] not in text
    assert "<start_of_turn>" not in text and "User:" not in text


@pytest.mark.slow
def test_the_self_test_passed_with_kernels_this_cpu_runs(platform: RunningPlatform):
    banner = "\n".join(platform.output)

    assert "the local model passed its self-test (CPU kernels " in banner
    chosen = re.search(r"self-test \(CPU kernels ([\w.]+)\)", banner)
    assert chosen and chosen.group(1) not in ("sapphirerapids", "builtin")


@pytest.mark.slow
def test_it_makes_embeddings_with_the_local_model(platform: RunningPlatform):
    texts = ["How do I reset my password?", "How can I reset my password?", "Paris in spring"]

    reply = _client(platform).embeddings.create(model="embed", input=texts)

    vectors = [item.embedding for item in reply.data]
    assert [len(v) for v in vectors] == [640, 640, 640]
    assert all(abs(sum(x * x for x in v) - 1) < 1e-3 for v in vectors)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    assert reply.usage.prompt_tokens > 0
    # The same text, alone, gets the same vector: a batch does not change an input's embedding.
    alone = _client(platform).embeddings.create(model="embed", input=texts[2]).data[0].embedding
    assert cosine(alone, vectors[2]) > 0.9999


@pytest.mark.slow
@pytest.mark.parametrize(
    "body, param",
    [
        ({"input": [[1, 2, 3]]}, "input"),
        ({"input": ""}, "input[0]"),
        ({"input": "hello", "dimensions": 64}, "dimensions"),
        ({"input": "word " * 600}, "input"),
    ],
    ids=["token arrays", "empty", "dimensions", "too long"],
)
def test_the_model_server_refuses_what_it_cannot_embed_with_an_openai_error(
    platform: RunningPlatform, body: dict[str, Any], param: str
):
    reply = httpx.post(
        f"{platform.model_url}/embeddings", json={"model": "gemma-3-270m", **body}, timeout=60
    )

    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"]


@pytest.mark.slow
def test_a_too_long_input_through_the_gateway_is_the_providers_refusal_with_its_code(
    platform: RunningPlatform,
):
    """As for any provider's 400: a 502 that names the provider's error code, not its text."""
    reply = httpx.post(
        f"{platform.base_url}/v1/embeddings",
        headers={"Authorization": f"Bearer {platform.key}"},
        json={"model": "embed", "input": "word " * 600},
        timeout=60,
    )

    assert reply.status_code == 502
    error = reply.json()["error"]
    assert error["code"] == "upstream_bad_response"
    assert "context_length_exceeded" in error["message"]


_SEMANTIC_CACHE = (
    "from gateway.models import ModelAlias; "
    "from gateway.pipeline.route import invalidate_routing; "
    "ModelAlias.objects.filter(name='default').update(semantic_cache={on}, "
    "semantic_cache_embeddings='embed', semantic_cache_threshold=0.98); "
    "invalidate_routing()"
)


@pytest.mark.slow
def test_the_semantic_cache_compares_questions_with_the_local_model(platform: RunningPlatform):
    """The default alias with the embedded model's embeddings (alias ``embed``) for its semantic
    cache: a question in other words (cosine 0.996 with this model) is answered from the stored
    answer; an unrelated one (0.65) is not."""
    platform.manage("shell", "-c", _SEMANTIC_CACHE.format(on=True))
    time.sleep(1.5)  # the web process follows the routing change within 0.5 s

    def ask(text: str) -> httpx.Response:
        return httpx.post(
            f"{platform.base_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {platform.key}"},
            json={
                "model": "default",
                "temperature": 0,
                "messages": [{"role": "user", "content": text}],
            },
            timeout=120,
        )

    try:
        first = ask("Say hello in one short sentence.")
        assert first.status_code == 200 and first.headers["X-Cache"] == "MISS"
        assert first.json()["choices"][0]["finish_reason"] == "stop"  # so it is stored

        similar = ask("Say hello in one brief sentence.")
        assert similar.headers["X-Cache"] == "SEMANTIC-HIT"
        assert float(similar.headers["X-Cache-Similarity"]) >= 0.98
        answer = similar.json()["choices"][0]["message"]["content"]
        assert answer == first.json()["choices"][0]["message"]["content"]

        assert ask("What is the capital of France?").headers["X-Cache"] == "MISS"
    finally:
        platform.manage("shell", "-c", _SEMANTIC_CACHE.format(on=False))


def _pid_gone(pid: int) -> bool:
    return not _processes_in_groups({pid})


def _readyz(platform: RunningPlatform) -> httpx.Response:
    return httpx.get(f"{platform.base_url}/readyz", timeout=10)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="inspects /proc (Linux)")
def test_a_killed_model_server_is_restarted_and_meanwhile_the_api_says_503(
    platform: RunningPlatform,
):
    model_pid = platform.child_pids["llama.cpp server"]
    # Hold the launcher still, so the outage lasts until this test has looked at it.
    os.kill(platform.process.pid, signal.SIGSTOP)
    try:
        os.kill(model_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not _pid_gone(model_pid):
            assert time.monotonic() < deadline
            time.sleep(0.05)

        down = httpx.post(
            f"{platform.base_url}/v1/chat/completions",
            timeout=60,
            headers={"Authorization": f"Bearer {platform.key}"},
            json={"model": "default", "messages": HELLO, "max_tokens": 8},
        )
        ready = _readyz(platform)
    finally:
        os.kill(platform.process.pid, signal.SIGCONT)

    assert down.status_code == 503
    assert down.json()["error"]["code"] in ("upstream_unavailable", "circuit_open")
    assert int(down.headers["Retry-After"]) >= 1
    assert ready.status_code == 503 and ready.json()["checks"]["providers"]["ok"] is False

    # The launcher sees the death, says so in /readyz, restarts the server, and the platform
    # serves again by itself.
    details: list[str] = []
    deadline = time.monotonic() + 60
    while True:
        checks = _readyz(platform).json()["checks"]
        details.append(checks["local_model"]["detail"])
        if all(check["ok"] for check in checks.values()):
            break
        assert time.monotonic() < deadline, details
        time.sleep(0.1)
    assert any(d == "restarting: was killed by SIGKILL" for d in details), details
    reply = _chat_until_it_answers(platform, timeout=30)
    assert reply.choices[0].message.content.strip()
    assert platform.child_pids["llama.cpp server"] != model_pid
    output = "\n".join(platform.output)
    assert "was killed by SIGKILL" in output and "the local model is back" in output


def _chat_until_it_answers(platform: RunningPlatform, *, timeout: float):
    """An answer from the model itself: a question not asked before, so no copy of an earlier
    answer (which the gateway serves while every provider is down) can stand in for it."""
    import openai

    question = [{"role": "user", "content": f"Say hello to visitor {uuid.uuid4().hex[:6]}."}]
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = _client(platform).chat.completions.with_raw_response.create(
                model="default", messages=question, max_tokens=24
            )
            assert reply.headers.get("x-llmp-deployment") != "cache"
            return reply.parse()
        except openai.APIStatusError as exc:
            assert exc.status_code == 503, exc
            assert time.monotonic() < deadline, "the platform did not answer again in time"
            time.sleep(0.5)


@pytest.mark.slow
def test_a_segfault_of_the_model_server_is_followed_by_a_good_answer_within_30s(
    platform: RunningPlatform,
):
    model_pid = platform.child_pids["llama.cpp server"]

    os.kill(model_pid, signal.SIGSEGV)
    reply = _chat_until_it_answers(platform, timeout=30)

    assert reply.choices[0].message.content.strip()
    assert platform.child_pids["llama.cpp server"] != model_pid
    assert platform.process.poll() is None  # the platform itself never stopped


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="inspects /proc (Linux)")
def test_sigint_stops_every_child_and_exits_0(platform: RunningPlatform):
    children = platform.child_pids
    assert {"llama.cpp server", "platform (uvicorn)", "celery worker", "celery beat"} <= (
        children.keys()
    )

    platform.process.send_signal(signal.SIGINT)

    assert platform.process.wait(timeout=30) == 0
    assert _processes_in_groups(set(children.values())) == []
    for url in (f"{platform.base_url}/healthz", f"{platform.model_url}/models"):
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=2)


@pytest.mark.slow
def test_the_self_test_fails_clearly_against_a_model_server_that_crashes(tmp_path: Path):
    """A model server that answers /v1/models but dies on its first completion: the launcher
    must not say it is running; it must say what failed and what to do, and exit non-zero."""
    model_port = free_port()
    standin = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("standin_model_server.py")),
            "--port",
            str(model_port),
        ],
        env={**os.environ, "STANDIN_CRASH_CPUS": "*"},
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not answers(f"http://127.0.0.1:{model_port}/v1/models"):
            assert time.monotonic() < deadline
            time.sleep(0.1)

        result = subprocess.run(
            [sys.executable, "manage.py", "runplatform"],
            cwd=settings.BASE_DIR,
            env=minimal_env(
                LLMP_DATA_DIR=str(tmp_path),
                LLMP_PORT=str(free_port()),
                LLMP_LOCAL_MODEL_URL=f"http://127.0.0.1:{model_port}/v1",
            ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=240,
        )
        crashed = standin.wait(timeout=10)
    finally:
        if standin.poll() is None:
            standin.kill()

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert crashed == -signal.SIGSEGV  # it did crash on the self-test's completion
    assert "failed the start-up self-test" in output
    assert "LLMP_LOCAL_MODEL=off" in output and "apply_config" in output
    assert "llmplatform is running" not in output
