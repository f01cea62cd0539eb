"""Ring -> drain task -> real NATS JetStream -> exporter consumer, including broker faults."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

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
    ConsumerConfig,
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
    """Stands in for exporter.pipeline.ExportPipeline: records submitted batches and reports
    each one done at once (``retry``: the destinations to report as failing transiently)."""

    def __init__(self, retry: frozenset[str] = frozenset(), hold: bool = False) -> None:
        self.batches: list[SpanBatch] = []
        self.skips: list[frozenset[str]] = []
        self.started = self.stopped = False
        self.retry = retry
        self.hold = hold  # never report done (a crashed exporter never acks)

    async def start(self) -> None:
        self.started = True

    def submit(self, batch: SpanBatch, *, size: int = 0, on_done: Any = None, skip: frozenset[str] = frozenset()) -> None:
        self.batches.append(batch)
        self.skips.append(skip)
        if on_done is not None and not self.hold:
            on_done(self.retry)

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
    await asyncio.sleep(0.5)
    # Nothing can be published: the traces wait in the ring, nothing is dropped or counted as sent.
    assert ring.counters.published == 0 and not ring.counters.dropped and ring.pending_spans == 200

    server.start()
    rec = RecordingPipeline()
    sub = SpanSubscriber(NatsConfig(url=server.url), rec)
    await sub.start()
    await asyncio.wait_for(sub.subscribed.wait(), 10)
    await wait_until(lambda: sink.connected, 15)
    ring.push(chat_trace())
    await wait_until(lambda: len(rec.spans) == 204, 20)
    assert ring.counters.published == 204 and not ring.counters.dropped
    await drainer.stop(2)
    await sub.stop(2)


async def test_nats_restart_mid_run_loses_nothing(
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
    await asyncio.sleep(0.5)
    assert ring.counters.published == 4 and not ring.counters.dropped  # held, not dropped

    server.start()  # same store directory: the stream and the durable consumer survive
    await wait_until(lambda: sink.connected and sub.connected, 15)
    for _ in range(3):
        ring.push(chat_trace())
    await wait_until(lambda: len({s.span_id for s in rec.spans}) == 36, 30)
    assert ring.counters.published == 36 and not ring.counters.dropped
    await drainer.stop(2)
    await sub.stop(2)


async def test_full_ring_drops_and_counts_during_an_outage(
    nats_server_factory: type[NatsServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = nats_server_factory()  # never started
    ring = TraceRing(1000, 4, max_bytes=64 * 1024)
    sink = NatsSink(NatsConfig(url=server.url), ring.counters, reconnect_wait_s=0.2, connect_timeout_s=0.5)
    drainer = Drainer(ring, sink, make_resource("svc"), batch_max_spans=4, flush_interval_ms=20)
    await drainer.start()
    for _ in range(40):
        ring.push(chat_trace(b"p" * 10_000))  # ~11.5 kB each: five fit in 64 KiB
    assert 4 <= len(ring) <= 6
    assert ring.counters.dropped["ring_full"] == 4 * (40 - len(ring))
    assert ring.pending_bytes <= 64 * 1024
    await wait_until(lambda: any("ring full" in r.getMessage() for r in caplog.records))  # logged too
    await drainer.stop(0.5)
    assert ring.counters.dropped["shutdown"] == ring.counters.recorded  # NATS never came


async def test_oversized_batch_is_split_and_a_huge_trace_truncated(
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
    big = chat_trace(b"y" * 8000)  # alone exceeds max_payload: kept, its body cut
    ring.push(big)
    await wait_until(lambda: len(rec.spans) == 44)
    assert sink.messages_published > 3
    assert ring.counters.truncated == 1 and not ring.counters.dropped
    await wait_until(lambda: ring.counters.published == 44)
    cut = [s for s in rec.spans if s.trace_id == big.trace_id]
    assert len(cut) == 4
    await drainer.stop(2)
    await sub.stop(2)


async def test_durable_consumer_shared_delivers_each_batch_once(nats_server: str) -> None:
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
    past = msgspec.msgpack.encode([1, ["svc", "1", "h", {}], []])  # an older schema: terminated
    await nc.publish(cfg.spans_subject, past)
    # A newer schema (a gateway upgraded before this exporter): handed back to the stream for an
    # upgraded replica, never lost.
    future = msgspec.msgpack.encode([SCHEMA_VERSION + 1, ["svc", "1", "h", {}], []])
    await nc.publish(cfg.spans_subject, future)
    good = TraceBatch(SCHEMA_VERSION, make_resource("svc"), [chat_trace()])
    await nc.publish(cfg.spans_subject, msgspec.msgpack.encode(good))
    await nc.flush()
    await wait_until(lambda: len(rec.batches) == 1 and sub.newer_version == 1)
    assert sub.bad_messages == 2 and sub.batches == 1
    await nc.close()


def _publish_some(cfg: NatsConfig, n: int) -> tuple[TraceRing, Drainer, NatsSink]:
    ring = TraceRing(1000, 4)
    sink = NatsSink(cfg, ring.counters)
    drainer = Drainer(ring, sink, make_resource("svc"), batch_max_spans=4, flush_interval_ms=20)
    for _ in range(n):
        ring.push(chat_trace())
    return ring, drainer, sink


async def test_unacked_batches_of_a_dead_consumer_go_to_another(nats_server: str) -> None:
    base = nats_cfg(nats_server)
    cfg = msgspec.structs.replace(base, consumer=ConsumerConfig(ack_wait_s=1.0))
    dead = RecordingPipeline(hold=True)  # receives, never finishes: like an exporter SIGKILLed mid-export
    sub = SpanSubscriber(cfg, dead)
    await sub.start()
    await asyncio.wait_for(sub.subscribed.wait(), 10)
    ring, drainer, _ = _publish_some(cfg, 10)
    await drainer.start()
    await wait_until(lambda: len(dead.spans) == 40)
    sub._tasks[1].cancel()  # no more in_progress heartbeats: the server times the acks out
    await sub._nc.close()  # gone without acking anything
    alive = RecordingPipeline()
    sub2 = SpanSubscriber(cfg, alive)
    await sub2.start()
    await wait_until(lambda: len(alive.spans) == 40, 20)
    await asyncio.sleep(1.5)  # acked: nothing comes a third time
    assert len(alive.spans) == 40 and sub2.redelivered == 10 and sub2.acked == 10
    await drainer.stop(2)
    await sub2.stop(2)


async def test_transient_failure_is_nacked_and_redelivered(nats_server: str) -> None:
    base = nats_cfg(nats_server)
    cfg = msgspec.structs.replace(base, consumer=ConsumerConfig(retry_backoff_s=0.2))
    flaky = RecordingPipeline(retry=frozenset({"b"}))  # destination b failed, a took it
    sub = SpanSubscriber(cfg, flaky, destinations=["a", "b"])
    await sub.start()
    await asyncio.wait_for(sub.subscribed.wait(), 10)
    ring, drainer, _ = _publish_some(cfg, 1)
    await drainer.start()
    await wait_until(lambda: len(flaky.batches) >= 3, 10)  # redelivered after each nak
    assert flaky.skips[0] == frozenset() and flaky.skips[1] == frozenset({"a"})  # a is not sent twice
    flaky.retry = frozenset()
    await wait_until(lambda: sub.acked == 1, 10)
    assert sub.nacked >= 2 and sub.redelivered >= 2
    await drainer.stop(2)
    await sub.stop(2)


async def test_stream_and_consumer_recreated_after_nats_loses_its_store(
    nats_server_factory: type[NatsServer],
) -> None:
    server = nats_server_factory()
    server.start()
    cfg = NatsConfig(url=server.url)
    rec = RecordingPipeline()
    sub = SpanSubscriber(cfg, rec, reconnect_wait_s=0.2, info_interval_s=0.2)
    await sub.start()
    await asyncio.wait_for(sub.subscribed.wait(), 10)
    ring, drainer, sink = _publish_some(cfg, 1)
    await drainer.start()
    await wait_until(lambda: len(rec.spans) == 4)
    server.stop()
    shutil.rmtree(server._dir + "/js")  # a new, empty NATS (e.g. its volume was replaced)
    server.start()
    for _ in range(2):
        ring.push(chat_trace())
    await wait_until(lambda: len(rec.spans) == 12, 30)
    assert ring.counters.published == 12 and not ring.counters.dropped
    await drainer.stop(2)
    await sub.stop(2)
