"""The export pipeline: span batches in, one bounded queue and one worker per destination.

Both entry points feed it: the gateway's drain task in embedded mode (no ``tracing.nats``), and
the NATS subscriber of the ``gateway-exporter`` process. :meth:`ExportPipeline.submit` never
awaits and never blocks; a full queue drops the batch for that destination only and counts it,
so a slow or hanging backend never delays another one, let alone a request.

Shutdown, in order (:meth:`ExportPipeline.stop`): stop accepting batches; let each worker
empty its queue until the deadline; cancel what is still running (its batch counts as dropped,
reason ``shutdown``); close every destination's connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.config import ExporterConfig, env_destination, with_attribute_limit
from exporter.destinations import ExportResult, LogLimiter, SpanDestination, build_destination
from exporter.enrich import enrich_batch
from gateway.telemetry.wire import SpanBatch, TracingConfig

__all__ = ["DestinationCounters", "ExportPipeline"]

log = logging.getLogger("exporter")

DEFAULT_QUEUE_SIZE = 256


@dataclass(slots=True)
class DestinationCounters:
    """What happened to the batches given to one destination (monotonic, for metrics)."""

    batches_exported: int = 0
    spans_exported: int = 0
    batches_dropped: dict[str, int] = field(default_factory=dict)  # by reason
    spans_dropped: dict[str, int] = field(default_factory=dict)  # by reason
    spans_sampled_out: int = 0
    spans_rejected: int = 0  # refused by the backend in a partial success
    retries: int = 0
    attributes_truncated: int = 0  # values cut (or dropped) to the destination's max_attribute_chars

    def drop(self, reason: str, batches: int, spans: int) -> None:
        """Count a drop under ``reason``."""
        self.batches_dropped[reason] = self.batches_dropped.get(reason, 0) + batches
        self.spans_dropped[reason] = self.spans_dropped.get(reason, 0) + spans

    def record(self, result: ExportResult) -> None:
        """Fold one export result in."""
        self.retries += result.retries
        self.attributes_truncated += result.attributes_truncated
        self.spans_sampled_out += result.sampled_out
        self.spans_rejected += result.rejected
        self.spans_exported += result.exported
        if result.dropped:
            self.drop(result.reason or "unknown", 1, result.dropped)
        else:
            self.batches_exported += 1


class _Lane:
    """One destination with its queue, worker and counters."""

    def __init__(self, destination: SpanDestination, queue_size: int) -> None:
        self.destination = destination
        self.queue: asyncio.Queue[SpanBatch] = asyncio.Queue(maxsize=queue_size)
        self.counters = DestinationCounters()
        self.worker: asyncio.Task[None] | None = None
        self.in_flight: SpanBatch | None = None


class ExportPipeline:
    """Fans span batches out to the configured destinations (see the module docstring)."""

    def __init__(
        self,
        exporter_cfg: ExporterConfig,
        tracing: TracingConfig,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Build the destinations; nothing connects until the first export.

        Args:
            exporter_cfg: the ``exporter:`` section (``traces`` destinations are used).
            tracing: the ``tracing:`` section; ``enabled: false`` makes the pipeline inert.
            env: where to read ``OTEL_EXPORTER_OTLP_*`` from (default: the process environment),
                which adds one destination when an endpoint is set.
        """
        self.tracing = tracing
        self._lanes: list[_Lane] = []
        self._accepting = False
        self._content = True
        self._logs = LogLimiter()
        if not tracing.enabled:
            return
        environ = os.environ if env is None else env
        configured = list(exporter_cfg.traces)
        extra = env_destination(environ)
        if extra is not None and all(d.name != extra.name for d in configured):
            configured.append(extra)
        for cfg in configured:
            cfg = with_attribute_limit(cfg, environ)
            self.add(build_destination(cfg, logs=self._logs), cfg.queue_size)

    def add(self, destination: SpanDestination, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        """Add a destination (e.g. the built-in trace store); call before :meth:`start`."""
        if any(lane.destination.name == destination.name for lane in self._lanes):
            raise ValueError(f"duplicate destination name {destination.name!r}")
        self._lanes.append(_Lane(destination, queue_size))

    @property
    def destinations(self) -> list[str]:
        """Destination names, in configuration order."""
        return [lane.destination.name for lane in self._lanes]

    @property
    def counters(self) -> dict[str, DestinationCounters]:
        """Live counters per destination name."""
        return {lane.destination.name: lane.counters for lane in self._lanes}

    def queued(self) -> dict[str, int]:
        """Batches waiting per destination (a gauge)."""
        return {lane.destination.name: lane.queue.qsize() for lane in self._lanes}

    async def start(self) -> None:
        """Start one worker task per destination (on the running loop)."""
        if self._accepting:
            return
        for lane in self._lanes:
            lane.worker = asyncio.create_task(self._work(lane), name=f"exporter:{lane.destination.name}")
        # Content is derived only if some destination keeps it (exclude_request_data strips it).
        self._content = any(not getattr(getattr(lane.destination, "cfg", None), "exclude_request_data", False)
                            for lane in self._lanes)  # fmt: skip
        self._accepting = True

    def submit(self, batch: SpanBatch) -> None:
        """Queue a batch for every destination; never awaits, never blocks.

        Call it from the event loop's thread. Where a queue is full (or the pipeline is not
        running) the batch is dropped for that destination and counted.
        """
        n = len(batch.spans)
        if self._lanes and self._accepting:
            try:
                enrich_batch(batch, content=self._content)  # once, before any destination strips it
            except Exception:  # a bad body must not cost the batch: send it as recorded
                self._logs.warning("enrich", "exporter: enriching a batch failed; sent as recorded")
        for lane in self._lanes:
            if not self._accepting:
                lane.counters.drop("not_running", 1, n)
                continue
            try:
                lane.queue.put_nowait(batch)
            except asyncio.QueueFull:
                lane.counters.drop("queue_full", 1, n)
                name = lane.destination.name
                self._logs.warning(f"{name}:queue", "exporter %s: queue full, dropping batches", name)

    async def _work(self, lane: _Lane) -> None:
        while True:
            batch = await lane.queue.get()
            lane.in_flight = batch
            try:
                result = await lane.destination.export(batch)
            except asyncio.CancelledError:
                lane.counters.drop("shutdown", 1, len(batch.spans))
                lane.in_flight = None
                lane.queue.task_done()
                raise
            except Exception as exc:  # a destination broke its contract; keep the worker alive
                name = lane.destination.name
                self._logs.warning(f"{name}:crash", "exporter %s: export raised %r", name, exc)
                result = ExportResult(dropped=len(batch.spans), reason="error")
            lane.in_flight = None
            lane.counters.record(result)
            lane.queue.task_done()

    async def stop(self, timeout_s: float) -> None:
        """Flush what can be flushed within ``timeout_s``, then close every destination.

        Batches still queued or in flight at the deadline are counted as dropped (``shutdown``).
        """
        self._accepting = False
        deadline = time.monotonic() + timeout_s
        running = [lane for lane in self._lanes if lane.worker is not None]
        if running:
            joins = [asyncio.ensure_future(lane.queue.join()) for lane in running]
            await asyncio.wait(joins, timeout=max(0.0, deadline - time.monotonic()))
            for j in joins:
                j.cancel()
        for lane in running:
            assert lane.worker is not None
            lane.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lane.worker
            lane.worker = None
            while not lane.queue.empty():
                left = lane.queue.get_nowait()
                lane.counters.drop("shutdown", 1, len(left.spans))
        for lane in self._lanes:
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    await lane.destination.close()
            except Exception as exc:  # closing is best effort; the process is going away
                log.warning("exporter %s: close failed: %r", lane.destination.name, exc)
