"""Micro-benchmarks of the telemetry hot path: µs per call, printed one per line.

Run: ``python -m bench.micro_telemetry``. Budget: recording a whole chat trace (4-5 spans) in
single-digit microseconds.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import timeit
from collections.abc import Callable

from exporter import enrich
from gateway.telemetry import payloads, spans
from gateway.telemetry.ring import TraceRing
from gateway.telemetry.spans import SPAN_KIND_CLIENT, RequestTrace
from gateway.telemetry.wire import SCHEMA_VERSION, Resource, SpanBatch, encode_batch

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


def chat_trace() -> list[spans.Span]:
    """The spans of a typical non-streamed chat completion, as the handler records them."""
    t = RequestTrace.start("POST", "/v1/chat/completions", TP)
    a = t.child("auth")
    a.end()
    r = t.child("model resolution")
    r.set(spans.TFY_LB_RULE_IDS, ["chat-default-split"])
    r.end()
    c = t.child("chat gpt-4o", SPAN_KIND_CLIENT)
    t.traceparent_for(c)
    c.update(
        payloads.llm_request_attributes(
            "chat", "openai", "gpt-4o", server_address="api.openai.com", server_port=443
        )
    )
    c.set(spans.HTTP_STATUS, 200)
    c.end()
    # One dict update rather than one call per attribute: the idiom for the handler.
    t.root.update(
        {
            spans.TFY_SPAN_TYPE: "ChatCompletion",
            spans.TFY_INPUT: BODY,
            spans.TFY_OUTPUT: RESPONSE,
            spans.TFY_DESTINATION: "openai-main/gpt-4o",
            spans.TFY_SUBJECT: "user:alice",
            spans.TFY_LATENCY_MS: c.duration_ms,
        }
    )
    return t.finish(200)


def bare_trace() -> list[spans.Span]:
    """Root + 3 children, ended and finished, no payload attributes: the fixed cost."""
    t = RequestTrace.start("POST", "/v1/chat/completions")
    t.child("auth").end()
    t.child("model resolution").end()
    t.child("chat gpt-4o", SPAN_KIND_CLIENT).end()
    return t.finish(200)


def per_call_us(fn: Callable[[], object], number: int) -> float:
    """Best of 5 repeats, in µs per call."""
    # CPU time, not wall time: other processes on a shared machine then inflate the figures less.
    return min(timeit.repeat(fn, number=number, repeat=5, timer=time.process_time)) / number * 1e6


def main() -> None:
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
        (
            "new trace context (RequestTrace.start, no parent)",
            lambda: RequestTrace.start("POST", "/v1/x"),
            200_000,
        ),
        ("new trace context (with traceparent)", lambda: RequestTrace.start("POST", "/v1/x", TP), 200_000),
        ("bare trace: 4 spans, no attributes, finish", bare_trace, 50_000),
        ("chat trace: 4 spans + 15 attributes + traceparent out, finish", chat_trace, 50_000),
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

    trace = chat_trace()
    ring = TraceRing(1 << 30, 1 << 30)
    rows.append(("ring push (one trace)", lambda: ring.push(trace), 500_000))
    batch_spans = (trace * 128)[:512]
    batch = SpanBatch(SCHEMA_VERSION, Resource("tfy-llm-gateway", "0.1.0", "host-1"), batch_spans)
    rows.append(("encode batch of 512 spans", lambda: encode_batch(batch), 500))

    asyncio.set_event_loop(asyncio.new_event_loop())  # TraceRing holds an asyncio.Event
    width = max(len(name) for name, _, _ in rows)
    base = 0.0
    for name, fn, number in rows:
        us = per_call_us(fn, number)
        base = base or us
        # The ratio to the baseline stays meaningful on a loaded or throttled machine.
        print(f"{name:<{width}}  {us:9.3f} µs  {us / base:8.1f}x baseline")
    print(f"{'encoded size of 512-span batch':<{width}}  {len(encode_batch(batch)):9d} bytes")


if __name__ == "__main__":
    main()
