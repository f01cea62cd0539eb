"""The MCP gateway end to end: real MCP servers built with the official SDK (one stateful, one
stateless), the real gateway under granian, and real clients (the official ``mcp`` SDK over
Streamable HTTP, both protocol eras, and ``openai-agents``' ``MCPServerStreamableHttp``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import Proc, start_gateway
from tests.integration.mcp_helpers import (
    ACCEPT,
    headers_for,
    initialize,
    post,
    rpc_result,
    sdk_session,
    start_upstream,
)
from tests.integration.mcp_helpers import gateway_config as make_config

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Proc]]:
    procs = {
        "stateful": start_upstream("--name", "stateful"),
        "stateless": start_upstream("--name", "stateless", "--stateless", "--json"),
        "html": start_upstream("--html"),
    }
    yield procs
    for p in procs.values():
        p.stop()


@pytest.fixture(scope="module")
def gw(upstreams: dict[str, Proc], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    cfg = make_config(
        upstreams["stateful"].url,
        upstreams["stateless"].url,
        upstreams["html"].url,
        server={"max_body_bytes": 1024 * 1024},
    )
    proc = start_gateway(cfg, tmp_path_factory.mktemp("mcp-gw"))
    yield proc
    proc.stop()


async def test_sdk_client_sees_and_calls_exactly_the_allowed_tools(gw: Proc) -> None:
    async with sdk_session(gw.url + "/mcp/stateful", "alice") as s:
        names = {t.name for t in (await s.list_tools()).tools}
        assert "add" in names and "delete_repo" not in names  # the registry's deny
        result = await s.call_tool("add", {"a": 2, "b": 3})
        assert not result.is_error and result.structured_content == {"result": 5}
        with pytest.raises(MCPError) as exc:
            await s.call_tool("delete_repo", {"repo": "x"})
        assert exc.value.error.code == -32003 and "delete_repo" in exc.value.error.message
    async with sdk_session(gw.url + "/mcp/stateful", "bob") as s:
        names = {t.name for t in (await s.list_tools()).tools}
        assert names == {"get_issue", "list_issues"}
        with pytest.raises(MCPError) as exc:
            await s.call_tool("remember", {"key": "k", "value": "from-bob"})
        assert exc.value.error.code == -32003 and "'remember'" in exc.value.error.message
        assert (await s.call_tool("get_issue", {"number": 7})).content[0].text == "issue 7 on stateful"  # type: ignore[union-attr]
    # the denied call never reached the upstream: alice reads what nobody stored
    async with sdk_session(gw.url + "/mcp/stateful", "alice") as s:
        assert (await s.call_tool("recall", {"key": "k"})).content[0].text == "<missing>"  # type: ignore[union-attr]


async def test_server_access_and_credentials(gw: Proc) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}}
    r = post(gw.url + "/mcp/stateless", body, "bob")  # bob has no rule naming 'stateless'
    assert r.status_code == 403 and "stateless" in r.json()["error"]["message"]
    r = post(gw.url + "/mcp/stateful", body, None)
    assert r.status_code == 401 and r.json()["error"]["code"] == -32600
    assert r.headers["www-authenticate"].startswith("Bearer")
    # upstream credentials come from the registry; caller identity is forwarded when configured
    async with sdk_session(gw.url + "/mcp/stateful", "alice") as s:
        seen = json.loads((await s.call_tool("whoami", {})).content[0].text)  # type: ignore[union-attr]
    assert seen["x-upstream-key"] == "gateway-secret"
    assert "authorization" not in seen  # the caller's gateway key never goes upstream
    assert seen["x-gateway-subject"] == "user:alice" and seen["x-gateway-teams"] == "eng"
    assert seen["traceparent"].split("-")[2] in json.dumps(seen["_meta_traceparent"])


async def test_composite_merges_lists_routes_calls_and_keeps_member_rules(gw: Proc) -> None:
    async with sdk_session(gw.url + "/mcp/everything", "alice") as s:
        names = {t.name for t in (await s.list_tools()).tools}
        assert {"stateful__add", "stateless__add", "stateless__delete_repo"} <= names
        assert "stateful__delete_repo" not in names  # denied on the member stays denied
        assert (await s.call_tool("stateless__add", {"a": 1, "b": 1})).structured_content == {"result": 2}
        assert (await s.call_tool("stateful__echo", {"text": "hi"})).content[0].text == "hi"  # type: ignore[union-attr]
        with pytest.raises(MCPError) as exc:
            await s.call_tool("stateful__delete_repo", {"repo": "x"})
        assert exc.value.error.code == -32003
        with pytest.raises(MCPError) as exc:
            await s.call_tool("nosuch__tool", {})
        assert exc.value.error.code == -32003
    async with sdk_session(gw.url + "/mcp/everything", "bob") as s:
        names = {t.name for t in (await s.list_tools()).tools}
        assert names == {"stateful__get_issue", "stateful__list_issues"}  # bob's member rules


async def test_progress_streams_and_tool_errors(gw: Proc) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with sdk_session(gw.url + "/mcp/stateful", "alice") as s:
        result = await s.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
        assert result.content[0].text == "done after 3 steps"  # type: ignore[union-attr]
        assert [p for p, _, _ in seen] == [1, 2, 3] and seen[-1][2] == "step 3"
        failed = await s.call_tool("fail", {"reason": "boom"})
        assert failed.is_error and "fail" in failed.content[0].text  # type: ignore[union-attr]


async def test_server_to_client_requests_pass_through(gw: Proc) -> None:
    """Elicitation: the upstream asks the client mid-call on the SSE stream; the client's answer
    comes back as its own POST and is forwarded to the same upstream session."""
    asked: list[str] = []

    async def on_elicit(context: Any, params: Any) -> Any:
        from mcp.types import ElicitResult

        asked.append(params.message)
        return ElicitResult(action="accept", content={"ok": True})

    async with sdk_session(gw.url + "/mcp/stateful", "alice", elicitation_callback=on_elicit) as s:
        result = await s.call_tool("confirm", {"action": "deploy"})
        assert result.content[0].text == "deploy: yes"  # type: ignore[union-attr]
    assert asked == ["Really deploy?"]


async def test_tool_rate_limit_is_a_jsonrpc_error_with_retry_time(gw: Proc) -> None:
    async with sdk_session(gw.url + "/mcp/stateless", "alice") as s:
        for _ in range(2):
            await s.call_tool("get_issue", {"number": 1})
        with pytest.raises(MCPError) as exc:
            await s.call_tool("get_issue", {"number": 1})
        err = exc.value.error
        assert err.code == -32029 and "issue-reads" in err.message
        assert err.data["retryAfterSeconds"] >= 1 and err.data["rule"] == "issue-reads"  # type: ignore[index]
        assert (await s.call_tool("list_issues", {})).content[0].text == "1,2,3"  # type: ignore[union-attr]


async def test_modern_stateless_client_through_the_gateway(gw: Proc) -> None:
    """The 2026-07-28 revision: no handshake, no session, version in every request."""
    client = httpx2.AsyncClient(headers=headers_for("alice"), timeout=20)
    async with client, Client(streamable_http_client(gw.url + "/mcp/stateful", http_client=client)) as c:
        assert c.session.discover_result is not None  # server/discover went through: modern era
        names = {t.name for t in (await c.list_tools()).tools}
        assert "add" in names and "delete_repo" not in names
        assert (await c.call_tool("add", {"a": 20, "b": 22})).structured_content == {"result": 42}
        with pytest.raises(MCPError) as exc:
            await c.call_tool("delete_repo", {"repo": "x"})
        assert exc.value.error.code == -32003
    client = httpx2.AsyncClient(headers=headers_for("alice"), timeout=20)
    async with client, Client(streamable_http_client(gw.url + "/mcp/everything", http_client=client)) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert "stateless__add" in names and "stateful__delete_repo" not in names
        assert (await c.call_tool("stateless__add", {"a": 1, "b": 2})).structured_content == {"result": 3}
    base = {"mcp-protocol-version": "2026-07-28"}
    for method in ("GET", "DELETE"):
        r = httpx.request(
            method, gw.url + "/mcp/stateful", headers={**headers_for("alice"), **base, "accept": ACCEPT}
        )
        assert r.status_code == 405


async def test_openai_agents_mcp_server_streamable_http(gw: Proc) -> None:
    from agents.mcp import MCPServerStreamableHttp

    server = MCPServerStreamableHttp(
        {"url": gw.url + "/mcp/everything", "headers": headers_for("bob"), "timeout": 20},
        cache_tools_list=False,
    )
    async with server:
        tools = await server.list_tools()
        assert {t.name for t in tools} == {"stateful__get_issue", "stateful__list_issues"}
        result = await server.call_tool("stateful__get_issue", {"number": 3})
        assert "issue 3 on stateful" in result.content[0].text  # type: ignore[union-attr]


# --- bad input: JSON-RPC or HTTP errors, never a 500, never a hang ------------------------------------


def test_bad_input_answers(gw: Proc) -> None:
    url = gw.url + "/mcp/stateful"
    token = initialize(url)
    ping = {"jsonrpc": "2.0", "id": 5, "method": "ping"}
    cases: list[tuple[httpx.Response, int, int | None]] = [
        (post(gw.url + "/mcp/nope", ping), 404, -32600),
        (post(url, ping, accept="application/json"), 406, -32600),
        (post(url, ping, content_type="text/plain", mcp_session_id=token), 415, -32600),
        (post(url, b"{not json", mcp_session_id=token), 400, -32700),
        (post(url, b'{"jsonrpc":"2.0","id":1,"method":"pi\xffng"}', mcp_session_id=token), 400, -32700),
        (post(url, b'{"jsonrpc":"2.0","id":1,"method":"ping","params":' + b"[" * 1000 + b"]" * 1000 + b"}",
              mcp_session_id=token), 400, -32700),
        (post(url, [ping, ping], mcp_session_id=token), 400, -32600),
        (post(url, {"jsonrpc": "2.0", "id": 1}, mcp_session_id=token), 400, -32600),
        (post(url, {"id": 1, "method": "ping"}, mcp_session_id=token), 400, -32600),
        (post(url, ping), 400, -32600),  # no session
        (post(url, ping, mcp_session_id="g1.forged"), 404, -32600),
        (post(url, ping, mcp_session_id=token, mcp_protocol_version="1999-01-01"), 400, -32022),
        (
            post(
                url, {"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {}}, mcp_session_id=token
            ),
            200,
            -32602,
        ),
        (
            post(url, b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"a" * 2_000_000 + b'"}}'),
            413,
            -32600,
        ),
        (httpx.put(url, headers=headers_for("alice")), 405, -32600),
    ]
    for r, status, code in cases:
        assert r.status_code == status, (r.status_code, r.text)
        assert rpc_result(r)["error"]["code"] == code, r.text
    # without credentials, an unknown server is not told apart from a known one
    assert post(gw.url + "/mcp/nope", ping, None).status_code == 401
    # another caller cannot use alice's session
    assert post(url, ping, "bob", mcp_session_id=token).status_code == 404
    # the session still works after all that
    ok = post(url, ping, mcp_session_id=token)
    assert ok.status_code == 200 and rpc_result(ok) == {"jsonrpc": "2.0", "id": 5, "result": {}}


def test_upstream_answering_html_or_hanging_gets_jsonrpc_errors(gw: Proc) -> None:
    r = post(
        gw.url + "/mcp/website",
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}},
    )
    assert r.status_code == 200
    err = rpc_result(r)["error"]
    assert err["code"] == -32050 and "text/html" in err["message"]
    # the stateless upstream has timeout_s: 2; its tool sleeps 30 s
    url = gw.url + "/mcp/stateless"
    token = initialize(url)
    call = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": "hang", "arguments": {"seconds": 30}},
    }
    r = post(url, call, mcp_session_id=token)
    assert r.status_code == 200 and rpc_result(r)["error"]["code"] == -32051
    assert rpc_result(r)["id"] == 9
    assert httpx.get(gw.url + "/healthz").status_code == 200


def test_client_notifications_and_delete(gw: Proc) -> None:
    url = gw.url + "/mcp/stateful"
    token = initialize(url)
    r = post(
        url,
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
        mcp_session_id=token,
    )
    assert r.status_code == 202 and r.content == b""
    d = httpx.delete(url, headers={**headers_for("alice"), "mcp-session-id": token})
    assert d.status_code in (200, 204)
    # the upstream ended that session: the gateway re-initialises it lazily, the client goes on
    r = post(
        url,
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "add", "arguments": {"a": 1, "b": 1}},
        },
        mcp_session_id=token,
    )
    assert rpc_result(r)["result"]["structuredContent"] == {"result": 2}


def _text(result: Any) -> str:
    return result.content[0].text
