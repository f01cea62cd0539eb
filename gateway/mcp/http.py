"""``/mcp/{server}``: MCP Streamable HTTP to clients, top to bottom.

    validate (server, HTTP method, Accept, Content-Type, size, protocol version)
    → authenticate (the gateway's ``auth``: API key or JWT) → may the caller use the server?
    → open the session token (handshake revisions) → decide the message
        initialize          open upstream sessions, mint the client's session token
        tools/list          upstream (composite: every member), filtered for this caller
        tools/call          access + rate limit in memory, then upstream (never when refused)
        anything else       passed through (composite: ping/discover answered, rest -32601)
    → relay the upstream reply (JSON, or an SSE stream event by event) → record one trace

Revisions: 2025-03-26 / 2025-06-18 / 2025-11-25 (``initialize``, ``Mcp-Session-Id``, GET stream,
DELETE) and 2026-07-28 (stateless: no session, GET and DELETE answer 405). Errors about one
request are JSON-RPC errors carrying its id; errors about the HTTP message are 4xx with an
id-less JSON-RPC error (see :mod:`gateway.mcp.jsonrpc`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from time import perf_counter_ns, time_ns
from typing import TYPE_CHECKING, Any

import msgspec
from granian.rsgi import ProtocolClosed, ProtocolError

from gateway.access.metadata import HEADER as METADATA_HEADER
from gateway.access.metadata import parse_metadata
from gateway.body import check_json_bytes
from gateway.errors import ClientDisconnected, GatewayError, PayloadTooLarge, RequestTimeout
from gateway.errors import InvalidRequest as HttpInvalidRequest
from gateway.mcp import jsonrpc as rpc
from gateway.mcp.core import (
    McpGateway,
    TraceContext,
    UpstreamSessions,
    finish,
    finish_from,
    read_response,
)
from gateway.mcp.jsonrpc import McpError, MethodNotFound, UpstreamFailed
from gateway.mcp.session import SessionState, new_state
from gateway.mcp.upstream import Reply
from gateway.proxy import read_body
from gateway.telemetry.spans import new_span_id, new_trace_id, parse_traceparent
from gateway.telemetry.wire import PHASE_AUTH, PHASE_NONE, McpCallRecord, McpRecord, TraceRecord

if TYPE_CHECKING:
    from gateway.access.credentials import Principal

__all__ = ["handle_mcp"]

log = logging.getLogger("gateway.mcp")

PREFIX = "/mcp/"
JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("x-accel-buffering", "no")]
DRAIN_POLL_S = 1.0


class HttpFailure(McpError):
    """An error about the HTTP message itself (no JSON-RPC id), with its own status."""

    code = -32600

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message, http_status=status)
        self.headers = headers or []


class Req:
    """One MCP HTTP request: what it learned, for the trace record and the metrics."""

    __slots__ = (
        "auth_end", "auth_start", "calls", "error", "failed_phase", "http_method", "method",
        "principal", "protocol_version", "raw_id", "request_id", "rule_ids", "server", "session_id", "start_pc",
        "status", "stream", "target", "trace", "epoch_offset", "span_id", "parent_id", "metadata",
    )  # fmt: skip

    def __init__(self, server: str, http_method: str, traceparent: str | None) -> None:
        parent = parse_traceparent(traceparent) if traceparent else None
        self.start_pc = perf_counter_ns()
        self.epoch_offset = time_ns() - self.start_pc
        self.span_id = new_span_id()
        if parent is None:
            self.parent_id, trace_id, flags = b"", new_trace_id(), 1
        else:
            trace_id, self.parent_id, flags = parent
        self.trace = TraceContext(trace_id, self.span_id, flags)  # upstream spans hang off the root
        self.server = server
        self.http_method = http_method
        self.method = ""
        self.target = ""
        self.request_id = ""
        self.raw_id: Any = None  # the client's id as sent (int or str), echoed in errors
        self.session_id = ""
        self.protocol_version = ""
        self.status = 200
        self.error: McpError | GatewayError | None = None
        self.failed_phase = PHASE_NONE
        self.auth_start = self.auth_end = 0
        self.principal: Principal | None = None
        self.metadata: dict[str, str] = {}
        self.calls: list[McpCallRecord] = []
        self.rule_ids: tuple[str, ...] = ()
        self.stream = False


async def handle_mcp(app: Any, scope: Any, proto: Any) -> None:
    """Serve one request under ``/mcp/``."""
    rt = app.runtime
    gw: McpGateway = rt.mcp
    if gw.metrics is None and app.metrics is not None:
        from gateway.metrics.mcp import McpMetrics

        gw.metrics = McpMetrics.of(app.metrics)
    server = scope.path[len(PREFIX) :].rstrip("/")
    headers = scope.headers
    req = Req(server, scope.method, headers.get("traceparent"))
    try:
        await _serve(app, gw, scope, proto, req)
    except ClientDisconnected:  # left mid-body: nobody to answer, counted as 499
        req.status = 499
    except McpError as exc:
        req.error, req.status = exc, exc.http_status
        if isinstance(exc, rpc.ToolRateLimited):
            req.rule_ids = (exc.rule_id,)
        extra = exc.headers if isinstance(exc, HttpFailure) else []
        body = (
            rpc.encode_error(req.raw_id, exc)
            if not isinstance(exc, HttpFailure)
            else rpc.encode_error(None, exc)
        )
        _respond(proto, exc.http_status, [*JSON, *extra], body)
    except Exception:
        log.exception("unhandled error on %s %s", scope.method, scope.path)
        internal = McpError("internal error")
        req.error, req.status = internal, 500
        _respond(proto, 500, JSON, rpc.encode_error(None, internal))
    finally:
        if gw.metrics is not None and gw.config.get(server) is not None:
            gw.metrics.request(req, gw)
        tel = app.telemetry
        if tel is not None and tel.enabled:
            _record_trace(tel, scope.path, req)


async def _serve(app: Any, gw: McpGateway, scope: Any, proto: Any, req: Req) -> None:
    headers = scope.headers
    if req.http_method not in ("POST", "GET", "DELETE"):
        raise HttpFailure(
            405, f"{req.http_method} is not allowed on /mcp/{req.server}", [("allow", "POST, GET, DELETE")]
        )

    req.auth_start = perf_counter_ns()
    try:
        principal = req.principal = app.runtime.access.authenticate(headers.get)
        req.metadata = parse_metadata(headers.get(METADATA_HEADER))
        # After authentication: the registry's names are not for anonymous eyes.
        if req.server not in gw.config:
            raise HttpFailure(404, f"no MCP server named '{req.server}' on this gateway")
        if not gw.policy.may_use_server(principal, req.server):
            raise HttpFailure(403, f"{principal.subject} may not use MCP server '{req.server}'")
    except GatewayError as exc:
        req.failed_phase = PHASE_AUTH
        extra = [("www-authenticate", 'Bearer realm="llm-gateway"')] if exc.status == 401 else []
        raise HttpFailure(exc.status, exc.message, extra) from None
    except HttpFailure:
        req.failed_phase = PHASE_AUTH
        raise
    finally:
        req.auth_end = perf_counter_ns()

    version = headers.get("mcp-protocol-version")
    if version is not None and version not in rpc.SUPPORTED_VERSIONS:
        raise rpc.UnsupportedVersion(version)
    req.protocol_version = version or ""
    modern = version in rpc.MODERN_VERSIONS

    if req.http_method == "POST":
        await _post(app, gw, scope, proto, req, principal, modern)
        return
    composite = gw.is_composite(req.server)
    if modern or (composite and req.http_method == "GET"):
        allow = "POST" if modern else "POST, DELETE"
        raise HttpFailure(405, f"{req.http_method} is not offered on /mcp/{req.server}", [("allow", allow)])
    state = _open_session(gw, headers, req, principal, required=True)
    assert state is not None
    sessions = _sessions(state, version or state.version)
    if req.http_method == "GET":
        try:
            await _get_stream(app, gw, proto, req, sessions, headers.get("last-event-id"))
        except McpError as exc:  # before the stream started: an HTTP error, not a JSON-RPC answer
            raise HttpFailure(504 if isinstance(exc, rpc.UpstreamTimedOut) else 502, exc.message) from None
        return
    # DELETE ends the upstream sessions behind this one (each member of a composite).
    statuses = []
    for member in gw.members(req.server):
        if gw.session_id_for(sessions, member) is None:
            continue  # a stateless upstream: nothing to end
        try:
            reply, _ = await gw.send(member, sessions, req.trace, [], method="DELETE", http_method="DELETE")
        except McpError as exc:
            log.info("MCP DELETE on %s failed: %s", member, exc)
            continue
        await reply.aclose()
        statuses.append(reply.status)
    req.status = 405 if statuses and all(s == 405 for s in statuses) else 200
    _respond(proto, req.status, [("allow", "POST, GET")] if req.status == 405 else [], b"")


async def _post(
    app: Any, gw: McpGateway, scope: Any, proto: Any, req: Req, principal: Principal, modern: bool
) -> None:
    headers = scope.headers
    accept = headers.get("accept") or ""
    if "*/*" not in accept and ("application/json" not in accept or "text/event-stream" not in accept):
        raise HttpFailure(406, "Not Acceptable: Accept must list application/json and text/event-stream")
    ctype = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        raise HttpFailure(415, "Unsupported Media Type: Content-Type must be application/json")
    body = await _read_body(scope, proto, gw.max_body_bytes, app.runtime.config.server.body_timeout_s)
    msg = rpc.decode_message(body)
    req.method = msg.method if isinstance(msg.method, str) else ""
    if msg.id is not msgspec.UNSET:
        req.request_id = str(msg.id)
        req.raw_id = msg.id
    if modern:
        mirrored = headers.get("mcp-method")
        if mirrored is not None and mirrored != req.method:
            raise rpc.HeaderMismatch(
                f"Header mismatch: Mcp-Method '{mirrored}' but the body says '{req.method}'"
            )
    composite = gw.is_composite(req.server)

    if msg.is_request and req.method == "initialize" and not modern:
        await _initialize(gw, proto, req, principal, msg)
        return
    state = None if modern else _open_session(gw, headers, req, principal, required=True)
    sessions = (
        UpstreamSessions(b"", b"", {}, req.protocol_version)
        if state is None
        else _sessions(state, req.protocol_version or state.version)
    )
    extra = [(k, v) for k, v in headers.items() if k.startswith("mcp-param-")]
    if modern and "mcp-name" in headers and req.method != "tools/call":
        extra.append(("mcp-name", headers["mcp-name"]))

    if not msg.is_request:  # a notification or the client's answer to a server request
        req.status = 202
        if composite:
            _respond(proto, 202, [], b"")  # members were initialised by the gateway itself
            return
        reply, rec = await gw.send(
            req.server, sessions, req.trace, req.calls, method=req.method or "response", body=body,
            principal=principal, extra_headers=extra,
        )  # fmt: skip
        await reply.aclose()
        finish(rec, reply.status, None)
        req.status = 202 if reply.status < 300 else reply.status
        _respond(proto, req.status, [], b"")
        return

    params = rpc.decode_params(msg.params)
    member, target = req.server, ""
    transform = None
    if req.method == "tools/call":
        tool = rpc.str_field(params, "name")
        if tool is None:
            raise rpc.InvalidParams("Invalid params: tools/call needs a string 'name'")
        req.target = tool
        member, target, req.rule_ids = gw.authorize_tool(principal, req.server, tool, req.metadata)
        if target != tool:
            params = {**params, "name": msgspec.Raw(msgspec.json.encode(target))}
    elif composite:
        result = await _composite_local(gw, req, principal, msg, params, sessions, modern)
        _respond(proto, 200, JSON, rpc.encode_result(msg.id, result))
        return
    elif req.method == "tools/list":

        def transform(raw: msgspec.Raw) -> bytes:
            return gw.filter_tools(principal, req.server, raw)

    reply, rec = await gw.send(
        member, sessions, req.trace, req.calls, method=req.method, request=(msg.id, params), target=target,
        principal=principal, extra_headers=extra,
    )  # fmt: skip
    await _relay(app, proto, req, reply, rec, msg.id, transform, [])


async def _initialize(gw: McpGateway, proto: Any, req: Req, principal: Principal, msg: rpc.Message) -> None:
    """Open the client's session: upstream ``initialize`` (every member of a composite), then a token."""
    params = rpc.decode_params(msg.params)
    requested = rpc.str_field(params, "protocolVersion") or rpc.DEFAULT_VERSION
    init = bytes(msg.params) or b"{}"
    if not gw.is_composite(req.server):
        reply, rec = await gw.send(
            req.server, UpstreamSessions(b"", b"", {}, ""), req.trace, req.calls, method="initialize",
            request=(msg.id, params), principal=principal,
        )  # fmt: skip
        token_headers: list[tuple[str, str]] = []
        if reply.status == 200:
            upstream = {req.server: reply.session_id} if reply.session_id else {}
            state = new_state(req.server, principal.subject, requested, init, upstream)
            req.session_id = state.session_id
            token_headers = [("mcp-session-id", gw.codec.seal(state))]
        await _relay(None, proto, req, reply, rec, msg.id, None, token_headers)
        return
    version = requested if requested in rpc.HANDSHAKE_VERSIONS else rpc.HANDSHAKE_VERSIONS[-1]
    own = UpstreamSessions(b"", init, {}, "")
    results = await asyncio.gather(
        *(gw.reinitialize(m, own, req.trace, req.calls, principal) for m in gw.members(req.server)),
        return_exceptions=True,
    )
    for member, res in zip(gw.members(req.server), results, strict=True):
        if isinstance(res, BaseException):
            log.warning("MCP composite %s: member %s did not initialize: %s", req.server, member, res)
    state = new_state(req.server, principal.subject, version, init, dict(own.ids))
    req.session_id = state.session_id
    result = {
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": {"name": f"llm-gateway/{req.server}", "version": "0.1.0"},
    }
    _respond(proto, 200, [*JSON, ("mcp-session-id", gw.codec.seal(state))], rpc.encode_result(msg.id, result))


async def _composite_local(
    gw: McpGateway,
    req: Req,
    principal: Principal,
    msg: rpc.Message,
    params: dict[str, msgspec.Raw],
    sessions: UpstreamSessions,
    modern: bool,
) -> Any:
    """What a composite server answers itself: merged tools/list, ping, server/discover."""
    if req.method == "tools/list":
        meta = {"_meta": params["_meta"]} if "_meta" in params else None
        members = gw.members(req.server)
        listed = await asyncio.gather(
            *(gw.upstream_tools(m, sessions, req.trace, req.calls, principal, meta) for m in members),
            return_exceptions=True,
        )
        tools: list[dict[str, msgspec.Raw]] = []
        for member, found in zip(members, listed, strict=True):
            if isinstance(found, BaseException):
                # One member down must not hide the others' tools; its CLIENT span shows the error.
                log.warning("MCP composite %s: tools/list of %s failed: %s", req.server, member, found)
                continue
            for name, tool in found:
                shown = f"{member}__{name}"
                if gw.policy.allowed(principal, req.server, shown):
                    tools.append(rpc.renamed(tool, shown))
        out: dict[str, Any] = {"tools": tools}
        if modern:
            out.update(ttlMs=0, cacheScope="private", resultType="complete")
        return out
    if req.method == "ping":
        return {}
    if req.method == "server/discover":
        return {
            "supportedVersions": list(rpc.MODERN_VERSIONS),
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": f"llm-gateway/{req.server}", "version": "0.1.0"},
            "ttlMs": 0,
            "cacheScope": "private",
            "resultType": "complete",
        }
    raise MethodNotFound(f"Method not found: a composite MCP server serves tools only, not '{req.method}'")


async def _relay(
    app: Any,
    proto: Any,
    req: Req,
    reply: Reply,
    rec: McpCallRecord,
    request_id: Any,
    transform: Any,
    extra: list[tuple[str, str]],
) -> None:
    """Answer the client with the upstream's reply to ``request_id`` (JSON or SSE, as it came)."""
    if not reply.is_sse:
        try:
            msg = await read_response(reply, request_id)
        except UpstreamFailed as exc:
            finish(rec, reply.status, exc)
            raise
        finish_from(rec, reply.status, msg)
        body = (
            rpc.encode_result(request_id, msgspec.Raw(transform(msg.result)))
            if transform and msg.result
            else None
        )
        status = req.status = 200 if reply.status < 300 else reply.status  # a 4xx with a JSON-RPC body
        _respond(proto, status, [*JSON, *extra], body if body is not None else _reencode(msg, request_id))
        return
    req.stream = True
    transport = proto.response_stream(200, [*SSE, *extra])
    parser = rpc.SseParser()
    answered = False
    stop = _StopWhen(proto)  # closing the stream cancels the request (and the upstream call)
    try:
        while (chunk := await reply.next_chunk()) is not None:
            for event in parser.feed(chunk):
                got = _message(event.data)
                if got is not None and got.is_response and got.id == request_id:
                    answered = True
                    finish_from(rec, reply.status, got)
                    if transform and got.result:
                        data = rpc.encode_result(got.id, msgspec.Raw(transform(got.result)))
                        await transport.send_bytes(rpc.sse_event(data, event.id))
                        continue
                await transport.send_bytes(event.raw)
            if answered:
                break
        if not answered:
            raise UpstreamFailed(f"MCP server '{reply.server}' ended its stream before answering")
    except McpError as exc:
        finish(rec, reply.status, exc)
        req.error = exc
        with contextlib.suppress(ProtocolClosed, ProtocolError):
            await transport.send_bytes(rpc.sse_event(rpc.encode_error(request_id, exc)))
    except asyncio.CancelledError:
        if not stop.fired:
            raise  # cancelled by shutdown
        finish(rec, reply.status, UpstreamFailed("the client closed the stream"))
    except (ProtocolClosed, ProtocolError) as exc:  # the client went away while we wrote
        finish(rec, reply.status, UpstreamFailed("the client closed the stream"))
        log.debug("MCP stream to client ended: %s", exc)
    finally:
        stop.close()
        await reply.aclose()


async def _get_stream(
    app: Any, gw: McpGateway, proto: Any, req: Req, sessions: UpstreamSessions, last_event_id: str | None
) -> None:
    """The GET stream (server-initiated messages), relayed until either side leaves or the pod drains."""
    extra = [("last-event-id", last_event_id)] if last_event_id else []
    reply, _ = await gw.send(
        req.server, sessions, req.trace, [], method="GET", http_method="GET", extra_headers=extra
    )
    if not reply.is_sse:
        await reply.aclose()
        _respond(proto, reply.status if reply.status != 200 else 405, [("allow", "POST, DELETE")], b"")
        return
    req.stream = True
    stop = _StopWhen(proto, app)
    transport = proto.response_stream(200, SSE)
    try:
        while (chunk := await reply.next_chunk()) is not None:
            await transport.send_bytes(chunk)
    except asyncio.CancelledError:
        if not stop.fired:
            raise  # cancelled by shutdown
        # The client left, or this pod drains: the client reconnects (Last-Event-ID) to a peer.
    except (McpError, ProtocolClosed, ProtocolError) as exc:
        log.debug("MCP GET stream ended: %s", exc)
    finally:
        stop.close()
        await reply.aclose()


class _StopWhen:
    """Cancels the current task when the client disconnects (or, given ``app``, the pod drains)."""

    def __init__(self, proto: Any, app: Any = None) -> None:
        self._task = asyncio.current_task()
        self._watchers = [asyncio.ensure_future(proto.client_disconnect())]
        if app is not None:
            self._watchers.append(asyncio.ensure_future(_wait_draining(app)))
        for w in self._watchers:
            w.add_done_callback(self._stop)

    @property
    def fired(self) -> bool:
        return any(w.done() and not w.cancelled() for w in self._watchers)

    def _stop(self, _: Any) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def close(self) -> None:
        for w in self._watchers:
            w.remove_done_callback(self._stop)
            w.cancel()


async def _wait_draining(app: Any) -> None:
    while not app.draining:
        await asyncio.sleep(DRAIN_POLL_S)


# --- sessions ------------------------------------------------------------------------------------


def _open_session(
    gw: McpGateway, headers: Any, req: Req, principal: Principal, *, required: bool
) -> SessionState | None:
    token = headers.get("mcp-session-id")
    if token is None:
        if required:
            raise HttpFailure(400, "Bad Request: missing Mcp-Session-Id header (send initialize first)")
        return None
    state = gw.codec.open(token)
    if state is None or state.server != req.server or state.subject != principal.subject:
        raise HttpFailure(404, "Session not found: initialize a new session")
    req.session_id = state.session_id
    if not req.protocol_version:
        req.protocol_version = state.version
    return state


def _sessions(state: SessionState, version: str) -> UpstreamSessions:
    return UpstreamSessions(state.sid, state.init, dict(state.upstream), version)


# --- HTTP helpers ----------------------------------------------------------------------------------


async def _read_body(scope: Any, proto: Any, limit: int, timeout_s: float) -> bytes:
    """The POST body, checked as every surface checks it (size, time, UTF-8, nesting depth)."""
    try:
        body = await read_body(scope, proto, limit, timeout_s)
    except PayloadTooLarge as exc:
        raise HttpFailure(413, exc.message) from None
    except RequestTimeout as exc:
        raise HttpFailure(408, exc.message, [("connection", "close")]) from None
    except HttpInvalidRequest as exc:
        raise HttpFailure(400, exc.message) from None
    try:
        check_json_bytes(body)
    except HttpInvalidRequest as exc:
        raise rpc.ParseError(f"Parse error: {exc.message}") from None
    return body


def _respond(proto: Any, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    proto.response_bytes(status, headers, body)


def _message(data: bytes) -> rpc.Message | None:
    try:
        return rpc.decode_message(data)
    except McpError:
        return None


def _reencode(msg: rpc.Message, request_id: Any) -> bytes:
    """The upstream's answer with the client's id (an upstream that could not read our request
    answers with a null id)."""
    if msg.error:
        return msgspec.json.encode({"jsonrpc": "2.0", "id": request_id, "error": msg.error})
    return rpc.encode_result(request_id, msg.result)


def _record_trace(tel: Any, path: str, req: Req) -> None:
    """Hand one trace record to the ring; the exporter builds the spans (``expand_mcp``)."""
    try:
        err = req.error
        if err is None:
            error_type, error_message = "", ""
        elif isinstance(err, McpError):
            error_type, error_message = err.error_type, err.message
        else:
            error_type, error_message = err.code or type(err).__name__, err.message
        mcp = McpRecord(
            req.server, req.http_method, req.method, req.target, req.request_id, req.session_id,
            req.protocol_version, tuple(req.calls),
        )  # fmt: skip
        principal = req.principal
        tel.record(
            TraceRecord(
                req.trace.trace_id, req.span_id, req.parent_id, req.epoch_offset, req.start_pc, perf_counter_ns(),
                path, "mcp", req.status, error_type, error_message, req.failed_phase, "", req.stream, b"",
                req.auth_start, req.auth_end, 0, principal.subject if principal is not None else "",
                req.metadata, (), req.rule_ids, (), 0, 0, 0, -1, -1, None, b"", b"", mcp=mcp,
            )
        )  # fmt: skip
    except Exception:  # telemetry never fails a request
        log.exception("recording an MCP trace failed")
