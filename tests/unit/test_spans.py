"""Trace context, span records and payload-derived attributes."""

from __future__ import annotations

import json

import msgspec
import pytest

from exporter import enrich
from gateway.telemetry import payloads, spans
from gateway.telemetry.spans import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_INTERNAL,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    STATUS_UNSET,
    RequestTrace,
    format_traceparent,
    parse_traceparent,
)
from gateway.telemetry.wire import SCHEMA_VERSION, Resource, SpanBatch, decode_batch, encode_batch

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_parse_valid_traceparent() -> None:
    trace_id, parent, flags = parse_traceparent(TP)  # type: ignore[misc]
    assert trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parent.hex() == "00f067aa0ba902b7"
    assert flags == 1
    assert parse_traceparent(TP.encode()) == parse_traceparent(TP)
    assert parse_traceparent(f"  {TP} ") is not None


def test_future_version_may_carry_extra_fields() -> None:
    assert parse_traceparent("cc" + TP[2:] + "-what-ever") is not None
    assert parse_traceparent(TP + "-extra") is None  # version 00 must be exactly 55 chars


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        TP.upper(),
        "ff" + TP[2:],
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",
        TP[:-1],
        TP.replace("-", "_"),
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf9 f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"\xff\xfe",
        "x" * 10_000,
    ],
)
def test_invalid_traceparent_is_none(value: str | bytes | None) -> None:
    assert parse_traceparent(value) is None


def test_invalid_traceparent_starts_a_new_trace() -> None:
    trace = RequestTrace.start("POST", "/v1/chat/completions", "nonsense")
    assert len(trace.trace_id) == 16 and trace.remote_parent_id == b""
    spans_ = trace.finish(200)
    assert spans_[0].parent_span_id == b""


def test_format_round_trips() -> None:
    tid, sid = bytes(range(16)), bytes(range(8))
    assert parse_traceparent(format_traceparent(tid, sid)) == (tid, sid, 1)


def test_ids_unique_and_sized() -> None:
    trace_ids = {spans.new_trace_id() for _ in range(5000)}
    span_ids = {spans.new_span_id() for _ in range(5000)}
    assert len(trace_ids) == 5000 and len(span_ids) == 5000
    assert all(len(t) == 16 for t in trace_ids) and all(len(s) == 8 for s in span_ids)


def test_parent_child_links_and_remote_parent() -> None:
    trace = RequestTrace.start("POST", "/v1/chat/completions", TP)
    auth = trace.child("auth")
    auth.end()
    call = trace.child("chat gpt-4o", SPAN_KIND_CLIENT)
    forwarded = parse_traceparent(trace.traceparent_for(call))
    assert forwarded == (trace.trace_id, call.span_id, 1)
    nested = trace.child("stream", parent=call)
    out = trace.finish(200)
    by_name = {s.name: s for s in out}
    root = by_name["POST /v1/chat/completions"]
    assert root.kind == SPAN_KIND_SERVER
    assert root.parent_span_id.hex() == "00f067aa0ba902b7"
    assert trace.trace_id_hex == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert {s.trace_id for s in out} == {trace.trace_id}
    assert by_name["auth"].parent_span_id == root.span_id
    assert by_name["auth"].kind == SPAN_KIND_INTERNAL
    assert by_name["chat gpt-4o"].kind == SPAN_KIND_CLIENT
    assert by_name["stream"].parent_span_id == nested.parent_id == call.span_id
    assert len({s.span_id for s in out}) == len(out) == 4
    for s in out:
        assert root.start_ns <= s.start_ns <= s.end_ns <= root.end_ns
    assert root.attributes == {
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "http.response.status_code": 200,
    }
    assert root.status_code == STATUS_UNSET


def test_end_is_idempotent_and_open_spans_end_at_finish() -> None:
    trace = RequestTrace.start("POST", "/v1/embeddings")
    a = trace.child("auth")
    a.end()
    first = a.end_pc
    a.end()
    assert a.end_pc == first
    trace.child("never ended")
    out = trace.finish(200)
    assert out[2].end_ns == out[0].end_ns


def test_errors_mark_status() -> None:
    trace = RequestTrace.start("POST", "/v1/chat/completions")
    call = trace.child("chat gpt-4o", SPAN_KIND_CLIENT)
    call.fail("UpstreamTimeout", "provider timed out")
    call.end()
    out = trace.finish(502)
    assert out[1].status_code == STATUS_ERROR
    assert out[1].status_message == "provider timed out"
    assert out[1].attributes["error.type"] == "UpstreamTimeout"
    assert out[1].attributes["tfy.error_message"] == "provider timed out"
    assert out[0].status_code == STATUS_ERROR and out[0].attributes["error.type"] == "502"
    # 4xx is the client's error: the server span stays UNSET unless told otherwise
    assert RequestTrace.start("GET", "/x").finish(404)[0].status_code == STATUS_UNSET
    explicit = RequestTrace.start("GET", "/x").finish(429, "RateLimited", "limit reached")[0]
    assert explicit.status_code == STATUS_ERROR and explicit.attributes["error.type"] == "RateLimited"


def test_spans_encode_on_the_wire_with_bytes_input() -> None:
    trace = RequestTrace.start("POST", "/v1/chat/completions")
    trace.root.set(spans.TFY_INPUT, b'{"model":"m"}')
    trace.root.set("ignored", None)
    batch = SpanBatch(SCHEMA_VERSION, Resource("svc", "1", "h-1"), trace.finish(200))
    back = decode_batch(encode_batch(batch))
    assert back.spans[0].attributes["tfy.input"] == b'{"model":"m"}'
    assert "ignored" not in back.spans[0].attributes


# --- payload attributes ---------------------------------------------------------------------


def test_request_attributes() -> None:
    body = b'{"model":"gpt-4o","temperature":0.5,"max_tokens":10,"top_p":0.9,"seed":7,"stop":"END","stream":true,"messages":[]}'
    params = enrich.decode_request_params(body)
    assert params is not None
    attrs = payloads.llm_request_attributes(
        "chat",
        "openai",
        "gpt-4o",
        stream=True,
        server_address="api.openai.com",
        server_port=443,
    )
    attrs.update(enrich.request_param_attributes(params))
    assert attrs == {
        "tfy.span_type": "ChatCompletion",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.request.stream": True,
        "server.address": "api.openai.com",
        "server.port": 443,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.max_tokens": 10,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.seed": 7,
        "gen_ai.request.stop_sequences": ["END"],
    }
    assert (
        payloads.llm_request_attributes("embeddings", "openai", "e")["gen_ai.operation.name"] == "embeddings"
    )
    assert payloads.llm_request_attributes("completions", "openai", "c")["tfy.span_type"] == "Completion"
    assert enrich.decode_request_params(b"not json") is None


def test_input_short_hand_flags_and_truncation() -> None:
    long_text = "x" * 500
    body = json.dumps(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:..."}},
                        {"type": "input_audio", "input_audio": {"data": "...", "format": "wav"}},
                    ],
                },
                {"role": "assistant", "content": None, "tool_calls": []},
                {"role": "user", "content": long_text},
            ],
        }
    ).encode()
    sh = json.loads(enrich.input_short_hand(body))
    assert sh["role"] == "user" and sh["messages"] == 4
    assert len(sh["content"]) == 200 and sh["content"].endswith("…")
    assert sh["has_image"] is True and sh["has_audio"] is True and sh["has_file"] is False
    file_body = b'{"messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"f"}},{"type":"text","text":"sum it"}]}]}'
    sh = json.loads(enrich.input_short_hand(file_body))
    assert sh["content"] == "sum it" and sh["has_file"] is True and sh["has_image"] is False
    assert json.loads(enrich.input_short_hand(b'{"input":"embed me"}'))["content"] == "embed me"
    assert json.loads(enrich.input_short_hand(b"]]garbage"))["has_file"] is False


def test_response_summary() -> None:
    body = b'{"id":"r1","model":"gpt-4o-2024","choices":[{"finish_reason":"stop"},{"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}'
    s = enrich.response_summary(body)
    assert enrich.response_attributes(s) == {
        "gen_ai.response.id": "r1",
        "gen_ai.response.model": "gpt-4o-2024",
        "gen_ai.response.finish_reasons": ["stop", "length"],
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 4,
    }
    assert enrich.response_attributes(enrich.response_summary(b"{")) == {}


def _sse(*events: dict) -> list[bytes]:
    raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    # cut at arbitrary places, as the network does
    return [raw[i : i + 37] for i in range(0, len(raw), 37)]


def test_assemble_stream_content_and_usage() -> None:
    base = {"id": "c1", "model": "gpt-4o", "created": 5, "object": "chat.completion.chunk"}
    chunks = _sse(
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}},
    )
    body, summary = enrich.assemble_stream(chunks)
    doc = json.loads(body)
    assert doc["object"] == "chat.completion" and doc["id"] == "c1" and doc["model"] == "gpt-4o"
    assert doc["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}
    ]
    assert doc["usage"] == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    assert summary.finish_reasons == ["stop"] and summary.input_tokens == 9 and summary.output_tokens == 2


def test_assemble_stream_tool_calls() -> None:
    base = {"id": "c2", "model": "gpt-4o", "created": 5}
    chunks = _sse(
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_a",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ],
                    },
                }
            ],
        },
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}}
            ],
        },
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 1,
                                "id": "call_b",
                                "type": "function",
                                "function": {"name": "get_time", "arguments": "{}"},
                            }
                        ]
                    },
                }
            ],
        },
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}}
            ],
        },
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    )
    chunks.insert(0, b"data: {broken json\n\n: comment line\n\n")
    body, summary = enrich.assemble_stream(chunks)
    msg = json.loads(body)["choices"][0]
    assert msg["finish_reason"] == "tool_calls"
    assert msg["message"]["content"] is None
    assert msg["message"]["tool_calls"] == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        },
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    assert summary.finish_reasons == ["tool_calls"] and summary.id == "c2"
    assert "usage" not in json.loads(body)


def test_assemble_legacy_completion_stream() -> None:
    chunks = _sse(
        {"id": "t", "model": "m", "choices": [{"index": 0, "text": "a"}]},
        {"id": "t", "model": "m", "choices": [{"index": 0, "text": "b", "finish_reason": "length"}]},
    )
    doc = msgspec.json.decode(enrich.assemble_stream(chunks)[0])
    assert doc["object"] == "text_completion"
    assert doc["choices"] == [{"index": 0, "text": "ab", "finish_reason": "length"}]


def test_assemble_empty_stream() -> None:
    body, summary = enrich.assemble_stream([])
    assert json.loads(body)["choices"] == [] and summary.finish_reasons == []


def test_assemble_stream_usage_override() -> None:
    chunks = _sse(
        {
            "id": "u",
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}],
        }
    )
    body, summary = enrich.assemble_stream(chunks, usage=(5, 1))
    assert json.loads(body)["usage"] == {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    assert (summary.input_tokens, summary.output_tokens) == (5, 1)


def test_timing_attributes() -> None:
    trace = RequestTrace.start("POST", "/v1/chat/completions")
    call = trace.child("chat m", SPAN_KIND_CLIENT)
    first = call.start_pc + 25_000_000
    call.end_pc = call.start_pc + 100_000_000
    attrs = payloads.timing_attributes(call, first)
    assert attrs == {
        "tfy.model.metric.latency_in_ms": 100.0,
        "tfy.model.metric.time_to_first_token_in_ms": 25.0,
        "gen_ai.response.time_to_first_chunk": 0.025,
    }
    assert payloads.timing_attributes(call) == {"tfy.model.metric.latency_in_ms": 100.0}
