"""Config reload in a running gateway: file change, SIGHUP, bad configs, in-flight requests."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import Proc, provider

pytestmark = pytest.mark.timeout(60)


def model_ids(gw: Proc) -> set[str]:
    return {m["id"] for m in httpx.get(gw.url + "/v1/models").json()["data"]}


def wait_for(predicate: Callable[[], bool], timeout_s: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def config_file(gw: Proc) -> Path:
    return gw.log_path.with_suffix(".yaml")


def test_file_change_is_picked_up_and_bad_config_rejected(
    gateway_factory: Callable[..., Proc], mock: Proc
) -> None:
    base = {"providers": [provider("mock", mock.url, ["gpt-4o"])], "reload": {"poll_interval_s": 0.2}}
    gw = gateway_factory(base)
    assert model_ids(gw) == {"mock/gpt-4o"}

    changed = {**base, "providers": [provider("mock", mock.url, ["gpt-4o", "gpt-4o-mini"])]}
    config_file(gw).write_text(yaml.safe_dump(changed))
    assert wait_for(lambda: model_ids(gw) == {"mock/gpt-4o", "mock/gpt-4o-mini"})

    config_file(gw).write_text("providers: [{name: broken}]\n")  # invalid: kept out
    time.sleep(1.0)
    assert model_ids(gw) == {"mock/gpt-4o", "mock/gpt-4o-mini"}
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "mock/gpt-4o-mini", "messages": []})
    assert r.status_code == 200
    assert "config reload from" in gw.output() and "rejected" in gw.output()


def test_sighup_reloads_without_dropping_in_flight(gateway_factory: Callable[..., Proc], mock: Proc) -> None:
    base = {
        "providers": [provider("mock", mock.url, ["gpt-4o", "slow-1000"])],
        "reload": {"watch_file": False},
    }
    gw = gateway_factory(base)
    statuses: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: statuses.append(
                httpx.post(
                    gw.url + "/v1/chat/completions",
                    json={"model": "mock/slow-1000", "messages": []},
                    timeout=10,
                ).status_code
            )
        )
        for _ in range(5)
    ]
    httpx.delete(mock.url + "/_mock/requests")
    for t in threads:
        t.start()

    def in_flight() -> int:
        return sum('"slow-1000"' in r["body"] for r in httpx.get(mock.url + "/_mock/requests").json())

    assert wait_for(lambda: in_flight() == 5)  # all five reached the provider on the old config
    config_file(gw).write_text(
        yaml.safe_dump({**base, "providers": [provider("mock", mock.url, ["gpt-4o-mini"])]})
    )
    gw.popen.send_signal(signal.SIGHUP)
    assert wait_for(lambda: model_ids(gw) == {"mock/gpt-4o-mini"})
    for t in threads:
        t.join(10)
    assert statuses == [200] * 5  # started on the old config, finished on it
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "mock/gpt-4o", "messages": []})
    assert r.status_code == 404
