"""Micro-benchmarks of the telemetry hot path: µs per call, printed one per line.

Run: ``python -m bench.micro_telemetry``. Budget: recording a whole chat trace (one record that
stands for 4-5 spans) in a few microseconds; building the spans from it is the exporter's work.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import timeit
from collections.abc import Callable

from exporter import enrich
from gateway.telemetry import spans
from gateway.telemetry.expand import expand_batch, expand_trace
from gateway.telemetry.ring import TraceRing
from gateway.telemetry.wire import (
    SCHEMA_VERSION,
    AttemptRecord,
    Resource,
    TargetInfo,
    TraceBatch,
    TraceRecord,
    decode_batch,
    encode_batch,
)

BODY = (
    b'{"model":"chat-default","messages":[{"role":"system","content":"You are terse."},'
    b'{"role":"user","content":"Say hello in five words."}],"temperature":0.2,"max_tokens":64}'
)
RESPONSE = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how are you?"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":7,"total_tokens":27}}'
)
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


TARGET = TargetInfo("openai-main/gpt-4o", "openai", "gpt-4o", "api.openai.com", 443)


def chat_trace() -> TraceRecord:
    """A typical non-streamed chat completion as the handler records it (ids, clocks, record)."""
    trace_id, parent, flags = spans.parse_traceparent(TP) or (b"", b"", 1)
    root_id = spans.new_span_id()
    t0 = time.perf_counter_ns()
    offset = time.time_ns() - t0
    auth_start = time.perf_counter_ns()
    auth_end = resolved = time.perf_counter_ns()
    call_id = spans.new_span_id()
    spans.format_traceparent(trace_id, call_id, flags)  # forwarded upstream
    started = time.perf_counter_ns()
    attempts = [AttemptRecord(call_id, TARGET, "primary", started, time.perf_counter_ns(), 200)]
    return TraceRecord(
        trace_id, root_id, parent, offset, t0, time.perf_counter_ns(), "/v1/chat/completions", "chat",
        200, "", "", 0, "chat-default", False, BODY, auth_start, auth_end, resolved, "user:alice", {},
        ("chat-default-split",), (), tuple(attempts), started, 0, 0, 20, 7, 0.0001, RESPONSE, b"",
    )  # fmt: skip


def per_call_us(fn: Callable[[], object], number: int) -> float:
    """Best of 5 repeats, in µs per call."""
    # CPU time, not wall time: other processes on a shared machine then inflate the figures less.
    return min(timeit.repeat(fn, number=number, repeat=5, timer=time.process_time)) / number * 1e6


def main() -> None:
    record = chat_trace()
    pool = bytearray(os.urandom(4096))
    rng = random.Random()  # noqa: S311
    scratch: dict[str, int] = {}
    rows: list[tuple[str, Callable[[], object], int]] = [
        ("baseline: dict store (machine speed reference)", lambda: scratch.__setitem__("k", 1), 500_000),
        ("id: getrandbits(64).to_bytes (used)", spans.new_span_id, 200_000),
        ("id: os.urandom(8)", lambda: os.urandom(8), 200_000),
        ("id: pooled urandom slice", lambda: bytes(pool[8:16]), 200_000),
        ("id: random.Random().randbytes(8)", lambda: rng.randbytes(8), 200_000),
        ("traceparent parse", lambda: spans.parse_traceparent(TP), 200_000),
        ("chat trace record: ids, clocks, traceparent out, record", chat_trace, 100_000),
        ("exporter: record -> 4 spans with attributes", lambda: expand_trace(record), 50_000),
        ("request params view decode", lambda: enrich.decode_request_params(BODY), 100_000),
        ("response summary (non-stream body)", lambda: enrich.response_summary(RESPONSE), 100_000),
        ("input_short_hand", lambda: enrich.input_short_hand(BODY), 100_000),
    ]
    sse = [
        b'data: {"id":"c1","model":"gpt-4o","created":1,"choices":[{"index":0,"delta":{"content":"tok "}}]}\n\n'
    ] * 100 + [
        b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    ]
    rows.append(("assemble_stream (100 chunks)", lambda: enrich.assemble_stream(sse), 2_000))

    ring = TraceRing(1 << 30, 1 << 30)
    rows.append(("ring push (one trace)", lambda: ring.push(record), 500_000))
    batch = TraceBatch(SCHEMA_VERSION, Resource("tfy-llm-gateway", "0.1.0", "host-1"), [record] * 128)
    rows.append(("encode batch of 128 traces (512 spans)", lambda: encode_batch(batch), 500))
    data = encode_batch(batch)
    rows.append(("exporter: decode + expand that batch", lambda: expand_batch(decode_batch(data)), 100))

    asyncio.set_event_loop(asyncio.new_event_loop())  # TraceRing holds an asyncio.Event
    width = max(len(name) for name, _, _ in rows)
    base = 0.0
    for name, fn, number in rows:
        us = per_call_us(fn, number)
        base = base or us
        # The ratio to the baseline stays meaningful on a loaded or throttled machine.
        print(f"{name:<{width}}  {us:9.3f} µs  {us / base:8.1f}x baseline")
    print(f"{'encoded size of 128-trace batch':<{width}}  {len(data):9d} bytes")


if __name__ == "__main__":
    main()
