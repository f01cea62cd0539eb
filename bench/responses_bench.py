"""Responses API figures: pass-through and translated streaming beside their chat twins, and the
``previous_response_id`` lookup over NATS JetStream key-value.

    python -m bench.responses_bench [--quick] [--rate 200] [--duration 5] [--no-pin]

Rows (open loop at ``--rate`` against the zero-latency mock, gateway pinned to the first CPU,
mock, nats-server and the load generator on the second, tracing off):

    chat pass-through            /v1/chat/completions → OpenAI-type target (the fast path)
    responses pass-through       /v1/responses → OpenAI-type target with responses: native
    chat → anthropic stream      /v1/chat/completions, stream, translated to Messages
    responses → anthropic stream /v1/responses, stream, translated through the chat hub
    responses → chat stream      /v1/responses, stream, to a chat-only OpenAI-type target

Each row: achieved req/s, latency p50/p99 (ms, from the scheduled send time), and the gateway's
CPU µs per request (its process tree, over the phase). The issue's budgets compare rows within
one run: responses pass-through CPU/req within 10 % of chat pass-through, translated Responses
streaming within 25 % of translated chat streaming.

Then the store: ``NatsStore.get`` of a stored response over a real nats-server (JetStream),
uncached (every lookup is a KV read, as on another replica) and cached, p50/p99 in ms.
Printed only; nothing is asserted (the machine is shared: compare ratios within one run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import yaml

from bench.loadgen import percentiles, run_open_loop
from bench.procs import (
    Pinning,
    Proc,
    cpu_seconds,
    decide_pinning,
    free_port,
    start,
    stop,
    tree_pids,
    wait_http,
    wait_port,
)

ROWS = [
    ("chat pass-through", "/v1/chat/completions", {"model": "oai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    ("responses pass-through", "/v1/responses", {"model": "native/gpt-4o", "input": "hi"}),
    ("chat → anthropic stream", "/v1/chat/completions",
     {"model": "claude/claude-x", "messages": [{"role": "user", "content": "hi"}], "stream": True}),
    ("responses → anthropic stream", "/v1/responses", {"model": "claude/claude-x", "input": "hi", "stream": True}),
    ("responses → chat stream", "/v1/responses", {"model": "oai/gpt-4o", "input": "hi", "stream": True}),
]  # fmt: skip


def _config(mock_url: str) -> dict[str, Any]:
    return {
        "providers": [
            {"name": "oai", "base_url": mock_url + "/v1", "api_key": "k", "models": ["gpt-4o"]},
            {"name": "native", "base_url": mock_url + "/v1", "api_key": "k", "models": ["gpt-4o"],
             "responses": "native"},
            {"name": "claude", "type": "anthropic", "base_url": mock_url, "api_key": "k", "models": ["claude-x"]},
        ],  # fmt: skip
        "tracing": {"enabled": False},
        "metrics": {"enabled": False},
        "reload": {"watch_file": False},
    }


def _row(gateway: Proc, url: str, body: dict[str, Any], rate: float, duration: float) -> dict[str, Any]:
    pids = tree_pids(gateway.pid)
    cpu0 = cpu_seconds(pids)
    result = run_open_loop(url, json.dumps(body).encode(), rate=rate, duration_s=duration, warmup_s=1.0)
    cpu = cpu_seconds(tree_pids(gateway.pid)) - cpu0
    done = max(result.completed, 1)
    return {
        "rps": round(result.achieved_rps, 1),
        "ok": result.ok,
        "errors": result.completed - result.ok + result.transport_errors,
        "p50_ms": round(result.latency_ms.get("p50", 0.0), 2),
        "p99_ms": round(result.latency_ms.get("p99", 0.0), 2),
        # the warm-up's CPU is in the delta too: count its requests (rate × 1 s) as well
        "cpu_us_per_req": round(cpu * 1e6 / (done + rate), 1),
    }


async def _store_lookups(nats_url: str, n: int) -> dict[str, dict[str, float]]:
    from gateway.responses.store import NatsStore, StoredResponse

    response = msgspec.json.encode({"id": "resp_bench", "object": "response", "output": [{"type": "message",
                                    "content": [{"type": "output_text", "text": "x" * 2000}]}]})  # fmt: skip
    stored = StoredResponse("resp_bench", "user:bench", "resp_bench", time.time(), msgspec.Raw(response),
                            msgspec.Raw(b"[]"), msgspec.Raw(b'[{"type":"message","role":"user","content":"hi"}]'))  # fmt: skip
    writer = NatsStore(nats_url, "bench-responses", 3600, 16, 1 << 20)
    uncached = NatsStore(nats_url, "bench-responses", 3600, 0, 1 << 20)
    cached = NatsStore(nats_url, "bench-responses", 3600, 16, 1 << 20)
    for s in (writer, uncached, cached):
        await s.start()
    await asyncio.wait_for(writer._ready.wait(), 10)  # connected, bucket created
    try:
        await writer.put(stored)
        out: dict[str, dict[str, float]] = {}
        for name, store in (("uncached (KV read)", uncached), ("cached", cached)):
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                got = await store.get("resp_bench", "user:bench")
                times.append((time.perf_counter() - t0) * 1e3)
                assert got is not None
            out[name] = {k: round(v, 3) for k, v in percentiles(times).items()}
        return out
    finally:
        for s in (writer, uncached, cached):
            await s.aclose()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 s phases at 100 req/s, 300 lookups")
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--no-pin", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.rate, args.duration, args.lookups = 100.0, 2.0, 300
    pinning: Pinning = decide_pinning(args.no_pin)
    work = Path(tempfile.mkdtemp(prefix="bench-responses-"))
    procs: list[Proc] = []
    try:
        mock_port = free_port()
        mock = start("mock", [*pinning.prefix("load"), sys.executable, "-m", "bench.mock_upstream", "--port",
                              str(mock_port), "--no-record"], work, port=mock_port)  # fmt: skip
        procs.append(mock)
        wait_http(mock, f"http://127.0.0.1:{mock_port}/v1/models")
        cfg = work / "gateway.yaml"
        cfg.write_text(yaml.safe_dump(_config(f"http://127.0.0.1:{mock_port}")))
        gw_port = free_port()
        gateway_bin = str(Path(sys.executable).parent / "gateway")
        gateway = start("gateway", [*pinning.prefix("target"), gateway_bin, "serve", "--config", str(cfg),
                                    "--host", "127.0.0.1", "--port", str(gw_port), "--workers", "1",
                                    "--log-level", "warning"], work, port=gw_port)  # fmt: skip
        procs.append(gateway)
        wait_http(gateway, f"http://127.0.0.1:{gw_port}/readyz", require_ok=True)
        print(f"# {pinning.note}; rate {args.rate:g} req/s, {args.duration:g} s phases (noisy machine: compare ratios)")
        print(f"{'row':32} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11} {'errors':>7}")
        rows: dict[str, Any] = {}
        for name, path, body in ROWS:
            r = rows[name] = _row(gateway, f"http://127.0.0.1:{gw_port}{path}", body, args.rate, args.duration)
            print(f"{name:32} {r['rps']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['cpu_us_per_req']:>11} {r['errors']:>7}")
        pt, tr = rows["responses pass-through"], rows["responses → anthropic stream"]
        print(f"responses/chat pass-through CPU: {pt['cpu_us_per_req'] / rows['chat pass-through']['cpu_us_per_req']:.2f}x;"
              f" translated stream responses/chat CPU: "
              f"{tr['cpu_us_per_req'] / rows['chat → anthropic stream']['cpu_us_per_req']:.2f}x")  # fmt: skip

        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        nats_port = free_port()
        nats = start("nats", [*pinning.prefix("load"), binary, "-a", "127.0.0.1", "-p", str(nats_port), "-js",
                              "-sd", str(work / "js")], work, port=nats_port)  # fmt: skip
        procs.append(nats)
        wait_port(nats, nats_port)
        lookups = asyncio.run(_store_lookups(f"nats://127.0.0.1:{nats_port}", args.lookups))
        for name, p in lookups.items():
            print(f"previous_response_id lookup, {name:20} p50 {p.get('p50')} ms  p99 {p.get('p99')} ms")
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
