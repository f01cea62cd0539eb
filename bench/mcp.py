"""MCP benchmark: ``tools/call`` of a no-op tool through the gateway versus the MCP server direct.

    python -m bench.mcp [--quick] [--duration 5] [--rate 250] [--connections 64]
                        [--targets direct,gateway,gateway-session,gateway-traced] [--no-pin]

Targets (the upstream is ``bench.mock_mcp``, a zero-latency MCP server, on the load CPU):

    direct            the MCP server itself (the reference "added" figures subtract)
    gateway           ``/mcp/bench``: API-key auth, an ``access_mcp`` rule, a never-tripping tool
                      rate limit, tracing off; 2026-07-28 requests (no session)
    gateway-session   the same with a 2025-11-25 session (the sealed token is opened per request)
    gateway-traced    ``gateway`` with tracing on (embedded exporter → ``bench.otlp_sink``)

Phases per target: closed loop at ``--connections`` for ``--duration`` s (calls/s), then open loop
at ``--rate`` calls/s (latency from the scheduled send time, ``bench.loadgen``) with the target's
CPU per call from ``/proc``. The gateway is pinned to the first CPU, everything else to the second.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from bench.loadgen import percentiles, run_open_loop
from bench.procs import Proc, cpu_seconds, decide_pinning, free_port, start, stop, tree_pids, wait_http
from bench.targets import gateway_command

CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "noop", "arguments": {}}}
MODERN = {
    "mcp-protocol-version": "2026-07-28",
    "mcp-method": "tools/call",
    "mcp-name": "noop",
    "accept": "application/json, text/event-stream",
}
ALL_TARGETS = ["direct", "gateway", "gateway-session", "gateway-traced"]


def _body(modern: bool) -> bytes:
    call: dict[str, Any] = json.loads(json.dumps(CALL))
    if modern:
        call["params"]["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    return json.dumps(call).encode()


def _gateway(work: Path, pin: Any, upstream: str, key: str, traced: bool) -> tuple[Proc, list[Proc]]:
    helpers: list[Proc] = []
    config: dict[str, Any] = {
        "auth": {
            "api_keys": [{"subject": "user:bench", "key_sha256": hashlib.sha256(key.encode()).hexdigest()}]
        },
        "mcp_servers": [{"name": "bench", "url": upstream}],
        "access_mcp": [{"subjects": ["user:bench"], "servers": ["bench"], "tools": ["*"]}],
        "rate_limiting": [
            {
                "id": "never",
                "when": {"mcp_servers": ["bench"]},
                "limit_to": 10**9,
                "unit": "requests_per_minute",
            }
        ],
        "tracing": {"enabled": False},
    }
    if traced:
        port = free_port()
        sink = start(
            "otlp-sink",
            [*pin.prefix("background"), sys.executable, "-m", "bench.otlp_sink", "--port", str(port)],
            work,
            port=port,
        )
        wait_http(sink, f"http://127.0.0.1:{port}/stats", require_ok=True)
        helpers.append(sink)
        config["tracing"] = {"enabled": True}
        config["exporter"] = {
            "traces": [{"name": "sink", "protocol": "http", "endpoint": f"http://127.0.0.1:{port}/v1/traces"}]
        }
    path = work / f"gateway-{'traced' if traced else 'plain'}.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = gateway_command()
    if cmd is None:
        raise RuntimeError("the gateway console script is not installed (pip install -e .)")
    port = free_port()
    serve = [
        *cmd,
        "serve",
        "--config",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = start("gateway", [*pin.prefix("target"), *serve, "--log-level", "warning"], work, port=port)
    wait_http(proc, f"http://127.0.0.1:{port}/readyz", require_ok=True)
    return proc, helpers


def _session_token(url: str, headers: dict[str, str]) -> str:
    import httpx

    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"},
        },
    }
    h = {**headers, "accept": MODERN["accept"], "content-type": "application/json"}
    r = httpx.post(url, json=init, headers=h, timeout=10)
    r.raise_for_status()
    token = r.headers["mcp-session-id"]
    httpx.post(
        url,
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={**h, "mcp-session-id": token},
        timeout=10,
    )
    return token


async def _closed_loop(
    url: str, body: bytes, headers: dict[str, str], connections: int, duration_s: float
) -> tuple[float, dict[str, float], int]:
    """``connections`` workers calling back to back; returns (calls/s, latency percentiles, errors)."""
    from pyreqwest.client import ClientBuilder

    builder = ClientBuilder().follow_redirects(False).gzip(False).brotli(False).zstd(False).deflate(False)
    builder = builder.timeout(timedelta(seconds=10)).max_connections(connections)
    lat: list[float] = []
    errors = 0
    async with builder.build() as client:
        deadline = time.perf_counter() + duration_s

        async def worker() -> None:
            nonlocal errors
            while (t0 := time.perf_counter()) < deadline:
                try:
                    resp = await client.post(url).headers(headers).body_bytes(body).build().send()
                    await resp.bytes()
                    if resp.status != 200:
                        errors += 1
                except Exception:
                    errors += 1
                lat.append((time.perf_counter() - t0) * 1000)

        start_t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start_t
    return len(lat) / elapsed, percentiles(lat), errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 s phases (a smoke run)")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=250.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--targets", default=",".join(ALL_TARGETS))
    ap.add_argument("--no-pin", action="store_true")
    args = ap.parse_args(argv)
    duration = 2.0 if args.quick else args.duration
    pin = decide_pinning(args.no_pin)
    print(f"pinning: {pin.note}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-mcp-"))
    port = free_port()
    mock = start(
        "mock-mcp",
        [*pin.prefix("load"), sys.executable, "-m", "bench.mock_mcp", "--port", str(port)],
        work,
        port=port,
    )
    rows: list[dict[str, Any]] = []
    try:
        wait_http(mock, f"http://127.0.0.1:{port}/mcp")
        upstream = f"http://127.0.0.1:{port}/mcp"
        key = "sk-bench-" + secrets.token_hex(12)
        for name in [t for t in args.targets.split(",") if t]:
            helpers: list[Proc] = []
            proc: Proc | None = None
            headers = {"content-type": "application/json", **MODERN}
            body = _body(modern=True)
            if name == "direct":
                url, measured = upstream, mock
            else:
                proc, helpers = _gateway(work, pin, upstream, key, traced=name == "gateway-traced")
                url, measured = f"http://127.0.0.1:{proc.port}/mcp/bench", proc
                headers["authorization"] = f"Bearer {key}"
                if name == "gateway-session":
                    headers = {k: v for k, v in headers.items() if not k.startswith("mcp-")}
                    headers["mcp-session-id"] = _session_token(url, headers)
                    headers["mcp-protocol-version"] = "2025-11-25"
                    body = _body(modern=False)
            try:
                print(f"{name}: closed loop, {args.connections} connections, {duration:g} s", flush=True)
                rps, closed_lat, errors = asyncio.run(
                    _closed_loop(url, body, headers, args.connections, duration)
                )
                pids = tree_pids(measured.pid)
                cpu0 = cpu_seconds(pids)
                print(f"{name}: open loop, {args.rate:g} calls/s, {duration:g} s", flush=True)
                res = run_open_loop(
                    url, body, rate=args.rate, duration_s=duration, headers=headers, warmup_s=1.0
                )
                cpu = cpu_seconds(pids) - cpu0
                calls = max(1, res.completed + int(args.rate))  # warm-up calls count in the CPU window
                rows.append(
                    {
                        "target": name,
                        "closed_rps": rps,
                        "closed_p50": closed_lat.get("p50", 0.0),
                        "errors": errors + res.transport_errors + (res.completed - res.ok),
                        "p50": res.latency_ms.get("p50", 0.0),
                        "p99": res.latency_ms.get("p99", 0.0),
                        "cpu_us": cpu / calls * 1e6,
                    }
                )
            finally:
                if proc is not None:
                    stop(proc)
                for h in helpers:
                    stop(h)
    finally:
        stop(mock)
    base = next((r for r in rows if r["target"] == "direct"), None)
    print()
    print(
        f"{'target':<17} {'calls/s@' + str(args.connections):>12} {'p50 ms':>8} {'p99 ms':>8} {'+p50':>7} {'+p99':>7} {'cpu µs/call':>12} {'errors':>7}"
    )
    for r in rows:
        added50 = r["p50"] - base["p50"] if base else float("nan")
        added99 = r["p99"] - base["p99"] if base else float("nan")
        print(
            f"{r['target']:<17} {r['closed_rps']:>12.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {added50:>7.2f} {added99:>7.2f} "
            f"{r['cpu_us']:>12.0f} {r['errors']:>7}"
        )
    print(
        f"\n(open loop at {args.rate:g} calls/s; '+' = minus the direct MCP server's percentile;"
        " cpu of the target's process tree)"
    )
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
