"""Fleet-wide rate limits over a real nats-server on a free port (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.access.config import RateLimitRule
from gateway.access.credentials import Principal
from gateway.access.fleet import FleetSync
from gateway.access.ratelimit import RateLimiter
from gateway.errors import RateLimited

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
ALICE = Principal("user:alice")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nats(port: int) -> subprocess.Popen[bytes]:
    if not shutil.which(NATS_SERVER):
        pytest.skip("nats-server not installed (make nats-server)")
    proc = subprocess.Popen(  # noqa: S603 - fixed binary, test-only
        [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("nats-server did not start")


def stop_nats(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def nats_url() -> Iterator[str]:
    port = free_port()
    proc = start_nats(port)
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop_nats(proc)


def limiter(limit: int = 100) -> RateLimiter:
    return RateLimiter([RateLimitRule(id="fleet-rpm", limit_to=limit, unit="requests_per_minute")])


async def drive(lim: RateLimiter, clock: object, attempts: int, pause_s: float) -> int:
    admitted = 0
    for _ in range(attempts):
        try:
            lim.admit(ALICE, "p/m", {}, clock())  # type: ignore[operator]
            admitted += 1
        except RateLimited:
            pass
        await asyncio.sleep(pause_s)  # a request's upstream await lets the sync task run
    return admitted


@pytest.mark.nats
async def test_two_workers_share_one_limit(nats_url: str) -> None:
    t0 = time.monotonic()

    def clock() -> float:
        return 6030.0 + (time.monotonic() - t0)  # mid-window: no roll-over during the test

    a, b = limiter(), limiter()
    sa = FleetSync(a, nats_url, "test", worker_id="a")
    sb = FleetSync(b, nats_url, "test", worker_id="b")
    await sa.start()
    await sb.start()
    try:
        await asyncio.wait_for(asyncio.gather(sa.ready.wait(), sb.ready.wait()), timeout=10)
        got = await asyncio.gather(drive(a, clock, 400, 0.001), drive(b, clock, 400, 0.001))
    finally:
        await sa.stop()
        await sb.stop()
    total = sum(got)
    assert 100 <= total <= 110, got
    assert sa.applied > 0 and sb.applied > 0


@pytest.mark.nats
async def test_joining_worker_starts_from_peers_counts(nats_url: str) -> None:
    a = limiter()
    sa = FleetSync(a, nats_url, "test", worker_id="a")
    await sa.start()
    await asyncio.wait_for(sa.ready.wait(), timeout=10)
    now = 6030.0
    assert await drive(a, lambda: now, 150, 0) == 100
    c = limiter()
    sc = FleetSync(c, nats_url, "test", worker_id="c")
    await sc.start()
    try:
        await asyncio.wait_for(sc.ready.wait(), timeout=10)
        with pytest.raises(RateLimited):  # the new worker does not grant a fresh 100
            c.admit(ALICE, "p/m", {}, now)
    finally:
        await sc.stop()
        await sa.stop()


@pytest.mark.nats
async def test_two_processes_share_one_limit(nats_url: str) -> None:
    """Two real OS processes (each its own limiter and NATS connection) driven at once."""
    script = str(Path(__file__).with_name("access_fleet_worker.py"))
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, script, nats_url, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(2)
    ]
    try:
        for p in procs:  # barrier: both subscribed before either starts
            assert p.stdout is not None
            line = await asyncio.wait_for(p.stdout.readline(), timeout=30)
            assert line.strip() == b"ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        outs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), timeout=30)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    counts = [int(out.decode().strip()) for out, _ in outs]
    assert all(p.returncode == 0 for p in procs)
    assert 100 <= sum(counts) <= 110, counts


async def test_nats_unreachable_keeps_serving_locally() -> None:
    lim = limiter(5)
    sync = FleetSync(lim, f"nats://127.0.0.1:{free_port()}", "test", worker_id="x")
    t = time.perf_counter()
    await sync.start()
    assert time.perf_counter() - t < 1.0  # start-up never waits for NATS (its connect timeout is longer)
    admitted = await drive(lim, time.time, 10, 0)
    await asyncio.sleep(0.1)
    assert not sync.connected
    await sync.stop()
    assert admitted == 5


@pytest.mark.nats
async def test_nats_outage_mid_run_then_reconnect() -> None:
    port = free_port()
    proc = start_nats(port)
    a, b = limiter(1000), limiter(1000)
    sa = FleetSync(a, f"nats://127.0.0.1:{port}", "test", worker_id="a")
    sb = FleetSync(b, f"nats://127.0.0.1:{port}", "test", worker_id="b")
    await sa.start()
    await sb.start()
    now = 6030.0
    try:
        await asyncio.wait_for(asyncio.gather(sa.ready.wait(), sb.ready.wait()), timeout=10)
        stop_nats(proc)
        assert await drive(a, lambda: now, 20, 0.005) == 20  # served on local counts
        proc = start_nats(port)
        for _ in range(300):  # bounded wait for the background reconnect
            if sa.connected and sb.connected:
                break
            await asyncio.sleep(0.05)
        assert sa.connected and sb.connected
        await asyncio.sleep(0.3)  # resubscribed after reconnect
        assert await drive(a, lambda: now, 10, 0.005) == 10
        for _ in range(100):
            if b.usage("fleet-rpm", now) >= 10:
                break
            await asyncio.sleep(0.02)
        assert b.usage("fleet-rpm", now) >= 10  # deltas flow again
    finally:
        await sa.stop()
        await sb.stop()
        stop_nats(proc)
