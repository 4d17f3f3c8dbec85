"""The embedded default's single caller: this tree's gateway against another source tree (by
default, ``HEAD``'s parent as given by ``--gateway-src``), both in the embedded shape that
`make run` starts: SQLite, no Redis, one uvicorn worker, every governance stage on.

    git archive OLD | tar -x -C /tmp/old-src
    .venv/bin/python bench/embedded_cache.py --gateway-src /tmp/old-src [--seconds 8] [--rounds 3]

For each tree it starts the mock upstream and the gateway, then measures one caller at a time
(``load.py`` at concurrency 1): a request that is not cached (temperature 0.7: ``BYPASS``) and a
cache hit (temperature 0: the same question again), each ``--rounds`` times, the trees
interleaved; the best round of each is reported, with the direct upstream's p50 subtracted
(the "added" figure). Prints a table and writes JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench


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


def start(
    name: str, src: Path, tmp: Path, procs: bench.Processes, fast_url: str, slow_url: str
) -> bench.Target:
    data_dir = tmp / f"data-{name}"
    data_dir.mkdir()
    env = embedded_env(data_dir, src)
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
            "llmplatform.asgi:application",
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
        "--gateway-src",
        type=Path,
        required=True,
        metavar="DIR",
        help="the other source tree (e.g. a git archive of the old commit)",
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
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
        targets = [
            bench.Target("direct", f"{fast_url}/chat/completions", root_pid=mock.pid),
            start("this-tree", bench.ROOT, tmp, procs, fast_url, slow_url),
            start("other-tree", args.gateway_src.resolve(), tmp, procs, fast_url, slow_url),
        ]
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
    print("| tree | mode | rps | p50 ms | p99 ms | added p50 ms | errors |")
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
