"""MCP gateway trace records → spans (``tfy.span_type: MCPGateway``); pure, run by the exporter.

    POST /mcp/github            SERVER    the inbound request; tfy.* and the client's MCP method
    ├── auth                    INTERNAL  credentials and access to the server
    └── tools/call get_issue    CLIENT    one per JSON-RPC message sent upstream

CLIENT spans follow the OpenTelemetry GenAI MCP conventions: name ``{mcp.method.name}
{target}``, ``mcp.method.name``, ``mcp.session.id``, ``mcp.protocol.version``,
``jsonrpc.request.id``, ``rpc.response.status_code`` and ``error.type`` (the JSON-RPC code, or
``tool_error`` when a result has ``isError``); tool calls add ``gen_ai.operation.name:
execute_tool``, ``gen_ai.tool.name`` and the content attributes ``gen_ai.tool.call.arguments`` /
``gen_ai.tool.call.result``, which *exclude request data* strips.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.telemetry.spans import (
    ERROR_TYPE,
    GEN_AI_OPERATION,
    HTTP_METHOD,
    HTTP_STATUS,
    SERVER_ADDRESS,
    SERVER_PORT,
    TFY_ERROR_MESSAGE,
    TFY_LATENCY_MS,
    TFY_METADATA,
    TFY_RL_RULE_IDS,
    TFY_SPAN_TYPE,
    TFY_SUBJECT,
    URL_PATH,
    new_span_id,
)
from gateway.telemetry.wire import (
    PHASE_AUTH,
    SPAN_KIND_CLIENT,
    SPAN_KIND_INTERNAL,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    STATUS_UNSET,
    McpCallRecord,
    Span,
    TraceRecord,
)

__all__ = ["call_attributes", "call_span", "expand_mcp_trace"]

MCP_METHOD: Final = "mcp.method.name"
MCP_SESSION_ID: Final = "mcp.session.id"
MCP_PROTOCOL_VERSION: Final = "mcp.protocol.version"
JSONRPC_REQUEST_ID: Final = "jsonrpc.request.id"
RPC_RESPONSE_STATUS: Final = "rpc.response.status_code"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_RESULT: Final = "gen_ai.tool.call.result"
GEN_AI_PROMPT_NAME: Final = "gen_ai.prompt.name"
NETWORK_TRANSPORT: Final = "network.transport"
NETWORK_PROTOCOL: Final = "network.protocol.name"
TFY_MCP_SERVER: Final = "tfy.mcp.server"
OPENINFERENCE_KIND: Final = "openinference.span.kind"
SPAN_TYPE: Final = "MCPGateway"

# Content attributes: stripped by a destination's exclude_request_data (exporter/otlp.py).
CONTENT_ATTRIBUTES: Final = frozenset({GEN_AI_TOOL_ARGUMENTS, GEN_AI_TOOL_RESULT})


def call_attributes(
    call: McpCallRecord, session_id: str = "", protocol_version: str = "", subject: str = ""
) -> dict[str, Any]:
    """Attributes of the CLIENT span of one upstream JSON-RPC message."""
    attrs: dict[str, Any] = {
        TFY_SPAN_TYPE: SPAN_TYPE,
        MCP_METHOD: call.method,
        TFY_MCP_SERVER: call.server,
        NETWORK_TRANSPORT: "tcp",
        NETWORK_PROTOCOL: "http",
    }
    if session_id:
        attrs[MCP_SESSION_ID] = session_id
    if protocol_version:
        attrs[MCP_PROTOCOL_VERSION] = protocol_version
    if call.request_id:
        attrs[JSONRPC_REQUEST_ID] = call.request_id
    if call.server_address:
        attrs[SERVER_ADDRESS] = call.server_address
    if call.server_port:
        attrs[SERVER_PORT] = call.server_port
    if subject:
        attrs[TFY_SUBJECT] = subject
    if call.method == "tools/call":
        attrs[GEN_AI_OPERATION] = "execute_tool"
        attrs[OPENINFERENCE_KIND] = "TOOL"
        if call.target:
            attrs[GEN_AI_TOOL_NAME] = call.target
        if call.arguments:
            attrs[GEN_AI_TOOL_ARGUMENTS] = call.arguments
        if call.result:
            attrs[GEN_AI_TOOL_RESULT] = call.result
    elif call.method == "prompts/get" and call.target:
        attrs[GEN_AI_PROMPT_NAME] = call.target
    if call.status:
        attrs[HTTP_STATUS] = call.status
    if call.error_type:
        attrs[ERROR_TYPE] = call.error_type
        if call.error_type.lstrip("-").isdigit():
            attrs[RPC_RESPONSE_STATUS] = call.error_type
        if call.error_message:
            attrs[TFY_ERROR_MESSAGE] = call.error_message
    return attrs


def call_span(
    call: McpCallRecord,
    trace_id: bytes,
    parent_id: bytes,
    epoch_offset: int,
    end_pc: int,
    session_id: str = "",
    protocol_version: str = "",
    subject: str = "",
) -> Span:
    """The CLIENT span of one upstream message (also for in-process tool calls, e.g. agent loops)."""
    name = f"{call.method} {call.target}" if call.target else call.method
    failed = bool(call.error_type) and call.error_type != "tool_error"
    status = STATUS_ERROR if call.error_type else STATUS_UNSET
    return Span(
        trace_id, call.span_id, parent_id, name, SPAN_KIND_CLIENT, call.start_pc + epoch_offset,
        (call.end_pc or end_pc) + epoch_offset, status, call.error_message if failed else "",
        call_attributes(call, session_id, protocol_version, subject),
    )  # fmt: skip


def expand_mcp_trace(t: TraceRecord) -> list[Span]:
    """The spans of one MCP gateway request, root first."""
    mcp = t.mcp
    assert mcp is not None
    trace_id, root_id, offset, end = t.trace_id, t.span_id, t.epoch_offset, t.end_pc
    attrs: dict[str, Any] = {
        HTTP_METHOD: mcp.http_method,
        URL_PATH: t.path,
        TFY_SPAN_TYPE: SPAN_TYPE,
        TFY_MCP_SERVER: mcp.server,
        HTTP_STATUS: t.status,
        TFY_LATENCY_MS: (t.end_pc - t.start_pc) / 1e6,
    }
    if mcp.method:
        attrs[MCP_METHOD] = mcp.method
    if mcp.session_id:
        attrs[MCP_SESSION_ID] = mcp.session_id
    if mcp.protocol_version:
        attrs[MCP_PROTOCOL_VERSION] = mcp.protocol_version
    if mcp.request_id:
        attrs[JSONRPC_REQUEST_ID] = mcp.request_id
    if mcp.target and mcp.method == "tools/call":
        attrs["tfy.mcp.tool"] = mcp.target
    if t.subject:
        attrs[TFY_SUBJECT] = t.subject
    if t.metadata:
        import msgspec

        attrs[TFY_METADATA] = msgspec.json.encode(t.metadata).decode()
    if t.rl_rule_ids:
        attrs[TFY_RL_RULE_IDS] = list(t.rl_rule_ids)
    status, message = STATUS_UNSET, ""
    if t.error_type:
        status, message = STATUS_ERROR, t.error_message
        attrs[ERROR_TYPE] = t.error_type
        if t.error_type.lstrip("-").isdigit():
            attrs[RPC_RESPONSE_STATUS] = t.error_type
        if message:
            attrs[TFY_ERROR_MESSAGE] = message
    name = f"{mcp.http_method} {t.path}"
    spans = [
        Span(
            trace_id,
            root_id,
            t.parent_id,
            name,
            SPAN_KIND_SERVER,
            t.start_pc + offset,
            end + offset,
            status,
            message,
            attrs,
        )
    ]
    if t.auth_start_pc:
        auth_attrs: dict[str, Any] = {}
        auth_status = STATUS_UNSET
        if t.failed_phase == PHASE_AUTH:
            auth_status = STATUS_ERROR
            auth_attrs[ERROR_TYPE] = t.error_type
            if t.error_message:
                auth_attrs[TFY_ERROR_MESSAGE] = t.error_message
        elif t.subject:
            auth_attrs[TFY_SUBJECT] = t.subject
        spans.append(
            Span(
                trace_id, new_span_id(), root_id, "auth", SPAN_KIND_INTERNAL, t.auth_start_pc + offset,
                (t.auth_end_pc or end) + offset, auth_status, t.error_message if auth_status else "", auth_attrs,
            )
        )  # fmt: skip
    for call in mcp.calls:
        spans.append(
            call_span(call, trace_id, root_id, offset, end, mcp.session_id, mcp.protocol_version, t.subject)
        )
    return spans
