"""``/v1/responses``: create (JSON or a stream), retrieve, delete, list input items.

Create is sequenced like every model request (read → decode → authenticate → load the
previous response → resolve → call with retries and fallbacks → respond → store → record),
reusing :mod:`gateway.proxy`'s steps with the Responses surface
(:mod:`gateway.surfaces.responses`), which picks native or hub per target. A stored
response is written before the client sees its last event, so a client that chains at once on
another replica finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from time import perf_counter_ns
from typing import Any
from urllib.parse import parse_qs

import msgspec
from granian.rsgi import ProtocolClosed, ProtocolError

from gateway.attempt import Attempt
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    ServiceUnavailable,
    error_response,
)
from gateway.metrics import Metrics
from gateway.proxy import (
    SSE_HEADERS,
    Outcome,
    _call_with_fallbacks,
    _record_trace,
    answer_error,
    read_body,
    settle,
)
from gateway.responses.agent import AgentLoop, check_mcp_tools
from gateway.responses.request import ResponsesRequest
from gateway.responses.store import ResponseStore, StoredResponse
from gateway.responses.stream import ChatToResponses, ItemEvents, NativeStage, usage_of_response
from gateway.responses.trail import AgentTrail
from gateway.responses.translate import chat_to_response, decode, encode
from gateway.routing import RoutePlan
from gateway.runtime import Runtime
from gateway.sse import Usage
from gateway.surfaces import StreamChain
from gateway.surfaces.responses import RESPONSES
from gateway.telemetry.drain import Telemetry
from gateway.telemetry.wire import PHASE_AUTH, PHASE_RESOLUTION

log = logging.getLogger("gateway.responses")

PREFIX = "/v1/responses"
JSON = [("content-type", "application/json")]


async def handle_create(
    rt: Runtime, tel: Telemetry, metrics: Metrics, store: ResponseStore, scope: Any, proto: Any
) -> None:
    """``POST /v1/responses``."""
    metrics.inflight_inc()
    out = Outcome.start(scope.headers.get("traceparent"))
    request_id = out.trace_id.hex()
    req: ResponsesRequest | None = None
    trail = AgentTrail()
    loop: AgentLoop | None = None
    response_id = ""
    try:
        body = await read_body(scope, proto, rt.max_body_bytes, rt.config.server.body_timeout_s)
        req = RESPONSES.parse(body, scope.headers)
        req.drop_tools = frozenset(rt.config.responses.drop_builtin_tools)

        out.auth_start_pc = perf_counter_ns()
        try:
            decision = out.decision = rt.access.check(scope.headers.get, req.model)
        except GatewayError:
            out.failed_phase = PHASE_AUTH
            raise
        finally:
            out.auth_end_pc = perf_counter_ns()
        subject = decision.principal.subject

        if req.previous_id is not None:  # the one extra call in the request path (cached)
            prev = await store.get(req.previous_id, subject)
            if prev is None:
                raise InvalidRequest(
                    f"Previous response with id '{req.previous_id}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            req.history = chain_items(prev)
            req.conversation_id = prev.conversation_id
        servers = check_mcp_tools(req, rt.mcp) if req.mcp_tools else []
        if not servers and any(i.get("type") == "mcp_approval_response" for i in req.items):
            raise InvalidRequest("mcp_approval_response items need the request's mcp tools", param="tools")

        plan = out.plan = rt.router.plan(req.model)
        out.resolved_pc = perf_counter_ns()
        if plan is None:
            out.failed_phase = PHASE_RESOLUTION
            raise ModelNotFound(
                f"model '{req.model}' does not exist or is not served by this gateway", param="model"
            )

        trail.start(out.attempts)
        response_id = req.resp_id
        if servers:
            loop = AgentLoop(
                req, servers, rt.mcp, decision.principal, decision.metadata, rt.config.responses.max_tool_calls,
                (out.trace_id, trail.span_id, out.flags),
            )  # fmt: skip
            headers = [("x-request-id", request_id), *decision.response_headers]
            await run_agent(rt, tel, metrics, plan, req, out, loop, trail, proto, headers, store, subject)
            return
        attempt, entry = await _call_with_fallbacks(rt, metrics, plan, req, RESPONSES, out, tel.enabled)
        assert out.target is not None
        native = RESPONSES.api in out.target.urls
        headers = [
            ("x-request-id", request_id),
            ("x-tfy-resolved-model", entry.target),
            *decision.response_headers,
        ]
        if req.dropped_tools and not native:
            headers.append(("x-tfy-dropped-tools", ",".join(dict.fromkeys(req.dropped_tools))))
        out.first_pc = attempt.first_pc
        if attempt.resp is None:
            out.usage = attempt.usage
            response, data = _answer(req, attempt.body, native)
            out.body_out = data
            response_id = str(response.get("id", "")) if response is not None else ""
            await _keep(store, req, response, subject)
            trail.end_pc = perf_counter_ns()
            proto.response_bytes(200, [*JSON, *headers], data)
            return
        out.stream_start_pc = perf_counter_ns()
        # The stage that speaks Responses: the native relay, or the last stage of the hub chain.
        stage: NativeStage | ChatToResponses = (
            attempt.relay.last if isinstance(attempt.relay, StreamChain) else attempt.relay  # type: ignore[assignment]
        )
        try:
            await _relay(proto, attempt, stage, headers, store, req, subject)
        finally:
            out.stream_end_pc = trail.end_pc = perf_counter_ns()
            out.usage = usage_of_response(stage.response)
            if stage.response is not None:  # the trace's tfy.output: the Response object
                out.body_out = encode(stage.response)
                response_id = str(stage.response.get("id", ""))
            out.events = []
    except Exception as exc:
        answer_error(proto, RESPONSES, out, exc, request_id)
    finally:
        cost = settle(rt, metrics, req, out)
        if tel.enabled:
            native = out.target is not None and RESPONSES.api in out.target.urls
            agent = trail.record(
                out.attempts, native, response_id, req.conversation_id if req is not None else None, out.usage,
                loop.runs if loop else None, loop.list_calls if loop else None,
                req.dropped_tools if req is not None else None,
            )  # fmt: skip
            _record_trace(tel, scope.path, RESPONSES, req, out, cost, agent)


async def run_agent(
    rt: Runtime,
    tel: Telemetry,
    metrics: Metrics,
    plan: RoutePlan,
    req: ResponsesRequest,
    out: Outcome,
    loop: AgentLoop,
    trail: AgentTrail,
    proto: Any,
    headers: list[tuple[str, str]],
    store: ResponseStore,
    subject: str,
) -> None:
    """Run the agent loop (:mod:`.agent`): each model call through the plan's retries and
    fallbacks, items streamed as they are made, the whole loop stopped if the client leaves."""

    async def call_model(body: dict[str, Any]) -> dict[str, Any]:
        raw = encode(body)
        view = ResponsesRequest.parse(raw)
        view.drop_tools = req.drop_tools
        response: dict[str, Any] | None = None
        try:
            attempt, _ = await _call_with_fallbacks(rt, metrics, plan, view, RESPONSES, out, tel.enabled)
            if out.first_pc == 0:
                out.first_pc = attempt.first_pc
            if view.dropped_tools:
                req.dropped_tools = view.dropped_tools
            native = out.target is not None and RESPONSES.api in out.target.urls
            response, _ = _answer(view, attempt.body, native)
            return response or {}
        finally:
            native = out.target is not None and RESPONSES.api in out.target.urls
            trail.model_call(
                out.attempts, native, raw if tel.enabled else b"",
                encode(response) if tel.enabled and response is not None else b"",
                usage_of_response(response),
            )  # fmt: skip

    created = int(time.time())
    final: dict[str, Any] | None = None
    async with _client_watch(proto) as left:
        try:
            await loop.prepare()  # may refuse the request: before any byte is sent
            if not req.stream:
                await loop.run(call_model)
                final = loop.response(req.resp_id, created)
                await _keep(store, req, final, subject)
                data = encode(final)
                out.body_out = data
                if out.target is not None:  # the target of the last model call
                    headers.append(("x-tfy-resolved-model", out.target.model_id))
                if req.dropped_tools:
                    headers.append(("x-tfy-dropped-tools", ",".join(dict.fromkeys(req.dropped_tools))))
                proto.response_bytes(200, [*JSON, *headers], data)
                return
            transport = proto.response_stream(200, [*SSE_HEADERS, *headers])
            events = ItemEvents({**loop.response(req.resp_id, created, "in_progress"), "output": []})
            await transport.send_bytes(events.opening() + b"".join(events.item(i) for i in loop.output))

            async def emit(item: dict[str, Any]) -> None:
                await transport.send_bytes(events.item(item))

            loop.emit = emit
            out.stream_start_pc = perf_counter_ns()
            try:
                await loop.run(call_model)
                final = loop.response(req.resp_id, created)
                await _keep(store, req, final, subject)
            except GatewayError as exc:  # the client has events: end with a failed response
                out.status, out.error = exc.status, exc
                final = loop.response(req.resp_id, created, "failed")
                final["error"] = {"code": exc.code or "upstream_error", "message": exc.message}
            await transport.send_bytes(events.terminal(final))
            out.body_out = encode(final)
        except asyncio.CancelledError:
            if not left.done():
                raise  # shutdown, not the client
            out.status = 499  # the client left: the loop stopped, no upstream call outlives it
        except (ProtocolClosed, ProtocolError) as exc:
            log.debug("agent stream to client ended: %s", exc)
        finally:
            trail.end_pc = perf_counter_ns()
            if out.stream_start_pc:
                out.stream_end_pc = trail.end_pc
            usage = loop.usage
            out.usage = Usage(usage["input_tokens"], usage["output_tokens"], usage["total_tokens"])


@contextlib.asynccontextmanager
async def _client_watch(proto: Any) -> AsyncIterator[asyncio.Future[Any]]:
    """Cancel the current task when the client disconnects; yields the watcher (done: it left)."""
    task = asyncio.current_task()
    watcher = asyncio.ensure_future(proto.client_disconnect())

    def on_disconnect(_: Any) -> None:
        if task is not None and not task.done():
            task.cancel()

    watcher.add_done_callback(on_disconnect)
    try:
        yield watcher
    finally:
        watcher.remove_done_callback(on_disconnect)
        watcher.cancel()


def _answer(req: ResponsesRequest, body: bytes, native: bool) -> tuple[dict[str, Any] | None, bytes]:
    """The Response object and bytes for a non-streamed attempt's body."""
    if not native:
        response = chat_to_response(body, req.obj, req.resp_id)
        return response, encode(response)
    try:
        obj = decode(body)
    except msgspec.DecodeError:
        return None, body
    if not isinstance(obj, dict):
        return None, body
    if req.previous_id is not None:
        # The gateway expanded the chain: say which response this one continues.
        obj["previous_response_id"] = req.previous_id
        return obj, encode(obj)
    return obj, body


def chain_items(prev: StoredResponse) -> list[dict[str, Any]]:
    """Every item of a chain up to and including ``prev``'s output, oldest first."""
    context = decode(prev.context)
    output = decode(prev.response).get("output") or []
    return [*context, *output]


async def _keep(
    store: ResponseStore, req: ResponsesRequest, response: dict[str, Any] | None, subject: str
) -> None:
    """Store the response (``store`` not false, and it did not fail); a store failure is logged:
    the client has its answer, only a later ``previous_response_id`` will miss it."""
    if not req.store or response is None or response.get("status") == "failed":
        return
    resp_id = response.get("id")
    if not isinstance(resp_id, str) or not resp_id:
        return
    stored = StoredResponse(
        resp_id,
        subject,
        req.conversation_id or resp_id,
        time.time(),
        msgspec.Raw(encode(response)),
        msgspec.Raw(encode(req.items)),
        msgspec.Raw(encode([*req.history, *req.items])),
    )
    try:
        await store.put(stored)
    except ServiceUnavailable as exc:
        log.warning("storing response %s failed: %s", resp_id, exc.message)
    except Exception:
        log.exception("storing response %s failed", resp_id)


async def _relay(
    proto: Any,
    attempt: Attempt,
    stage: NativeStage | ChatToResponses,
    headers: list[tuple[str, str]],
    store: ResponseStore,
    req: ResponsesRequest,
    subject: str,
) -> None:
    """Relay the stream event by event; store the response before its terminal event goes out;
    cancel the upstream if the client leaves."""
    resp = attempt.resp
    assert resp is not None
    transport = proto.response_stream(200, [*SSE_HEADERS, *headers])

    async def send(data: bytes) -> None:
        if stage.done:
            await _keep(store, req, stage.response, subject)
        if data:
            await transport.send_bytes(data)

    async with _client_watch(proto) as left:
        try:
            await send(attempt.first_out)
            while not stage.done:
                try:
                    chunk = await resp.next_chunk()
                except GatewayError as exc:
                    await transport.send_bytes(stage.fail(exc.code or "upstream_error", exc.message))
                    return
                if chunk is None:
                    break
                await send(attempt.feed(chunk))
            if not stage.done:
                await send(attempt.relay.flush())
            if not stage.done:
                await transport.send_bytes(
                    stage.fail("stream_truncated", "the provider ended the stream early")
                )
        except asyncio.CancelledError:
            if not left.done():
                raise  # cancelled by shutdown, not by the client
        except (ProtocolClosed, ProtocolError) as exc:
            log.debug("stream to client ended: %s", exc)
        except Exception:
            log.exception("responses stream relay failed")
        finally:
            await resp.aclose()


# --- stored responses ----------------------------------------------------------------------------


async def handle_stored(rt: Runtime, store: ResponseStore, scope: Any, proto: Any) -> None:
    """``GET|DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``,
    ``POST /v1/responses/{id}/cancel``: only the caller's own responses exist for it."""
    try:
        rest = scope.path[len(PREFIX) + 1 :]
        resp_id, _, sub = rest.partition("/")
        method = scope.method
        if not resp_id or sub not in ("", "input_items", "cancel"):
            raise NotFound(f"no route for {method} {scope.path}", code="unknown_url")
        subject = rt.access.authenticate(scope.headers.get).subject
        if sub == "cancel":
            if method != "POST":
                raise _method(method, scope.path, "POST")
            if await store.get(resp_id, subject) is None:
                raise _not_found(resp_id)
            raise InvalidRequest("Only background responses can be cancelled.", code="invalid_request")
        if method == "DELETE" and not sub:
            if not await store.delete(resp_id, subject):
                raise _not_found(resp_id)
            proto.response_bytes(200, JSON, encode({"id": resp_id, "object": "response", "deleted": True}))
            return
        if method not in ("GET", "HEAD"):
            raise _method(method, scope.path, "GET, DELETE" if not sub else "GET")
        query = parse_qs(scope.query_string or "")
        stored = await store.get(resp_id, subject)
        if stored is None:
            raise _not_found(resp_id)
        if not sub:
            if query.get("stream", ["false"])[0] == "true":
                raise InvalidRequest("streaming a stored response is not supported", param="stream")
            proto.response_bytes(200, JSON, bytes(stored.response))
            return
        proto.response_bytes(200, JSON, encode(_page(decode(stored.input_items), query)))
    except GatewayError as exc:
        status, headers, body = error_response(exc)
        proto.response_bytes(status, headers, body)


def _page(items: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
    """One page of ``input_items`` (``order`` asc|desc, default desc; ``limit`` 1-100; ``after``)."""
    order = query.get("order", ["desc"])[0]
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'", param="order")
    try:
        limit = int(query.get("limit", ["20"])[0])
    except ValueError:
        raise InvalidRequest("'limit' must be an integer", param="limit") from None
    if not 1 <= limit <= 100:
        raise InvalidRequest("'limit' must be between 1 and 100", param="limit")
    seq = items if order == "asc" else items[::-1]
    after = query.get("after", [None])[0]
    if after is not None:
        ids = [i.get("id") for i in seq]
        if after not in ids:
            raise InvalidRequest(f"no input item with id '{after}'", param="after")
        seq = seq[ids.index(after) + 1 :]
    page = seq[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(seq) > limit,
    }


def _not_found(resp_id: str) -> NotFound:
    return NotFound(f"Response with id '{resp_id}' not found.", code="response_not_found")


def _method(method: str, path: str, allow: str) -> GatewayError:
    from gateway.errors import MethodNotAllowed

    return MethodNotAllowed(f"{method} is not allowed on {path}; use {allow}", headers=[("allow", allow)])
