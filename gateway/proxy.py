"""The request path, top to bottom: read → decode → resolve → call upstream → respond.

Every step is a call into a small module that owns it; this file only sequences them and
turns errors into responses (through :func:`gateway.errors.error_response`, the one mapping).
Nothing here awaits anything but the client's body, the provider, and the client's socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from granian.rsgi import ProtocolClosed, ProtocolError

from gateway.attempt import Attempt, TTFTTimeout, run_attempt
from gateway.body import ParsedRequest, parse_request
from gateway.errors import (
    JSON_HEADERS,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    UpstreamError,
    error_response,
    sse_error_event,
)
from gateway.routing import FailureKind, PlanEntry, RoutePlan, counts_as_failure, outcome_of
from gateway.runtime import Runtime

log = logging.getLogger("gateway.proxy")

SSE_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


async def read_body(scope: Any, proto: Any, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` without reading it all."""
    declared = scope.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidRequest("invalid content-length header", code="invalid_header") from None
        if size > limit:
            raise PayloadTooLarge(f"request body of {size} bytes exceeds the limit of {limit} bytes")
        return await proto()
    parts: list[bytes] = []
    size = 0
    async for chunk in proto:  # chunked upload: count as it arrives
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def new_request_id() -> str:
    return os.urandom(16).hex()


async def handle_llm(rt: Runtime, scope: Any, proto: Any, endpoint: str) -> None:
    """``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``."""
    request_id = new_request_id()
    try:
        body = await read_body(scope, proto, rt.max_body_bytes)
        req = parse_request(body, endpoint)
        plan = rt.router.plan(req.model)
        if plan is None:
            raise ModelNotFound(
                f"model '{req.model}' does not exist or is not served by this gateway", param="model"
            )
        attempt, entry = await _call_with_fallbacks(rt, plan, req, endpoint)
        headers = [("x-request-id", request_id), ("x-tfy-resolved-model", entry.target)]
        if attempt.resp is None:
            proto.response_bytes(200, [("content-type", attempt.content_type), *headers], attempt.body)
            return
        await _relay_stream(proto, attempt, headers)
    except GatewayError as exc:
        status, headers, err_body = error_response(exc)
        proto.response_bytes(status, [*headers, ("x-request-id", request_id)], err_body)
    except Exception:
        # Our own bug, never the client's input: log it with the id the client sees.
        log.exception("unhandled error in request %s", request_id)
        status, headers, err_body = error_response(GatewayError("internal error"))
        proto.response_bytes(status, [*headers, ("x-request-id", request_id)], err_body)


async def _call_with_fallbacks(
    rt: Runtime, plan: RoutePlan, req: ParsedRequest, endpoint: str
) -> tuple[Attempt, PlanEntry]:
    """Walk the plan: retry a target per its ``retry_config``, then fall back to the next one."""
    router = rt.router
    step = plan.first()
    while True:
        entry = step.entry
        started = time.perf_counter()
        try:
            attempt = await run_attempt(rt.models[entry.target], entry, req, endpoint, [])
        except UpstreamError as exc:
            outcome = FailureKind.TTFT_TIMEOUT if isinstance(exc, TTFTTimeout) else outcome_of(exc)
            if counts_as_failure(outcome):
                router.record(entry.target, False, time.perf_counter() - started)
            nxt = plan.next_step(step, outcome)
            if nxt is None:
                raise
            step = nxt
            if step.delay_s:
                await asyncio.sleep(step.delay_s)
            continue
        router.record(entry.target, True, time.perf_counter() - started)
        return attempt, entry


async def _relay_stream(proto: Any, attempt: Attempt, headers: list[tuple[str, str]]) -> None:
    """Pass an SSE stream through as it arrives; cancel the upstream if the client leaves."""
    resp = attempt.resp
    assert resp is not None
    task = asyncio.current_task()
    watcher = asyncio.ensure_future(proto.client_disconnect())

    def on_disconnect(_: Any) -> None:
        if task is not None and not task.done():
            task.cancel()

    watcher.add_done_callback(on_disconnect)
    transport = proto.response_stream(200, [*SSE_HEADERS, *headers])
    try:
        if attempt.first_out:
            await transport.send_bytes(attempt.first_out)
        while not attempt.stream_complete:
            try:
                chunk = await resp.next_chunk()
            except GatewayError as exc:
                # Headers (and events) are already sent: end with an error event, never silently.
                await transport.send_bytes(sse_error_event(exc))
                return
            if chunk is None:
                break
            out = attempt.feed(chunk)
            if out:
                await transport.send_bytes(out)
        tail = attempt.relay.flush() if attempt.relay is not None else b""
        if tail:
            await transport.send_bytes(tail)
        if not attempt.stream_complete:
            await transport.send_bytes(
                sse_error_event(GatewayError("the provider ended the stream early", code="stream_truncated"))
            )
    except asyncio.CancelledError:
        if not watcher.done():
            raise  # cancelled by shutdown, not by the client
        # The client went away: stop reading so the upstream request is cancelled below.
    except (ProtocolClosed, ProtocolError) as exc:  # the client's socket failed while we wrote
        log.debug("stream to client ended: %s", exc)
    except Exception:
        log.exception("stream relay failed")
    finally:
        watcher.remove_done_callback(on_disconnect)
        watcher.cancel()
        await resp.aclose()


def respond_json(proto: Any, status: int, body: bytes) -> None:
    proto.response_bytes(status, JSON_HEADERS, body)
