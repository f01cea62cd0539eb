"""The request path, top to bottom: read → decode → resolve → call upstream → respond.

Every step is a call into a small module that owns it; this file only sequences them and
turns errors into responses (through :func:`gateway.errors.error_response`, the one mapping).
Nothing here awaits anything but the client's body, the provider, and the client's socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from granian.rsgi import ProtocolClosed, ProtocolError

from gateway.body import ParsedRequest, parse_request
from gateway.errors import (
    JSON_HEADERS,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    UpstreamStatus,
    error_response,
    sse_error_event,
)
from gateway.runtime import ModelTarget, Runtime
from gateway.sse import StreamRelay

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
        target = rt.models.get(req.model)
        if target is None:
            raise ModelNotFound(
                f"model '{req.model}' does not exist or is not served by this gateway", param="model"
            )
        upstream_body = req.upstream_body(target.upstream_model)
        resp = await target.client.send(
            target.urls[endpoint], target.headers, upstream_body, stream=req.stream
        )
        if resp.status >= 400:
            raise UpstreamStatus(resp.status, await resp.read(), resp.content_type, resp.relayed_headers)
        headers = [("x-request-id", request_id), ("x-tfy-resolved-model", target.model_id)]
        content_type = resp.content_type or ""
        if not req.stream or not content_type.startswith("text/event-stream"):
            data = await resp.read()
            proto.response_bytes(200, [("content-type", content_type or "application/json"), *headers], data)
            return
        await _relay_stream(proto, req, target, resp, headers)
    except GatewayError as exc:
        status, headers, err_body = error_response(exc)
        proto.response_bytes(status, [*headers, ("x-request-id", request_id)], err_body)
    except Exception:
        # Our own bug, never the client's input: log it with the id the client sees.
        log.exception("unhandled error in request %s", request_id)
        status, headers, err_body = error_response(GatewayError("internal error"))
        proto.response_bytes(status, [*headers, ("x-request-id", request_id)], err_body)


async def _relay_stream(
    proto: Any, req: ParsedRequest, target: ModelTarget, resp: Any, headers: list
) -> None:
    """Pass an SSE stream through as it arrives; cancel the upstream if the client leaves."""
    relay = StreamRelay(strip_usage=not req.client_wants_usage)
    task = asyncio.current_task()
    watcher = asyncio.ensure_future(proto.client_disconnect())

    def on_disconnect(_: Any) -> None:
        if task is not None and not task.done():
            task.cancel()

    watcher.add_done_callback(on_disconnect)
    transport = proto.response_stream(200, [*SSE_HEADERS, *headers])
    try:
        while True:
            try:
                chunk = await resp.next_chunk()
            except GatewayError as exc:
                # Headers (and maybe events) are already sent: end with an error event, never silently.
                await transport.send_bytes(sse_error_event(exc))
                return
            if chunk is None:
                break
            out = relay.feed(chunk)
            if out:
                await transport.send_bytes(out)
        tail = relay.flush()
        if tail:
            await transport.send_bytes(tail)
        if not relay.saw_done:
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
