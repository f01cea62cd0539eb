"""The Prometheus catalog: names, labels, buckets, bounded cardinality, multiprocess totals."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import MetricsConfig
from gateway.metrics import Metrics, mark_worker_dead, prepare_multiprocess_dir, render_multiprocess
from gateway.metrics.catalog import (
    FIRST_TOKEN_MS_BUCKETS,
    INTER_TOKEN_MS_BUCKETS,
    OTHER,
    PROCESSING_MS_BUCKETS,
    metadata_label_name,
)
from gateway.metrics.multiproc import ENV_VAR, cleanup_multiprocess_dir

BASE = ("model_name", "tenant_name", "username")


def samples(body: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)], parsed with prometheus_client's own parser."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(body: bytes, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        v for lab, v in samples(body).get(name, []) if all(lab.get(k) == want for k, want in labels.items())
    )


def record(m: Metrics, **kw: Any) -> None:
    args: dict[str, Any] = {
        "model_name": "openai/gpt-4o",
        "username": "alice",
        "tenant": "acme",
        "metadata": None,
        "status": 200,
        "error_type": None,
        "input_tokens": 10,
        "output_tokens": 20,
        "cost_usd": 0.5,
        "latency_ms": 120.0,
    }
    args.update(kw)
    m.record_request(**args)


def test_catalog_names_types_and_labels() -> None:
    m = Metrics(MetricsConfig(metadata_label_keys=["env", "team-name"]))
    record(m, metadata={"env": "prod", "team-name": "ml", "secret": "x"}, ttft_ms=40.0, inter_token_ms=3.0)
    record(m, status=502, error_type="upstream_error", input_tokens=None, output_tokens=None, cost_usd=None)
    m.rate_limited("per-user-rpm")
    m.retry("openai-main/gpt-4o")
    m.fallback("azure-eu/gpt-4o")
    m.inflight_inc()
    ctype, body = m.render()
    assert ctype.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    expected = {
        "llm_gateway_input_tokens": "counter",
        "llm_gateway_output_tokens": "counter",
        "llm_gateway_request_cost": "counter",
        "llm_gateway_request_processing_ms": "histogram",
        "llm_gateway_first_token_latency_ms": "histogram",
        "llm_gateway_inter_token_latency_ms": "histogram",
        "llm_gateway_requests": "counter",
        "llm_gateway_errors": "counter",
        "llm_gateway_rate_limit_rejections": "counter",
        "llm_gateway_fallbacks": "counter",
        "llm_gateway_retries": "counter",
        "llm_gateway_requests_in_flight": "gauge",
        "llm_gateway_spans_recorded": "counter",
        "llm_gateway_spans_published": "counter",
        "llm_gateway_spans_dropped": "counter",
        "llm_gateway_nats_connected": "gauge",
    }
    for name, kind in expected.items():
        assert families[name].type == kind, name
    env, team = metadata_label_name("env"), metadata_label_name("team-name")
    assert team == "llm_gateway_metadata_team_name"
    labels, v = samples(body)["llm_gateway_input_tokens_total"][0]
    assert set(labels) == {*BASE, env, team}  # "secret" is not configured: never a label
    assert labels[env] == "prod" and labels[team] == "ml" and v == 10
    assert value(body, "llm_gateway_requests_total", status_code="200") == 1
    assert value(body, "llm_gateway_requests_total", status_code="502") == 1
    assert (
        value(body, "llm_gateway_errors_total", error_type="upstream_error", model_name="openai/gpt-4o") == 1
    )
    assert value(body, "llm_gateway_rate_limit_rejections_total", rule_id="per-user-rpm") == 1
    assert value(body, "llm_gateway_retries_total", target="openai-main/gpt-4o") == 1
    assert value(body, "llm_gateway_fallbacks_total", target="azure-eu/gpt-4o") == 1
    assert value(body, "llm_gateway_requests_in_flight") == 1
    assert value(body, "llm_gateway_request_cost_total") == 0.5


def test_histogram_buckets_and_sums() -> None:
    m = Metrics()
    for ms in (3.0, 5.0, 5.1, 700.0, 10**7):
        record(m, latency_ms=ms)
    record(m, latency_ms=1.0, ttft_ms=10.0, inter_token_ms=1000.5)
    body = m.render()[1]
    buckets = {lab["le"]: v for lab, v in samples(body)["llm_gateway_request_processing_ms_bucket"]}
    assert [float(b) for b in buckets if b != "+Inf"] == list(PROCESSING_MS_BUCKETS)
    assert buckets["5.0"] == 3  # 1, 3 and 5 (le is inclusive)
    assert buckets["10.0"] == 4
    assert buckets["500.0"] == 4 and buckets["1000.0"] == 5
    assert buckets["300000.0"] == 5 and buckets["+Inf"] == 6
    assert value(body, "llm_gateway_request_processing_ms_sum") == pytest.approx(
        3 + 5 + 5.1 + 700 + 10**7 + 1
    )
    assert value(body, "llm_gateway_request_processing_ms_count") == 6
    first = {lab["le"]: v for lab, v in samples(body)["llm_gateway_first_token_latency_ms_bucket"]}
    assert len(first) == len(FIRST_TOKEN_MS_BUCKETS) + 1 and first["10.0"] == 1
    inter = {lab["le"]: v for lab, v in samples(body)["llm_gateway_inter_token_latency_ms_bucket"]}
    assert len(inter) == len(INTER_TOKEN_MS_BUCKETS) + 1 and inter["1000.0"] == 0 and inter["+Inf"] == 1


def test_flush_is_incremental() -> None:
    m = Metrics()
    record(m)
    m.flush()
    m.flush()  # nothing new: nothing added twice
    record(m, input_tokens=5)
    body = m.render()[1]
    assert value(body, "llm_gateway_input_tokens_total") == 15
    assert value(body, "llm_gateway_requests_total") == 2
    assert value(body, "llm_gateway_request_processing_ms_count") == 2


def test_disabled_records_nothing() -> None:
    m = Metrics(MetricsConfig(enabled=False))
    record(m)
    assert value(m.render()[1], "llm_gateway_requests_total") == 0


def test_metadata_cardinality_is_bounded() -> None:
    m = Metrics(MetricsConfig(metadata_label_keys=["env"]), max_metadata_values=3)
    for i in range(10):
        record(m, metadata={"env": f"e{i}", "other": f"o{i}"})
    record(m, metadata={"env": ["not", "hashable"]})
    record(m, metadata={"env": "x" * 200})
    body = m.render()[1]
    envs = {lab[metadata_label_name("env")] for lab, _ in samples(body)["llm_gateway_requests_total"]}
    assert envs == {"e0", "e1", "e2", OTHER}
    assert value(body, "llm_gateway_requests_total") == 12
    assert value(body, "llm_gateway_requests_total", **{metadata_label_name("env"): OTHER}) == 9


def test_label_sets_are_bounded() -> None:
    m = Metrics(max_label_sets=5)
    for i in range(50):
        record(m, username=f"user{i}")
    body = m.render()[1]
    users = {lab["username"] for lab, _ in samples(body)["llm_gateway_input_tokens_total"]}
    assert len(users) == 6 and OTHER in users  # 5 label sets, then one overflow set per model
    assert value(body, "llm_gateway_input_tokens_total") == 500


def test_pipeline_counters_from_totals() -> None:
    m = Metrics()
    m.update_pipeline(10, 8, {"ring_full": 2}, True)
    m.update_pipeline(15, 12, {"ring_full": 2, "nats_down": 1}, False)
    m.update_pipeline(3, 3, {}, None)  # a new pipeline after a reload: counts restart at zero
    body = m.render()[1]
    assert value(body, "llm_gateway_spans_recorded_total") == 18
    assert value(body, "llm_gateway_spans_published_total") == 15
    assert value(body, "llm_gateway_spans_dropped_total", reason="ring_full") == 2
    assert value(body, "llm_gateway_spans_dropped_total", reason="nats_down") == 1
    assert value(body, "llm_gateway_nats_connected") == 0


def test_openmetrics_on_request() -> None:
    m = Metrics()
    record(m)
    ctype, body = m.render("application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


async def test_flush_task_and_aclose() -> None:
    m = Metrics(flush_interval_s=0.01)
    await m.start()
    record(m)
    import asyncio

    await asyncio.sleep(0.05)
    assert value(m.render()[1], "llm_gateway_requests_total") == 1
    record(m)
    await m.aclose()
    assert m._dirty == []


# --- multiprocess mode: two processes, one directory -----------------------------------------


def _worker(path: str, user: str, n: int, ready: Any, done: Any) -> None:
    m = Metrics(MetricsConfig(metadata_label_keys=["env"]), multiprocess_dir=path)
    for i in range(n):
        record(m, username=user, metadata={"env": "prod"}, input_tokens=i, latency_ms=float(i))
    m.rate_limited("rpm")
    m.inflight_inc()
    m.update_pipeline(n * 5, n * 4, {"ring_full": 1}, True)
    m.flush()
    ready.set()
    done.wait(30)


def test_multiprocess_totals_and_dead_workers(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "")  # recorded, so the variable is gone again after the test
    monkeypatch.delenv(ENV_VAR)
    path = prepare_multiprocess_dir(str(tmp_path / "mp"))
    ctx = multiprocessing.get_context("spawn")
    done = ctx.Event()
    procs, readies = [], []
    for user, n in (("alice", 30), ("bob", 70)):
        ready = ctx.Event()
        p = ctx.Process(target=_worker, args=(path, user, n, ready, done))
        p.start()
        procs.append(p)
        readies.append(ready)
    try:
        for r in readies:
            assert r.wait(60)
        body = render_multiprocess(path)[1]
        assert value(body, "llm_gateway_requests_total") == 100
        assert value(body, "llm_gateway_requests_total", username="bob") == 70
        assert value(body, "llm_gateway_input_tokens_total") == sum(range(30)) + sum(range(70))
        assert value(body, "llm_gateway_request_processing_ms_count") == 100
        assert value(body, "llm_gateway_request_processing_ms_bucket", le="+Inf") == 100
        assert value(body, "llm_gateway_request_processing_ms_bucket", le="50.0") == 51 + 30
        assert value(body, "llm_gateway_rate_limit_rejections_total", rule_id="rpm") == 2
        assert value(body, "llm_gateway_requests_in_flight") == 2  # livesum
        assert value(body, "llm_gateway_nats_connected") == 1  # livemin
        assert value(body, "llm_gateway_spans_recorded_total") == 500
        assert value(body, "llm_gateway_spans_dropped_total", reason="ring_full") == 2
    finally:
        done.set()
        for p in procs:
            p.join(30)
    for p in procs:
        assert p.pid is not None
        mark_worker_dead(p.pid, path)
    body = render_multiprocess(path)[1]
    assert value(body, "llm_gateway_requests_total") == 100  # counters outlive their worker
    assert "llm_gateway_requests_in_flight" not in samples(body)  # live gauges do not
    # A new run starts from zero.
    assert prepare_multiprocess_dir(path) == path
    assert value(render_multiprocess(path)[1], "llm_gateway_requests_total") == 0
    assert os.environ[ENV_VAR] == path


def test_prepare_owned_temp_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "")  # recorded, so the variable is gone again after the test
    monkeypatch.delenv(ENV_VAR)
    path = prepare_multiprocess_dir()
    assert os.path.isdir(path) and os.environ[ENV_VAR] == path
    cleanup_multiprocess_dir(path)
    assert not os.path.exists(path)


def test_flush_hooks_feed_pipeline_counters() -> None:
    from gateway.telemetry.ring import TelemetryCounters

    m = Metrics()
    counters = TelemetryCounters()
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("a bug in a hook must not stop the flush")

    m.add_flush_hook(broken)
    m.add_flush_hook(lambda: m.update_from_telemetry(counters, True))
    counters.recorded, counters.published = 5, 4
    counters.drop("ring_full", 1)
    body = m.render()[1]
    assert calls == [1]
    assert value(body, "llm_gateway_spans_recorded_total") == 5
    assert value(body, "llm_gateway_spans_dropped_total", reason="ring_full") == 1
    assert value(body, "llm_gateway_nats_connected") == 1


def test_mean_inter_token_ms() -> None:
    from gateway.metrics import mean_inter_token_ms

    assert mean_inter_token_ms(1000.0, 100.0, 10) == pytest.approx(100.0)
    assert mean_inter_token_ms(1000.0, None, 10) is None
    assert mean_inter_token_ms(1000.0, 100.0, 1) is None
    assert mean_inter_token_ms(50.0, 100.0, 3) == 0.0
