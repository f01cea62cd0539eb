"""The bounded trace ring: O(1) push, drop-and-count, threshold wake-up."""

from __future__ import annotations

import asyncio

import pytest

from gateway.telemetry.ring import TraceRing
from gateway.telemetry.wire import AttemptRecord, TraceRecord
from tests.records import TARGET, chat_record


def _trace(n: int) -> TraceRecord:
    """A record standing for ``n`` spans: the root and ``n - 1`` upstream attempts."""
    attempt = AttemptRecord(b"a" * 8, TARGET, "retry", 1, 2, 503)
    return chat_record(auth_start_pc=0, auth_end_pc=0, resolved_pc=0, attempts=(attempt,) * (n - 1))


def test_bounded_drops_and_counts() -> None:
    ring = TraceRing(capacity=3, batch_max_spans=100)
    for _ in range(5):
        ring.push(_trace(2))
    assert len(ring) == 3
    assert ring.counters.recorded == 6
    assert ring.counters.dropped["ring_full"] == 4
    assert ring.pending_spans == 6


def test_pop_batch_takes_whole_traces_up_to_limit() -> None:
    ring = TraceRing(capacity=10, batch_max_spans=5)
    for n in (2, 2, 2, 7):
        ring.push(_trace(n))
    assert [t.span_count for t in ring.pop_batch()] == [2, 2]  # a third trace would exceed 5
    assert [t.span_count for t in ring.pop_batch()] == [2]
    assert [t.span_count for t in ring.pop_batch()] == [7]  # one trace larger than a batch still goes, alone
    assert ring.pop_batch() == [] and ring.pending_spans == 0
    # space freed by popping is usable again
    ring.push(_trace(1))
    assert len(ring) == 1


def test_wakeup_set_only_on_threshold_crossing() -> None:
    ring = TraceRing(capacity=100, batch_max_spans=5)
    ring.push(_trace(2))
    ring.push(_trace(2))
    assert not ring.wakeup.is_set() and not ring.batch_ready
    ring.push(_trace(2))  # 4 -> 6 crosses 5
    assert ring.wakeup.is_set() and ring.batch_ready
    ring.wakeup.clear()
    ring.push(_trace(2))  # already above: no new set
    assert not ring.wakeup.is_set()
    ring.pop_batch(100)
    ring.push(_trace(5))  # 0 -> 5 crosses again
    assert ring.wakeup.is_set()


async def test_threshold_wakes_a_waiter() -> None:
    ring = TraceRing(capacity=100, batch_max_spans=3)
    waiter = asyncio.create_task(ring.wakeup.wait())
    await asyncio.sleep(0)
    ring.push(_trace(1))
    await asyncio.sleep(0)
    assert not waiter.done()
    ring.push(_trace(2))
    await asyncio.wait_for(waiter, 1.0)


def test_rejects_nonsense_sizes() -> None:
    with pytest.raises(ValueError):
        TraceRing(0, 5)


def test_bounded_in_bytes_and_unpop_keeps_order() -> None:
    from gateway.telemetry.ring import RECORD_OVERHEAD_BYTES, record_bytes

    big = chat_record(b"x" * 10_000)
    size = record_bytes(big)
    assert size == RECORD_OVERHEAD_BYTES + 10_000 + len(big.response_body)
    ring = TraceRing(capacity=1000, batch_max_spans=100, max_bytes=3 * size + 10)
    traces = [chat_record(b"x" * 10_000) for _ in range(5)]
    for t in traces:
        ring.push(t)
    assert len(ring) == 3 and ring.counters.dropped["ring_full"] == 8
    assert ring.pending_bytes == 3 * size
    taken = ring.pop_batch(100, max_bytes=2 * size)  # the byte limit stops it after two
    assert taken == traces[:2] and ring.pending_bytes == size
    ring.unpop(taken)  # not delivered: back in front, in order, even past the bounds
    assert ring.pop_batch(100, max_bytes=10 * size) == traces[:3]
    assert ring.pending_bytes == 0 and ring.pending_spans == 0


def test_remembered_counts_equal_the_records_own() -> None:
    """push remembers each trace's span count and size; what pop_batch_counted and the byte
    bound use must be exactly span_count and record_bytes, nested MCP bodies included."""
    from gateway.telemetry.ring import record_bytes
    from gateway.telemetry.wire import McpCallRecord, McpRecord

    call = McpCallRecord(
        b"c" * 8, "srv", "tools/call", "t", "1", 1, 2, 200, arguments=b"a" * 500, result=b"r" * 700
    )
    mcp = chat_record(
        mcp=McpRecord("srv", "POST", "tools/call", "t", "1", "", "2025-06-18", calls=(call, call))
    )
    traces = [_trace(1), mcp, chat_record(b"x" * 3000), _trace(4), mcp]
    ring = TraceRing(capacity=100, batch_max_spans=1000)
    for t in traces:
        ring.push(t)
    assert ring.pending_spans == sum(t.span_count for t in traces) == ring.counters.recorded
    assert ring.pending_bytes == sum(record_bytes(t) for t in traces)
    taken, spans = ring.pop_batch_counted(traces[0].span_count + traces[1].span_count + 1)
    assert taken == traces[:2] and spans == sum(t.span_count for t in taken)
    assert ring.pending_bytes == sum(record_bytes(t) for t in traces[2:])
    ring.unpop(taken)
    assert ring.pending_bytes == sum(record_bytes(t) for t in traces)
    taken, spans = ring.pop_batch_counted(1000, 1 << 40)
    assert taken == traces and spans == sum(t.span_count for t in traces)
    assert ring.pending_bytes == 0 and ring.pending_spans == 0
