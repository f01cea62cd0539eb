"""Trace context, ids and payload-derived attributes (spans from records: test_expand.py)."""

from __future__ import annotations

import json

import msgspec
import pytest

from exporter import enrich
from gateway.telemetry import spans
from gateway.telemetry.expand import client_attributes
from gateway.telemetry.spans import format_traceparent, parse_traceparent
from gateway.telemetry.wire import AttemptRecord, TargetInfo

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


def test_format_round_trips() -> None:
    tid, sid = bytes(range(16)), bytes(range(8))
    assert parse_traceparent(format_traceparent(tid, sid)) == (tid, sid, 1)


def test_ids_unique_and_sized() -> None:
    trace_ids = {spans.new_trace_id() for _ in range(5000)}
    span_ids = {spans.new_span_id() for _ in range(5000)}
    assert len(trace_ids) == 5000 and len(span_ids) == 5000
    assert all(len(t) == 16 for t in trace_ids) and all(len(s) == 8 for s in span_ids)


def test_request_attributes() -> None:
    body = b'{"model":"gpt-4o","temperature":0.5,"max_tokens":10,"top_p":0.9,"seed":7,"stop":"END","stream":true,"messages":[]}'
    params = enrich.decode_request_params(body)
    assert params is not None
    target = TargetInfo("openai-main/gpt-4o", "openai", "gpt-4o", "api.openai.com", 443)
    attrs = client_attributes(AttemptRecord(b"s" * 8, target, "primary", 1, 2, 0), "chat", stream=True)
    attrs.update(enrich.request_param_attributes(params))
    assert attrs == {
        "openinference.span.kind": "LLM",
        "tfy.span_type": "ChatCompletion",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.request.stream": True,
        "server.address": "api.openai.com",
        "server.port": 443,
        "tfy.data_routing.destination": "openai-main/gpt-4o",
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.max_tokens": 10,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.seed": 7,
        "gen_ai.request.stop_sequences": ["END"],
    }
    embed = AttemptRecord(b"s" * 8, target, "primary", 1, 2, 200)
    assert client_attributes(embed, "embeddings", False)["gen_ai.operation.name"] == "embeddings"
    assert client_attributes(embed, "completions", False)["tfy.span_type"] == "Completion"
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


def test_format_traceparent_equals_the_formatted_version_for_every_flag() -> None:
    from gateway.telemetry.spans import format_traceparent

    trace_id, span_id = bytes(range(16)), bytes(range(8, 16))
    for flags in range(256):
        assert format_traceparent(trace_id, span_id, flags) == f"00-{trace_id.hex()}-{span_id.hex()}-{flags:02x}"
