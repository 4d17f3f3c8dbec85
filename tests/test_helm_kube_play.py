"""The chart's web Deployment, rendered and run: `podman kube play` starts it from the image
(`localhost/llmplatform:ci`, built by `make image-test`) against this machine's PostgreSQL and
Redis, with its secrets read from the mounted Secret as the chart arranges, and it answers a
chat completion from a local upstream.

Needs podman and the image. Without them the test is skipped, except under CI (`CI=true`), where
a missing prerequisite fails it. Podman's configuration comes from CONTAINERS_CONF and
CONTAINERS_STORAGE_CONF when set, else from ~/.cache/llmplatform/podman/ (LLMP_PODMAN_DIR) as
`make image-test` leaves it, where the image is."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import pytest
import yaml
from django.conf import settings

from .conftest import free_port, route_alias
from .upstreams import OpenAIUpstream

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


ROOT = Path(settings.BASE_DIR)
CHART = ROOT / "deploy" / "helm" / "llmplatform"
IMAGE = "localhost/llmplatform:ci"


def podman_dir() -> Path:
    """Where scripts/podman_env.sh keeps podman's configuration and storage."""
    if os.environ.get("LLMP_PODMAN_DIR"):
        return Path(os.environ["LLMP_PODMAN_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "llmplatform" / "podman"


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    for name, filename in [
        ("CONTAINERS_CONF", "containers.conf"),
        ("CONTAINERS_STORAGE_CONF", "storage.conf"),
    ]:
        candidate = podman_dir() / filename
        if name not in env and candidate.exists():
            env[name] = str(candidate)
    return env


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    podman_path = shutil.which("podman")
    assert podman_path is not None
    return subprocess.run(
        [podman_path, *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


@pytest.fixture
def podman_with_image() -> None:
    problem = None
    if shutil.which("podman") is None:
        problem = "podman is not installed"
    elif podman("image", "exists", IMAGE, check=False).returncode != 0:
        problem = f"the image {IMAGE} is missing (make image-test builds it)"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {problem}", pytrace=False)
        pytest.skip(problem)


def web_deployment(*, release: str, port: int, secrets_dir: Path) -> dict[str, Any]:
    """The web Deployment as the chart renders it, with what podman 4.3 lacks stood in for."""
    values = {
        "image": {"repository": IMAGE.rsplit(":", 1)[0], "tag": "ci", "pullPolicy": "Never"},
        "config": {"allowedHosts": ["127.0.0.1", "localhost"]},
        "web": {"workers": 1},
    }
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values=values, name=release, namespace="default", is_install=True)
    web = yaml.safe_load(rendered["llmplatform/templates/web-deployment.yaml"])
    spec = web["spec"]["template"]["spec"]
    # Podman has no cluster network: the pod joins the host's, where PostgreSQL, Redis and the
    # upstream listen on loopback, and web listens on a free loopback port of its own (a
    # published port needs podman's own network).
    spec["hostNetwork"] = True
    container = spec["containers"][0]
    del container["ports"]
    for item in container["env"]:
        if item["name"] == "POD_IP":  # podman 4.3 has no status.podIP: on the host, loopback
            del item["valueFrom"]
            item["value"] = "127.0.0.1"
        if item["name"] == "LLMP_HOST":
            item["value"] = "127.0.0.1"
        if item["name"] == "LLMP_PORT":
            item["value"] = str(port)
    # The existing Secret the chart refers to, as the kubelet mounts it: one file per key.
    # Podman 4.3 writes a Secret's data into those files still base64-encoded, so a host
    # directory with the files stands in for it.
    (volume,) = [v for v in spec["volumes"] if v["name"] == "secrets"]
    assert volume.pop("secret")["secretName"] == "llmplatform"
    volume["hostPath"] = {"path": str(secrets_dir), "type": "Directory"}
    return web


@pytest.fixture
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(reply="answered through the chart's web pod") as server:
        yield server


def test_the_rendered_web_deployment_runs_under_podman_and_answers_a_chat_completion(
    podman_with_image, transactional_db, key_a, upstream, tmp_path
):
    route_alias("default", upstream.base_url)
    db = settings.DATABASES["default"]
    database_url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    release = f"kp{uuid.uuid4().hex[:8]}"
    port = free_port()
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for name, value in {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "LLMP_API_KEY_PEPPER": settings.API_KEY_PEPPER,  # key_a was made with it
        "LLMP_SUBJECT_HMAC_KEY": secrets.token_urlsafe(32),
        "LLMP_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.REDIS_URL,
    }.items():
        (secrets_dir / name).write_text(value)
        (secrets_dir / name).chmod(0o444)  # the container's user is not the test's
    secrets_dir.chmod(0o755)
    play_file = tmp_path / "web.yaml"
    play_file.write_text(
        yaml.safe_dump(web_deployment(release=release, port=port, secrets_dir=secrets_dir))
    )
    base_url = f"http://127.0.0.1:{port}"
    # As the TLS-terminating ingress would send it (production mode redirects plain HTTP).
    headers = {"X-Forwarded-Proto": "https"}
    try:
        played = podman("kube", "play", str(play_file), check=False)
        assert played.returncode == 0, played.stdout + played.stderr
        (container,) = [
            name
            for name in podman(
                "ps",
                "-a",
                "--filter",
                f"name={release}-llmplatform-web-pod",
                "--format",
                "{{.Names}}",
            ).stdout.split()
            if name.endswith("-web")
        ]
        deadline = time.monotonic() + 180
        status = None
        while time.monotonic() < deadline:
            try:
                status = httpx.get(f"{base_url}/readyz", headers=headers, timeout=5).status_code
            except httpx.HTTPError:
                status = None
            if status == 200:
                break
            # A web process that failed to start (and was started again) will not get better.
            state = podman(
                "inspect", "--format", "{{.State.Status}} {{.RestartCount}}", container
            ).stdout.split()
            if state[0] in {"exited", "stopped"} or state[1:] != ["0"]:
                break
            time.sleep(1)
        logs = podman("logs", container, check=False)
        assert status == 200, f"/readyz: {status}\n{logs.stdout}{logs.stderr}"
        response = httpx.post(
            f"{base_url}/v1/chat/completions",
            headers={**headers, "Authorization": f"Bearer {key_a}"},
            json={"model": "default", "messages": [{"role": "user", "content": "hello"}]},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        message = response.json()["choices"][0]["message"]["content"]
        assert message == "answered through the chart's web pod"
        assert upstream.requests, "the upstream was never called"
        # The process runs as the chart says: not root, on a read-only root file system.
        identity = podman("exec", container, "id", "-u", check=False)
        assert identity.stdout.strip() == "10001", identity.stdout + identity.stderr
        write = podman("exec", container, "touch", "/app/written", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr
    finally:
        podman("kube", "down", str(play_file), check=False)
