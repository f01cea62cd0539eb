"""One "gateway process" for test_access_fleet: a limiter synced over NATS, driven for ~0.5 s.

Usage: python access_fleet_worker.py <nats_url>. Prints "ready" once subscribed, waits for a line
on stdin (so that every process starts driving at the same moment), then prints how many of its
attempts were admitted.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

from gateway.access.config import RateLimitRule
from gateway.access.credentials import Principal
from gateway.access.fleet import FleetSync
from gateway.access.ratelimit import RateLimiter
from gateway.errors import RateLimited


async def main(nats_url: str) -> int:
    lim = RateLimiter([RateLimitRule(id="fleet-rpm", limit_to=100, unit="requests_per_minute")])
    sync = FleetSync(lim, nats_url, "proc-test", worker_id=uuid.uuid4().hex)
    await sync.start()
    await asyncio.wait_for(sync.ready.wait(), timeout=20)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    principal = Principal("user:alice")
    offset = 6030.0 - time.time()  # mid-window: no roll-over while driving
    admitted = 0
    for _ in range(500):
        try:
            lim.admit(principal, "p/m", {}, time.time() + offset)
            admitted += 1
        except RateLimited:
            pass
        await asyncio.sleep(0.001)
    await sync.stop()
    print(f"published={sync.published} applied={sync.applied}", file=sys.stderr)
    return admitted


if __name__ == "__main__":
    print(asyncio.run(main(sys.argv[1])), flush=True)
