"""Trace records as the request path makes them, for tests of the telemetry pipeline."""

from __future__ import annotations

from time import perf_counter_ns, time_ns
from typing import Any

from gateway.telemetry.spans import new_span_id, new_trace_id
from gateway.telemetry.wire import AttemptRecord, TargetInfo, TraceRecord

TARGET = TargetInfo("openai-main/gpt-4o", "openai", "gpt-4o", "127.0.0.1", 8000)


def chat_record(input_bytes: bytes = b'{"model":"m"}', **fields: Any) -> TraceRecord:
    """A successful non-streamed chat request: root, auth, model resolution, one attempt (4 spans).

    ``fields`` override any :class:`TraceRecord` field by name."""
    t0 = perf_counter_ns()
    values: dict[str, Any] = {
        "trace_id": new_trace_id(),
        "span_id": new_span_id(),
        "parent_id": b"",
        "epoch_offset": time_ns() - t0,
        "start_pc": t0,
        "end_pc": t0 + 5_000_000,
        "path": "/v1/chat/completions",
        "endpoint": "chat",
        "status": 200,
        "error_type": "",
        "error_message": "",
        "failed_phase": 0,
        "model": "openai-main/gpt-4o",
        "stream": False,
        "request_body": input_bytes,
        "auth_start_pc": t0 + 10_000,
        "auth_end_pc": t0 + 20_000,
        "resolved_pc": t0 + 30_000,
        "subject": "user:alice",
        "metadata": {},
        "lb_rule_ids": (),
        "rl_rule_ids": (),
        "attempts": (AttemptRecord(new_span_id(), TARGET, "primary", t0 + 40_000, t0 + 4_000_000, 200),),
        "first_chunk_pc": t0 + 4_000_000,
        "stream_start_pc": 0,
        "stream_end_pc": 0,
        "input_tokens": 3,
        "output_tokens": 5,
        "cost_usd": None,
        "response_body": b'{"id":"chatcmpl-1","choices":[]}',
        "response_sse": b"",
    }
    values.update(fields)
    return TraceRecord(**values)
