"""No trace lost on routine faults: real gateway, nats-server with JetStream, gateway-exporter and
the strict OTLP receiver.

Each test sends a known set of requests, injects one fault (exporter SIGKILLed mid-stream, NATS
restarted, backend stalled with 1.5 MiB prompts) and then waits (bounded) until every request's
trace reached the receiver. Figures (delivered / sent, RSS) are printed for the closing notes;
the assertions are on behaviour only.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench import procs
from tests.conftest import Proc, free_port, provider, start_exporter
from tests.nats_fixtures import NatsServer
from tests.otlp_fixtures import otlp_receiver  # noqa: F401
from tests.otlp_receiver import Fault, OtlpReceiver

pytestmark = [pytest.mark.nats, pytest.mark.timeout(240)]
ROOT_SPAN = "POST /v1/chat/completions"
MIB = 1024 * 1024


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (granian forks its workers)."""
    return int(procs.tree_rss(pid)["total_mb"] * MIB)


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``{sample name: {sorted labels: value}}`` of a Prometheus text page."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def total(metrics: dict[str, Any], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for k, v in metrics.get(name, {}).items() if want <= set(k))


def exported_ids(receiver: OtlpReceiver) -> set[str]:
    return {s.trace_id.hex() for s in receiver.spans() if s.name == ROOT_SPAN}


async def wait_delivered(receiver: OtlpReceiver, sent: list[str], timeout_s: float) -> set[str]:
    """Wait until every trace of ``sent`` was exported, or the deadline; returns what is missing."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = set(sent) - exported_ids(receiver)
        if not missing or time.monotonic() > deadline:
            return missing
        await asyncio.sleep(0.25)


async def send(client: httpx.AsyncClient, gw: Proc, n: int, content: str = "hi", concurrency: int = 8) -> list[str]:
    """``n`` chat requests, ``concurrency`` at a time; returns the trace ids of the 200s."""
    ids: list[str] = []
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            body = {"model": "mock/gpt-4o", "messages": [{"role": "user", "content": content}]}
            r = await client.post(gw.url + "/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text[:300]
            ids.append(r.headers["x-request-id"])

    await asyncio.gather(*(one() for _ in range(n)))
    return ids


def base_config(mock: Proc, nats: NatsServer, receiver: OtlpReceiver, prefix: str, **tracing: Any) -> dict:
    return {
        "providers": [provider("mock", mock.url, ["gpt-4o"])],
        "server": {"max_body_bytes": 8 * MIB},
        "tracing": {
            "flush_interval_ms": 50,
            "nats": {
                "url": nats.url,
                "subject_prefix": prefix,
                # short ack wait: a killed exporter's batches come back within the test's time
                "consumer": {"ack_wait_s": 2.0, "retry_backoff_s": 0.5, "retry_backoff_max_s": 2.0},
            },
            **tracing,
        },
        "exporter": {
            "traces": [{"name": "r", "endpoint": receiver.traces_url, "timeout_ms": 2000}],
            "prometheus_port": free_port(),
        },
    }


async def test_exporter_sigkilled_mid_stream_loses_no_trace(
    tmp_path: Path,
    gateway_factory: Callable[..., Proc],
    mock: Proc,
    otlp_receiver: OtlpReceiver,  # noqa: F811
) -> None:
    nats = NatsServer()
    nats.start()
    config = base_config(mock, nats, otlp_receiver, "kill")
    exporter = start_exporter(config, tmp_path)
    try:
        gw = gateway_factory(config)
        async with httpx.AsyncClient(timeout=30) as client:
            sent = await send(client, gw, 100)
            assert not await wait_delivered(otlp_receiver, sent, 30)
            # The backend holds the next exports: the exporter is killed with batches in flight.
            otlp_receiver.fail("http", Fault(hang=True), times=1000)
            during = asyncio.create_task(send(client, gw, 200))
            await asyncio.sleep(1.0)
            exporter.popen.send_signal(signal.SIGKILL)
            exporter.popen.wait(10)
            sent += await during
            sent += await send(client, gw, 100)  # published while no exporter runs at all
            otlp_receiver.release()
            exporter = start_exporter(config, tmp_path)
            missing = await wait_delivered(otlp_receiver, sent, 90)
        print(f"\nexporter SIGKILL: delivered {len(sent) - len(missing)} / {len(sent)} traces")
        assert not missing, f"{len(missing)} of {len(sent)} traces lost"

        # The exporter's own metrics agree with what the receiver got.
        url = f"http://127.0.0.1:{config['exporter']['prometheus_port']}/metrics"
        deadline = time.monotonic() + 20
        while True:
            m = scrape(url)
            handed = total(m, "llm_gateway_exporter_destination_spans_total", destination="r")
            settled = sum(
                total(m, f"llm_gateway_exporter_{name}_spans_total", destination="r")
                for name in ("exported", "dropped", "sampled_out", "rejected", "redelivered")
            )
            if handed and total(m, "llm_gateway_exporter_in_flight_messages") == 0 and handed == settled:
                break
            assert time.monotonic() < deadline, m
            await asyncio.sleep(0.5)
        assert total(m, "llm_gateway_exporter_received_spans_total") == handed  # one destination, no skips
        assert total(m, "llm_gateway_exporter_dropped_spans_total") == 0
        assert total(m, "llm_gateway_exporter_nats_connected") == 1
        assert total(m, "llm_gateway_exporter_acks_total", result="ack") > 0
        assert total(m, "llm_gateway_exporter_queue_bytes", destination="r") == 0
        assert "llm_gateway_exporter_consumer_pending_messages" in m
        # every span this exporter process exported reached the receiver (it may also hold spans
        # the killed process exported before it died)
        assert total(m, "llm_gateway_exporter_exported_spans_total", destination="r") <= len(otlp_receiver.spans())
        gw_metrics = scrape(gw.url + "/metrics")
        assert total(gw_metrics, "llm_gateway_spans_dropped_total") == 0
        assert "HTTP Request:" not in exporter.output()  # no INFO line per export (httpx silenced)
    finally:
        exporter.stop()
        nats.close()


async def test_nats_restarted_loses_no_trace(
    tmp_path: Path,
    gateway_factory: Callable[..., Proc],
    mock: Proc,
    otlp_receiver: OtlpReceiver,  # noqa: F811
) -> None:
    nats = NatsServer()
    nats.start()
    config = base_config(mock, nats, otlp_receiver, "restart")
    exporter = start_exporter(config, tmp_path)
    try:
        gw = gateway_factory(config)
        async with httpx.AsyncClient(timeout=30) as client:
            sent = await send(client, gw, 100)
            assert not await wait_delivered(otlp_receiver, sent, 30)
            during = asyncio.create_task(send(client, gw, 300, concurrency=4))
            await asyncio.sleep(0.5)
            nats.stop()  # down for ~3 s while requests keep coming
            await asyncio.sleep(3.0)
            nats.start()  # same store directory: stream and consumer come back
            sent += await during
            sent += await send(client, gw, 50)
            missing = await wait_delivered(otlp_receiver, sent, 90)
        print(f"\nNATS restart: delivered {len(sent) - len(missing)} / {len(sent)} traces")
        assert not missing, f"{len(missing)} of {len(sent)} traces lost"
        gw_metrics = scrape(gw.url + "/metrics")
        assert total(gw_metrics, "llm_gateway_spans_dropped_total") == 0
    finally:
        exporter.stop()
        nats.close()


async def test_stalled_backend_with_huge_prompts_over_nats(
    tmp_path: Path,
    gateway_factory: Callable[..., Proc],
    mock: Proc,
    otlp_receiver: OtlpReceiver,  # noqa: F811
) -> None:
    nats = NatsServer()  # default max_payload: 1 MB, smaller than one prompt
    nats.start()
    config = base_config(mock, nats, otlp_receiver, "stall")
    config["tracing"]["nats"]["consumer"]["max_in_flight_bytes"] = 4 * MIB
    exporter = start_exporter(config, tmp_path)
    prompt = "x" * (3 * MIB // 2)
    try:
        gw = gateway_factory(config)
        async with httpx.AsyncClient(timeout=60) as client:
            otlp_receiver.fail("http", Fault(hang=True), times=10_000)  # the backend stalls
            rss0 = tree_rss(gw.popen.pid), tree_rss(exporter.popen.pid)
            sent = await send(client, gw, 40, prompt, concurrency=4)
            await asyncio.sleep(3.0)
            rss1 = tree_rss(gw.popen.pid), tree_rss(exporter.popen.pid)
            m = scrape(f"http://127.0.0.1:{config['exporter']['prometheus_port']}/metrics")
            # the exporter holds at most its in-flight budget (one message may exceed it); the
            # rest of the backlog waits in the stream
            assert total(m, "llm_gateway_exporter_in_flight_bytes") <= 4 * MIB + MIB
            otlp_receiver.release()
            missing = await wait_delivered(otlp_receiver, sent, 120)
        print(
            f"\nstalled backend, NATS, 40 x 1.5 MiB: delivered {len(sent) - len(missing)} / {len(sent)};"
            f" gateway RSS {rss0[0] / MIB:.0f} -> {rss1[0] / MIB:.0f} MiB,"
            f" exporter RSS {rss0[1] / MIB:.0f} -> {rss1[1] / MIB:.0f} MiB"
        )
        assert not missing, f"{len(missing)} of {len(sent)} traces lost"
        gw_metrics = scrape(gw.url + "/metrics")
        assert total(gw_metrics, "llm_gateway_traces_truncated_total") == 40  # kept, cut, counted
        assert total(gw_metrics, "llm_gateway_spans_dropped_total") == 0
        roots = {s.trace_id.hex(): s for s in otlp_receiver.spans() if s.name == ROOT_SPAN}
        for trace_id in sent:  # each kept its spans, with the prompt cut and marked
            values = [a.value.string_value for a in roots[trace_id].attributes]
            assert any("...[truncated " in v and len(v) < MIB for v in values)
        assert "telemetry: " in gw.output() and "bodies truncated" in gw.output()  # logged
        assert rss1[0] - rss0[0] < 200 * MIB  # bounded: 60 MiB of prompts went through
    finally:
        exporter.stop()
        nats.close()


async def test_stalled_backend_with_huge_prompts_embedded(
    tmp_path: Path,
    gateway_factory: Callable[..., Proc],
    mock: Proc,
    otlp_receiver: OtlpReceiver,  # noqa: F811
) -> None:
    config = {
        "providers": [provider("mock", mock.url, ["gpt-4o"])],
        "server": {"max_body_bytes": 8 * MIB},
        "tracing": {"flush_interval_ms": 50, "max_buffer_bytes": 32 * MIB},
        # The embedded trace store is a destination of its own with its own memory cap
        # (store.memory_limit_mb): off here, so the figure is the tracing buffers' bound alone.
        "store": {"enabled": False},
        "exporter": {"traces": [{"name": "r", "endpoint": otlp_receiver.traces_url, "timeout_ms": 60_000}]},
    }
    gw = gateway_factory(config)
    prompt = "x" * (3 * MIB // 2)
    async with httpx.AsyncClient(timeout=60) as client:
        await send(client, gw, 4)  # warm up: connections, imports, first export
        otlp_receiver.fail("http", Fault(hang=True), times=10_000)
        rss0 = tree_rss(gw.popen.pid)
        sent = await send(client, gw, 60, prompt, concurrency=4)  # 90 MiB of prompts
        await asyncio.sleep(2.0)
        rss1 = tree_rss(gw.popen.pid)
        otlp_receiver.release()
        await asyncio.sleep(5.0)
        missing = await wait_delivered(otlp_receiver, sent, 20)
        await asyncio.sleep(6.0)  # the trimmer runs at most every 5 s
        await send(client, gw, 1)
        rss2 = tree_rss(gw.popen.pid)
    m = scrape(gw.url + "/metrics")
    dropped = total(m, "llm_gateway_spans_dropped_total")
    delivered = len(sent) - len(missing)
    print(
        f"\nstalled backend, embedded, 60 x 1.5 MiB, max_buffer_bytes 32 MiB: delivered {delivered} / {len(sent)},"
        f" {dropped:.0f} spans dropped (counted); RSS {rss0 / MIB:.0f} -> {rss1 / MIB:.0f} (stalled)"
        f" -> {rss2 / MIB:.0f} MiB (drained)"
    )
    # What did not fit the budget was dropped and counted, never silently: 4 spans per request.
    assert dropped > 0 and delivered + dropped / 4 >= len(sent)
    assert delivered > 0
    assert rss1 - rss0 < 3 * 32 * MIB + 64 * MIB  # bounded by the budget, not by the 90 MiB sent


async def test_exporter_scaled_down_under_a_stalled_backend_loses_no_trace(
    tmp_path: Path,
    gateway_factory: Callable[..., Proc],
    mock: Proc,
    otlp_receiver: OtlpReceiver,  # noqa: F811
) -> None:
    nats = NatsServer()
    nats.start()
    config = base_config(mock, nats, otlp_receiver, "scale")
    config["exporter"]["prometheus_port"] = 0
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    exporters = [start_exporter(config, tmp_path / "a"), start_exporter(config, tmp_path / "b")]
    try:
        gw = gateway_factory(config)
        async with httpx.AsyncClient(timeout=30) as client:
            sent = await send(client, gw, 50)
            assert not await wait_delivered(otlp_receiver, sent, 30)
            otlp_receiver.fail("http", Fault(hang=True), times=1000)  # both replicas hold batches
            sent += await send(client, gw, 200)
            await asyncio.sleep(1.0)
            assert exporters[0].stop() == 0  # SIGTERM: a scale-down, with batches in flight
            otlp_receiver.release()
            sent += await send(client, gw, 50)
            missing = await wait_delivered(otlp_receiver, sent, 90)
        print(f"\nexporter scaled down (SIGTERM) mid-stream: delivered {len(sent) - len(missing)} / {len(sent)} traces")
        assert not missing, f"{len(missing)} of {len(sent)} traces lost"
        assert "nak" in exporters[0].output()  # its last line reports what it handed back
    finally:
        for e in exporters:
            e.stop()
        nats.close()
