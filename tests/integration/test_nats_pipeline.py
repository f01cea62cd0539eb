"""Ring -> drain task -> real NATS -> exporter subscriber, including broker faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest
from nats.aio.client import Client as NatsClient

from exporter.subscriber import SpanSubscriber
from gateway.telemetry.drain import Drainer, Telemetry, make_resource
from gateway.telemetry.expand import expand_trace
from gateway.telemetry.ring import TraceRing
from gateway.telemetry.sinks import NatsSink
from gateway.telemetry.wire import (
    SCHEMA_VERSION,
    SPAN_KIND_INTERNAL,
    NatsConfig,
    Span,
    SpanBatch,
    TraceBatch,
    TracingConfig,
)
from tests.nats_fixtures import NatsServer
from tests.records import chat_record as chat_trace

pytestmark = pytest.mark.nats

PREFIX_COUNTER = iter(range(1_000_000))


class RecordingPipeline:
    """Stands in for exporter.pipeline.ExportPipeline: records submitted batches."""

    def __init__(self) -> None:
        self.batches: list[SpanBatch] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    def submit(self, batch: SpanBatch) -> None:
        self.batches.append(batch)

    async def stop(self, timeout_s: float) -> None:
        self.stopped = True

    @property
    def spans(self) -> list[Span]:
        return [s for b in self.batches for s in b.spans]


async def wait_until(pred: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``pred`` every 20 ms; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def _comparable(span: Span) -> Span:
    return msgspec.structs.replace(span, span_id=b"") if span.kind == SPAN_KIND_INTERNAL else span


def nats_cfg(url: str) -> NatsConfig:
    # A subject prefix per test: the session server is shared.
    return NatsConfig(url=url, subject_prefix=f"t{next(PREFIX_COUNTER)}")


@pytest.fixture
async def recorder_sub(
    nats_server: str,
) -> AsyncIterator[tuple[NatsConfig, RecordingPipeline, SpanSubscriber]]:
    cfg = nats_cfg(nats_server)
    rec = RecordingPipeline()
    sub = SpanSubscriber(cfg, rec)
    await sub.start()
    await asyncio.wait_for(sub.subscribed.wait(), 10)
    yield cfg, rec, sub
    await sub.stop(2)


async def test_end_to_end_through_nats(
    recorder_sub: tuple[NatsConfig, RecordingPipeline, SpanSubscriber],
) -> None:
    cfg, rec, sub = recorder_sub
    tel = Telemetry.from_config(TracingConfig(nats=cfg, batch_max_spans=16, flush_interval_ms=50))
    await tel.start()
    await wait_until(lambda: tel.connected)
    traces = [chat_trace() for _ in range(25)]
    for t in traces:
        tel.record(t)
    await wait_until(lambda: len(rec.spans) == 100)
    assert tel.counters.published == 100 and tel.counters.recorded == 100
    assert not tel.counters.dropped
    received: dict[bytes, list[Span]] = {}
    for span in rec.spans:
        received.setdefault(span.trace_id, []).append(span)
    for t in traces:  # what arrives is what the record stands for (INTERNAL span ids are drawn anew)
        assert [_comparable(s) for s in received[t.trace_id]] == [_comparable(s) for s in expand_trace(t)]
        assert {t.span_id, t.attempts[0].span_id} <= {s.span_id for s in received[t.trace_id]}
    assert all(len(b.spans) <= 16 for b in rec.batches)
    assert rec.batches[0].resource == make_resource("tfy-llm-gateway")
    await tel.stop(2)
    assert sub.bad_messages == 0


async def test_stop_flushes_what_is_left(
    recorder_sub: tuple[NatsConfig, RecordingPipeline, SpanSubscriber],
) -> None:
    cfg, rec, _ = recorder_sub
    # A long interval and a high threshold: only the final flush can ship these.
    tel = Telemetry.from_config(TracingConfig(nats=cfg, batch_max_spans=10_000, flush_interval_ms=60_000))
    await tel.start()
    await wait_until(lambda: tel.connected)
    for _ in range(10):
        tel.record(chat_trace())
    await tel.stop(5)
    await wait_until(lambda: len(rec.spans) == 40)
    assert tel.counters.published == 40


async def test_nats_down_at_start_then_up(
    nats_server_factory: type[NatsServer],
) -> None:
    server = nats_server_factory()  # not started: nothing listens on its port yet
    ring = TraceRing(1000, 8)
    sink = NatsSink(NatsConfig(url=server.url), ring.counters, reconnect_wait_s=0.2, connect_timeout_s=0.5)
    drainer = Drainer(ring, sink, make_resource("svc"), batch_max_spans=8, flush_interval_ms=20)
    t0 = time.monotonic()
    await drainer.start()
    assert time.monotonic() - t0 < 2.0  # start-up does not wait for the broker (generous: shared CI)
    t0 = time.perf_counter()
    for _ in range(50):
        ring.push(chat_trace())
    assert time.perf_counter() - t0 < 1.0  # pushing never waits on the broker either
    await wait_until(lambda: ring.counters.dropped.get("nats_unavailable", 0) == 200)
    assert not sink.connected and ring.counters.published == 0

    server.start()
    rec = RecordingPipeline()
    sub = SpanSubscriber(NatsConfig(url=server.url), rec)
    await sub.start()
    await asyncio.wait_for(sub.subscribed.wait(), 10)
    await wait_until(lambda: sink.connected, 15)
    ring.push(chat_trace())
    await wait_until(lambda: len(rec.spans) == 4)
    await wait_until(lambda: ring.counters.published == 4)  # counted right after the publish returns
    await drainer.stop(2)
    await sub.stop(2)


async def test_nats_restart_mid_run_resumes(
    nats_server_factory: type[NatsServer],
) -> None:
    server = nats_server_factory()
    server.start()
    cfg = NatsConfig(url=server.url)
    ring = TraceRing(1000, 4)
    sink = NatsSink(cfg, ring.counters, reconnect_wait_s=0.2, connect_timeout_s=0.5)
    drainer = Drainer(ring, sink, make_resource("svc"), batch_max_spans=4, flush_interval_ms=20)
    rec = RecordingPipeline()
    sub = SpanSubscriber(cfg, rec, reconnect_wait_s=0.2)
    await sub.start()
    await asyncio.wait_for(sub.subscribed.wait(), 10)
    await drainer.start()
    await wait_until(lambda: sink.connected)
    ring.push(chat_trace())
    await wait_until(lambda: len(rec.spans) == 4)

    server.stop()
    await wait_until(lambda: not sink.connected)
    for _ in range(5):
        ring.push(chat_trace())
    await wait_until(lambda: ring.counters.dropped.get("nats_unavailable", 0) == 20)

    server.start()
    await wait_until(lambda: sink.connected and sub.connected, 15)
    await asyncio.sleep(0.2)  # the subscriber's SUB is re-sent on reconnect
    for _ in range(3):
        ring.push(chat_trace())
    await wait_until(lambda: len(rec.spans) == 16)
    await wait_until(lambda: ring.counters.published == 16)
    await drainer.stop(2)
    await sub.stop(2)


async def test_oversized_batch_is_split_under_max_payload(
    nats_server_factory: type[NatsServer],
) -> None:
    server = nats_server_factory(max_payload=4096)
    server.start()
    cfg = NatsConfig(url=server.url)
    rec = RecordingPipeline()
    sub = SpanSubscriber(cfg, rec)
    await sub.start()
    await asyncio.wait_for(sub.subscribed.wait(), 10)
    ring = TraceRing(1000, 10_000)
    sink = NatsSink(cfg, ring.counters)
    drainer = Drainer(ring, sink, make_resource("svc"), batch_max_spans=10_000, flush_interval_ms=20)
    await drainer.start()
    await wait_until(lambda: sink.connected)
    for _ in range(10):
        ring.push(chat_trace(b"x" * 600))  # ~10 KiB of batch in total
    ring.push(chat_trace(b"y" * 8000))  # alone exceeds max_payload: its 4 spans are lost
    await wait_until(lambda: len(rec.spans) == 40)
    assert sink.messages_published > 3
    assert ring.counters.dropped["oversize"] == 4
    await wait_until(lambda: ring.counters.published == 40)
    await drainer.stop(2)
    await sub.stop(2)


async def test_queue_group_delivers_each_batch_once(nats_server: str) -> None:
    cfg = nats_cfg(nats_server)
    recs = [RecordingPipeline(), RecordingPipeline()]
    subs = [SpanSubscriber(cfg, r) for r in recs]
    for s in subs:
        await s.start()
        await asyncio.wait_for(s.subscribed.wait(), 10)
    ring = TraceRing(1000, 4)
    sink = NatsSink(cfg, ring.counters)
    drainer = Drainer(ring, sink, make_resource("svc"), batch_max_spans=4, flush_interval_ms=60_000)
    await drainer.start()
    await wait_until(lambda: sink.connected)
    for _ in range(40):
        ring.push(chat_trace())
        await drainer.flush_once()
    await wait_until(lambda: sum(len(r.batches) for r in recs) == 40)
    await asyncio.sleep(0.1)  # a duplicate, if any, would arrive now
    ids = [s.span_id for r in recs for s in r.spans]
    assert len(ids) == len(set(ids)) == 160
    assert all(r.batches for r in recs)  # both members got work (chance of not: 2^-39)
    await drainer.stop(2)
    for s in subs:
        await s.stop(2)


async def test_subscriber_survives_garbage(
    recorder_sub: tuple[NatsConfig, RecordingPipeline, SpanSubscriber],
) -> None:
    cfg, rec, sub = recorder_sub
    nc = NatsClient()
    await nc.connect(servers=[cfg.url])
    await nc.publish(cfg.spans_subject, b"\x00not msgpack")
    future = msgspec.msgpack.encode([99, ["svc", "1", "h", {}], []])  # unknown schema version
    await nc.publish(cfg.spans_subject, future)
    good = TraceBatch(SCHEMA_VERSION, make_resource("svc"), [chat_trace()])
    await nc.publish(cfg.spans_subject, msgspec.msgpack.encode(good))
    await nc.flush()
    await wait_until(lambda: len(rec.batches) == 1)
    assert sub.bad_messages == 2 and sub.batches == 1
    await nc.close()
