"""Fleet rate limits hold with several granian workers per gateway.

Every worker process needs its own fleet-sync id: before, granian's workers inherited the
supervisor's, and siblings dropped each other's counter deltas as their own echo (one 2-worker
gateway admitted 200 against a 100/min limit; two of them 137-143). Two real gateways × 2
workers, a real nats-server, paced clients on several connections per gateway.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from bench.fleet_overshoot import LIMIT, drive_paced, fleet_config, overshoot_bound, wait_mid_window
from tests.conftest import Proc
from tests.nats_fixtures import NatsServer

pytestmark = [pytest.mark.timeout(120), pytest.mark.nats]

REQUESTS = 250
RATE = 150.0  # per second, all clients: one 50 ms sync interval carries ~8 requests


async def test_two_gateways_of_two_workers_hold_one_limit(
    gateway_factory: Callable[..., Proc], mock: Proc
) -> None:
    nats = NatsServer()
    nats.start()
    try:
        config = fleet_config(mock.url, nats.url)
        gws = [gateway_factory(config, workers=2), gateway_factory(config, workers=2)]
        time.sleep(1.5)  # every worker subscribed (start-up never waits for NATS)
        wait_mid_window()
        statuses, seconds = await drive_paced([g.url for g in gws], REQUESTS, RATE)
    finally:
        nats.close()
    assert set(statuses) <= {200, 429}, statuses
    assert sum(statuses.values()) == REQUESTS
    admitted = statuses.get(200, 0)
    assert admitted >= LIMIT  # the limit is not under-granted either
    assert admitted <= overshoot_bound(REQUESTS, seconds), (statuses, seconds)
