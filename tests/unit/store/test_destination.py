"""The store as a pipeline destination: its own bounded queue; a stuck store delays nobody."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from exporter.config import ExporterConfig
from exporter.pipeline import ExportPipeline
from exporter.store.backends import DuckDBBackend
from exporter.store.config import StoreConfig, UiConfig, check_store
from exporter.store.service import TraceStore
from gateway.telemetry.expand import expand_batch
from gateway.telemetry.wire import SCHEMA_VERSION, Resource, TraceBatch, TracingConfig
from tests.records import chat_record


class _Named(TraceStore):
    def __init__(self, name: str, path: Path, queue_size: int) -> None:
        super().__init__(StoreConfig(path=str(path), queue_size=queue_size), DuckDBBackend(str(path)))
        self.name = name


def batch() -> object:
    return expand_batch(TraceBatch(SCHEMA_VERSION, Resource("gw", "0", "h"), [chat_record()]))


async def test_stuck_store_drops_and_counts_while_others_flow(tmp_path: Path) -> None:
    stuck = _Named("stuck", tmp_path / "a.duckdb", queue_size=2)
    healthy = _Named("healthy", tmp_path / "b.duckdb", queue_size=64)
    pipeline = ExportPipeline(ExporterConfig(), TracingConfig(), env={})
    pipeline.add(stuck, 2)
    pipeline.add(healthy, 64)
    await pipeline.start()
    lock = stuck.backend._write_lock  # type: ignore[attr-defined]
    lock.acquire()  # the stuck store's writer now waits, as on a hung disk
    try:
        t0 = time.perf_counter()
        for _ in range(20):
            pipeline.submit(batch())  # type: ignore[arg-type]
        assert time.perf_counter() - t0 < 5  # submit never waits on a destination (a bound, not a timing)
        for _ in range(200):
            if healthy.rows_written == 20 * 4:
                break
            await asyncio.sleep(0.02)
        assert healthy.rows_written == 80
        assert pipeline.counters["stuck"].batches_dropped.get("queue_full", 0) >= 17
    finally:
        lock.release()
    await pipeline.stop(5)
    assert pipeline.counters["healthy"].spans_exported == 80


def test_check_store_reports_paths() -> None:
    class Cfg:
        store = StoreConfig(
            retention_days=0, max_size_mb=-1, queue_size=0, listen="nope", engine="clickhouse", url="ftp://x"
        )
        ui = UiConfig(admins=["alice"])

    problems = list(check_store(Cfg()))
    for needle in (
        "store.retention_days",
        "store.max_size_mb",
        "store.queue_size",
        "store.listen",
        "store.url",
        "ui.admins[0]",
    ):
        assert any(p.startswith(needle) for p in problems), (needle, problems)
