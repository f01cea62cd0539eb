"""Drain task and sinks without a broker: embedded sink, splitting, shutdown, rate-limited logs."""

from __future__ import annotations

import asyncio
import logging
import os

import msgspec
import pytest

from gateway.telemetry.drain import Drainer, Telemetry, make_resource
from gateway.telemetry.ring import TraceRing
from gateway.telemetry.sinks import EmbeddedSink, RateLimitedLog, plan_messages
from gateway.telemetry.wire import SCHEMA_VERSION, SpanBatch, TraceBatch, TracingConfig, decode_batch
from tests.records import chat_record


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[SpanBatch] = []
        self.fail = fail
        self.events: list[str] = []

    async def start(self) -> None:
        self.events.append("start")

    def submit(self, batch: SpanBatch, *, size: int = 0) -> None:
        if self.fail:
            raise RuntimeError("boom")
        self.batches.append(batch)

    async def stop(self, timeout_s: float) -> None:
        self.events.append("stop")


trace = chat_record  # one request: 4 spans


async def test_embedded_pipeline_gets_batches_and_final_flush() -> None:
    rec = Recorder()
    tel = Telemetry.from_config(TracingConfig(batch_max_spans=8, flush_interval_ms=10), pipeline=rec)
    await tel.start()
    assert tel.connected
    for _ in range(10):
        tel.record(trace())
    await asyncio.sleep(0.1)
    for _ in range(3):
        tel.record(trace())
    await tel.stop(2)
    assert rec.events == ["start", "stop"]
    assert sum(len(b.spans) for b in rec.batches) == 52
    assert all(len(b.spans) <= 8 for b in rec.batches)
    assert tel.counters.published == 52 and not tel.counters.dropped
    assert rec.batches[0].version == SCHEMA_VERSION
    assert rec.batches[0].resource.instance_id.endswith(f"-{os.getpid()}")


async def test_disabled_records_nothing() -> None:
    tel = Telemetry.from_config(TracingConfig(enabled=False))
    await tel.start()
    tel.record(trace())
    assert len(tel.ring) == 0 and not tel.connected
    await tel.stop(1)


async def test_failing_pipeline_is_counted_not_fatal() -> None:
    ring = TraceRing(100, 4)
    drainer = Drainer(
        ring, EmbeddedSink(Recorder(fail=True), ring.counters), make_resource("s"), flush_interval_ms=10
    )
    await drainer.start()
    ring.push(trace())
    await asyncio.sleep(0.1)
    ring.push(trace())
    await drainer.stop(1)
    assert ring.counters.dropped["exporter_error"] == 8


async def test_stop_deadline_drops_and_counts() -> None:
    ring = TraceRing(100, 4)

    class HangingSink:
        connected = True
        max_batch_bytes = 1 << 20

        async def start(self) -> None: ...

        async def send(self, batch: TraceBatch, spans: int) -> int:
            await asyncio.sleep(10)
            return len(batch.traces)

        async def stop(self, timeout_s: float) -> None: ...

    drainer = Drainer(ring, HangingSink(), make_resource("s"), batch_max_spans=4, flush_interval_ms=60_000)
    await drainer.start()
    for _ in range(3):
        ring.push(trace())
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await drainer.stop(0.3)
    assert loop.time() - t0 < 1.0
    assert ring.counters.dropped["shutdown"] >= 4 and ring.pending_spans == 0


def test_plan_messages_splits_in_order_and_truncates_what_cannot_fit() -> None:
    resource = make_resource("s")
    traces = [trace(b"z" * 300) for _ in range(20)]
    items, groups, truncated = plan_messages(TraceBatch(SCHEMA_VERSION, resource, traces), 2048)
    assert truncated == 0 and len(items) > 3
    assert all(isinstance(p, bytes) and len(p) <= 2048 for p in items)
    assert [t.trace_id for p in items for t in decode_batch(p).traces] == [t.trace_id for t in traces]  # type: ignore[arg-type]
    assert [t for g in groups for t in g] == traces
    traces[3] = trace(b'{"model":"m","messages":[{"role":"user","content":"' + b"z" * 5000 + b'"}]}')
    items, groups, truncated = plan_messages(TraceBatch(SCHEMA_VERSION, resource, traces), 2048)
    # alone over the limit: kept, with its prompt cut, still valid JSON
    assert truncated == 1 and all(isinstance(p, bytes) and len(p) <= 2048 for p in items)
    got = [t for p in items for t in decode_batch(p).traces]  # type: ignore[arg-type]
    assert [t.trace_id for t in got] == [t.trace_id for t in traces]
    assert got[3].span_count == 4 and b"truncated" in got[3].request_body
    assert msgspec.json.decode(got[3].request_body)["model"] == "m"


def test_rate_limited_log(caplog: pytest.LogCaptureFixture) -> None:
    rl = RateLimitedLog(logging.getLogger("t.rl"), interval_s=60)
    with caplog.at_level(logging.WARNING, "t.rl"):
        for i in range(5):
            rl.warning("down %d", i)
    assert [r.getMessage() for r in caplog.records] == ["down 0 (0 similar suppressed)"]


async def test_embedded_default_builds_the_real_pipeline() -> None:
    tel = Telemetry.from_config(TracingConfig(flush_interval_ms=10))
    await tel.start()
    tel.record(trace())
    await tel.stop(1)
    assert tel.counters.published == 4  # no destinations configured: accepted and discarded


def test_start_on_a_loop_that_is_not_running_yet() -> None:
    # granian's __rsgi_init__ hands over a loop before it runs; __rsgi_del__ runs the shutdown.
    rec = Recorder()
    loop = asyncio.new_event_loop()
    try:
        tel = Telemetry.from_config(TracingConfig(flush_interval_ms=10), pipeline=rec)
        tel.start_on(loop)
        tel.record(trace())
        loop.run_until_complete(asyncio.sleep(0.1))
        loop.run_until_complete(tel.stop(1))
    finally:
        loop.close()
    assert rec.events == ["start", "stop"] and sum(len(b.spans) for b in rec.batches) == 4
