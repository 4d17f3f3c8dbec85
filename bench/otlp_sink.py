"""A collector's OTLP/HTTP trace endpoint for the benchmark's tracing-on runs, as its own process.

    python bench/otlp_sink.py --port 4318

- ``POST /v1/traces``: an ``ExportTraceServiceRequest`` (protobuf), decoded and counted, then
  dropped; answers 200 with an empty ``ExportTraceServiceResponse``.
- ``GET /stats``: ``{"exports": n, "spans": n, "bytes": n}`` so far.

Its CPU is not the gateway's (``bench/run.py`` samples only the gateway's processes). It binds
to loopback only.
"""

from __future__ import annotations

import argparse
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_lock = threading.Lock()
_stats = {"exports": 0, "spans": 0, "bytes": 0}
_REPLY = ExportTraceServiceResponse().SerializeToString()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the exporter keeps its connection open

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = sum(
            len(scope.spans)
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )
        with _lock:
            _stats["exports"] += 1
            _stats["spans"] += spans
            _stats["bytes"] += len(body)
        self._send(200, "application/x-protobuf", _REPLY)

    def do_GET(self) -> None:
        with _lock:
            body = json.dumps(_stats).encode()
        self._send(200, "application/json", body)

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
