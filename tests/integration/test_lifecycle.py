"""Client disconnects and graceful shutdown against the real gateway process."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import Proc, provider

pytestmark = pytest.mark.timeout(90)


def test_client_disconnect_cancels_upstream_and_frees_the_connection(
    gateway_factory: Callable[..., Proc], mock: Proc
) -> None:
    """With one upstream connection allowed, a stalled stream the client abandons must release it."""
    gw = gateway_factory(
        {"providers": [provider("mock", mock.url, ["stall-2", "gpt-4o"], max_connections=1, timeout_s=30)]}
    )
    with httpx.stream(
        "POST",
        gw.url + "/v1/chat/completions",
        json={"model": "mock/stall-2", "messages": [], "stream": True},
        timeout=10,
    ) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(3)]  # role chunk, blank, first content chunk
        assert got[0].startswith("data:")
    # The client has closed; the upstream stall (60 s) must not hold the only connection.
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "mock/gpt-4o", "messages": []}, timeout=8)
    assert r.status_code == 200


def test_sigterm_drains_readiness_then_finishes_in_flight(
    gateway_factory: Callable[..., Proc], mock: Proc
) -> None:
    gw = gateway_factory(
        {
            "providers": [provider("mock", mock.url, ["slow-1500", "gpt-4o"])],
            "server": {"shutdown_delay_s": 1.0, "drain_timeout_s": 10},
        }
    )
    result: dict[str, object] = {}

    def slow_request() -> None:
        try:
            r = httpx.post(
                gw.url + "/v1/chat/completions", json={"model": "mock/slow-1500", "messages": []}, timeout=15
            )
            result["status"] = r.status_code
        except Exception as exc:  # recorded, asserted below
            result["error"] = repr(exc)

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.3)  # the slow request is in flight
    gw.popen.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    ready = httpx.get(gw.url + "/readyz", timeout=2)
    assert ready.status_code == 503 and ready.json() == {"status": "draining"}
    # still serving during the shutdown delay
    assert (
        httpx.post(gw.url + "/v1/chat/completions", json={"model": "mock/gpt-4o", "messages": []}).status_code
        == 200
    )
    t.join(15)
    assert result == {"status": 200}, result
    assert gw.popen.wait(15) == 0
