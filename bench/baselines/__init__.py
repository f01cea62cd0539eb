"""Bare pass-through proxies on granian RSGI: the in-run baselines of the overhead benchmark.

Each forwards a POST body untouched to ``--upstream`` + the request path and relays the answer
(JSON whole, SSE chunk by chunk). They do nothing a gateway does (no auth, routing, limits or
spans), so the gap between them and the gateway is the cost of the gateway's features, and the gap
between the two is the cost of the outbound HTTP client.

    python -m bench.baselines.aiohttp_proxy   --port 8101 --upstream http://127.0.0.1:8099
    python -m bench.baselines.pyreqwest_proxy --port 8102 --upstream http://127.0.0.1:8099
"""

from __future__ import annotations

import argparse
import os
from typing import Any

JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
HEALTH = b'{"status":"ok"}'
BAD_GATEWAY = b'{"error":{"message":"upstream unreachable","type":"bad_gateway","param":null,"code":"502"}}'


def wants_stream(body: bytes) -> bool:
    """Tell a streaming request from its body without decoding it.

    A bare proxy must pick the streamed read path before it sends; a byte search is the cheapest
    honest way (the mock and the benchmark both write ``"stream":true`` or ``"stream": true``).
    """
    return b'"stream":true' in body or b'"stream": true' in body


def forward_headers(scope: Any) -> list[tuple[str, str]]:
    """The request headers a pass-through keeps: content type and credentials only."""
    out = [("content-type", "application/json")]
    auth = scope.headers.get("authorization")
    if auth:
        out.append(("authorization", auth))
    return out


def serve(app_target: str, argv: list[str] | None, description: str) -> None:
    """Parse ``--host/--port/--upstream`` and serve ``app_target`` with one granian RSGI worker.

    The upstream travels to granian's worker process through an env var because the worker
    imports the app module afresh.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--upstream", default=os.environ.get("BASELINE_UPSTREAM", "http://127.0.0.1:8099"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--ca-file", help="PEM CA trusted for an https upstream, besides the system's")
    args = parser.parse_args(argv)
    os.environ["BASELINE_UPSTREAM"] = args.upstream.rstrip("/")
    if args.ca_file:
        os.environ["BASELINE_CA_FILE"] = args.ca_file
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    Granian(
        app_target,
        address=args.host,
        port=args.port,
        interface=Interfaces.RSGI,
        loop=Loops.uvloop,
        workers=args.workers,
        log_level=LogLevels.warning,
    ).serve()
