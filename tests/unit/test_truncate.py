"""Cutting a trace's bodies so it fits one NATS message: pure functions, no broker."""

from __future__ import annotations

import msgspec

from gateway.telemetry.drain import make_resource
from gateway.telemetry.truncate import fit_trace, truncate_json, truncate_sse, truncate_text
from gateway.telemetry.wire import SCHEMA_VERSION, TraceBatch, encode_batch
from tests.records import chat_record


def test_text_is_cut_on_a_character_boundary_and_marked() -> None:
    data = ("é" * 1000).encode()  # two bytes per character
    cut = truncate_text(data, 101)
    assert len(cut) <= 101 and cut.endswith(b"bytes]")
    cut.decode()  # never half a character
    assert truncate_text(b"short", 100) == b"short"


def test_json_stays_valid_and_keeps_its_small_fields() -> None:
    image = "data:image/png;base64," + "A" * 200_000
    body = msgspec.json.encode(
        {
            "model": "gpt-4o",
            "temperature": 0.2,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": image}}]}
            ],
        }
    )
    cut = truncate_json(body, 4096)
    assert len(cut) <= 4096
    doc = msgspec.json.decode(cut)
    assert doc["model"] == "gpt-4o" and doc["temperature"] == 0.2
    parts = doc["messages"][0]["content"]
    assert parts[0]["text"] == "hi"
    assert parts[1]["image_url"]["url"].startswith("data:image/png") and "[truncated " in parts[1]["image_url"]["url"]


def test_not_json_falls_back_to_a_prefix() -> None:
    cut = truncate_json(b"{not json" + b"x" * 10_000, 1000)
    assert len(cut) <= 1000 and cut.startswith(b"{not json")


def test_sse_keeps_first_and_last_events() -> None:
    events = [f'data: {{"i": {i}, "pad": "{"p" * 100}"}}\n\n'.encode() for i in range(200)]
    events.append(b"data: [DONE]\n\n")
    body = b"".join(events)
    cut = truncate_sse(body, 2000)
    assert len(cut) <= 2000
    assert cut.startswith(events[0]) and cut.endswith(b"data: [DONE]\n\n")
    assert b": truncated " in cut


def test_fit_trace_keeps_ids_and_span_count() -> None:
    resource = make_resource("s")
    prompt = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * 3_000_000 + b'"}]}'
    trace = chat_record(prompt, response_body=b'{"id":"r","choices":[],"usage":{"prompt_tokens":1}}')
    fitted = fit_trace(trace, resource, 1024 * 1024)
    assert fitted is not None
    assert len(encode_batch(TraceBatch(SCHEMA_VERSION, resource, [fitted]))) <= 1024 * 1024
    assert fitted.trace_id == trace.trace_id and fitted.span_count == trace.span_count
    assert msgspec.json.decode(fitted.request_body)["model"] == "m"
    assert fitted.response_body == trace.response_body  # small bodies are not cut
    small = chat_record(b"{}")
    assert fit_trace(small, resource, 1024 * 1024) is small


def test_fit_trace_gives_up_when_ids_alone_are_too_large() -> None:
    trace = chat_record(b"{}", metadata={"k": "v" * 5000})
    assert fit_trace(trace, make_resource("s"), 2048) is None


def test_fit_trace_cuts_agent_and_mcp_bodies_too() -> None:
    from gateway.telemetry.ring import record_bytes
    from gateway.telemetry.spans import new_span_id
    from gateway.telemetry.wire import AgentRecord, McpCallRecord, McpRecord, ModelCallRecord, ToolCallRecord

    big = msgspec.json.encode({"content": [{"type": "text", "text": "x" * 1_500_000}]})
    call = McpCallRecord(new_span_id(), "docs", "tools/call", "search", "1", 1, 2, 200, arguments=b"{}", result=big)
    agent = AgentRecord(
        new_span_id(), "resp_1", "resp_1", 1, 2,
        model_calls=(ModelCallRecord((), "chat_completions", big, b"{}"),),
        tool_calls=(ToolCallRecord(new_span_id(), "docs", "search", "mcp_1", 1, 2, b"{}", big, calls=(call,)),),
    )  # fmt: skip
    trace = chat_record(agent=agent)
    assert record_bytes(trace) > 4_000_000  # the ring's byte bound sees the nested bodies
    resource = make_resource("test", {})
    fitted = fit_trace(trace, resource, 1024 * 1024)
    assert fitted is not None and fitted.agent is not None
    assert fitted.span_count == trace.span_count
    assert len(encode_batch(TraceBatch(SCHEMA_VERSION, resource, [fitted]))) <= 1024 * 1024
    msgspec.json.decode(fitted.agent.tool_calls[0].result)  # still valid JSON
    mcp_trace = chat_record(mcp=McpRecord("docs", "POST", "tools/call", "search", "1", "", "2025-06-18", (call,)))
    fitted_mcp = fit_trace(mcp_trace, resource, 1024 * 1024)
    assert fitted_mcp is not None and fitted_mcp.mcp is not None
    assert len(fitted_mcp.mcp.calls[0].result) < len(big)
