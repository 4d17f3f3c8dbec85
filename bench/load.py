"""The benchmark's load generator: closed-loop, fixed concurrency, bounded in requests and time,
loopback only. Writes one JSON result.

    python bench/load.py --url http://127.0.0.1:9101/v1/chat/completions \\
        --body '{"model": "default", "messages": [...]}' -H 'Authorization: Bearer ...' \\
        --concurrency 32 --requests 20000 --duration 20 [--stream] [--out result.json]

Each of ``--concurrency`` connections sends a request, waits for the whole answer, and sends the
next, until ``--requests`` have been sent or ``--duration`` seconds have passed; a request still
running then gets ``--timeout`` more seconds and is counted as an error after that.

Two engines, the same measurements:

- ``py`` (default): an asyncio client on uvloop with httptools' HTTP parser (both already in the
  project's venv), one keep-alive connection per concurrent client. For a stream it records the
  time to the first body chunk (first SSE event) and to the end; it checks every answer (status
  200, ``"choices"`` or ``--expect`` in a JSON body, ``data: [DONE]`` and no error event in a
  stream), reads the ``X-Cache`` and ``x-llmp-overhead-ms`` headers, and counts the streams
  open at once.
- ``wrk``: Debian's ``wrk`` with a generated Lua script (non-streaming only: it cannot see a
  stream's first chunk). Cheaper per request, used to check how much the ``py`` engine perturbs
  the targets it shares the cores with (``cpu_us_per_request`` in the result).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_INTERESTING_HEADERS = {b"x-cache": "x_cache", b"x-llmp-overhead-ms": "overhead"}
_BODY_KEEP = 256 * 1024  # bytes of an answer kept for the checks


def require_loopback(url: str) -> tuple[str, int, str]:
    """(host, port, path) of a plain-HTTP loopback URL; anything else is refused."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise SystemExit(f"load.py: only http:// URLs on loopback, not {url!r}")
    host = parts.hostname
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError
        except ValueError:
            raise SystemExit(f"load.py: refusing non-loopback target {host!r}") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return host, parts.port or 80, path


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def at(q: float) -> float:
        # Nearest-rank percentile.
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
        return round(ordered[index], 3)

    return {
        "p50": at(50),
        "p90": at(90),
        "p99": at(99),
        "max": round(ordered[-1], 3),
        "mean": round(sum(ordered) / len(ordered), 3),
        "n": len(ordered),
    }


# ---------------------------------------------------------------------------------------------
# The py engine


@dataclass
class Stats:
    latency_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    overhead_ms: list[float] = field(default_factory=list)
    x_cache: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    ok: int = 0
    open_now: int = 0
    max_open: int = 0
    first_start: float = 0.0
    last_end: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection sending one request at a time."""

    def __init__(self, stats: Stats, stream: bool, expect: bytes = b'"choices"') -> None:
        import httptools

        self._parser_error = httptools.HttpParserError
        self.parser = httptools.HttpResponseParser(self)
        self.stats = stats
        self.stream = stream
        self.expect = expect
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future | None = None
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.first_body_at = 0.0
        self.body = bytearray()
        self.counted_open = False

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self._parser_error as exc:
            self._fail(f"bad_http:{type(exc).__name__}")

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._fail("connection_closed")

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        key = _INTERESTING_HEADERS.get(name.lower())
        if key:
            self.headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.stream and self.status == 200:
            self.counted_open = True
            self.stats.open_now += 1
            if self.stats.open_now > self.stats.max_open:
                self.stats.max_open = self.stats.open_now

    def on_body(self, body: bytes) -> None:
        if not self.first_body_at:
            self.first_body_at = time.perf_counter()
        if len(self.body) < _BODY_KEEP:
            self.body += body

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.closed = True
        if self.done is not None and not self.done.done():
            self.done.set_result(True)

    # driving
    def _fail(self, kind: str) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(kind)

    def send(self, request: bytes) -> asyncio.Future:
        self._reset()
        self.done = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(request)
        return self.done

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def check(self) -> str | None:
        """None for a good answer, else the kind of error."""
        if self.status != 200:
            return f"http_{self.status}"
        body = bytes(self.body)
        if self.stream:
            if b"data: [DONE]" not in body:
                return "stream_incomplete"
            if b'data: {"error"' in body:
                return "stream_error_event"
        elif self.expect not in body:
            return "bad_body"
        return None


def build_request(
    host: str, port: int, path: str, method: str, body: bytes, headers: list[str]
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    names = {h.split(":", 1)[0].strip().lower() for h in headers}
    if body and "content-type" not in names:
        lines.append("Content-Type: application/json")
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(h.strip() for h in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def run_py(args: argparse.Namespace, host: str, port: int, path: str, request: bytes) -> dict:
    loop = asyncio.get_running_loop()
    stats = Stats()
    deadline_send = 0.0

    async def connect() -> HttpConnection:
        _, protocol = await asyncio.wait_for(
            loop.create_connection(
                lambda: HttpConnection(stats, args.stream, args.expect.encode()), host, port
            ),
            timeout=args.connect_timeout,
        )
        return protocol

    async def client(index: int, conn: HttpConnection | None) -> None:
        if args.ramp and index:
            await asyncio.sleep(args.ramp * index / args.concurrency)
        while stats.sent < args.requests and time.perf_counter() < deadline_send:
            stats.sent += 1
            if conn is None or conn.closed:
                try:
                    conn = await connect()
                except (TimeoutError, OSError) as exc:
                    stats.error(f"connect:{type(exc).__name__}")
                    conn = None
                    await asyncio.sleep(0.05)
                    continue
            started = time.perf_counter()
            if not stats.first_start:
                stats.first_start = started
            done = conn.send(request)
            timer = loop.call_later(args.timeout, conn._fail, "timeout")
            outcome = await done
            timer.cancel()
            ended = time.perf_counter()
            if conn.counted_open:
                stats.open_now -= 1
            problem = conn.check() if outcome is True else outcome
            if problem is not None:
                stats.error(problem)
                conn.close()
                conn = None
                continue
            stats.ok += 1
            stats.last_end = ended
            stats.latency_ms.append((ended - started) * 1000)
            if args.stream and conn.first_body_at:
                stats.ttfb_ms.append((conn.first_body_at - started) * 1000)
            cache = conn.headers.get("x_cache")
            if cache:
                stats.x_cache[cache.upper()] = stats.x_cache.get(cache.upper(), 0) + 1
            overhead = conn.headers.get("overhead")
            if overhead:
                with contextlib.suppress(ValueError):
                    stats.overhead_ms.append(float(overhead))
            if conn.closed:
                conn = None
        if conn is not None:
            conn.close()

    # Open the connections before the clock starts (unless ramping: then each client opens its
    # own when its turn comes), so connection setup is not in the first latencies. One at a
    # time, a few milliseconds apart: opened all at once, they queue up in the listen backlog
    # and the first server worker to wake accepts every one of them (asyncio accepts up to
    # the backlog per wake-up), leaving the other workers of a multi-process server idle.
    conns: list[HttpConnection | None] = [None] * args.concurrency
    if not args.ramp:
        for i in range(args.concurrency):
            try:
                conns[i] = await connect()
            except (TimeoutError, OSError) as exc:
                stats.error(f"connect:{type(exc).__name__}")
            await asyncio.sleep(args.connect_stagger)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    deadline_send = began + args.duration
    await asyncio.gather(*(client(i, conns[i]) for i in range(args.concurrency)))
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    window = (stats.last_end - (stats.first_start or began)) if stats.ok else 0.0
    return {
        "sent": stats.sent,
        "ok": stats.ok,
        "errors": sum(stats.errors.values()),
        "error_kinds": stats.errors,
        "elapsed_s": round(time.perf_counter() - began, 3),
        "rps": round(stats.ok / window, 1) if window > 0 else 0.0,
        "latency_ms": percentiles(stats.latency_ms),
        "ttfb_ms": percentiles(stats.ttfb_ms) if args.stream else None,
        "overhead_header_ms": percentiles(stats.overhead_ms),
        "x_cache": stats.x_cache,
        "max_open_streams": stats.max_open if args.stream else None,
        "generator_cpu_s": round(cpu_s, 3),
        "cpu_us_per_request": round(cpu_s / max(1, stats.sent) * 1e6, 1),
    }


# ---------------------------------------------------------------------------------------------
# The wrk engine

_WRK_SCRIPT = """
wrk.method = {method}
wrk.body = {body}
{headers}
local limit = {limit}
local count = 0
function response(status, headers, body)
  count = count + 1
  if count >= limit then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%f}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
"""


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


def run_wrk(args: argparse.Namespace, url: str, body: bytes, headers: list[str]) -> dict:
    if args.stream:
        raise SystemExit("load.py: the wrk engine cannot measure streams; use --engine py")
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("load.py: wrk is not installed (apt-get install -y wrk)")
    header_lines = []
    names = {h.split(":", 1)[0].strip().lower() for h in headers}
    if body and "content-type" not in names:
        header_lines.append('wrk.headers["Content-Type"] = "application/json"')
    for header in headers:
        name, _, value = header.partition(":")
        header_lines.append(
            f"wrk.headers[{_lua_string(name.strip())}] = {_lua_string(value.strip())}"
        )
    script = _WRK_SCRIPT.format(
        method=_lua_string(args.method),
        body=_lua_string(body.decode()),
        headers="\n".join(header_lines),
        limit=max(1, args.requests),
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        script_path = handle.name
    try:
        cmd = [
            wrk,
            "-t1",
            f"-c{args.concurrency}",
            f"-d{max(1, round(args.duration))}s",
            f"--timeout={int(args.timeout)}s",
            "-s",
            script_path,
            url,
        ]
        started = time.perf_counter()
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = process.communicate(timeout=args.duration + args.timeout + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        os.unlink(script_path)
    line = next((x for x in out.decode().splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise SystemExit(
            f"load.py: wrk gave no result: {out.decode()[-500:]} {err.decode()[-500:]}"
        )
    data = json.loads(line[len("WRKJSON ") :])
    errors = {k: data[k] for k in ("connect", "read", "write", "status", "timeout") if data[k]}
    ok = data["requests"] - data["status"]
    cpu_s = usage.ru_utime + usage.ru_stime
    seconds = data["duration_us"] / 1e6

    def ms(us: float) -> float:
        return round(us / 1000, 3)

    return {
        "sent": data["requests"],
        "ok": ok,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "elapsed_s": round(time.perf_counter() - started, 3),
        "rps": round(ok / seconds, 1) if seconds else 0.0,
        "latency_ms": {
            "p50": ms(data["p50"]),
            "p90": ms(data["p90"]),
            "p99": ms(data["p99"]),
            "max": ms(data["max"]),
            "mean": ms(data["mean"]),
            "n": ok,
        },
        "ttfb_ms": None,
        "overhead_header_ms": None,
        "x_cache": {},
        "max_open_streams": None,
        "generator_cpu_s": round(cpu_s, 3),
        "cpu_us_per_request": round(cpu_s / max(1, data["requests"]) * 1e6, 1),
    }


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--method", default="POST")
    parser.add_argument("--body", default="", help="request body (JSON text)")
    parser.add_argument("-H", "--header", action="append", default=[], dest="headers")
    parser.add_argument("--stream", action="store_true", help="the answers are SSE streams")
    parser.add_argument(
        "--expect",
        default='"choices"',
        help="text a good non-streamed answer contains (default: %(default)s; the Responses "
        'API answers with "output", Anthropic\'s Messages API with "content")',
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=10000, help="at most this many")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="send no request after this many seconds"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument(
        "--connect-stagger",
        type=float,
        default=0.005,
        help="seconds between opening the connections (see run_py)",
    )
    parser.add_argument(
        "--ramp", type=float, default=0.0, help="start the clients evenly over this many seconds"
    )
    parser.add_argument("--engine", choices=("py", "wrk"), default="py")
    parser.add_argument("--label", default="")
    parser.add_argument("--out", help="write the JSON result here (default: stdout)")
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= 5000:
        parser.error("--concurrency must be 1..5000")
    if not 1 <= args.requests <= 10_000_000:
        parser.error("--requests must be 1..10,000,000")
    if not 0 < args.duration <= 600:
        parser.error("--duration must be in (0, 600] seconds")
    if not 0 < args.timeout <= 600:
        parser.error("--timeout must be in (0, 600] seconds")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    host, port, path = require_loopback(args.url)
    body = args.body.encode()
    if args.engine == "wrk":
        result = run_wrk(args, args.url, body, args.headers)
    else:
        try:
            import uvloop
        except ImportError:  # plain asyncio works too, at a higher CPU cost per request
            uvloop = None
        request = build_request(host, port, path, args.method.upper(), body, args.headers)
        runner = run_py(args, host, port, path, request)
        result = uvloop.run(runner) if uvloop else asyncio.run(runner)
    result = {
        "label": args.label,
        "engine": args.engine,
        "url": args.url,
        "stream": args.stream,
        "concurrency": args.concurrency,
        "requests_limit": args.requests,
        "duration_limit_s": args.duration,
        **result,
    }
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
