"""Bounded labels: the helper other metrics use, and the catalog's per-metric series cap."""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import ConfigError, MetricsConfig, parse_config
from gateway.metrics import Metrics, prepare_multiprocess_dir
from gateway.metrics.labels import OTHER, UNKNOWN, SeriesCap, bounded
from gateway.metrics.multiproc import ENV_VAR


@pytest.fixture(autouse=True)
def _in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read one process's own registry: no multiprocess directory."""
    monkeypatch.delenv(ENV_VAR, raising=False)


def label_sets(body: bytes, name: str) -> list[dict[str, str]]:
    return [
        dict(s.labels)
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
        if s.name == name
    ]


def record(m: Metrics, model: str, user: str, status: int = 200, **kw: Any) -> None:
    m.record_request(model, user, "default", kw.get("metadata"), status, kw.get("error"), 1, 1, None, 5.0)


def test_bounded_and_series_cap() -> None:
    assert bounded("mock/gpt-4o", {"mock/gpt-4o"}) == "mock/gpt-4o"
    assert bounded("anything-else", frozenset()) == UNKNOWN
    cap = SeriesCap(2)
    assert cap.key(("a", "1")) == ("a", "1") and cap.key(("b", "2")) == ("b", "2")
    assert cap.key(("c", "3")) == (OTHER, OTHER)  # past the cap: every label overflows
    assert cap.key(("a", "1")) == ("a", "1")  # known tuples keep their series
    assert len(cap) == 2


def test_overflow_set_covers_every_label_model_included() -> None:
    m = Metrics(MetricsConfig(metadata_label_keys=["team"]), max_label_sets=5)
    for i in range(500):  # a caller that got past auth with many names: still at most 6 sets
        record(m, f"model-{i}", f"user:{i}", metadata={"team": f"t{i}"})
    body = m.render()[1]
    sets = label_sets(body, "llm_gateway_input_tokens_total")
    assert len(sets) == 6
    overflow = [s for s in sets if s["model_name"] == OTHER]
    assert overflow == [
        {"model_name": OTHER, "tenant_name": OTHER, "username": OTHER, "llm_gateway_metadata_team": OTHER}
    ]
    total = sum(
        s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
        if s.name == "llm_gateway_input_tokens_total"
    )
    assert total == 500  # nothing lost, only folded


def test_status_label_is_capped_too() -> None:
    m = Metrics(max_label_sets=3)
    for status in range(200, 600):  # upstream statuses are relayed: any of 400 values
        record(m, "mock/gpt-4o", "user:a", status=status)
    sets = label_sets(m.render()[1], "llm_gateway_requests_total")
    assert len(sets) == 4
    assert {s["status_code"] for s in sets} == {"200", "201", "202", OTHER}


def test_errors_labels_capped() -> None:
    m = Metrics(max_label_sets=4)
    for i in range(100):
        record(m, f"m{i}", "u", status=502, error=f"code{i}")
    sets = label_sets(m.render()[1], "llm_gateway_errors_total")
    assert len(sets) == 5 and {"model_name": OTHER, "error_type": OTHER} in sets


def _render_async_worker(path: str, out: Any) -> None:
    m = Metrics(multiprocess_dir=path)
    record(m, "mock/gpt-4o", "user:a")

    async def scrape() -> list[tuple[str, bytes]]:
        same = await asyncio.gather(*(m.render_async() for _ in range(5)))
        return [*same, await m.render_async("application/openmetrics-text")]

    out.put(asyncio.run(scrape()))


def test_render_async_shares_one_merge(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a process of its own: multiprocess mode is process-wide in prometheus_client."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "mp"))  # restored afterwards: later tests run in memory
    path = prepare_multiprocess_dir(str(tmp_path / "mp"))
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_render_async_worker, args=(path, out))
    p.start()
    try:
        results = out.get(timeout=60)
    finally:
        p.join(30)
    *same, (ctype, body) = results
    assert all(r == same[0] for r in same)
    assert b"llm_gateway_requests_total" in same[0][1]
    assert ctype.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="metrics.require_auth"):
        parse_config("metrics: {require_auth: true}\n", env={})
    with pytest.raises(ConfigError, match="metrics.max_series"):
        parse_config("metrics: {max_series: 0}\n", env={})
    with pytest.raises(ConfigError, match="server.body_timeout_s"):
        parse_config("server: {body_timeout_s: 0}\n", env={})


async def test_merge_beside_the_loop_lowers_the_switch_interval_meanwhile() -> None:
    import sys

    from gateway.metrics.multiproc import FAIR_SWITCH_INTERVAL_S, beside_the_loop

    before = sys.getswitchinterval()
    seen = await asyncio.gather(
        beside_the_loop(sys.getswitchinterval), beside_the_loop(sys.getswitchinterval)
    )
    assert seen == [min(before, FAIR_SWITCH_INTERVAL_S)] * 2
    assert sys.getswitchinterval() == before
