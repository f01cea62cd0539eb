"""Metric cardinality under a flood of unique model names: RSS, scrape size and time, disk.

One gateway (``--workers``, default 1; auth on, one API key, multiprocess metrics in a directory
of its own) gets ``--requests`` requests (default 100,000) that each name a different model, half
without credentials (401), half with the key (404) and a different ``x-tfy-metadata`` value.
Printed: worker RSS before and after, ``/metrics`` size, samples and scrape time, the
multiprocess directory on disk, and the latency of a normal request sent while a scrape runs.

    python -m bench.cardinality              # 100,000 requests (a few minutes on a quiet box)
    python -m bench.cardinality --quick      # 10,000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import Proc, decide_pinning, free_port, start, stop, tree_pids, wait_http
from bench.targets import gateway_command, start_mock

KEY = "sk-cardinality-0123456789"
MIB = 1024 * 1024


def config(mock_url: str) -> dict[str, Any]:
    """One provider, one API key, one metadata label key; tracing off (metrics only)."""
    return {
        "providers": [
            {
                "name": "mock",
                "type": "openai",
                "base_url": mock_url + "/v1",
                "api_key": "sk-x",
                "models": ["gpt-4o"],
            }
        ],
        "auth": {
            "api_keys": [{"subject": "user:bench", "key_sha256": hashlib.sha256(KEY.encode()).hexdigest()}]
        },
        "metrics": {"metadata_label_keys": ["team"]},
        "tracing": {"enabled": False},
    }


def rss(pid: int) -> int:
    """VmRSS of ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def dir_bytes(path: Path) -> int:
    """Bytes the directory's files occupy on disk."""
    return sum(f.stat().st_blocks * 512 for f in path.iterdir() if f.is_file())


async def flood(url: str, n: int, concurrency: int = 64) -> dict[int, int]:
    """``n`` requests, each naming a new model; odd ones authenticated with a new metadata value."""
    statuses: dict[int, int] = {}
    it = iter(range(n))

    async def client_loop() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for i in it:
                headers = {"content-type": "application/json"}
                if i % 2:
                    headers["authorization"] = f"Bearer {KEY}"
                    headers["x-tfy-metadata"] = f'{{"team": "t-{i}"}}'
                r = await client.post(
                    "/v1/chat/completions",
                    content=b'{"model": "m-%d/x", "messages": []}' % i,
                    headers=headers,
                )
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return statuses


async def scrape_with_probe(url: str) -> tuple[float, bytes, float]:
    """Scrape ``/metrics`` while a normal request is sent: (scrape s, body, normal request s)."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:

        async def scrape() -> tuple[float, bytes]:
            t = time.perf_counter()
            r = await client.get("/metrics")
            return time.perf_counter() - t, r.content

        async def probe() -> float:
            await asyncio.sleep(0.005)  # the scrape has started
            t = time.perf_counter()
            await client.get("/healthz")
            return time.perf_counter() - t

        (scrape_s, body), probe_s = await asyncio.gather(scrape(), probe())
    return scrape_s, body, probe_s


def run(requests: int, workers: int, work: Path) -> dict[str, Any]:
    """Start mock and gateway, flood, scrape, stop: the figures."""
    gateway = gateway_command()
    if gateway is None:
        raise SystemExit("the gateway console script is not installed (make setup)")
    procs: list[Proc] = []
    mp_dir = work / "prom"
    try:
        mock = start_mock(work, decide_pinning(disable=True))
        procs.append(mock)
        cfg = work / "cardinality.yaml"
        cfg.write_text(yaml.safe_dump(config(f"http://127.0.0.1:{mock.port}")))
        port = free_port()
        cmd = [*gateway, "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir)}
        gw = start("gateway", [*cmd, "--workers", str(workers), "--log-level", "warning"], work, env=env)
        procs.append(gw)
        url = f"http://127.0.0.1:{port}"
        wait_http(gw, url + "/readyz", require_ok=True)
        asyncio.run(flood(url, 500))  # warm-up
        pids = [p for p in tree_pids(gw.pid) if p != gw.pid]
        before = sum(rss(p) for p in pids)
        t = time.perf_counter()
        statuses = asyncio.run(flood(url, requests))
        flood_s = time.perf_counter() - t
        after = sum(rss(p) for p in pids)
        scrape_s, body, probe_s = asyncio.run(scrape_with_probe(url))
    finally:
        for proc in reversed(procs):
            stop(proc)
    n_samples = sum(len(f.samples) for f in text_string_to_metric_families(body.decode()))
    return {
        "statuses": statuses,
        "flood_rps": requests / flood_s,
        "rss_before_mb": before / MIB,
        "rss_after_mb": after / MIB,
        "scrape_bytes": len(body),
        "samples": n_samples,
        "scrape_ms": scrape_s * 1000,
        "probe_ms": probe_s * 1000,
        "dir_mb": dir_bytes(mp_dir) / MIB if mp_dir.exists() else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="10,000 requests")
    args = parser.parse_args(argv)
    n = 10_000 if args.quick else args.requests
    with tempfile.TemporaryDirectory(prefix="cardinality-bench-") as tmp:
        r = run(n, args.workers, Path(tmp))
    print(f"{n} unique-model requests, half unauthenticated, {args.workers} worker(s): {r['statuses']}")
    print(f"  flood rate            {r['flood_rps']:.0f} req/s")
    print(f"  worker RSS            {r['rss_before_mb']:.1f} MB -> {r['rss_after_mb']:.1f} MB")
    print(
        f"  /metrics              {r['scrape_bytes'] / 1024:.0f} KiB, {r['samples']} samples, {r['scrape_ms']:.0f} ms"
    )
    print(f"  request during scrape {r['probe_ms']:.1f} ms")
    print(f"  multiprocess dir      {r['dir_mb']:.1f} MB on disk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
