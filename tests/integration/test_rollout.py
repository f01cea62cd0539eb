"""Rollout safety: one of two gateways behind the same NATS is terminated under load.

The client behaves like a Service whose endpoint is removed: it retries on the other gateway
only when a connection is refused. No request may fail and no span may be lost.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Proc, provider, start_exporter
from tests.nats_fixtures import NatsServer
from tests.otlp_fixtures import otlp_receiver  # noqa: F401
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.timeout(120)
ROOT_SPAN = "POST /v1/chat/completions"


async def test_sigterm_under_load_loses_no_request_and_no_span(
    tmp_path: Path,
    gateway_factory: Callable[..., Proc],
    mock: Proc,
    otlp_receiver: OtlpReceiver,  # noqa: F811
) -> None:
    nats = NatsServer()
    nats.start()
    config = {
        "providers": [provider("mock", mock.url, ["gpt-4o", "slow-200"])],
        "server": {"shutdown_delay_s": 0.5, "drain_timeout_s": 10},
        "tracing": {"flush_interval_ms": 50, "nats": {"url": nats.url, "subject_prefix": "rollout"}},
        "exporter": {"traces": [{"name": "r", "endpoint": otlp_receiver.traces_url}]},
    }
    exporter = start_exporter(config, tmp_path)
    try:
        gws = [gateway_factory(config), gateway_factory(config)]
        # No keep-alive: every request opens a connection, as through a Service's endpoint list.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=10, limits=limits) as client:

            async def warm(gw: Proc) -> None:  # both gateways publish before the test starts
                deadline = time.monotonic() + 20
                while True:
                    r = await client.post(
                        gw.url + "/v1/chat/completions", json={"model": "mock/gpt-4o", "messages": []}
                    )
                    await asyncio.sleep(0.3)
                    if any(s.trace_id.hex() == r.headers["x-request-id"] for s in otlp_receiver.spans()):
                        return
                    assert time.monotonic() < deadline

            await warm(gws[0])
            await warm(gws[1])
            served: list[str] = []
            failures: list[str] = []
            refused = 0

            async def one(i: int) -> None:
                nonlocal refused
                order = [gws[i % 2], gws[(i + 1) % 2]]
                for gw in order:
                    try:
                        r = await client.post(
                            gw.url + "/v1/chat/completions", json={"model": "mock/slow-200", "messages": []}
                        )
                    except httpx.ConnectError:
                        refused += 1  # the endpoint is gone: try the other one
                        continue
                    except httpx.HTTPError as exc:
                        failures.append(f"{type(exc).__name__}: {exc}")
                        return
                    if r.status_code != 200:
                        failures.append(f"status {r.status_code}: {r.text[:200]}")
                    else:
                        served.append(r.headers["x-request-id"])
                    return
                failures.append("both gateways refused")

            async def load() -> None:
                tasks = []
                for i in range(240):  # 80 req/s for 3 s, each taking 200 ms upstream
                    tasks.append(asyncio.create_task(one(i)))
                    await asyncio.sleep(1 / 80)
                await asyncio.gather(*tasks)

            load_task = asyncio.create_task(load())
            await asyncio.sleep(1.0)
            gws[0].popen.send_signal(signal.SIGTERM)  # mid-run, with requests in flight on it
            await load_task
            assert gws[0].popen.wait(15) == 0

        assert failures == [], failures[:5]
        assert len(served) == 240
        assert refused > 0  # the terminated gateway really went away during the run

        # every served request's trace reached the backend, the terminated gateway's last ones included
        deadline = time.monotonic() + 20
        while True:
            exported = {s.trace_id.hex() for s in otlp_receiver.spans() if s.name == ROOT_SPAN}
            missing = set(served) - exported
            if not missing:
                break
            assert time.monotonic() < deadline, f"{len(missing)} of {len(served)} traces lost"
            await asyncio.sleep(0.2)
    finally:
        exporter.stop()
        nats.close()
