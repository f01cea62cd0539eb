"""Responses requests → ``AgentResponse`` traces; pure, run by the exporter.

    POST /v1/responses              SERVER    tfy.span_type AgentResponse; tfy.* only
    ├── auth                        INTERNAL
    ├── model resolution            INTERNAL
    ├── invoke_agent                INTERNAL  openinference AGENT, gen_ai.operation.name
    │   │                                     invoke_agent, gen_ai.conversation.id
    │   ├── tools/list              CLIENT    MCP messages listing a server's tools
    │   ├── chat gpt-4o             CLIENT    one per model-call attempt (openai.api.type, GenAI
    │   │                                     content of that call: its input and its output)
    │   ├── execute_tool add        INTERNAL  openinference TOOL, gen_ai.tool.*, MCP attributes
    │   │   └── tools/call add      CLIENT    the upstream JSON-RPC messages of that call
    │   └── chat gpt-4o             CLIENT    the next model call …
    └── stream                      INTERNAL  relaying the events to the client

Model calls carry the GenAI content attributes of their own request and response (Responses
shape: the gateway's view of each call, whatever API the target spoke), so ``exporter.enrich``
leaves an AgentResponse trace's CLIENT spans alone.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from gateway.telemetry import genai
from gateway.telemetry.expand import client_attributes, expand_trace
from gateway.telemetry.expand_mcp import (
    GEN_AI_TOOL_ARGUMENTS,
    GEN_AI_TOOL_NAME,
    GEN_AI_TOOL_RESULT,
    MCP_METHOD,
    TFY_MCP_SERVER,
    call_span,
)
from gateway.telemetry.spans import (
    ERROR_TYPE,
    GEN_AI_CONTENT,
    GEN_AI_INPUT_TOKENS,
    GEN_AI_OPERATION,
    GEN_AI_OUTPUT_TOKENS,
    LOGFIRE_JSON_SCHEMA,
    OPENINFERENCE_SPAN_KIND,
    TFY_DESTINATION,
    TFY_ERROR_MESSAGE,
    TFY_PROVIDER,
    TFY_SPAN_TYPE,
)
from gateway.telemetry.wire import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_INTERNAL,
    STATUS_ERROR,
    STATUS_UNSET,
    AgentRecord,
    AttemptRecord,
    ModelCallRecord,
    Span,
    ToolCallRecord,
    TraceRecord,
)

__all__ = ["expand_agent_trace"]

SPAN_TYPE: Final = "AgentResponse"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE: Final = "gen_ai.tool.type"
OPENAI_API_TYPE: Final = "openai.api.type"
TFY_RESPONSE_ID: Final = "tfy.response.id"
TFY_DROPPED_TOOLS: Final = "tfy.responses.dropped_tools"


def _served(attempts: tuple[AttemptRecord, ...]) -> AttemptRecord | None:
    for attempt in reversed(attempts):
        if not attempt.error_type:
            return attempt
    return None


def _model_call_spans(t: TraceRecord, call: ModelCallRecord, parent: bytes) -> list[Span]:
    """One CLIENT span per attempt; the one that answered carries the call's output and usage."""
    request = call.request_body or t.request_body
    response = call.response_body or t.response_body
    served = _served(call.attempts)
    input_attrs = genai.content_attributes(genai.request_content("responses", request)) if request else {}
    output_attrs: dict[str, Any] = {}
    if served is not None and response:
        output_attrs = genai.model_call_attributes("responses", request, response_body=response)
    spans = []
    for attempt in call.attempts:
        attrs = client_attributes(attempt, "chat", t.stream)
        attrs[TFY_SPAN_TYPE] = "ChatCompletion"
        attrs[OPENAI_API_TYPE] = call.api if attempt is served else "responses"
        attrs.update(output_attrs if attempt is served else input_attrs)
        if attempt is served and call.input_tokens >= 0:
            attrs[GEN_AI_INPUT_TOKENS] = call.input_tokens
            attrs[GEN_AI_OUTPUT_TOKENS] = call.output_tokens
        keys = tuple(k for k in GEN_AI_CONTENT if k in attrs)
        if keys:
            attrs[LOGFIRE_JSON_SCHEMA] = genai.json_schema(keys)
        spans.append(
            Span(
                t.trace_id, attempt.span_id, parent, f"chat {attempt.target.upstream_model}", SPAN_KIND_CLIENT,
                attempt.start_pc + t.epoch_offset, (attempt.end_pc or t.end_pc) + t.epoch_offset,
                STATUS_ERROR if attempt.error_type else STATUS_UNSET, attempt.error_message, attrs,
            )
        )  # fmt: skip
    return spans


def _tool_spans(t: TraceRecord, call: ToolCallRecord, parent: bytes) -> list[Span]:
    """The ``execute_tool`` span of one MCP tool call and its upstream messages under it."""
    attrs: dict[str, Any] = {
        OPENINFERENCE_SPAN_KIND: "TOOL",
        GEN_AI_OPERATION: "execute_tool",
        GEN_AI_TOOL_NAME: call.tool,
        GEN_AI_TOOL_TYPE: "extension",  # semconv: a tool the agent runs outside the model
        GEN_AI_TOOL_CALL_ID: call.call_id,
        MCP_METHOD: "tools/call",
        TFY_MCP_SERVER: call.server,
    }
    if call.arguments:
        attrs[GEN_AI_TOOL_ARGUMENTS] = call.arguments
    if call.result:
        attrs[GEN_AI_TOOL_RESULT] = call.result
    status = STATUS_UNSET
    if call.error_type:
        status = STATUS_ERROR
        attrs[ERROR_TYPE] = call.error_type
        if call.error_message:
            attrs[TFY_ERROR_MESSAGE] = call.error_message
    offset = t.epoch_offset
    spans = [
        Span(
            t.trace_id, call.span_id, parent, f"execute_tool {call.tool}", SPAN_KIND_INTERNAL,
            call.start_pc + offset, (call.end_pc or t.end_pc) + offset, status, call.error_message, attrs,
        )
    ]  # fmt: skip
    spans.extend(
        call_span(c, t.trace_id, call.span_id, offset, t.end_pc, subject=t.subject) for c in call.calls
    )
    return spans


def _agent_span(t: TraceRecord, agent: AgentRecord) -> Span:
    attrs: dict[str, Any] = {
        OPENINFERENCE_SPAN_KIND: "AGENT",
        GEN_AI_OPERATION: "invoke_agent",
        TFY_SPAN_TYPE: SPAN_TYPE,
    }
    if agent.conversation_id:
        attrs[GEN_AI_CONVERSATION_ID] = agent.conversation_id
    if agent.response_id:
        attrs[TFY_RESPONSE_ID] = agent.response_id
    if agent.dropped_tools:
        attrs[TFY_DROPPED_TOOLS] = list(agent.dropped_tools)
    failed = bool(t.error_type) and t.failed_phase == 0
    return Span(
        t.trace_id, agent.span_id, t.span_id, "invoke_agent", SPAN_KIND_INTERNAL,
        agent.start_pc + t.epoch_offset, (agent.end_pc or t.end_pc) + t.epoch_offset,
        STATUS_ERROR if failed else STATUS_UNSET, t.error_message if failed else "", attrs,
    )  # fmt: skip


def expand_agent_trace(t: TraceRecord) -> list[Span]:
    """The spans of one Responses request, root first, then in the order they started."""
    agent = t.agent
    assert agent is not None
    # The root, auth, model resolution and stream spans are those of any model request.
    base = expand_trace(msgspec.structs.replace(t, agent=None, attempts=()))
    root = base[0]
    root.attributes[TFY_SPAN_TYPE] = SPAN_TYPE
    if agent.dropped_tools:
        root.attributes[TFY_DROPPED_TOOLS] = list(agent.dropped_tools)
    last = (
        agent.model_calls[-1].attempts[-1] if agent.model_calls and agent.model_calls[-1].attempts else None
    )
    if last is not None:
        root.attributes[TFY_PROVIDER] = last.target.provider
        if not t.error_type:
            root.attributes[TFY_DESTINATION] = last.target.model_id
    if agent.start_pc == 0:  # never reached (refused before the first model call)
        return base
    children: list[Span] = [
        call_span(c, t.trace_id, agent.span_id, t.epoch_offset, t.end_pc) for c in agent.list_calls
    ]
    for call in agent.model_calls:
        children.extend(_model_call_spans(t, call, agent.span_id))
    for tool in agent.tool_calls:
        children.extend(_tool_spans(t, tool, agent.span_id))
    children.sort(key=lambda s: s.start_ns)
    return [*base, _agent_span(t, agent), *children]
