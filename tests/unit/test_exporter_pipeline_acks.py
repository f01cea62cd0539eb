"""ExportPipeline: byte-bounded queues, completion callbacks for the JetStream consumer, memory trim."""

from __future__ import annotations

import asyncio
import os

from exporter.config import ExporterConfig
from exporter.destinations import ExportResult
from exporter.memory import MemoryTrimmer, batch_bytes, malloc_trim
from exporter.pipeline import ExportPipeline
from gateway.telemetry.wire import SCHEMA_VERSION, Resource, Span, SpanBatch, TracingConfig


def batch(n: int = 2, body: int = 0) -> SpanBatch:
    spans = [
        Span(os.urandom(16), os.urandom(8), b"", "s", 1, 1, 2, attributes={"tfy.input": "x" * body})
        for _ in range(n)
    ]
    return SpanBatch(SCHEMA_VERSION, Resource("svc", "1", "i"), spans)


class Dest:
    """An in-memory destination answering with ``result`` (or waiting on ``gate``)."""

    def __init__(self, name: str, result: ExportResult | None = None) -> None:
        self.name = name
        self.result = result
        self.gate: asyncio.Event | None = None
        self.batches: list[SpanBatch] = []

    async def export(self, b: SpanBatch) -> ExportResult:
        if self.gate is not None:
            await self.gate.wait()
        self.batches.append(b)
        return self.result or ExportResult(exported=len(b.spans))

    async def close(self) -> None:
        pass


def pipeline(max_queue_bytes: int = 1 << 30) -> ExportPipeline:
    return ExportPipeline(ExporterConfig(), TracingConfig(), env={}, max_queue_bytes=max_queue_bytes)


async def test_on_done_reports_transient_failures_for_redelivery() -> None:
    p = pipeline()
    ok = Dest("ok")
    flaky = Dest("flaky", ExportResult(dropped=2, reason="timeout", retryable=True))
    broken = Dest("broken", ExportResult(dropped=2, reason="http_400"))
    for d in (ok, flaky, broken):
        p.add(d)
    await p.start()
    done: list[frozenset[str]] = []
    p.submit(batch(), on_done=done.append)
    for _ in range(50):
        if done:
            break
        await asyncio.sleep(0.01)
    assert done == [frozenset({"flaky"})]  # 400 is final (counted); the timeout comes back
    assert p.counters["broken"].spans_dropped == {"http_400": 2}
    assert p.counters["flaky"].spans_dropped == {} and p.counters["flaky"].batches_redelivered == 1
    p.submit(batch(), on_done=done.append, skip=frozenset({"ok", "broken"}))  # the redelivery
    for _ in range(50):
        if len(done) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(ok.batches) == 1 and len(broken.batches) == 1 and len(flaky.batches) == 2
    await p.stop(1)
    assert p.queued_bytes == 0


async def test_without_on_done_a_transient_failure_is_a_counted_drop() -> None:
    p = pipeline()
    p.add(Dest("flaky", ExportResult(dropped=2, reason="timeout", retryable=True)))
    drops: list[tuple[str, int]] = []
    p.on_drop(lambda reason, spans: drops.append((reason, spans)))
    await p.start()
    p.submit(batch())
    await p.stop(1)
    assert p.counters["flaky"].spans_dropped == {"timeout": 2} and drops == [("timeout", 2)]


async def test_queues_are_bounded_in_bytes() -> None:
    p = pipeline(max_queue_bytes=2 * 100_000)
    slow, fast = Dest("slow"), Dest("fast")
    slow.gate = asyncio.Event()
    p.add(slow)
    p.add(fast)  # each destination gets half: 100 kB
    await p.start()
    big = batch(1, body=40_000)
    assert 40_000 < batch_bytes(big) < 41_000
    for _ in range(5):
        p.submit(batch(1, body=40_000))
        await asyncio.sleep(0.01)  # fast's worker keeps up; slow's is held
    # slow holds two (80 kB; a third would pass 100 kB); fast took all five
    assert p.counters["slow"].spans_dropped == {"queue_full": 3}
    assert p.queued_bytes_by_destination()["slow"] <= 100_000
    assert len(fast.batches) == 5
    slow.gate.set()
    await p.stop(1)
    assert len(slow.batches) == 2 and p.queued_bytes == 0


def test_trimmer_trims_once_after_a_large_backlog_drains() -> None:
    t = MemoryTrimmer(threshold_bytes=1000, min_interval_s=0)
    t.observe(500)
    t.observe(0)
    assert t.trims == 0  # never reached the threshold
    t.observe(5000)
    t.observe(10)
    assert t.trims == 0  # not drained yet
    t.observe(0)
    assert t.trims == 1
    t.observe(0)
    assert t.trims == 1
    assert isinstance(malloc_trim(), bool)
