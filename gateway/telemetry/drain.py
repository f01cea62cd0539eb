"""The drain task: moves trace batches from the ring to a sink, off the request path.

It wakes when the ring crosses its batch threshold or every ``flush_interval_ms``, takes whole
traces worth up to ``batch_max_spans`` spans (and about one NATS message of bytes), wraps them
in a :class:`wire.TraceBatch` with this worker's :class:`wire.Resource`, and hands the batch to
the sink (JetStream, or the embedded exporter). Traces the sink could not deliver go back to the
front of the ring, and the drainer waits (``RETRY_S``, doubling up to ``RETRY_MAX_S``) before
trying again: during a NATS outage traces wait in the ring, and only a full ring drops them.
Shutdown order (:meth:`Drainer.stop`): stop waiting, ship everything left in the ring within
the deadline, then let the sink drain (NATS ``drain`` flushes the socket).

:class:`Telemetry` is the one object the app builds from config and carries around.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

import gateway
from gateway.telemetry.ring import TelemetryCounters, TraceRing
from gateway.telemetry.sinks import EmbeddedSink, NatsSink, RateLimitedLog, Sink, SupportsSubmit
from gateway.telemetry.wire import SCHEMA_VERSION, Resource, TraceBatch, TraceRecord, TracingConfig

__all__ = ["RETRY_MAX_S", "RETRY_S", "Drainer", "Telemetry", "make_resource"]

log = logging.getLogger("gateway.telemetry")

RETRY_S = 0.25  # first wait after the sink kept traces back (NATS down, stream full)
RETRY_MAX_S = 5.0


def make_resource(service_name: str, attributes: dict[str, Any] | None = None) -> Resource:
    """This worker's resource: ``service.instance.id`` is ``<hostname>-<pid>``, unique per worker."""
    return Resource(
        service_name=service_name,
        service_version=gateway.__version__,
        instance_id=f"{socket.gethostname()}-{os.getpid()}",
        attributes=attributes or {},
    )


class Drainer:
    """Background task moving batches from a :class:`TraceRing` to a :class:`Sink`."""

    def __init__(
        self,
        ring: TraceRing,
        sink: Sink,
        resource: Resource,
        *,
        batch_max_spans: int = 512,
        flush_interval_ms: int = 200,
    ) -> None:
        self.ring = ring
        self.sink = sink
        self.resource = resource
        self._batch_max = batch_max_spans
        self._interval = flush_interval_ms / 1000.0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._retry_s = 0.0  # current wait after an undelivered batch; 0 while delivering
        self.batches_sent = 0
        self.errors = 0
        self._error_log = RateLimitedLog(log)
        self._full_log = RateLimitedLog(log)
        self._full_seen = 0  # ring_full drops already reported

    async def start(self) -> None:
        """Start the sink (non-blocking for NATS) and the drain loop."""
        if self._task is not None:
            return
        await self.sink.start()
        self._task = asyncio.create_task(self._run(), name="telemetry-drain")

    async def _run(self) -> None:
        ring = self.ring
        while not self._stopping:
            if not ring.batch_ready:
                # Timeout is the normal wake-up on a quiet gateway: ship what is there.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ring.wakeup.wait(), self._interval)
            ring.wakeup.clear()
            if self._stopping:
                break
            try:
                await self.flush_once()
            except Exception as exc:  # never let one bad batch end telemetry for the process
                self.errors += 1
                self._error_log.warning("telemetry: drain iteration failed: %r", exc)
            self._report_full()
            if self._retry_s and not self._stopping:
                # The sink kept traces back: wait (stop interrupts) instead of spinning on them.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), self._retry_s)

    def _report_full(self) -> None:
        """Log (rate-limited) the spans a full ring dropped since the last line; the request path
        only counts them, so it never formats a log line."""
        total = self.ring.counters.dropped.get("ring_full", 0)
        if total > self._full_seen:
            self._full_log.warning(
                "telemetry: ring full (%d bytes buffered); %d spans dropped since the last report, %d in all",
                self.ring.pending_bytes,
                total - self._full_seen,
                total,
            )
            self._full_seen = total

    async def flush_once(self) -> int:
        """Ship one batch (if any spans are buffered); returns the number of spans delivered.

        Traces the sink did not finish with go back to the front of the ring."""
        traces, spans = self.ring.pop_batch_counted(self._batch_max, self.sink.max_batch_bytes)
        if not traces:
            return 0
        batch = TraceBatch(SCHEMA_VERSION, self.resource, traces)
        try:
            done = await self.sink.send(batch, spans)
        except BaseException:
            self.ring.unpop(traces)  # cancelled or broken mid-send: keep them
            raise
        if done < len(traces):
            self.ring.unpop(traces[done:])
            self._retry_s = min(max(self._retry_s * 2, RETRY_S), RETRY_MAX_S)
        else:
            self._retry_s = 0.0
        if done:
            self.batches_sent += 1
        return spans if done == len(traces) else sum(t.span_count for t in traces[:done])

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Final flush of the ring, then drain the sink; bounded by ``timeout_s`` overall."""
        deadline = time.monotonic() + timeout_s
        self._stopping = True
        self._stop_event.set()
        self.ring.wakeup.set()
        if self._task is not None:
            # The loop notices _stopping at its next wake-up; waiting is bounded by one send.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, max(deadline - time.monotonic(), 0.01))
            self._task = None
        try:
            while self.ring.pending_spans and time.monotonic() < deadline:
                remaining = deadline - time.monotonic()
                if not await asyncio.wait_for(self.flush_once(), max(remaining, 0.01)):
                    break  # the sink keeps refusing (NATS down): no use spinning until the deadline
        except TimeoutError:
            pass
        left = self.ring.pending_spans
        if left:
            self.ring.counters.drop("shutdown", left)
            self.ring.pop_batch(left, 1 << 62)
            log.warning("telemetry: shutdown deadline reached or NATS unavailable; %d spans dropped", left)
        await self.sink.stop(max(deadline - time.monotonic(), 0.05))


class Telemetry:
    """The tracing pipeline of one gateway worker: ring, drain task and sink.

    Build once at start-up with :meth:`from_config`; the request path calls :meth:`record`
    (or ``ring.push``); start-up awaits :meth:`start`, shutdown awaits :meth:`stop`.
    """

    def __init__(self, ring: TraceRing, drainer: Drainer | None, enabled: bool = True) -> None:
        self._start_task: asyncio.Task[None] | None = None
        self.ring = ring
        self.counters: TelemetryCounters = ring.counters
        self.drainer = drainer
        self.enabled = enabled

    @classmethod
    def from_config(
        cls,
        tracing: TracingConfig,
        exporter_cfg: Any = None,
        *,
        pipeline: SupportsSubmit | None = None,
        resource_attributes: dict[str, Any] | None = None,
        metadata_label_keys: tuple[str, ...] = (),
    ) -> Telemetry:
        """Wire ring, drain task and sink from the ``tracing:`` (and ``exporter:``) sections.

        ``tracing.nats`` set: publish to NATS. Otherwise the embedded exporter: ``pipeline`` if
        given (tests), else ``exporter.pipeline.ExportPipeline(exporter_cfg, tracing)``.
        """
        embedded = tracing.nats is None
        # Embedded mode shares the byte budget between the ring and the export queues.
        ring_bytes = tracing.max_buffer_bytes // 4 if embedded else tracing.max_buffer_bytes
        ring = TraceRing(tracing.ring_size, tracing.batch_max_spans, max_bytes=ring_bytes)
        if not tracing.enabled:
            return cls(ring, None, enabled=False)
        resource = make_resource(tracing.service_name, resource_attributes)
        sink: Sink
        if tracing.nats is not None:
            sink = NatsSink(
                tracing.nats, ring.counters, name=f"{tracing.service_name} {resource.instance_id}"
            )
        else:
            if pipeline is None:
                # Imported here: the NATS deployment never loads the exporter's dependencies.
                from exporter.config import ExporterConfig
                from exporter.pipeline import ExportPipeline

                exporter_cfg = exporter_cfg or ExporterConfig()
                pipeline = ExportPipeline(
                    exporter_cfg,
                    tracing,
                    max_queue_bytes=tracing.max_buffer_bytes - ring_bytes,
                    trim_memory=True,
                )
                counters = ring.counters
                # Drops by the in-process destinations show in this worker's spans_dropped too.
                pipeline.on_drop(lambda reason, spans: counters.drop(f"export_{reason}", spans))
                if exporter_cfg.metrics:
                    from exporter.metrics_export import MetricsExporter, SpanFanout

                    pipeline = SpanFanout(
                        pipeline,
                        MetricsExporter(exporter_cfg.metrics, metadata_label_keys=metadata_label_keys),
                    )
            sink = EmbeddedSink(pipeline, ring.counters)
        drainer = Drainer(
            ring,
            sink,
            resource,
            batch_max_spans=tracing.batch_max_spans,
            flush_interval_ms=tracing.flush_interval_ms,
        )
        return cls(ring, drainer)

    def record(self, trace: TraceRecord) -> None:
        """Hand one finished trace to the ring (O(1), never awaits; no-op when disabled)."""
        if self.enabled:
            self.ring.push(trace)

    @property
    def connected(self) -> bool:
        """The sink can deliver right now (NATS connected, or embedded)."""
        return self.drainer is not None and self.drainer.sink.connected

    async def start(self) -> None:
        """Start the sink and the drain task; never blocks on NATS."""
        if self.drainer is not None:
            await self.drainer.start()

    def start_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Schedule :meth:`start` on ``loop``, which may not be running yet (``__rsgi_init__``)."""
        if self._start_task is None:
            self._start_task = loop.create_task(self.start(), name="telemetry-start")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Flush the ring and drain the sink within ``timeout_s``."""
        task, self._start_task = self._start_task, None
        if task is not None:
            try:
                await task
            except Exception as exc:  # start failed (logged by no one else): say so, then stop anyway
                log.warning("telemetry: start-up had failed: %r", exc)
        if self.drainer is not None:
            await self.drainer.stop(timeout_s)
