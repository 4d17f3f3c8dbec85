"""A stand-in for ``llmplatform.local_model_server`` that misbehaves on purpose.

It takes the same arguments, answers ``GET /v1/models`` like llama.cpp's server, and answers a
chat completion unless told to crash: ``STANDIN_CRASH_CPUS=a,b`` makes it kill itself with
``STANDIN_CRASH_SIGNAL`` (default SIGSEGV) on its first POST when started with ``--cpu`` a or b
(``*`` for any), as kernels a CPU does not run would.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("--model", "--alias", "--n-ctx", "--cpu", "--host"):
        parser.add_argument(name, default="")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    crash_on = {c for c in os.environ.get("STANDIN_CRASH_CPUS", "").split(",") if c}
    crash_signal = getattr(signal, os.environ.get("STANDIN_CRASH_SIGNAL", "SIGSEGV"))
    crashes = "*" in crash_on or args.cpu in crash_on

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def _json(self, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._json({"object": "list", "data": [{"id": args.alias or "stand-in"}]})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if crashes:
                sys.stdout.write(f"stand-in: crashing on the first completion ({args.cpu})\n")
                sys.stdout.flush()
                # To this thread, at once: a signal sent to the process may be taken by
                # another thread after this one has answered.
                signal.pthread_kill(threading.get_ident(), crash_signal)
                time.sleep(30)
            self._json(
                {
                    "id": "chatcmpl-standin",
                    "object": "chat.completion",
                    "created": 0,
                    "model": args.alias,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": f"hello from {args.cpu}"},
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
                }
            )

    server = ThreadingHTTPServer((args.host or "127.0.0.1", args.port), Handler)
    print(f"stand-in: serving on {args.port} with --cpu {args.cpu}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
