"""``make run``: migrate, set up the demo, start the local model, the ASGI server, a Celery worker
and beat, print how to call the platform, and supervise until Ctrl-C or SIGTERM.

Environment: LLMP_HOST / LLMP_PORT (default 127.0.0.1:8000); LLMP_LOCAL_MODEL=off to skip the
local model; LLMP_LOCAL_MODEL_URL (default http://127.0.0.1:8081/v1) where it is served, reused
if something already answers there; LLMP_LOCAL_MODEL_CPU (default auto) the llama.cpp CPU
kernels to use; CELERY_BROKER_URL for a broker (default: the embedded file broker in
LLMP_DATA_DIR/broker); LLMP_CELERY_CONCURRENCY (default 1) the worker's processes.

The local model must pass a self-test (one tiny completion) before the platform says it is
running; if it dies later, it is restarted (``llmplatform.local_model``) while the rest runs on.
The Celery worker and beat are restarted the same way (``llmplatform.launcher.RestartedChild``);
``/readyz`` names whichever is down.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from llmplatform.env import env_int
from llmplatform.launcher import (
    LOCAL_MODEL_ID,
    RUN_DIR_ENV,
    LaunchConfig,
    LaunchError,
    RestartedChild,
    Supervisor,
    answers,
    ensure_model_file,
    is_loopback,
    port_in_use,
)
from llmplatform.local_model import (
    STATUS_FILE_ENV,
    LocalModel,
    SelfTestFailed,
    require_runtime,
    self_test,
)

PLATFORM_START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class Command(BaseCommand):
    help = "Run the whole platform on this machine (what `make run` runs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--skip-bootstrap",
            action="store_true",
            help="Do not create the demo tenant, admin user and API key.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = LaunchConfig.from_env()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        supervisor = Supervisor()
        previous = {
            signum: signal.signal(signum, self._request_stop(supervisor))
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            self._run(config, supervisor, skip_bootstrap=options["skip_bootstrap"])
        except LaunchError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            for line in supervisor.stop_all(timeout=STOP_TIMEOUT):
                self._say(f"runplatform: {line}")
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _request_stop(self, supervisor: Supervisor) -> Callable[[int, FrameType | None], None]:
        def handler(signum: int, frame: FrameType | None) -> None:
            supervisor.stop_requested.set()

        return handler

    def _say(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()

    def _run(self, config: LaunchConfig, supervisor: Supervisor, *, skip_bootstrap: bool) -> None:
        started = time.monotonic()
        self._say("runplatform: migrating the database")
        call_command("migrate", interactive=False, verbosity=0)
        demo: dict[str, Any] | None = None
        if not skip_bootstrap and not settings.PRODUCTION:
            out = StringIO()
            call_command("bootstrap_demo", json=True, stdout=out)
            demo = json.loads(out.getvalue())
        # The children open their own connections; do not hold SQLite's file across the fork.
        connections.close_all()
        # WhiteNoise warns about a missing STATIC_ROOT; the demo serves assets from the finders.
        Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
        if port_in_use(config.host, config.port):
            raise LaunchError(
                f"Port {config.port} on {config.host} is already in use; set LLMP_PORT to a free "
                "port or stop what is running there."
            )
        if supervisor.stop_requested.is_set():
            return

        self._local_model: LocalModel | None = None
        model_note = self._start_local_model(config, supervisor)
        if supervisor.stop_requested.is_set():
            return
        workers = env_int("LLMP_WORKERS", 1, minimum=1)
        web_env = dict(os.environ)
        # /readyz reads the worker's and beat's status files here.
        web_env[RUN_DIR_ENV] = str(settings.DATA_DIR / "run")
        if self._local_model is not None:
            web_env[STATUS_FILE_ENV] = str(self._local_model.status_path)
        if workers > 1:
            # Every worker writes its metrics here and /metrics adds them up; the directory
            # must start empty, or samples of earlier processes would be counted again.
            metrics_dir = Path(settings.DATA_DIR) / "prometheus"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            web_env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        web = supervisor.start(
            "platform (uvicorn)",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "llmplatform.asgi:application",
                "--host",
                config.host,
                "--port",
                str(config.port),
                "--workers",
                str(workers),
                # lifespan: on shutdown the platform writes its last batch of usage records.
                "--lifespan",
                "on",
            ],
            env=web_env,
            cwd=settings.BASE_DIR,
        )
        self._say(f"runplatform: started {web.name} (pid {web.pid})")
        supervisor.wait_until_answers(
            web, f"{config.public_url}/healthz", timeout=PLATFORM_START_TIMEOUT
        )
        celery = self._start_celery(supervisor)
        if supervisor.stop_requested.is_set():
            return

        ready_in = time.monotonic() - started
        self._say(_banner(config, demo, model_note, _celery_note(celery), ready_in))
        while not supervisor.stop_requested.wait(0.5):
            if self._local_model is not None:
                self._local_model.watch()
            for child in celery:
                child.watch()
            dead = supervisor.exited()
            if dead is not None:
                tail = dead.log_tail()
                detail = f"\nThe end of {dead.log_path}:\n{tail}" if tail else ""
                raise LaunchError(
                    f"{dead.name} (pid {dead.pid}) {dead.exit_description}; stopped the rest."
                    f"{detail}"
                )
        self._say("runplatform: stopping")

    def _start_local_model(self, config: LaunchConfig, supervisor: Supervisor) -> str:
        url = config.local_model_url
        if not config.local_model:
            return "off (LLMP_LOCAL_MODEL=off): configure a provider in the admin"
        if answers(f"{url}/models"):
            self._say(f"runplatform: a model server already answers at {url}; using it")
            try:
                self_test(url)
            except SelfTestFailed as exc:
                raise LaunchError(
                    f"The model server at LLMP_LOCAL_MODEL_URL={url} failed the start-up "
                    f"self-test: {exc}.\nWhat to do: check that server (it is not one this "
                    "launcher started), stop it so the launcher starts its own, or set "
                    'LLMP_LOCAL_MODEL=off and point the model alias "default" at another '
                    "provider (Admin > Model aliases, or manage.py apply_config)."
                ) from exc
            return f"already running at {url} (self-test passed)"
        if not is_loopback(url):
            raise LaunchError(
                f"Nothing answers at LLMP_LOCAL_MODEL_URL={url}, and the launcher only starts a "
                "model server on this machine (127.0.0.1/localhost). Start it, or set "
                "LLMP_LOCAL_MODEL=off."
            )
        require_runtime()
        models_dir = settings.DATA_DIR / "models"
        model_path, assembled = ensure_model_file(models_dir)
        self._say(f"runplatform: {'assembled' if assembled else 'using'} model file {model_path}")
        model = LocalModel(
            supervisor,
            model_path=model_path,
            url=url,
            log_path=settings.DATA_DIR / "logs" / "llama-server.log",
            status_path=settings.DATA_DIR / "run" / "local-model.json",
            requested_cpu=config.local_model_cpu,
            say=self._say,
        )
        model.start()
        if supervisor.stop_requested.is_set():
            return "stopping"
        self._local_model = model
        self._say(f"runplatform: the local model passed its self-test (CPU kernels {model.cpu})")
        return f"{LOCAL_MODEL_ID} on llama.cpp at {url} (CPU kernels {model.cpu})"

    def _start_celery(self, supervisor: Supervisor) -> list[RestartedChild]:
        """The Celery worker and beat, restarted like the model server when they die."""
        celery = [sys.executable, "-m", "celery", "-A", "llmplatform"]
        run_dir = settings.DATA_DIR / "run"
        logs = settings.DATA_DIR / "logs"
        concurrency = env_int("LLMP_CELERY_CONCURRENCY", 1, minimum=1)
        specs = [
            (
                "celery worker",
                [
                    *celery,
                    "worker",
                    "--loglevel",
                    "INFO",
                    "--concurrency",
                    str(concurrency),
                    # Gossip, mingle and broker heartbeats are broadcasts between workers: one
                    # worker here, and no broadcast over the embedded file broker.
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                "celery-worker",
            ),
            (
                "celery beat",
                [
                    *celery,
                    "beat",
                    "--loglevel",
                    "INFO",
                    "--schedule",
                    str(run_dir / "celerybeat-schedule"),
                    # No pid file: a stale one left by a killed beat would stop its restart.
                    "--pidfile=",
                ],
                "celery-beat",
            ),
        ]
        started = []
        for name, argv, slug in specs:
            child = RestartedChild(
                supervisor,
                name,
                argv,
                status_path=run_dir / f"{slug}.json",
                log_path=logs / f"{slug}.log",
                cwd=settings.BASE_DIR,
                say=self._say,
            )
            process = child.start()
            self._say(f"runplatform: started {name} (pid {process.pid}, log {child.log_path})")
            started.append(child)
        return started


def _celery_note(children: list[RestartedChild]) -> str:
    pids = ", ".join(
        f"{c.name.removeprefix('celery ')} pid {c.child.pid}" for c in children if c.child
    )
    broker = (
        f"file broker in {settings.DATA_DIR / 'broker'}"
        if settings.EMBEDDED_BROKER
        else "broker CELERY_BROKER_URL"
    )
    return f"Celery worker and beat ({pids}; {broker}); /readyz shows their state"


def _banner(
    config: LaunchConfig,
    demo: dict[str, Any] | None,
    model_note: str,
    celery_note: str,
    seconds: float,
) -> str:
    base = config.public_url
    key = (demo or {}).get("api_key")
    curl_key = key or "$LLMP_API_KEY"
    sdk_key = f'"{key}"' if key else 'os.environ["LLMP_API_KEY"]'
    rule = "=" * 78
    lines = [
        "",
        rule,
        f"  llmplatform is running (ready in {seconds:.1f}s)",
        "",
        f'  API          {base}/v1   (OpenAI-compatible; models "default" and "embed")',
        f"  Admin        {base}/admin/",
    ]
    if demo and demo["admin_created"]:
        password = demo["admin_password"] or "from DEMO_ADMIN_PASSWORD"
        shown_once = "   <- shown once: save it" if demo["admin_password"] else ""
        lines.append(f"{'':15}user {demo['admin_username']}, password {password}{shown_once}")
    lines.append(f"  Local model  {model_note}")
    lines.append(f"  Tasks        {celery_note}")
    if demo:
        if key:
            lines += [
                "",
                f"  Demo API key (tenant {demo['tenant']}), shown once: save it",
                f"    {key}",
            ]
        else:
            lines += [
                "",
                f"  Demo API key (tenant {demo['tenant']}): {demo['api_key_display']} exists; "
                "only its hash is stored.",
                f"    New key: python manage.py create_api_key --tenant {demo['tenant']} "
                "--name my-key",
            ]
    lines += [
        "",
        "  Try it with curl:",
        f"    curl {base}/v1/chat/completions \\",
        f'      -H "Authorization: Bearer {curl_key}" \\',
        '      -H "Content-Type: application/json" \\',
        '      -d \'{"model": "default", "messages": [{"role": "user", "content": "Say hello"}]}\'',
        f"    curl {base}/v1/embeddings \\",
        f'      -H "Authorization: Bearer {curl_key}" \\',
        '      -H "Content-Type: application/json" \\',
        '      -d \'{"model": "embed", "input": "How do I reset my password?"}\'',
        "",
        "  or with the openai SDK (pip install openai):",
        *([] if key else ["    import os"]),
        "    from openai import OpenAI",
        f'    client = OpenAI(base_url="{base}/v1", api_key={sdk_key})',
        "    reply = client.chat.completions.create(",
        '        model="default", messages=[{"role": "user", "content": "Say hello"}])',
        "    print(reply.choices[0].message.content)",
        "",
        "  Ctrl-C stops everything.",
        rule,
        "",
    ]
    return "\n".join(lines)
