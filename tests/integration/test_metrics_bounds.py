"""Metric cardinality under a flood of unique model names, and ``/metrics`` behind credentials.

The flood: 10,000 requests naming a different model each, half without credentials, against
the real gateway (granian, multiprocess metrics). Before the fix every name became a label set
(worker RSS 65 MB → 1.3 GB, a 198 MB scrape). Asserted here: sizes and series counts (worker
RSS, scrape bytes, samples, the multiprocess directory on disk), never timings.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Proc, provider

pytestmark = pytest.mark.timeout(240)

CHAT = "/v1/chat/completions"
KEY = "sk-flood-0123456789"
FLOOD = 10_000
MIB = 1024 * 1024


def auth_config(mock: Proc, **metrics: object) -> dict:
    return {
        "providers": [provider("mock", mock.url, ["gpt-4o"])],
        "virtual_models": [
            {
                "name": "chat",
                "type": "weight-based-routing",
                "load_balance_targets": [{"target": "mock/gpt-4o"}],
            }
        ],
        "auth": {
            "api_keys": [{"subject": "user:alice", "key_sha256": hashlib.sha256(KEY.encode()).hexdigest()}]
        },
        "tracing": {"enabled": False},
        "metrics": {"metadata_label_keys": ["team"], **metrics},
    }


def worker_pids(supervisor: int) -> list[int]:
    pids = []
    for task in os.listdir(f"/proc/{supervisor}/task"):
        with open(f"/proc/{supervisor}/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    return pids


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.iterdir() if f.is_file())


def samples(body: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(body) for s in f.samples]


async def flood(url: str, n: int, concurrency: int = 32) -> dict[int, int]:
    """``n`` requests, each naming a new model; odd ones carry the API key and a new metadata value."""
    statuses: dict[int, int] = {}
    queue = iter(range(n))

    async def one_client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for i in queue:
                headers = {"content-type": "application/json"}
                if i % 2:
                    headers["authorization"] = f"Bearer {KEY}"
                    headers["x-tfy-metadata"] = f'{{"team": "t-{i}"}}'
                body = b'{"model": "flood-%d/x", "messages": []}' % i
                r = await client.post(CHAT, content=body, headers=headers)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return statuses


async def test_unique_model_flood_keeps_metrics_bounded(
    gateway_factory: Callable[..., Proc], mock: Proc, tmp_path: Path
) -> None:
    mp_dir = tmp_path / "prom"
    gw = gateway_factory(auth_config(mock), workers=1, env={"PROMETHEUS_MULTIPROC_DIR": str(mp_dir)})
    (worker,) = worker_pids(gw.popen.pid)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        ok = await client.post(
            CHAT, json={"model": "chat", "messages": []}, headers={"authorization": f"Bearer {KEY}"}
        )
        assert ok.status_code == 200
        await flood(gw.url, 200)  # warm-up: allocator pools, code paths
        rss_before = rss_bytes(worker)

        statuses = await flood(gw.url, FLOOD)
        assert statuses == {401: FLOOD // 2, 404: FLOOD // 2}

        scrape = await client.get("/metrics", timeout=120)
        assert scrape.status_code == 200
    rss_growth = rss_bytes(worker) - rss_before
    body = scrape.text
    got = samples(body)

    # Labels from bounded sets only: configured models (else "unknown"), authenticated subjects.
    models = {labels["model_name"] for _, labels, _ in got if "model_name" in labels}
    users = {labels["username"] for _, labels, _ in got if "username" in labels}
    assert models <= {"chat", "mock/gpt-4o", "unknown"}, sorted(models)[:10]
    assert users <= {"", "user:alice"}, sorted(users)[:10]
    requests: dict[tuple[str, str, str], float] = {}
    for name, labels, value in got:
        if name == "llm_gateway_requests_total":
            key = (labels["model_name"], labels["username"], labels["status_code"])
            requests[key] = requests.get(key, 0) + value
    assert (
        sum(v for (m, _, s), v in requests.items() if m == "unknown" and s in ("401", "404")) == FLOOD + 200
    )
    assert requests[("unknown", "", "401")] == (FLOOD + 200) // 2
    teams = {labels.get("llm_gateway_metadata_team") for _, labels, _ in got} - {None, ""}
    assert len(teams) <= 101 and "__other__" in teams  # 100 distinct values per key, then __other__

    # Sizes: flat, whatever the number of distinct names sent (the 101 team values make ~5,800
    # samples; 10,000 model names used to make ~550,000).
    assert len(got) < 10_000, len(got)
    assert len(scrape.content) < 2 * MIB, len(scrape.content)
    assert dir_bytes(mp_dir) < 16 * MIB, dir_bytes(mp_dir)
    assert rss_growth < 48 * MIB, rss_growth
    print(
        f"samples={len(got)} scrape={len(scrape.content)}B dir={dir_bytes(mp_dir)}B rss_growth={rss_growth}B"
    )


async def test_metrics_can_require_credentials(gateway_factory: Callable[..., Proc], mock: Proc) -> None:
    gw = gateway_factory(auth_config(mock, require_auth=True))
    async with httpx.AsyncClient(base_url=gw.url) as client:
        await client.post(
            CHAT, json={"model": "chat", "messages": []}, headers={"authorization": f"Bearer {KEY}"}
        )
        anonymous = await client.get("/metrics")
        assert anonymous.status_code == 401
        err = anonymous.json()["error"]
        assert err["type"] == "authentication_error" and err["message"]
        assert "user:alice" not in anonymous.text  # subject names are not shown to strangers
        wrong = await client.get("/metrics", headers={"authorization": "Bearer sk-wrong-000000000"})
        assert wrong.status_code == 401
        allowed = await client.get("/metrics", headers={"authorization": f"Bearer {KEY}"})
        assert allowed.status_code == 200
        assert 'username="user:alice"' in allowed.text


async def test_metrics_open_by_default(gateway_factory: Callable[..., Proc], mock: Proc) -> None:
    gw = gateway_factory(auth_config(mock))
    async with httpx.AsyncClient(base_url=gw.url) as client:
        assert (await client.get("/metrics")).status_code == 200
