"""Production packaging: the Dockerfile, compose.yaml, the container entrypoint and health checks.

The image itself is built and run by ``make image-test`` (scripts/image_test.sh, in CI after the
tests), which needs podman. Here, without it: every file, module, extra and role the Dockerfile
and compose.yaml name exists; compose.yaml is validated by
``docker compose config`` where a Compose CLI exists; and the entrypoint's roles and the health
checks run for real on this machine, with the same commands and environment a container gets.
"""

from __future__ import annotations

import base64
import fnmatch
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml
from django.conf import settings

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"
ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
APP_SERVICES = {"web", "worker", "beat", "migrate"}


def _load_healthcheck():
    spec = importlib.util.spec_from_file_location(
        "llmp_healthcheck", ROOT / "deploy" / "healthcheck.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _load_healthcheck()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def entrypoint_roles() -> set[str]:
    return set(re.findall(r"^  (\w+)\)$", ENTRYPOINT.read_text(), re.MULTILINE))


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- The Dockerfile -------------------------------------------------------------------------------


def test_the_dockerfile_builds_on_python_311_slim_and_runs_as_a_non_root_user():
    instructions = dockerfile_instructions()
    base = next(
        args for word, args in instructions if word == "ARG" and args.startswith("PYTHON_IMAGE=")
    )
    assert base.split("=", 1)[1].startswith("python:3.11-slim")
    assert all(
        args.split()[0] == "${PYTHON_IMAGE}" for word, args in instructions if word == "FROM"
    )
    users = [args for word, args in instructions if word == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert any(
        "useradd" in args and users[-1] in args for word, args in instructions if word == "RUN"
    )


def test_what_the_dockerfile_copies_and_runs_exists_in_the_repository():
    instructions = dockerfile_instructions()
    for word, args in instructions:
        if word == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
    entrypoint = next(args for word, args in instructions if word == "ENTRYPOINT")
    assert yaml.safe_load(entrypoint) == ["/app/deploy/docker-entrypoint.sh"]
    assert os.access(ENTRYPOINT, os.X_OK)
    check = next(args for word, args in instructions if word == "HEALTHCHECK")
    assert 'CMD ["python", "/app/deploy/healthcheck.py"]' in check
    cmd = yaml.safe_load(next(args for word, args in instructions if word == "CMD"))
    assert cmd[0] in entrypoint_roles()


def test_the_dependency_layer_installs_the_projects_packages_and_its_optional_extra():
    project = pyproject()
    run = next(
        args for word, args in dockerfile_instructions() if word == "RUN" and "pip install" in args
    )
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert set(re.search(r"mkdir ([\w ]+?) &&", run).group(1).split()) == packages
    extra = re.search(r'"\.\[([\w-]+)\]"', run).group(1)
    assert extra in project["project"]["optional-dependencies"]
    assert "-c constraints.txt" in run


def test_the_image_context_keeps_what_the_image_needs():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = [
        "manage.py",
        "pyproject.toml",
        "constraints.txt",
        "templates/admin",
        "deploy/docker-entrypoint.sh",
        "deploy/healthcheck.py",
        "deploy/config.example.yaml",
        "llmplatform/settings.py",
        "gateway/models.py",
        "privacy/models.py",
        "deployments/dashboard.py",
    ]
    for path in needed:
        parts = path.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        assert not any(fnmatch.fnmatch(p, pattern) for p in prefixes for pattern in patterns), path
    assert any(fnmatch.fnmatch("deploy/compose.env", p) for p in patterns)  # secrets stay out
    # What `make check` and `make test` leave in the checkout (CI builds after them): mypy's
    # cache alone added 97 MB to the image before it was listed.
    for left_by_tools in (".venv", "var", ".mypy_cache", ".ruff_cache", ".pytest_cache"):
        assert left_by_tools in patterns, left_by_tools


@pytest.mark.slow
def test_the_collectstatic_step_leaves_only_static_files_in_the_data_directory(tmp_path):
    run = next(
        args
        for word, args in dockerfile_instructions()
        if word == "RUN" and "collectstatic" in args
    )
    collect, remove = [part.strip() for part in run.split("&&")[:2]]
    data_dir = tmp_path / "var"
    command = f"{collect} && {remove.replace('/app/var', str(data_dir))}"
    env = {
        **os.environ,
        "LLMP_DATA_DIR": str(data_dir),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    for name in (
        "SECRET_KEY",
        "LLMP_API_KEY_PEPPER",
        "LLMP_SUBJECT_HMAC_KEY",
        "LLMP_MASTER_KEY",
        "LLMP_ENV",
        "DATABASE_URL",
        "REDIS_URL",
    ):
        env.pop(name, None)

    subprocess.run(
        ["sh", "-c", command], cwd=ROOT, env=env, check=True, timeout=120, capture_output=True
    )

    assert [p.name for p in data_dir.iterdir()] == ["static"]  # no generated secret kept
    assert (data_dir / "static" / "admin" / "css" / "base.css").exists()
    assert (data_dir / "static" / "llmplatform" / "admin" / "dashboard.css").exists()


# --- compose.yaml ---------------------------------------------------------------------------------


def test_compose_runs_web_worker_beat_migrations_postgres_and_redis_with_health_checks():
    services = compose()["services"]
    assert set(services) == APP_SERVICES | {"postgres", "redis"}
    roles = entrypoint_roles()
    for name in APP_SERVICES:
        service = services[name]
        assert service["build"]["context"] == "."
        assert service["command"][0] == name and name in roles
        assert service["env_file"] == "${LLMP_COMPOSE_ENV:-deploy/compose.env}"
        # The image writes nothing outside /tmp (scripts/image_test.sh runs it --read-only).
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
    for name in ("web", "worker", "beat"):
        test = services[name]["healthcheck"]["test"]
        assert test == ["CMD", "python", "/app/deploy/healthcheck.py", name]
        assert name in healthcheck.CHECKS
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_the_postgres_server_is_no_newer_than_the_images_pg_dump():
    # Backups run pg_dump from the image's postgresql-client, which refuses newer servers.
    client_major = {"bookworm": 15, "trixie": 17}
    base = next(
        args
        for word, args in dockerfile_instructions()
        if word == "ARG" and args.startswith("PYTHON_IMAGE=")
    )
    debian = re.search(r"slim-(\w+)", base).group(1)
    server = compose()["services"]["postgres"]["image"]
    assert int(re.search(r"postgres:(\d+)", server).group(1)) <= client_major[debian]


def test_every_variable_of_the_env_example_is_read_by_the_platform():
    values = env_example()
    sources = "\n".join(
        path.read_text()
        for pattern in (
            "llmplatform/**/*.py",
            "gateway/**/*.py",
            "privacy/**/*.py",
            "deployments/**/*.py",
        )
        for path in ROOT.glob(pattern)
    )
    sources += ENTRYPOINT.read_text()
    postgres_image = {"POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"}
    for name in set(values) - postgres_image:
        assert f'"{name}"' in sources or f"${{{name}" in sources, name
    user, password, db = (values[k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"))
    assert values["DATABASE_URL"] == f"postgres://{user}:{password}@postgres:5432/{db}"
    assert "deploy/compose.env" in (ROOT / ".gitignore").read_text().splitlines()


def test_compose_publishes_web_on_loopback_only_since_it_trusts_the_proxy_hop():
    """web trusts one X-Forwarded-For hop (the env example's LLMP_TRUSTED_PROXY_HOPS=1): a port
    open on every interface would let a client write that header itself."""
    env = ENV_EXAMPLE.read_text()
    assert re.search(r"^LLMP_TRUSTED_PROXY_HOPS=1$", env, re.MULTILINE)
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            spec = port if isinstance(port, str) else f"{port.get('host_ip', '')}:"
            assert spec.startswith(("127.0.0.1:", "[::1]:")), (name, port)


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_the_file(tmp_path):
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Compose CLI (docker compose or docker-compose) on this machine")
    shutil.copy(ROOT / "compose.yaml", tmp_path / "compose.yaml")
    (tmp_path / "deploy").mkdir()
    shutil.copy(ENV_EXAMPLE, tmp_path / "deploy" / "compose.env")

    result = subprocess.run(
        [*cli, "-f", "compose.yaml", "config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert resolved["web"]["environment"]["LLMP_ENV"] == "production"


# --- The health checks ----------------------------------------------------------------------------


def test_the_web_check_sends_a_host_that_allowed_hosts_accepts(monkeypatch):
    for allowed, host in [
        ("llm.example.com,other", "llm.example.com"),
        (".example.com", "health.example.com"),
        ("*", "localhost"),
        ("", "localhost"),
    ]:
        monkeypatch.setenv("ALLOWED_HOSTS", allowed)
        assert healthcheck.health_host() == host


def test_the_worker_check_reads_the_broker_url_from_a_file_as_the_platform_does(
    tmp_path, monkeypatch
):
    """The Helm chart mounts CELERY_BROKER_URL as a secret file (CELERY_BROKER_URL_FILE)."""
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_BROKER_URL_FILE", raising=False)
    assert healthcheck.setting("CELERY_BROKER_URL") is None
    assert "is not set" in healthcheck.check_worker()
    secret = tmp_path / "CELERY_BROKER_URL"
    secret.write_text("rediss://:pw@redis.internal:6379/0\n")
    monkeypatch.setenv("CELERY_BROKER_URL_FILE", str(secret))
    assert healthcheck.setting("CELERY_BROKER_URL") == "rediss://:pw@redis.internal:6379/0"
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://plain:6379/0")  # the variable wins
    assert healthcheck.setting("CELERY_BROKER_URL") == "redis://plain:6379/0"


def test_the_beat_check_fails_when_the_schedule_is_stale(tmp_path, monkeypatch):
    schedule = tmp_path / "celerybeat-schedule"
    monkeypatch.setattr(healthcheck, "BEAT_SCHEDULE", str(schedule))
    assert healthcheck.check_beat() == f"no {schedule} yet"
    schedule.write_bytes(b"x")
    assert healthcheck.check_beat() is None
    old = time.time() - healthcheck.BEAT_STALE_SECONDS - 60
    os.utime(schedule, (old, old))
    assert "last written" in healthcheck.check_beat()


def test_one_shot_roles_are_healthy_and_the_recorded_role_is_checked(tmp_path, monkeypatch):
    role_file = tmp_path / "role"
    monkeypatch.setattr(healthcheck, "ROLE_FILE", role_file)
    role_file.write_text("migrate\n")
    assert healthcheck.main(["healthcheck.py"]) == 0
    role_file.write_text("web\n")
    monkeypatch.setenv("LLMP_PORT", str(free_port()))  # nothing listens there
    assert healthcheck.main(["healthcheck.py"]) == 1


# --- The roles, run for real ----------------------------------------------------------------------


def production_env(tmp_path: Path, **extra: str | None) -> dict[str, str]:
    """The environment a container gets from deploy/compose.env.example, with real secrets, a
    local data directory and this venv on PATH; ``extra`` overrides (None removes)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLMP_", "DATABASE_", "REDIS_", "CELERY_", "PROMETHEUS_"))
    }
    env.update(env_example())
    env.update(
        {
            "SECRET_KEY": base64.b64encode(os.urandom(48)).decode(),
            "LLMP_API_KEY_PEPPER": base64.b64encode(os.urandom(32)).decode(),
            "LLMP_SUBJECT_HMAC_KEY": base64.b64encode(os.urandom(32)).decode(),
            "LLMP_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "LLMP_DATA_DIR": str(tmp_path / "var"),
            "LLMP_ROLE_FILE": str(tmp_path / "role"),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
    )
    for name, value in extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def start_role(role: str, env: dict[str, str], tmp_path: Path) -> subprocess.Popen:
    with open(tmp_path / f"{role}.log", "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            ["sh", str(ENTRYPOINT), role],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_check(role: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "healthcheck.py"), role],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def wait_healthy(
    role: str, env: dict[str, str], process: subprocess.Popen, timeout: float = 90
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = run_check(role, env)
        if result.returncode == 0:
            return
        assert process.poll() is None, f"{role} exited {process.returncode}"
        assert time.monotonic() < deadline, result.stderr
        time.sleep(0.5)


@pytest.mark.slow
def test_the_example_configuration_passes_djangos_deployment_checks(tmp_path):
    env = production_env(tmp_path)

    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "manage", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "role").read_text().strip() == "manage"


@pytest.mark.slow
def test_the_web_role_in_production_mode_is_seen_healthy_behind_its_tls_proxy(tmp_path):
    port = free_port()
    env = production_env(
        tmp_path,
        LLMP_PORT=str(port),
        LLMP_WORKERS="2",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
    )
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "prometheus" / "stale.db").write_bytes(b"from an earlier start")
    assert run_check("web", env).returncode == 1  # nothing listens yet
    web = start_role("web", env, tmp_path)
    try:
        wait_healthy("web", env, web)
        # Production mode is on: plain HTTP is redirected to HTTPS (the health endpoints
        # excepted), and a Host outside ALLOWED_HOSTS is refused.
        plain = httpx.get(
            f"http://127.0.0.1:{port}/admin/login/", headers={"Host": "llm.example.com"}
        )
        assert plain.status_code == 301
        assert plain.headers["location"] == "https://llm.example.com/admin/login/"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 400
        assert not (tmp_path / "prometheus" / "stale.db").exists()  # metrics start empty
    finally:
        stop(web)
    assert web.returncode == 0  # a clean shutdown on SIGTERM
    assert run_check("web", env).returncode == 1


@pytest.mark.slow
@pytest.mark.redis
def test_the_worker_answers_its_health_check_and_beat_writes_its_schedule(tmp_path):
    env = production_env(
        tmp_path,
        CELERY_BROKER_URL=settings.REDIS_URL,
        REDIS_URL=settings.REDIS_URL,
        LLMP_ENV="embedded",
        DATABASE_URL=None,
        CELERY_BEAT_SCHEDULE=str(tmp_path / "celerybeat-schedule"),
        CELERY_CONCURRENCY="1",
    )
    worker = start_role("worker", env, tmp_path)
    beat = None
    try:
        wait_healthy("worker", env, worker)
        beat = start_role("beat", env, tmp_path)
        wait_healthy("beat", env, beat, timeout=60)
    finally:
        if beat is not None:
            stop(beat)
        stop(worker)
        from llmplatform.redis_client import sync_redis

        # Beat may have queued periodic tasks; no other test consumes them.
        client = sync_redis()
        keys = [
            k for pattern in ("celery", "_kombu.*", "unacked*") for k in client.scan_iter(pattern)
        ]
        if keys:
            client.delete(*keys)
    assert worker.returncode == 0
