"""The in-process API other surfaces use (``runtime.mcp``: ``list_tools`` / ``call_tool``) against
real MCP servers built with the official SDK: the same access rules, filters and limits as
``/mcp/{server}``, gateway-owned upstream sessions re-initialised when the upstream forgets them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from gateway.access import AccessControl
from gateway.access.credentials import Principal
from gateway.config import parse_config
from gateway.mcp.core import McpGateway, TraceContext
from gateway.mcp.jsonrpc import ToolDenied, ToolRateLimited, UpstreamFailed
from gateway.telemetry.expand_mcp import call_span
from tests.conftest import Proc
from tests.integration.mcp_helpers import gateway_config, start_upstream

pytestmark = pytest.mark.timeout(60)

ALICE = Principal("user:alice", ["eng"])
BOB = Principal("user:bob")


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Proc, Proc]]:
    stateful = start_upstream("--name", "stateful")
    stateless = start_upstream("--stateless", "--json")
    yield stateful, stateless
    stateful.stop()
    stateless.stop()


def _gateway(stateful: Proc, stateless: Proc) -> McpGateway:
    cfg = parse_config(yaml.safe_dump(gateway_config(stateful.url, stateless.url)))
    return McpGateway(cfg, AccessControl.from_config(cfg))


async def test_list_and_call_tools_in_process(upstreams: tuple[Proc, Proc]) -> None:
    gw = _gateway(*upstreams)
    try:
        listing = await gw.list_tools(BOB, "everything")
        assert {t["name"] for t in listing.tools} == {"stateful__get_issue", "stateful__list_issues"}
        assert all("inputSchema" in t for t in listing.tools)
        assert [c.method for c in listing.calls][:2] == ["initialize", "notifications/initialized"]

        trace = TraceContext.new()
        call = await gw.call_tool(ALICE, "stateful", "add", {"a": 4, "b": 5}, trace=trace)
        assert call.ok and not call.is_error and call.result["structuredContent"] == {"result": 9}  # type: ignore[index]
        assert call.error is None and [c.method for c in call.calls] == ["tools/call"]
        span = call_span(call.calls[-1], trace.trace_id, trace.parent_span_id, 0, 0)
        assert span.name == "tools/call add" and span.parent_span_id == trace.parent_span_id
        assert span.attributes["gen_ai.operation.name"] == "execute_tool"

        failed = await gw.call_tool(ALICE, "stateful", "fail", {"reason": "x"})
        assert failed.ok and failed.is_error and failed.calls[-1].error_type == "tool_error"

        denied = await gw.call_tool(BOB, "stateful", "remember", {"key": "k", "value": "v"})
        assert isinstance(denied.error, ToolDenied) and "'remember'" in denied.error.message
        assert denied.calls == []  # never sent upstream
        assert isinstance((await gw.call_tool(BOB, "nowhere", "x")).error, ToolDenied)

        composite = await gw.call_tool(ALICE, "everything", "stateless__echo", {"text": "hi"})
        assert composite.result["content"][0]["text"] == "hi"  # type: ignore[index]

        for _ in range(2):
            assert (await gw.call_tool(ALICE, "stateless", "get_issue", {"number": 1})).ok
        limited = await gw.call_tool(ALICE, "stateless", "get_issue", {"number": 1})
        assert isinstance(limited.error, ToolRateLimited) and limited.error.retry_after_s >= 1
    finally:
        await gw.aclose()


async def test_in_process_session_survives_an_upstream_restart(upstreams: tuple[Proc, Proc]) -> None:
    stateful, stateless = upstreams
    gw = _gateway(stateful, stateless)
    try:
        assert (await gw.call_tool(ALICE, "stateful", "echo", {"text": "one"})).ok
        port = int(stateful.url.split(":")[2].split("/")[0])
        stateful.stop()
        down = await gw.call_tool(ALICE, "stateful", "echo", {"text": "two"})
        assert isinstance(down.error, UpstreamFailed)
        restarted = start_upstream("--name", "stateful", port=port)
        try:
            again = await gw.call_tool(ALICE, "stateful", "echo", {"text": "three"})
            assert again.ok, again.error
            assert [c.method for c in again.calls] == [
                "tools/call", "initialize", "notifications/initialized", "tools/call",
            ]  # fmt: skip
            assert again.calls[0].status == 404
        finally:
            restarted.stop()
    finally:
        await gw.aclose()
