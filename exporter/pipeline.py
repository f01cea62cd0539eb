"""The export pipeline: span batches in, one bounded queue and one worker per destination.

Both entry points feed it: the gateway's drain task in embedded mode (no ``tracing.nats``), and
the JetStream consumer of the ``gateway-exporter`` process. :meth:`ExportPipeline.submit` never
awaits and never blocks; a full queue (in batches, or in bytes: ``max_queue_bytes``) drops the
batch for that destination only and counts it, so a slow or hanging backend never delays another
one, let alone a request.

A caller that can have a batch redelivered (the JetStream consumer) passes ``on_done``: it is
called once every destination is finished with the batch, with the destinations that failed
transiently (a full queue, a timeout, a 5xx after its retries, shutdown). Those are not counted
as drops (``batches_redelivered`` instead): the caller naks the message and the stream delivers
it again later. Without ``on_done`` (embedded mode) every failure is a counted drop.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from exporter.config import ExporterConfig, env_destination, with_attribute_limit
from exporter.destinations import ExportResult, LogLimiter, SpanDestination, build_destination
from exporter.enrich import enrich_batch
from exporter.memory import MemoryTrimmer, batch_bytes
from gateway.telemetry.wire import SpanBatch, TracingConfig

__all__ = ["BatchDone", "DestinationCounters", "ExportPipeline"]

# Called once per submitted batch with the destinations that want it again (empty: all done).
BatchDone = Callable[[frozenset[str]], None]

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
    batches_redelivered: int = 0  # transient failures handed back for redelivery (not drops)
    spans_redelivered: int = 0
    # Spans handed to this destination. Once its queue is empty:
    # spans_in = exported + dropped + sampled_out + rejected + redelivered.
    spans_in: int = 0
    on_drop: Callable[[str, int], None] | None = None  # also told of every drop (embedded mode)

    def drop(self, reason: str, batches: int, spans: int) -> None:
        """Count a drop under ``reason``."""
        self.batches_dropped[reason] = self.batches_dropped.get(reason, 0) + batches
        self.spans_dropped[reason] = self.spans_dropped.get(reason, 0) + spans
        if self.on_drop is not None:
            self.on_drop(reason, spans)

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


class _Ticket:
    """One submitted batch on its way through the lanes: its size and who still has it."""

    __slots__ = ("batch", "on_done", "pending", "retry", "size")

    def __init__(self, batch: SpanBatch, size: int, on_done: BatchDone | None) -> None:
        self.batch = batch
        self.size = size
        self.on_done = on_done
        self.pending = 0
        self.retry: set[str] = set()


class _Lane:
    """One destination with its queue, worker and counters."""

    def __init__(self, destination: SpanDestination, queue_size: int) -> None:
        self.destination = destination
        self.queue: asyncio.Queue[_Ticket] = asyncio.Queue(maxsize=queue_size)
        self.counters = DestinationCounters()
        self.worker: asyncio.Task[None] | None = None
        self.in_flight: SpanBatch | None = None
        self.bytes = 0  # queued and in flight


class ExportPipeline:
    """Fans span batches out to the configured destinations (see the module docstring)."""

    def __init__(
        self,
        exporter_cfg: ExporterConfig,
        tracing: TracingConfig,
        env: Mapping[str, str] | None = None,
        *,
        max_queue_bytes: int | None = None,
        trim_memory: bool = False,
    ) -> None:
        """Build the destinations; nothing connects until the first export.

        Args:
            exporter_cfg: the ``exporter:`` section (``traces`` destinations are used).
            tracing: the ``tracing:`` section; ``enabled: false`` makes the pipeline inert.
            env: where to read ``OTEL_EXPORTER_OTLP_*`` from (default: the process environment),
                which adds one destination when an endpoint is set.
            max_queue_bytes: bytes of batches all queues together may hold (each destination
                gets an equal share); default ``tracing.max_buffer_bytes``.
            trim_memory: give memory back to the OS when a backlog of over 16 MiB has drained
                (:class:`exporter.memory.MemoryTrimmer`).
        """
        self.tracing = tracing
        self._lanes: list[_Lane] = []
        self._accepting = False
        self._content = True
        self._logs = LogLimiter()
        self.max_queue_bytes = tracing.max_buffer_bytes if max_queue_bytes is None else max_queue_bytes
        self.queued_bytes = 0  # every queued or in-flight batch once, whatever its lanes
        self._trimmer = MemoryTrimmer() if trim_memory else None
        self._drop_hook: Callable[[str, int], None] | None = None
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
        lane = _Lane(destination, queue_size)
        lane.counters.on_drop = self._drop_hook
        self._lanes.append(lane)

    def on_drop(self, hook: Callable[[str, int], None]) -> None:
        """Tell ``hook(reason, spans)`` of every drop by any destination (the embedded gateway
        adds them to its own ``llm_gateway_spans_dropped``)."""
        self._drop_hook = hook
        for lane in self._lanes:
            lane.counters.on_drop = hook

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

    def queued_bytes_by_destination(self) -> dict[str, int]:
        """Bytes of batches queued or in flight per destination (a gauge)."""
        return {lane.destination.name: lane.bytes for lane in self._lanes}

    @property
    def capacity_batches(self) -> int:
        """Batches the smallest destination queue holds: a consumer should not hold more."""
        return min((lane.queue.maxsize for lane in self._lanes), default=DEFAULT_QUEUE_SIZE)

    @property
    def lane_max_bytes(self) -> int:
        """What one destination's queue may hold: an equal share of ``max_queue_bytes``."""
        return self.max_queue_bytes // max(len(self._lanes), 1)

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

    def submit(
        self,
        batch: SpanBatch,
        *,
        size: int = 0,
        on_done: BatchDone | None = None,
        skip: frozenset[str] = frozenset(),
    ) -> None:
        """Queue a batch for every destination; never awaits, never blocks.

        Call it from the event loop's thread. Where a queue is full (or the pipeline is not
        running) the batch is dropped for that destination and counted, or, with ``on_done``,
        handed back for redelivery.

        Args:
            batch: the spans.
            size: the bytes it holds, if the caller knows (default: estimated from the spans).
            on_done: called once every destination is finished with it (see the module doc).
            skip: destinations that already have it (an earlier delivery of the same message).
        """
        if self._lanes and self._accepting:
            try:
                enrich_batch(batch, content=self._content)  # once, before any destination strips it
            except Exception:  # a bad body must not cost the batch: send it as recorded
                self._logs.warning("enrich", "exporter: enriching a batch failed; sent as recorded")
        ticket = _Ticket(batch, size or batch_bytes(batch), on_done)
        lane_max = self.lane_max_bytes
        for lane in self._lanes:
            name = lane.destination.name
            if name in skip:
                continue
            lane.counters.spans_in += len(batch.spans)
            if not self._accepting:
                self._failed(lane, ticket, "not_running")
                continue
            # A lane always takes one batch, however large, so a big batch is never refused outright.
            if lane.bytes and lane.bytes + ticket.size > lane_max:
                self._failed(lane, ticket, "queue_full")
                self._logs.warning(f"{name}:queue", "exporter %s: queue full (bytes), dropping batches", name)
                continue
            try:
                lane.queue.put_nowait(ticket)
            except asyncio.QueueFull:
                self._failed(lane, ticket, "queue_full")
                self._logs.warning(f"{name}:queue", "exporter %s: queue full, dropping batches", name)
                continue
            lane.bytes += ticket.size
            ticket.pending += 1
        if ticket.pending:
            self.queued_bytes += ticket.size
        elif on_done is not None:
            on_done(frozenset(ticket.retry))

    def _failed(self, lane: _Lane, ticket: _Ticket, reason: str) -> None:
        """A destination will not take this batch now: redeliver it later if we can, else drop."""
        if ticket.on_done is not None:
            ticket.retry.add(lane.destination.name)
            lane.counters.batches_redelivered += 1
            lane.counters.spans_redelivered += len(ticket.batch.spans)
        else:
            lane.counters.drop(reason, 1, len(ticket.batch.spans))

    def _finish(self, lane: _Lane, ticket: _Ticket) -> None:
        lane.bytes -= ticket.size
        ticket.pending -= 1
        if ticket.pending:
            return
        self.queued_bytes -= ticket.size
        if ticket.on_done is not None:
            try:
                ticket.on_done(frozenset(ticket.retry))
            except Exception as exc:  # the caller's bug must not end the worker
                self._logs.warning("on_done", "exporter: batch completion callback failed: %r", exc)
        if self._trimmer is not None:
            self._trimmer.observe(self.queued_bytes)

    async def _work(self, lane: _Lane) -> None:
        while True:
            ticket = await lane.queue.get()
            batch = ticket.batch
            lane.in_flight = batch
            if self._trimmer is not None:
                self._trimmer.observe(self.queued_bytes)
            try:
                result = await lane.destination.export(batch)
            except asyncio.CancelledError:
                self._failed(lane, ticket, "shutdown")
                lane.in_flight = None
                self._finish(lane, ticket)
                lane.queue.task_done()
                raise
            except Exception as exc:  # a destination broke its contract; keep the worker alive
                name = lane.destination.name
                self._logs.warning(f"{name}:crash", "exporter %s: export raised %r", name, exc)
                result = ExportResult(dropped=len(batch.spans), reason="error")
            lane.in_flight = None
            if result.dropped and result.retryable and ticket.on_done is not None:
                # Not a drop: the consumer naks the message and the stream redelivers it.
                c = lane.counters
                c.retries += result.retries
                c.spans_exported += result.exported  # sent again on redelivery
                c.spans_sampled_out += result.sampled_out
                c.spans_rejected += result.rejected
                c.spans_redelivered += result.dropped
                c.batches_redelivered += 1
                ticket.retry.add(lane.destination.name)
            else:
                lane.counters.record(result)
            self._finish(lane, ticket)
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
                self._failed(lane, left, "shutdown")
                self._finish(lane, left)
            lost = lane.counters.spans_dropped.get("shutdown", 0)
            if lost:
                log.warning(
                    "exporter %s: %d spans dropped at shutdown (deadline reached)",
                    lane.destination.name,
                    lost,
                )
        for lane in self._lanes:
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    await lane.destination.close()
            except Exception as exc:  # closing is best effort; the process is going away
                log.warning("exporter %s: close failed: %r", lane.destination.name, exc)
