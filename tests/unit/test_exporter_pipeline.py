"""ExportPipeline with in-memory destinations (no sockets), and the log limiter."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from exporter.config import ExporterConfig
from exporter.destinations import ExportResult, LogLimiter
from exporter.pipeline import ExportPipeline
from gateway.telemetry.wire import SCHEMA_VERSION, Resource, Span, SpanBatch, TracingConfig


def batch(n: int = 3) -> SpanBatch:
    spans = [Span(os.urandom(16), os.urandom(8), b"", "s", 1, 1, 2) for _ in range(n)]
    return SpanBatch(SCHEMA_VERSION, Resource("svc", "1", "i"), spans)


class MemoryDestination:
    """What the built-in trace store will look like to the pipeline."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.batches: list[SpanBatch] = []
        self.closed = False

    async def export(self, batch: SpanBatch) -> ExportResult:
        if self.fail:
            raise RuntimeError("boom")
        self.batches.append(batch)
        return ExportResult(exported=len(batch.spans))

    async def close(self) -> None:
        self.closed = True


async def test_custom_destinations_receive_every_batch() -> None:
    pipeline = ExportPipeline(ExporterConfig(), TracingConfig(), env={})
    store, broken = MemoryDestination("store"), MemoryDestination("broken", fail=True)
    pipeline.add(store)
    pipeline.add(broken)
    with pytest.raises(ValueError, match="duplicate"):
        pipeline.add(MemoryDestination("store"))
    await pipeline.start()
    for _ in range(3):
        pipeline.submit(batch())
    await pipeline.stop(timeout_s=2)
    assert len(store.batches) == 3 and store.closed and broken.closed
    assert pipeline.counters["store"].spans_exported == 9
    assert pipeline.counters["broken"].batches_dropped == {"error": 3}


async def test_submit_never_blocks_even_when_nothing_drains() -> None:
    pipeline = ExportPipeline(ExporterConfig(), TracingConfig(), env={})
    pipeline.add(MemoryDestination("store"), queue_size=2)
    await pipeline.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(1000):  # no await in between: the worker never runs
        pipeline.submit(batch(1))
    assert loop.time() - started < 1.0
    assert pipeline.counters["store"].batches_dropped == {"queue_full": 998}
    await pipeline.stop(timeout_s=1)
    assert pipeline.counters["store"].batches_exported == 2


def test_log_limiter_holds_back_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    limiter = LogLimiter(interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="exporter"):
        for i in range(5):
            limiter.warning("dest:drop", "dropped %d", i)
        limiter.warning("other:drop", "other")
    assert [r.getMessage() for r in caplog.records] == ["dropped 0", "other"]
    limiter.interval_s = 0
    with caplog.at_level(logging.WARNING, logger="exporter"):
        limiter.warning("dest:drop", "dropped %d", 9)
    assert caplog.records[-1].getMessage() == "dropped 9 (4 similar messages suppressed)"
