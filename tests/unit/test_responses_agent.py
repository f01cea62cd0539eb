"""AgentResponse spans from records, loop item events and approval rules (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.responses.agent import _Server
from gateway.responses.stream import ItemEvents
from gateway.telemetry.expand import expand_trace
from gateway.telemetry.wire import (
    SCHEMA_VERSION,
    AgentRecord,
    AttemptRecord,
    McpCallRecord,
    ModelCallRecord,
    TargetInfo,
    ToolCallRecord,
    TraceBatch,
    TraceRecord,
    decode_batch,
    encode_batch,
)

TARGET = TargetInfo("chat/gpt-4o", "openai", "gpt-4o", "127.0.0.1", 9)
BODY = json.dumps({"model": "chat/gpt-4o", "input": "call add", "tools": [{"type": "mcp", "server_label": "t"}]})


def _attempt(n: int, start: int, error: str = "") -> AttemptRecord:
    return AttemptRecord(bytes([n]) * 8, TARGET, "primary" if not error else "primary", start, start + 5,
                         502 if error else 200, error)  # fmt: skip


def _call(n: int, text: str) -> ModelCallRecord:
    request = json.dumps({"model": "chat/gpt-4o", "input": f"step {n}"}).encode()
    response = json.dumps({"id": f"r{n}", "object": "response", "status": "completed", "model": "gpt-4o",
                           "output": [{"type": "message", "role": "assistant",
                                       "content": [{"type": "output_text", "text": text}]}],
                           "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}}).encode()  # fmt: skip
    return ModelCallRecord((_attempt(n, 100 * n),), "chat_completions", request, response, 3, 2)


def _record(agent: AgentRecord | None) -> TraceRecord:
    return TraceRecord(
        b"t" * 16, b"s" * 8, b"", 1_000, 10, 2_000, "/v1/responses", "responses", 200, "", "", 0,
        "chat/gpt-4o", False, BODY.encode(), 20, 30, 40, "user:a", {}, (), (), (), 0, 0, 0, 6, 4, None,
        b'{"id":"resp_1","object":"response"}', b"", "responses", agent=agent,
    )  # fmt: skip


def _agent() -> AgentRecord:
    upstream = McpCallRecord(b"u" * 8, "t", "tools/call", "add", "1", 160, 170, 200, "", "", b"{}", b"{}", "h", 1)
    listing = McpCallRecord(b"l" * 8, "t", "tools/list", "", "0", 50, 60, 200)
    tool = ToolCallRecord(b"x" * 8, "t", "add", "mcp_1", 150, 180, b'{"a":1}', b'{"content":[]}', calls=(upstream,))
    return AgentRecord(b"a" * 8, "resp_1", "resp_0", 45, 1_900, (_call(1, "calling"), _call(2, "done")), (tool,),
                       (listing,), ("web_search",))  # fmt: skip


def test_agent_spans_layout_and_attributes() -> None:
    record = _record(_agent())
    spans = expand_trace(record)
    assert len(spans) == record.span_count
    by_name: dict[str, list[Any]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    root, agent = by_name["POST /v1/responses"][0], by_name["invoke_agent"][0]
    assert root.attributes["tfy.span_type"] == "AgentResponse"
    assert root.attributes["tfy.responses.dropped_tools"] == ["web_search"]
    assert not any(k.startswith("gen_ai.") for k in root.attributes)
    assert agent.parent_span_id == root.span_id and agent.span_id == b"a" * 8
    assert agent.attributes["gen_ai.conversation.id"] == "resp_0"
    assert agent.attributes["openinference.span.kind"] == "AGENT"
    under = [s.name for s in spans if s.parent_span_id == agent.span_id]
    assert under == ["tools/list", "chat gpt-4o", "execute_tool add", "chat gpt-4o"]  # by start time
    first, last = by_name["chat gpt-4o"]
    assert first.attributes["openai.api.type"] == "chat_completions"
    assert "step 1" in first.attributes["gen_ai.input.messages"]
    assert json.loads(last.attributes["gen_ai.output.messages"])[0]["parts"][0]["content"] == "done"
    assert first.attributes["gen_ai.usage.input_tokens"] == 3
    tool = by_name["execute_tool add"][0]
    assert tool.attributes["gen_ai.tool.call.id"] == "mcp_1" and tool.attributes["tfy.mcp.server"] == "t"
    assert [s.parent_span_id for s in by_name["tools/call add"]] == [tool.span_id]


def test_agent_record_survives_the_wire() -> None:
    from gateway.telemetry.wire import Resource

    batch = TraceBatch(SCHEMA_VERSION, Resource("gw", "1", "i"), [_record(_agent())])
    back = decode_batch(encode_batch(batch)).traces[0]
    assert back.agent is not None and back.agent.tool_calls[0].calls[0].target == "add"
    assert back.span_count == _record(_agent()).span_count


def test_refused_before_the_agent_started() -> None:
    spans = expand_trace(_record(AgentRecord(b"a" * 8, "", "", 0, 0)))
    assert "invoke_agent" not in [s.name for s in spans]
    assert spans[0].attributes["tfy.span_type"] == "AgentResponse"


@pytest.mark.parametrize(
    ("rule", "tool", "needed"),
    [
        ("never", "add", False),
        ("always", "add", True),
        (None, "add", True),  # OpenAI's default
        ({"never": {"tool_names": ["add"]}}, "add", False),
        ({"never": {"tool_names": ["add"]}}, "echo", True),
        ({"always": {"tool_names": ["echo"]}, "never": {"tool_names": ["echo", "add"]}}, "echo", True),
    ],
)
def test_require_approval_rules(rule: Any, tool: str, needed: bool) -> None:
    spec: dict[str, Any] = {"type": "mcp", "server_label": "s"}
    if rule is not None:
        spec["require_approval"] = rule
    assert _Server(spec, 0).needs_approval(tool) is needed


def test_allowed_tools_patterns() -> None:
    server = _Server({"type": "mcp", "server_label": "s", "allowed_tools": {"tool_names": ["get_*"]}}, 0)
    assert server.offers("get_issue") and not server.offers("delete_repo")
    assert _Server({"type": "mcp", "server_label": "s"}, 0).offers("anything")


def test_item_events_are_numbered_and_complete() -> None:
    events = ItemEvents({"id": "resp_1", "status": "in_progress", "output": []})
    data = events.opening()
    data += events.item({"id": "mcpl_1", "type": "mcp_list_tools", "server_label": "s", "tools": [{"name": "add"}]})
    data += events.item({"id": "mcp_1", "type": "mcp_call", "server_label": "s", "name": "add", "arguments": "{}",
                         "output": None, "error": {"type": "mcp_protocol_error", "code": -1, "message": "x"}})  # fmt: skip
    data += events.item({"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                         "content": [{"type": "output_text", "text": "hi", "annotations": []}]})  # fmt: skip
    data += events.terminal({"id": "resp_1", "status": "incomplete"})
    parsed = [json.loads(b.split(b"data: ", 1)[1]) for b in data.split(b"\n\n") if b]
    assert [e["sequence_number"] for e in parsed] == list(range(len(parsed)))
    kinds = [e["type"] for e in parsed]
    assert kinds == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed",
        "response.output_item.done",
        "response.output_item.added", "response.mcp_call_arguments.delta", "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress", "response.mcp_call.failed", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.incomplete",
    ]  # fmt: skip
    assert [e["output_index"] for e in parsed if e["type"] == "response.output_item.done"] == [0, 1, 2]
