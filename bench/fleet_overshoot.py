"""Fleet rate-limit overshoot per layout: pods (gateway processes) × granian workers each.

For each layout a fresh nats-server, mock provider and gateways share one 100 requests/minute
limit; paced clients (several connections per gateway, so every worker gets traffic) send
``--requests`` requests at ``--rate`` per second in total. Printed per layout: admitted, the
overshoot over the limit, and one sync interval's traffic (rate × 50 ms), the bound the fleet
sync promises: ``admitted ≤ limit + one interval's traffic``.

    python -m bench.fleet_overshoot            # 1×1, 1×2, 2×2; ~1 minute
    python -m bench.fleet_overshoot --quick    # 2×2 only, fewer requests

The machine's noise changes the rate reached, not the bound's shape: the script prints the rate
it measured and the bound computed from it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.procs import Proc, decide_pinning, free_port, start, stop, wait_http, wait_port
from bench.targets import gateway_command, start_mock

LIMIT = 100
SYNC_INTERVAL_S = 0.05  # gateway.access.fleet.FleetSync's default interval_s
KEY = "sk-fleet-bench-0123456789"


def fleet_config(mock_url: str, nats_url: str) -> dict[str, Any]:
    """One API key, one fleet-wide 100/min rule, rate-limit sync over ``nats_url``."""
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
        "rate_limiting": [
            {
                "id": "fleet-100",
                "when": {"subjects": ["*"], "models": ["*"]},
                "limit_to": LIMIT,
                "unit": "requests_per_minute",
                "rate_limit_applies_per": ["user"],
            }
        ],
        "cluster": {"nats_url": nats_url, "subject_prefix": "fleet-bench", "config_bucket": None},
        "tracing": {"enabled": False},
    }


def wait_mid_window(margin_s: float = 8.0) -> None:
    """Sleep past a minute boundary when one is near, so one run stays in one window."""
    into = time.time() % 60
    if into > 60 - margin_s:
        time.sleep(60 - into + 1)


async def drive_paced(
    urls: list[str], total: int, rate: float, connections_per_url: int = 4
) -> tuple[dict[int, int], float]:
    """Send ``total`` chat requests at ``rate``/s over ``connections_per_url`` connections to each
    URL (round-robin by slot). Returns (count per status, seconds taken)."""
    statuses: dict[int, int] = {}
    slots = [(u, c) for c in range(connections_per_url) for u in urls]
    t0 = time.monotonic()

    async def one(url: str, offset: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        headers = {"authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(base_url=url, limits=limits, headers=headers, timeout=30) as client:
            for i in range(offset, total, len(slots)):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                r = await client.post("/v1/chat/completions", json={"model": "mock/gpt-4o", "messages": []})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    await asyncio.gather(*(one(u, i) for i, (u, _) in enumerate(slots)))
    return statuses, time.monotonic() - t0


def overshoot_bound(sent: int, seconds: float) -> int:
    """``LIMIT`` plus one sync interval's traffic at the measured rate (rounded up)."""
    return LIMIT + math.ceil(sent / max(seconds, 1e-9) * SYNC_INTERVAL_S)


def run_layout(pods: int, workers: int, requests: int, rate: float, work: Path) -> dict[str, Any]:
    """Start the fleet, drive it once, stop it; the figures of one layout."""
    gateway = gateway_command()
    if gateway is None:
        raise SystemExit("the gateway console script is not installed (make setup)")
    pinning = decide_pinning(disable=True)
    procs: list[Proc] = []
    try:
        nats_port = free_port()
        nats = start("nats", ["nats-server", "-a", "127.0.0.1", "-p", str(nats_port)], work, port=nats_port)
        procs.append(nats)
        wait_port(nats, nats_port)
        mock = start_mock(work, pinning)
        procs.append(mock)
        cfg = work / f"fleet-{pods}x{workers}.yaml"
        cfg.write_text(
            yaml.safe_dump(fleet_config(f"http://127.0.0.1:{mock.port}", f"nats://127.0.0.1:{nats_port}"))
        )
        urls = []
        for p in range(pods):
            port = free_port()
            cmd = [*gateway, "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
            proc = start(
                f"gw-{pods}x{workers}-{p}", [*cmd, "--workers", str(workers), "--log-level", "warning"], work
            )
            procs.append(proc)
            wait_http(proc, f"http://127.0.0.1:{port}/readyz", require_ok=True)
            urls.append(f"http://127.0.0.1:{port}")
        time.sleep(1.5)  # every worker subscribed to the sync subject (start-up never waits for NATS)
        wait_mid_window()
        statuses, seconds = asyncio.run(drive_paced(urls, requests, rate))
    finally:
        for proc in reversed(procs):
            stop(proc)
    admitted = statuses.get(200, 0)
    return {
        "layout": f"{pods}x{workers}",
        "admitted": admitted,
        "overshoot": admitted - LIMIT,
        "rate": requests / seconds,
        "interval_traffic": requests / seconds * SYNC_INTERVAL_S,
        "bound": overshoot_bound(requests, seconds),
        "other": {k: v for k, v in statuses.items() if k not in (200, 429)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second, all clients")
    parser.add_argument("--quick", action="store_true", help="2x2 only, 250 requests")
    args = parser.parse_args(argv)
    layouts = [(2, 2)] if args.quick else [(1, 1), (1, 2), (2, 2)]
    requests = 250 if args.quick else args.requests
    print(
        f"limit {LIMIT}/min, {requests} requests at {args.rate:.0f}/s target, sync interval {SYNC_INTERVAL_S}s"
    )
    print(
        f"{'pods x workers':>14} {'admitted':>8} {'overshoot':>9} {'rate/s':>7} {'1 interval':>10} {'bound':>5}"
    )
    failed = False
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        for pods, workers in layouts:
            r = run_layout(pods, workers, requests, args.rate, Path(tmp))
            ok = r["admitted"] <= r["bound"]
            failed |= not ok
            print(
                f"{r['layout']:>14} {r['admitted']:>8} {r['overshoot']:>+9} {r['rate']:>7.0f} "
                f"{r['interval_traffic']:>10.1f} {r['bound']:>5} {'' if ok else 'OVER BOUND'} {r['other'] or ''}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
