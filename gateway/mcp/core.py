"""The MCP gateway core: registry, per-caller tool filtering, upstream sessions, tool calls.

Built once per config (by :class:`gateway.runtime.Runtime`, as ``runtime.mcp``) and swapped
whole on reload. The HTTP surface (:mod:`gateway.mcp.http`) and in-process callers use it.

In-process API (stable; the Responses surface runs MCP tools inside agent loops with it)::

    mcp = runtime.mcp                                  # McpGateway
    mcp.server_names                                   # registered and composite servers
    listing = await mcp.list_tools(principal, "github", trace=ctx)
    listing.tools                                      # [{"name", "description", "inputSchema", ...}]
    call = await mcp.call_tool(principal, "github", "get_issue", {"number": 1},
                               metadata={}, trace=TraceContext(trace_id, parent_span_id, 1))
    call.ok            # True: a result came back (it may still say isError)
    call.result        # the tools/call result dict: content, structuredContent, isError
    call.is_error      # the tool reported a failure (result.isError)
    call.error         # McpError when no result: ToolDenied, ToolRateLimited, UpstreamFailed,
                       # UpstreamTimedOut, or the upstream's JSON-RPC error (its code kept)
    call.calls         # McpCallRecord per upstream JSON-RPC message sent (CLIENT spans;
                       # empty when refused before upstream); build spans with
                       # gateway.telemetry.expand_mcp.call_span(record, trace_id, parent, offset)
    call.rule_ids      # rate-limit rule ids applied

Tool calls are counted in ``llm_gateway_mcp_*`` once ``mcp.metrics`` is set
(``mcp.metrics = gateway.metrics.mcp.McpMetrics.of(app.metrics)``; the HTTP surface sets it on its
first request, and it is carried across reloads).

``list_tools`` raises :class:`~gateway.mcp.jsonrpc.McpError` (unknown server: ``ToolDenied``;
upstream failures). ``call_tool`` never raises for a refused or failed call: the error is in
``call.error``. Access rules, registry filters and tool rate limits are applied exactly as on
``/mcp/{server}``; upstream sessions for in-process calls belong to the gateway process
(initialised lazily, re-initialised when the upstream forgets them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from gateway.access.credentials import Principal
from gateway.errors import RateLimited
from gateway.mcp import jsonrpc as rpc
from gateway.mcp.jsonrpc import McpError, ToolDenied, ToolRateLimited, UpstreamFailed
from gateway.mcp.policy import ToolPolicy
from gateway.mcp.session import SessionCodec, key_material
from gateway.mcp.upstream import Reply, UpstreamServer
from gateway.telemetry.spans import format_traceparent, new_span_id, new_trace_id
from gateway.telemetry.wire import McpCallRecord

if TYPE_CHECKING:
    from gateway.access import AccessControl
    from gateway.config import GatewayConfig

__all__ = ["McpGateway", "ToolCall", "ToolListing", "TraceContext", "UpstreamSessions"]

log = logging.getLogger("gateway.mcp")

GATEWAY_CLIENT_INFO = {"name": "llm-gateway", "version": "0.1.0"}
OVERRIDES_SIZE = 65_536
MAX_PAGES = 20
NO_RETRY = frozenset({"initialize", "DELETE"})  # never re-initialise an upstream session for these


class TraceContext(NamedTuple):
    """Where upstream CLIENT spans hang: the trace and the span that is their parent."""

    trace_id: bytes
    parent_span_id: bytes
    flags: int = 1

    @classmethod
    def new(cls) -> TraceContext:
        return cls(new_trace_id(), new_span_id(), 1)


class UpstreamSessions:
    """The upstream session of each upstream server behind one client session (or the gateway's own)."""

    __slots__ = ("ids", "init", "key", "version")

    def __init__(self, key: bytes, init: bytes, ids: dict[str, str], version: str) -> None:
        self.key = key  # the gateway session id (b"" for the gateway's own sessions)
        self.init = init  # initialize params to replay when an upstream forgot the session
        self.ids = ids  # upstream server -> Mcp-Session-Id
        self.version = version  # negotiated protocol version, sent as MCP-Protocol-Version


class ToolListing(NamedTuple):
    tools: list[dict[str, Any]]
    calls: list[McpCallRecord]


class ToolCall:
    """The outcome of :meth:`McpGateway.call_tool` (see the module docstring)."""

    __slots__ = ("calls", "error", "result", "rule_ids")

    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None
        self.error: McpError | None = None
        self.calls: list[McpCallRecord] = []
        self.rule_ids: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.result is not None

    @property
    def is_error(self) -> bool:
        return self.result is not None and self.result.get("isError") is True


_decode_obj = msgspec.json.Decoder(dict[str, Any]).decode


class McpGateway:
    """Registry, policy, session codec and upstream clients of one config generation."""

    def __init__(self, cfg: GatewayConfig, access: AccessControl, previous: McpGateway | None = None) -> None:
        self.config = {s.name: s for s in cfg.mcp_servers}
        self.server_names = list(self.config)
        self.upstreams = {s.name: UpstreamServer(s) for s in cfg.mcp_servers if s.url is not None}
        rules = cfg.access_mcp if cfg.auth is not None else None
        self.policy = ToolPolicy(cfg.mcp_servers, rules)
        self.access = access
        self.codec: SessionCodec = SessionCodec(
            key_material(cfg), previous.codec if previous is not None else None
        )
        self.max_body_bytes = cfg.server.max_body_bytes
        # Upstream sessions re-initialised by this process: (gateway session id, upstream) -> id.
        # The client's token still names the old one; this map is consulted first.
        self._overrides: dict[tuple[bytes, str], str] = previous._overrides if previous is not None else {}
        self._own = UpstreamSessions(b"", b"", {}, rpc.HANDSHAKE_VERSIONS[-1])
        self._own_lock = asyncio.Lock()
        self._own_ready: set[str] = set()
        self.metrics: Any = previous.metrics if previous is not None else None  # McpMetrics, set by the app
        # Tools each upstream listed (bounded): metric labels take tool names from here only.
        self.known_tools: dict[str, set[str]] = previous.known_tools if previous is not None else {}

    # --- registry ---------------------------------------------------------------------------------

    def members(self, server: str) -> list[str]:
        """The upstream servers behind ``server`` (itself for a plain server)."""
        cfg = self.config[server]
        return list(cfg.composite) if cfg.composite is not None else [server]

    def is_composite(self, server: str) -> bool:
        return self.config[server].composite is not None

    def remember_tool(self, server: str, tool: str) -> None:
        seen = self.known_tools.setdefault(server, set())
        if len(seen) < 512:
            seen.add(tool)

    # --- policy -----------------------------------------------------------------------------------

    def authorize_tool(
        self, principal: Principal, server: str, tool: str, metadata: Mapping[str, str]
    ) -> tuple[str, str, tuple[str, ...]]:
        """``(upstream server, upstream tool name, rate-limit rule ids)`` for a tools/call.

        Raises:
            ToolDenied: the registry or the caller's rules do not allow the tool.
            ToolRateLimited: a tool rate-limit rule refused the call.
        """
        if not self.policy.allowed(principal, server, tool):
            raise ToolDenied(
                f"tool '{tool}' is not available to {principal.subject} on MCP server '{server}'",
                {"tool": tool, "server": server},
            )
        member, name = (server, tool) if not self.is_composite(server) else self.policy.split(server, tool)  # type: ignore[misc]
        limiter = self.access.limiter
        if not limiter:
            return member, name, ()
        rule, key = limiter.plan_tool(principal, member, name, metadata)
        if rule is None:
            return member, name, ()
        try:
            limiter.admit_planned(rule, key, self.access.clock())
        except RateLimited as exc:
            retry = next((int(v) for k, v in exc.headers if k == "retry-after"), 1)
            raise ToolRateLimited(
                f"tool '{tool}' on MCP server '{server}': {exc.message}",
                rule_id=exc.rule_id,
                retry_after_s=retry,
            ) from None
        return member, name, (rule.id,)

    def filter_tools(self, principal: Principal, server: str, result: msgspec.Raw) -> bytes:
        """A plain server's tools/list result with only the tools ``principal`` may call."""
        fields, tools = rpc.tool_list(result)
        kept = []
        for name, tool in tools:
            self.remember_tool(server, name)
            if self.policy.allowed(principal, server, name):
                kept.append(tool)
        return rpc.encode_tool_list(fields, kept)

    # --- upstream exchange ------------------------------------------------------------------------

    def session_id_for(self, sessions: UpstreamSessions, server: str) -> str | None:
        if sessions.key:
            replaced = self._overrides.get((sessions.key, server))
            if replaced is not None:
                return replaced
        return sessions.ids.get(server)

    async def send(
        self,
        server: str,
        sessions: UpstreamSessions,
        trace: TraceContext,
        calls: list[McpCallRecord],
        *,
        method: str,
        body: bytes | None = None,
        request: tuple[Any, dict[str, msgspec.Raw]] | None = None,
        target: str = "",
        principal: Principal | None = None,
        extra_headers: list[tuple[str, str]] | None = None,
        http_method: str = "POST",
    ) -> tuple[Reply, McpCallRecord]:
        """Send one message to upstream ``server`` within ``sessions`` and return its reply.

        ``request=(id, params)`` builds a request whose ``params._meta.traceparent`` names the
        CLIENT span; ``body`` is sent as is (notifications, responses). An upstream that answers
        404 to a session it forgot (restart, another replica behind it) is re-initialised with
        the client's original ``initialize`` params and the message is sent once more.

        Raises:
            UpstreamFailed, UpstreamTimedOut: before a reply arrived.
        """
        up = self.upstreams[server]
        for attempt in range(2):
            span_id = new_span_id()
            traceparent = format_traceparent(trace.trace_id, span_id, trace.flags)
            request_id = ""
            arguments = b""
            if request is not None:
                rid, params = request
                request_id = str(rid)
                if method == "tools/call":
                    arguments = bytes(params.get("arguments") or b"")
                payload = rpc.encode_request(rid, method, rpc.with_meta(params, {"traceparent": traceparent}))
            else:
                payload = body or b""
            headers = [
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("traceparent", traceparent),
            ]
            if sessions.version:
                headers.append(("mcp-protocol-version", sessions.version))
                if sessions.version in rpc.MODERN_VERSIONS:
                    # The stateless revision mirrors method and name into headers; upstreams
                    # check them against the body, which the gateway may have rewritten.
                    headers.append(("mcp-method", method))
                    if method == "tools/call" and target:
                        headers.append(("mcp-name", target))
            session_id = self.session_id_for(sessions, server)
            if session_id is not None:
                headers.append(("mcp-session-id", session_id))
            if up.cfg.forward_caller_identity and principal is not None:
                headers.append(("x-gateway-subject", _header_value(principal.subject)))
                headers.append(("x-gateway-teams", _header_value(",".join(principal.teams))))
            if extra_headers:
                headers.extend(extra_headers)
            rec = McpCallRecord(
                span_id, server, method, target, request_id, perf_counter_ns(), 0, 0,
                arguments=arguments, server_address=up.server_address, server_port=up.server_port,
            )  # fmt: skip
            calls.append(rec)
            # A request that asked for progress must stream; others may be read whole (upstream.py).
            bufferable = request is not None and b"progressToken" not in bytes(request[1].get("_meta") or b"")
            try:
                reply = await up.send(http_method, headers, payload, rpc_method=method if bufferable else "")
            except McpError as exc:
                finish(rec, 0, exc)
                raise
            rec.status = reply.status
            # 404 to a session id: the upstream forgot it (restart, another replica behind it).
            # 400 without one, in a client session: the upstream wants a session it never gave
            # this client (it was down when the session opened). Both: initialise, send again.
            forgot = reply.status == 404 and session_id is not None
            never = reply.status == 400 and session_id is None and bool(sessions.key)
            if (forgot or never) and attempt == 0 and method not in NO_RETRY and http_method == "POST":
                await reply.aclose()
                finish(rec, reply.status, UpstreamFailed("the MCP server does not know this session"))
                await self.reinitialize(server, sessions, trace, calls, principal)
                continue
            return reply, rec
        raise AssertionError("unreachable")  # pragma: no cover

    async def reinitialize(
        self,
        server: str,
        sessions: UpstreamSessions,
        trace: TraceContext,
        calls: list[McpCallRecord],
        principal: Principal | None,
    ) -> str | None:
        """Open a new upstream session on ``server`` for ``sessions``; returns its id (None: stateless)."""
        params = _decode_obj(sessions.init) if sessions.init else _default_init(sessions.version)
        stale = self.session_id_for(sessions, server)
        fresh = UpstreamSessions(sessions.key, sessions.init, {}, "")
        if sessions.key:
            self._overrides.pop((sessions.key, server), None)
        reply, rec = await self.send(
            server, fresh, trace, calls, method="initialize", request=("gateway-init", _raw_fields(params)),
            principal=principal,
        )  # fmt: skip
        msg = await read_response(reply, "gateway-init")
        finish_from(rec, reply.status, msg)
        if msg.error:
            code, text = rpc.error_fields(msg.error)
            raise UpstreamFailed(f"MCP server '{server}' refused to initialize: {code} {text}")
        new_id = reply.session_id
        version = str(_decode_obj(msg.result).get("protocolVersion") or sessions.version)
        ids = {server: new_id} if new_id else {}
        ack, ack_rec = await self.send(
            server, UpstreamSessions(b"", b"", ids, version), trace, calls,
            method="notifications/initialized", body=rpc.encode_notification("notifications/initialized"),
            principal=principal,
        )  # fmt: skip
        await ack.aclose()
        finish(ack_rec, ack.status, None)
        if sessions.key:
            if new_id:
                if len(self._overrides) >= OVERRIDES_SIZE:
                    self._overrides.clear()
                self._overrides[(sessions.key, server)] = new_id
        else:
            if new_id:
                sessions.ids[server] = new_id
            else:
                sessions.ids.pop(server, None)
            sessions.version = version
        log.info("re-initialised MCP session on %s (stale: %s)", server, bool(stale))
        return new_id

    # --- in-process API ---------------------------------------------------------------------------

    async def _own_sessions(
        self, server: str, trace: TraceContext, calls: list[McpCallRecord]
    ) -> UpstreamSessions:
        own = self._own
        if server not in own.ids and server not in self._own_ready:
            async with self._own_lock:
                if server not in own.ids and server not in self._own_ready:
                    await self.reinitialize(server, own, trace, calls, None)
                    self._own_ready.add(server)
        return own

    async def list_tools(
        self, principal: Principal, server: str, *, trace: TraceContext | None = None
    ) -> ToolListing:
        """The tools ``principal`` may call on ``server`` (composite: ``<member>__<tool>``)."""
        if server not in self.config or not self.policy.may_use_server(principal, server):
            raise ToolDenied(f"MCP server '{server}' is not available to {principal.subject}")
        trace = trace or TraceContext.new()
        calls: list[McpCallRecord] = []
        tools: list[dict[str, Any]] = []
        composite = self.is_composite(server)
        for member in self.members(server):
            sessions = await self._own_sessions(member, trace, calls)
            for name, tool in await self.upstream_tools(member, sessions, trace, calls, principal):
                shown = f"{member}__{name}" if composite else name
                if self.policy.allowed(principal, server, shown):
                    plain = {k: msgspec.json.decode(v) for k, v in tool.items()}
                    plain["name"] = shown
                    tools.append(plain)
        return ToolListing(tools, calls)

    async def upstream_tools(
        self,
        server: str,
        sessions: UpstreamSessions,
        trace: TraceContext,
        calls: list[McpCallRecord],
        principal: Principal | None,
        meta: dict[str, msgspec.Raw] | None = None,
    ) -> list[tuple[str, dict[str, msgspec.Raw]]]:
        """Every tool ``server`` lists (all pages), as (name, raw fields)."""
        out: list[tuple[str, dict[str, msgspec.Raw]]] = []
        cursor: str | None = None
        for page in range(MAX_PAGES):
            params: dict[str, msgspec.Raw] = dict(meta or {})
            if cursor:
                params["cursor"] = msgspec.Raw(msgspec.json.encode(cursor))
            rid = f"gateway-list-{page}"
            reply, rec = await self.send(
                server,
                sessions,
                trace,
                calls,
                method="tools/list",
                request=(rid, params),
                principal=principal,
            )
            msg = await read_response(reply, rid)
            finish_from(rec, reply.status, msg)
            if msg.error:
                code, text = rpc.error_fields(msg.error)
                raise UpstreamFailed(f"MCP server '{server}' failed tools/list: {code} {text}")
            fields, tools = rpc.tool_list(msg.result)
            for name, _ in tools:
                self.remember_tool(server, name)
            out.extend(tools)
            nxt = fields.get("nextCursor")
            cursor = rpc.str_field(fields, "nextCursor") if nxt is not None else None
            if not cursor:
                break
        return out

    async def call_tool(
        self,
        principal: Principal,
        server: str,
        tool: str,
        arguments: Mapping[str, Any] | bytes | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
        trace: TraceContext | None = None,
    ) -> ToolCall:
        """Call ``tool`` (the name ``principal`` sees) on ``server``; see the module docstring."""
        out = ToolCall()
        started = perf_counter_ns()
        member = server
        try:
            if server not in self.config:
                raise ToolDenied(f"MCP server '{server}' is not available to {principal.subject}")
            member, name, out.rule_ids = self.authorize_tool(principal, server, tool, metadata or {})
            trace = trace or TraceContext.new()
            sessions = await self._own_sessions(member, trace, out.calls)
            args = arguments if isinstance(arguments, bytes) else msgspec.json.encode(dict(arguments or {}))
            params = {"name": msgspec.Raw(msgspec.json.encode(name)), "arguments": msgspec.Raw(args)}
            rid = "gateway-call"
            reply, rec = await self.send(
                member, sessions, trace, out.calls, method="tools/call", request=(rid, params), target=name,
                principal=principal,
            )  # fmt: skip
            msg = await read_response(reply, rid)
            finish_from(rec, reply.status, msg)
            if msg.error:
                code, text = rpc.error_fields(msg.error)
                err = McpError(text or f"MCP server '{member}' answered error {code}")
                err.code = code
                out.error = err
            else:
                out.result = _decode_obj(msg.result)
        except McpError as exc:
            out.error = exc
        if self.metrics is not None:
            self.metrics.tool_call(self, member, tool, out, (perf_counter_ns() - started) / 1e6)
        return out

    async def aclose(self) -> None:
        """Close the upstream clients (after in-flight requests finished)."""
        for up in self.upstreams.values():
            try:
                await up.aclose()
            except Exception:  # closing must not stop the rest of shutdown
                log.exception("closing an MCP upstream client failed")


# --- helpers shared with the HTTP surface --------------------------------------------------------


def _header_value(value: str) -> str:
    """``value`` with anything but visible ASCII and space replaced (JWT claims are free text)."""
    if value.isascii() and value.isprintable():
        return value
    return "".join(c if " " <= c <= "~" else "?" for c in value)


def _raw_fields(params: dict[str, Any]) -> dict[str, msgspec.Raw]:
    return {k: msgspec.Raw(msgspec.json.encode(v)) for k, v in params.items()}


def _default_init(version: str) -> dict[str, Any]:
    return {
        "protocolVersion": version or rpc.HANDSHAKE_VERSIONS[-1],
        "capabilities": {},
        "clientInfo": GATEWAY_CLIENT_INFO,
    }


async def read_response(reply: Reply, request_id: Any) -> rpc.Message:
    """The JSON-RPC response to ``request_id`` in ``reply`` (JSON body or SSE stream); closes it.

    Raises:
        UpstreamFailed: an HTTP error without a JSON-RPC body, HTML, or a stream that ended first.
        UpstreamTimedOut: the upstream went silent for longer than its timeout.
    """
    try:
        if reply.is_sse:
            parser = rpc.SseParser()
            while (chunk := await reply.next_chunk()) is not None:
                for event in parser.feed(chunk):
                    msg = _message_or_none(event.data)
                    if msg is not None and msg.is_response and msg.id == request_id:
                        return msg
            raise UpstreamFailed(f"MCP server '{reply.server}' ended its stream before answering")
        body = await reply.read()
        if reply.content_type == "application/json":
            msg = _message_or_none(body)
            if msg is not None and msg.is_response:
                return msg
        raise UpstreamFailed(
            f"MCP server '{reply.server}' answered HTTP {reply.status} "
            f"({reply.content_type or 'no content type'}) instead of a JSON-RPC response"
        )
    finally:
        await reply.aclose()


def _message_or_none(data: bytes) -> rpc.Message | None:
    try:
        return rpc.decode_message(data)
    except McpError:
        return None


def finish(rec: McpCallRecord, status: int, error: McpError | None) -> None:
    """Close a CLIENT record with a transport outcome."""
    rec.end_pc = perf_counter_ns()
    if status:
        rec.status = status
    if error is not None:
        rec.error_type = error.error_type
        rec.error_message = error.message


def finish_from(rec: McpCallRecord, status: int, msg: rpc.Message) -> None:
    """Close a CLIENT record with the JSON-RPC response it got."""
    rec.end_pc = perf_counter_ns()
    rec.status = status
    if msg.error:
        code, text = rpc.error_fields(msg.error)
        rec.error_type = str(code)
        rec.error_message = text
    elif rec.method == "tools/call":
        rec.result = bytes(msg.result)
        if rpc.result_is_error(msg.result):
            rec.error_type = "tool_error"
