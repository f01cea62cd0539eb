"""MCP gateway cores without sockets: config checks, the access matrix, JSON-RPC framing, SSE
parsing, session tokens, tool rate limits and span building."""

from __future__ import annotations

import msgspec
import pytest

from gateway.access.credentials import Principal
from gateway.access.ratelimit import RateLimiter
from gateway.config import ConfigError, parse_config
from gateway.errors import RateLimited
from gateway.mcp import jsonrpc as rpc
from gateway.mcp.policy import ToolPolicy
from gateway.mcp.session import SessionCodec, key_material, new_state
from gateway.telemetry.drain import make_resource
from gateway.telemetry.expand import expand_trace
from gateway.telemetry.wire import (
    SCHEMA_VERSION,
    SPAN_KIND_CLIENT,
    STATUS_ERROR,
    McpCallRecord,
    McpRecord,
    TraceBatch,
    TraceRecord,
    decode_batch,
    encode_batch,
)

BASE = """
auth:
  api_keys:
    - {subject: "user:alice", teams: [eng], key_sha256: "KEY_A"}
    - {subject: "user:bob", key_sha256: "KEY_B"}
mcp_servers:
  - {name: github, url: "http://127.0.0.1:1/mcp", tools: {deny: ["delete_*"]},
     headers: {authorization: "Bearer secret"}}
  - {name: search, url: "http://127.0.0.1:2/mcp"}
  - {name: everything, composite: [github, search]}
access_mcp:
  - {subjects: ["team:eng"], servers: ["github", "search"], tools: ["*"]}
  - {subjects: ["team:eng"], servers: ["everything"], tools: ["github__*", "search__query"]}
  - {subjects: ["user:bob"], servers: ["github"], tools: ["get_*", "list_*"]}
  - {subjects: ["user:bob"], servers: ["everything"], tools: ["*"]}
rate_limiting:
  - {id: tools, when: {mcp_servers: [github], tools: ["get_*"]}, limit_to: 2, unit: requests_per_minute,
     rate_limit_applies_per: [user, tool]}
  - {id: models, limit_to: 1, unit: requests_per_minute}
""".replace("KEY_A", "a" * 64).replace("KEY_B", "b" * 64)

ALICE = Principal("user:alice", ["eng"])
BOB = Principal("user:bob")
CAROL = Principal("user:carol")


def test_config_sections_parse_and_reject_bad_references() -> None:
    cfg = parse_config(BASE)
    assert [s.name for s in cfg.mcp_servers] == ["github", "search", "everything"]
    bad = """
mcp_servers:
  - {name: a, url: "http://x/mcp", composite: [b]}
  - {name: c__d, url: "ftp://x"}
  - {name: e, composite: [nope]}
  - {name: f, url: "http://x/mcp", headers: {mcp-session-id: x}}
access_mcp:
  - {subjects: ["user:x"], servers: [ghost]}
rate_limiting:
  - {id: r, when: {mcp_servers: [ghost], models: ["*"]}, limit_to: 1, unit: tokens_per_minute}
"""
    with pytest.raises(ConfigError) as exc:
        parse_config(bad)
    text = "\n".join(exc.value.problems)
    for expected in (
        "mcp_servers[0]: set exactly one of url and composite",
        "mcp_servers[1].name",
        "mcp_servers[1].url: expected an http(s) URL",
        "mcp_servers[2].composite[0]: no MCP server named 'nope'",
        "mcp_servers[3].headers.mcp-session-id: set by the gateway",
        "access_mcp[0].servers[0]: no MCP server named 'ghost'",
        "rate_limiting[0].when.mcp_servers[0]: no MCP server named 'ghost'",
        "rate_limiting[0].unit: tool calls are counted in requests",
    ):
        assert expected in text, text
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config("mcp_servers:\n  - {name: a, url: 'http://x', bogus: 1}\n")


def test_access_matrix_registry_rules_and_composite() -> None:
    cfg = parse_config(BASE)
    p = ToolPolicy(cfg.mcp_servers, cfg.access_mcp)
    # registry filter applies to everyone
    assert p.allowed(ALICE, "github", "get_issue")
    assert not p.allowed(ALICE, "github", "delete_repo")
    # bob: only get_*/list_* on github, nothing on search
    assert p.allowed(BOB, "github", "list_issues")
    assert not p.allowed(BOB, "github", "create_issue")
    assert not p.may_use_server(BOB, "search")
    assert not p.may_use_server(CAROL, "github")
    # composite: its own rule, then the member's filter and rules
    assert p.allowed(ALICE, "everything", "github__create_issue")
    assert not p.allowed(ALICE, "everything", "github__delete_repo")  # registry deny of the member
    assert p.allowed(ALICE, "everything", "search__query")
    assert not p.allowed(ALICE, "everything", "search__other")  # the composite rule
    assert p.allowed(BOB, "everything", "github__get_issue")
    assert not p.allowed(BOB, "everything", "github__create_issue")  # bob's github rule
    assert not p.allowed(BOB, "everything", "search__query")  # no rule for bob on search
    assert not p.allowed(ALICE, "everything", "nosuch__tool")
    assert not p.allowed(ALICE, "everything", "github")
    assert p.split("everything", "github__a__b") == ("github", "a__b")
    # no access_mcp: everything the registry exposes
    open_policy = ToolPolicy(cfg.mcp_servers, None)
    assert open_policy.allowed(CAROL, "search", "anything")
    assert not open_policy.allowed(CAROL, "github", "delete_repo")


def test_tool_rate_limit_rules_apply_to_tool_calls_only() -> None:
    cfg = parse_config(BASE)
    limiter = RateLimiter(cfg.rate_limiting)
    rule, key = limiter.plan_tool(BOB, "github", "get_issue", {})
    assert rule is not None and rule.id == "tools" and key.endswith("github/get_issue")
    assert limiter.plan_tool(BOB, "github", "list_issues", {})[0] is None
    assert limiter.plan_tool(BOB, "search", "get_x", {})[0] is None
    limiter.admit_planned(rule, key, 100.0)
    limiter.admit_planned(rule, key, 100.0)
    with pytest.raises(RateLimited) as exc:
        limiter.admit_planned(rule, key, 100.0)
    assert exc.value.rule_id == "tools"
    # the model rule does not see tool calls, the tool rule does not see model calls
    assert limiter.plan(BOB, "github/get_issue", {})[0].id == "models"  # type: ignore[union-attr]


def test_decode_message_errors() -> None:
    assert rpc.decode_message(b'{"jsonrpc":"2.0","id":1,"method":"ping"}').is_request
    assert rpc.decode_message(b'{"jsonrpc":"2.0","method":"notifications/initialized"}').is_notification
    assert rpc.decode_message(b'{"jsonrpc":"2.0","id":"a","result":{}}').is_response
    cases = [
        (b"{nope", rpc.ParseError),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', rpc.InvalidRequest),
        (b"[1,", rpc.ParseError),
        (b'"text"', rpc.InvalidRequest),
        (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', rpc.InvalidRequest),
        (b'{"jsonrpc":"2.0","id":1,"method":5}', rpc.InvalidRequest),
        (b'{"jsonrpc":"2.0","id":{},"method":"ping"}', rpc.InvalidRequest),
        (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', rpc.InvalidRequest),
        (b'{"jsonrpc":"2.0","id":1}', rpc.InvalidRequest),
        (b'{"jsonrpc":"2.0","id":1,"method":"x","params":3}', rpc.InvalidRequest),
    ]
    for body, kind in cases:
        with pytest.raises(kind):
            rpc.decode_message(body)
    err = msgspec.json.decode(rpc.encode_error(7, rpc.ToolDenied("no", {"tool": "x"})))
    assert err == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": -32003, "message": "no", "data": {"tool": "x"}},
    }


def test_sse_parser_handles_split_chunks_and_line_endings() -> None:
    p = rpc.SseParser()
    assert p.feed(b'event: message\r\nid: 1\r\ndata: {"a"') == []
    events = p.feed(b":1}\r\n\r\n: keep-alive\n\ndata: x\ndata: y\n\n")
    assert [(e.event, e.id, e.data) for e in events] == [
        ("message", "1", b'{"a":1}'),
        ("message", None, b""),
        ("message", None, b"x\ny"),
    ]
    small = rpc.SseParser(max_event_bytes=10)
    with pytest.raises(rpc.UpstreamFailed):
        small.feed(b"data: " + b"x" * 100)


def test_tool_list_filter_and_meta_injection() -> None:
    raw = msgspec.Raw(b'{"tools":[{"name":"a","x":1},{"name":"b"},{"nope":1}],"nextCursor":"c"}')
    fields, tools = rpc.tool_list(raw)
    assert [n for n, _ in tools] == ["a", "b"]
    out = msgspec.json.decode(rpc.encode_tool_list(fields, [rpc.renamed(tools[0][1], "m__a")]))
    assert out == {"nextCursor": "c", "tools": [{"name": "m__a", "x": 1}]}
    params = rpc.with_meta(
        {"name": msgspec.Raw(b'"t"'), "_meta": msgspec.Raw(b'{"k":1}')}, {"traceparent": "tp"}
    )
    assert msgspec.json.decode(params["_meta"]) == {"k": 1, "traceparent": "tp"}
    assert rpc.result_is_error(msgspec.Raw(b'{"content":[],"isError": true}'))
    assert not rpc.result_is_error(msgspec.Raw(b'{"content":[{"text":"isError"}]}'))


def test_session_tokens_verify_and_bind() -> None:
    cfg = parse_config(BASE)
    codec = SessionCodec(key_material(cfg))
    state = new_state("github", "user:alice", "2025-06-18", b'{"capabilities":{}}', {"github": "up-1"})
    token = codec.seal(state)
    assert token.isascii() and all(0x21 <= ord(c) <= 0x7E for c in token)
    assert "up-1" not in token
    # another replica with the same config opens it
    opened = SessionCodec(key_material(parse_config(BASE))).open(token)
    assert opened is not None and opened.upstream == {"github": "up-1"} and opened.sid == state.sid
    # a different secret does not; a tampered token does not
    other = parse_config(BASE.replace("Bearer secret", "Bearer other"))
    assert SessionCodec(key_material(other)).open(token) is None
    assert codec.open(token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]) is None
    assert codec.open("garbage") is None and codec.open("g1.!!!") is None
    # after a reload that rotated the key, the previous key is still accepted
    rotated = SessionCodec(key_material(other), previous=codec)
    assert rotated.open(token) is not None


def _mcp_record(calls: tuple[McpCallRecord, ...], error: str = "") -> TraceRecord:
    mcp = McpRecord("github", "POST", "tools/call", "get_issue", "3", "abcd", "2025-06-18", calls)
    return TraceRecord(
        b"t" * 16, b"s" * 8, b"", 1_000, 10, 900, "/mcp/github", "mcp", 200, error, "", 0, "", False, b"",
        20, 30, 0, "user:alice", {}, (), (), (), 0, 0, 0, -1, -1, None, b"", b"", mcp=mcp,
    )  # fmt: skip


def test_expand_mcp_spans_and_wire_roundtrip() -> None:
    call = McpCallRecord(
        b"c" * 8, "github", "tools/call", "get_issue", "3", 40, 80, 200, "tool_error", "",
        b'{"number":1}', b'{"isError":true}', "127.0.0.1", 1,
    )  # fmt: skip
    record = _mcp_record((call,))
    assert record.span_count == 3
    batch = decode_batch(encode_batch(TraceBatch(SCHEMA_VERSION, make_resource("s"), [record])))
    spans = expand_trace(batch.traces[0])
    names = [s.name for s in spans]
    assert names == ["POST /mcp/github", "auth", "tools/call get_issue"]
    root, _, client = spans
    assert root.attributes["tfy.span_type"] == "MCPGateway" and "gen_ai.operation.name" not in root.attributes
    assert client.kind == SPAN_KIND_CLIENT and client.parent_span_id == root.span_id
    a = client.attributes
    assert a["mcp.method.name"] == "tools/call" and a["gen_ai.operation.name"] == "execute_tool"
    assert a["gen_ai.tool.name"] == "get_issue" and a["jsonrpc.request.id"] == "3"
    assert a["mcp.session.id"] == "abcd" and a["mcp.protocol.version"] == "2025-06-18"
    assert a["error.type"] == "tool_error" and client.status_code == STATUS_ERROR
    assert a["gen_ai.tool.call.arguments"] == b'{"number":1}'
    assert client.start_ns == 1_040 and client.end_ns == 1_080
    other = McpCallRecord(b"d" * 8, "github", "initialize", "", "gateway-init", 40, 80, 200, "-32602", "bad")
    a2 = expand_trace(_mcp_record((other,), "-32602"))[2].attributes
    assert a2["rpc.response.status_code"] == "-32602" and "gen_ai.operation.name" not in a2


def test_identity_header_values_are_made_header_safe() -> None:
    from gateway.mcp.core import _header_value

    assert _header_value("user:alice") == "user:alice"
    assert _header_value("user:a\r\nx-evil: 1") == "user:a??x-evil: 1"
    assert _header_value("team:é") == "team:?"
