"""MCP requests become MCPGateway traces at a strict OTLP receiver (one with request data, one
without), trace context reaches the upstream, and the MCP metrics count the tool calls."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import Proc
from tests.integration.mcp_helpers import gateway_config, headers_for, sdk_session, start_upstream
from tests.integration.test_tracing_gateway import attrs, wait_spans
from tests.otlp_fixtures import otlp_receiver, second_otlp_receiver  # noqa: F401
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.timeout(120)

PARENT_TRACE = "5bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "10f067aa0ba902b7"


async def test_mcp_traces_and_metrics(
    gateway_factory: Callable[..., Proc],
    tmp_path: Path,
    otlp_receiver: OtlpReceiver,  # noqa: F811
    second_otlp_receiver: OtlpReceiver,  # noqa: F811
) -> None:
    stateful = start_upstream("--name", "stateful")
    stateless = start_upstream("--stateless", "--json")
    try:
        cfg = gateway_config(
            stateful.url,
            stateless.url,
            tracing={"flush_interval_ms": 50},
            exporter={
                "traces": [
                    {"name": "full", "endpoint": otlp_receiver.traces_url},
                    {
                        "name": "redacted",
                        "endpoint": second_otlp_receiver.traces_url,
                        "encoding": "json",
                        "exclude_request_data": True,
                    },
                ]
            },
        )
        gw = gateway_factory(cfg)
        traced = {**headers_for("alice"), "traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"}
        async with sdk_session(gw.url + "/mcp/stateful", "alice") as s:
            assert (await s.call_tool("add", {"a": 2, "b": 5})).structured_content == {"result": 7}
            seen = json.loads((await s.call_tool("whoami", {})).content[0].text)  # type: ignore[union-attr]
            assert (await s.call_tool("fail", {"reason": "x"})).is_error
            with pytest.raises(MCPError):
                await s.call_tool("delete_repo", {"repo": "r"})
        # one session whose requests carry the caller's trace context
        client = httpx2.AsyncClient(headers=traced, timeout=20)
        async with client, streamable_http_client(gw.url + "/mcp/stateless", http_client=client) as st:
            async with ClientSession(st[0], st[1]) as s2:
                await s2.initialize()
                await s2.call_tool("echo", {"text": "traced call"})

        def ready(spans: list) -> bool:
            names = [x.name for x in spans]
            return (
                "tools/call add" in names
                and "tools/call fail" in names
                and "tools/call echo" in names
                and "tools/call whoami" in names
                and sum(1 for n in names if n == "POST /mcp/stateful") >= 6
            )

        spans = await wait_spans(otlp_receiver, ready)
        by_id = {s.span_id: s for s in spans}
        add = next(s for s in spans if s.name == "tools/call add")
        root = by_id[add.parent_span_id]
        assert root.name == "POST /mcp/stateful" and root.kind == 2
        r = attrs(root)
        assert r["tfy.span_type"] == "MCPGateway" and r["tfy.mcp.server"] == "stateful"
        assert r["mcp.method.name"] == "tools/call" and r["tfy.request.created_by_subject"] == "user:alice"
        assert "gen_ai.operation.name" not in r  # only the tool span executes a tool
        siblings = [s for s in spans if s.parent_span_id == root.span_id]
        assert sorted(s.name for s in siblings) == ["auth", "tools/call add"]
        a = attrs(add)
        assert add.kind == 3
        assert a["mcp.method.name"] == "tools/call" and a["gen_ai.tool.name"] == "add"
        assert a["gen_ai.operation.name"] == "execute_tool" and a["tfy.span_type"] == "MCPGateway"
        assert a["mcp.session.id"] == r["mcp.session.id"] and len(a["mcp.session.id"]) == 32
        assert a["mcp.protocol.version"] and a["jsonrpc.request.id"] == r["jsonrpc.request.id"]
        assert json.loads(a["gen_ai.tool.call.arguments"]) == {"a": 2, "b": 5}
        assert json.loads(a["gen_ai.tool.call.result"])["structuredContent"] == {"result": 7}
        assert a["server.address"] == "127.0.0.1" and a["tfy.request.created_by_subject"] == "user:alice"
        assert "error.type" not in a
        # the failing tool: an isError result
        fail = attrs(next(s for s in spans if s.name == "tools/call fail"))
        assert fail["error.type"] == "tool_error"
        # the denied call: the root says so, nothing went upstream
        denied = [s for s in spans if attrs(s).get("error.type") == "-32003"]
        assert len(denied) == 1 and denied[0].name == "POST /mcp/stateful"
        assert not [s for s in spans if s.parent_span_id == denied[0].span_id and s.kind == 3]
        # trace context went upstream in the header and in params._meta, naming the CLIENT span
        who = next(s for s in spans if s.name == "tools/call whoami")
        tp = f"00-{who.trace_id.hex()}-{who.span_id.hex()}-01"
        assert seen["traceparent"] == tp and seen["_meta_traceparent"] == tp
        # the caller's traceparent makes the root its child
        echo = next(s for s in spans if s.name == "tools/call echo")
        assert echo.trace_id.hex() == PARENT_TRACE
        assert by_id[echo.parent_span_id].parent_span_id.hex() == PARENT_SPAN
        # initialize went upstream as its own CLIENT span
        assert any(s.name == "initialize" and s.kind == 3 for s in spans)

        # exclude_request_data: the same spans without tool arguments or results
        redacted = await wait_spans(
            second_otlp_receiver, lambda xs: any(x.name == "tools/call add" for x in xs)
        )
        ra = attrs(next(s for s in redacted if s.name == "tools/call add"))
        assert "gen_ai.tool.call.arguments" not in ra and "gen_ai.tool.call.result" not in ra
        assert ra["gen_ai.tool.name"] == "add"

        metrics = httpx.get(gw.url + "/metrics").text
        assert 'llm_gateway_mcp_tool_calls_total{server="stateful",status="ok",tool="add"} 1.0' in metrics
        assert (
            'llm_gateway_mcp_tool_calls_total{server="stateful",status="tool_error",tool="fail"} 1.0'
            in metrics
        )
        assert (
            'llm_gateway_mcp_tool_calls_total{server="stateful",status="denied",tool="delete_repo"} 1.0'
            in metrics
        )
        assert 'llm_gateway_mcp_rejections_total{reason="tool_denied",server="stateful"} 1.0' in metrics
        assert 'llm_gateway_mcp_tool_call_duration_ms_count{server="stateful",tool="add"} 1.0' in metrics
    finally:
        stateful.stop()
        stateless.stop()
