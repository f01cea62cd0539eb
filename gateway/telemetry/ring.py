"""A bounded buffer of finished traces between the request path and the drain task.

``push`` is O(1) and never awaits: when the ring is full the trace is dropped and counted
(``dropped["ring_full"]``), because telemetry must never slow or fail a request (the
OpenTelemetry ``BatchProcessor`` makes the same trade). The drainer is woken only when the
number of buffered spans *crosses* ``batch_max_spans``, so a busy request path pays one
integer comparison per trace, not an ``Event.set()``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque

from gateway.telemetry.wire import TraceRecord

__all__ = ["TelemetryCounters", "TraceRing"]


class TelemetryCounters:
    """Span counters for the metrics work: all in spans, never reset."""

    __slots__ = ("dropped", "published", "recorded")

    def __init__(self) -> None:
        self.recorded = 0  # accepted into the ring
        self.published = 0  # handed to NATS (flushed) or to the embedded exporter
        self.dropped: defaultdict[str, int] = defaultdict(int)  # reason -> spans

    def drop(self, reason: str, spans: int) -> None:
        """Count ``spans`` dropped for ``reason``."""
        self.dropped[reason] += spans

    def snapshot(self) -> dict[str, object]:
        """A plain copy, for logs and tests."""
        return {"recorded": self.recorded, "published": self.published, "dropped": dict(self.dropped)}


class TraceRing:
    """Finished traces (one record per request), at most ``capacity`` of them, oldest first.

    Counts are in spans (a record stands for ``span_count`` of them), so the counters and the
    batch threshold mean the same with any number of spans per request."""

    __slots__ = ("_capacity", "_pending_spans", "_threshold", "_traces", "counters", "wakeup")

    def __init__(
        self, capacity: int, batch_max_spans: int, counters: TelemetryCounters | None = None
    ) -> None:
        if capacity < 1 or batch_max_spans < 1:
            raise ValueError("capacity and batch_max_spans must be positive")
        self._capacity = capacity
        self._threshold = batch_max_spans
        self._traces: deque[TraceRecord] = deque()
        self._pending_spans = 0
        self.counters = counters or TelemetryCounters()
        # Set when buffered spans cross the batch threshold; the drainer waits on it.
        self.wakeup = asyncio.Event()

    def push(self, trace: TraceRecord) -> None:
        """Buffer one finished trace; drop and count it if the ring is full. Never awaits."""
        n = trace.span_count
        if len(self._traces) >= self._capacity:
            self.counters.dropped["ring_full"] += n
            return
        self._traces.append(trace)
        self.counters.recorded += n
        before = self._pending_spans
        self._pending_spans = before + n
        if before < self._threshold <= before + n:
            self.wakeup.set()

    def pop_batch(self, max_spans: int | None = None) -> list[TraceRecord]:
        """Take whole traces, oldest first, up to ``max_spans`` spans (at least one trace)."""
        limit = self._threshold if max_spans is None else max_spans
        traces = self._traces
        out: list[TraceRecord] = []
        taken = 0
        while traces and (not out or taken + traces[0].span_count <= limit):
            trace = traces.popleft()
            out.append(trace)
            taken += trace.span_count
        self._pending_spans -= taken
        return out

    @property
    def pending_spans(self) -> int:
        """Spans buffered and not yet taken by the drainer."""
        return self._pending_spans

    @property
    def batch_ready(self) -> bool:
        """At least a full batch is buffered."""
        return self._pending_spans >= self._threshold

    def __len__(self) -> int:
        return len(self._traces)
