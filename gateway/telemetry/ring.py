"""A bounded buffer of finished traces between the request path and the drain task.

``push`` is O(1) and never awaits: when the ring is full the trace is dropped and counted
(``dropped["ring_full"]``), because telemetry must never slow or fail a request (the
OpenTelemetry ``BatchProcessor`` makes the same trade). "Full" is measured in bytes
(:func:`record_bytes`, the bodies a record holds plus a fixed overhead) as well as in traces,
so a burst of large prompts cannot take more memory than ``max_bytes`` however few they are.
Traces the sink could not deliver go back to the front with :meth:`TraceRing.unpop`, in order,
so a NATS outage keeps them instead of dropping them. The drainer is woken only when the
number of buffered spans *crosses* ``batch_max_spans``, so a busy request path pays one
integer comparison per trace, not an ``Event.set()``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque

from gateway.telemetry.wire import TraceRecord

__all__ = ["RECORD_OVERHEAD_BYTES", "TelemetryCounters", "TraceRing", "record_bytes"]

# What a record costs beyond its bodies (the Struct, ids, strings, one attempt): ~0.9 kB measured
# with tracemalloc over 10,000 tests/records.chat_record; rounded up so small traces are not free.
RECORD_OVERHEAD_BYTES = 1536


def record_bytes(trace: TraceRecord) -> int:
    """Approximate memory held by one record: its bodies plus a fixed overhead (O(1))."""
    return (
        RECORD_OVERHEAD_BYTES
        + len(trace.request_body)
        + len(trace.response_body)
        + len(trace.response_sse)
        + len(trace.error_message)
        # MCP and Responses records carry bodies of their own (chat records have neither part).
        + (trace.nested_bytes if trace.mcp is not None or trace.agent is not None else 0)
    )


class TelemetryCounters:
    """Span counters for the metrics work: all in spans, never reset."""

    __slots__ = ("dropped", "published", "recorded", "truncated")

    def __init__(self) -> None:
        self.recorded = 0  # accepted into the ring
        self.published = 0  # acked by the JetStream stream, or handed to the embedded exporter
        self.dropped: defaultdict[str, int] = defaultdict(int)  # reason -> spans
        self.truncated = 0  # traces whose bodies were cut to fit one NATS message (kept, not lost)

    def drop(self, reason: str, spans: int) -> None:
        """Count ``spans`` dropped for ``reason``."""
        self.dropped[reason] += spans

    def snapshot(self) -> dict[str, object]:
        """A plain copy, for logs and tests."""
        return {
            "recorded": self.recorded,
            "published": self.published,
            "dropped": dict(self.dropped),
            "truncated": self.truncated,
        }


class TraceRing:
    """Finished traces (one record per request), oldest first: at most ``capacity`` of them and
    at most ``max_bytes`` of them (see :func:`record_bytes`).

    Counts are in spans (a record stands for ``span_count`` of them), so the counters and the
    batch threshold mean the same with any number of spans per request."""

    __slots__ = (
        "_bytes",
        "_capacity",
        "_max_bytes",
        "_pending_spans",
        "_sizes",
        "_spans",
        "_threshold",
        "_traces",
        "counters",
        "wakeup",
    )

    def __init__(
        self,
        capacity: int,
        batch_max_spans: int,
        counters: TelemetryCounters | None = None,
        *,
        max_bytes: int = 1 << 62,
    ) -> None:
        if capacity < 1 or batch_max_spans < 1 or max_bytes < 1:
            raise ValueError("capacity, batch_max_spans and max_bytes must be positive")
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._threshold = batch_max_spans
        self._traces: deque[TraceRecord] = deque()
        self._spans: deque[int] = deque()  # span_count of each trace in _traces
        self._sizes: deque[int] = deque()  # record_bytes of each trace in _traces
        self._pending_spans = 0
        self._bytes = 0
        self.counters = counters or TelemetryCounters()
        # Set when buffered spans cross the batch threshold; the drainer waits on it.
        self.wakeup = asyncio.Event()

    def push(self, trace: TraceRecord) -> None:
        """Buffer one finished trace; drop and count it if the ring is full. Never awaits."""
        n = trace.span_count
        # record_bytes(trace), inlined: this runs once per request. Exactly record_bytes (nested
        # MCP/agent bodies included), since unpop puts traces back at that size.
        size = (
            RECORD_OVERHEAD_BYTES
            + len(trace.request_body)
            + len(trace.response_body)
            + len(trace.response_sse)
            + len(trace.error_message)
            + (trace.nested_bytes if trace.mcp is not None or trace.agent is not None else 0)
        )
        if len(self._traces) >= self._capacity or self._bytes + size > self._max_bytes:
            self.counters.dropped["ring_full"] += n
            return
        self._traces.append(trace)
        # Remembered, so taking and shipping a batch never computes them again: span_count and
        # record_bytes sum ~7 fields each, and were evaluated 5 times per trace (callgrind,
        # in-process gateway with tracing: 271k → 265k instructions per request).
        self._spans.append(n)
        self._sizes.append(size)
        self._bytes += size
        self.counters.recorded += n
        before = self._pending_spans
        self._pending_spans = before + n
        if before < self._threshold <= before + n:
            self.wakeup.set()

    def pop_batch(self, max_spans: int | None = None, max_bytes: int | None = None) -> list[TraceRecord]:
        """Take whole traces, oldest first, up to ``max_spans`` spans and ``max_bytes`` bytes
        (at least one trace)."""
        return self.pop_batch_counted(max_spans, max_bytes)[0]

    def pop_batch_counted(
        self, max_spans: int | None = None, max_bytes: int | None = None
    ) -> tuple[list[TraceRecord], int]:
        """:meth:`pop_batch`, and the number of spans the traces taken stand for."""
        limit = self._threshold if max_spans is None else max_spans
        byte_limit = self._max_bytes if max_bytes is None else max_bytes
        traces, spans, sizes = self._traces, self._spans, self._sizes
        out: list[TraceRecord] = []
        taken = taken_bytes = 0
        while traces:
            n = spans[0]
            size = sizes[0]
            if out and (taken + n > limit or taken_bytes + size > byte_limit):
                break
            out.append(traces.popleft())
            spans.popleft()
            sizes.popleft()
            taken += n
            taken_bytes += size
        self._pending_spans -= taken
        self._bytes -= taken_bytes
        return out, taken

    def unpop(self, traces: list[TraceRecord]) -> None:
        """Put traces taken by :meth:`pop_batch` back at the front, in their order.

        Used when the sink could not deliver them. They were counted as recorded already, so
        they are never dropped here, even if new traces filled the ring meanwhile: the ring may
        exceed its bounds by one batch until the drainer takes them again."""
        spans = [t.span_count for t in traces]
        sizes = [record_bytes(t) for t in traces]  # what push remembered (the same function)
        self._traces.extendleft(reversed(traces))
        self._spans.extendleft(reversed(spans))
        self._sizes.extendleft(reversed(sizes))
        self._pending_spans += sum(spans)
        self._bytes += sum(sizes)

    @property
    def pending_spans(self) -> int:
        """Spans buffered and not yet taken by the drainer."""
        return self._pending_spans

    @property
    def pending_bytes(self) -> int:
        """Bytes buffered (:func:`record_bytes`) and not yet taken by the drainer."""
        return self._bytes

    @property
    def batch_ready(self) -> bool:
        """At least a full batch is buffered."""
        return self._pending_spans >= self._threshold

    def __len__(self) -> int:
        return len(self._traces)
