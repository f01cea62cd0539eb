"""One upstream attempt: build the provider's request, send it, and read far enough to commit.

An attempt succeeds only once it is safe to answer the client from it: a non-streaming
response has been read whole; a stream has produced its first chunk (within the target's
TTFT timeout). Until then every failure is an :class:`~gateway.errors.UpstreamError` that the
retry/fallback loop in :mod:`gateway.proxy` may act on; after it, the client has bytes and a
failure can only end the stream with an error event.

Which way a request goes is decided here and only here: a target that serves the surface's
API natively gets the client's bytes with ``model`` rewritten (``surface.native_body``);
any other target gets the request through the hub (``surface.hub_request`` → the provider
adapter's ``from_hub``), and its response back the same way (see :mod:`gateway.surfaces`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

from gateway.body import ParsedRequest
from gateway.errors import InvalidRequest, UpstreamStatus, UpstreamTimeout, UpstreamUnreachable
from gateway.routing import PlanEntry, apply_header_overrides
from gateway.runtime import ModelTarget
from gateway.sse import StreamRelay, Usage, usage_of
from gateway.surfaces import StreamChain, Surface
from gateway.upstream import UpstreamResponse


class TTFTTimeout(UpstreamTimeout):
    """No first chunk within the target's ``ttft_timeout_ms``."""

    code = "ttft_timeout"


class Attempt:
    """A committed attempt: the whole body, or an open stream and its first output bytes."""

    __slots__ = (
        "status",
        "content_type",
        "body",
        "usage",
        "resp",
        "relay",
        "feed",
        "first_out",
        "first_pc",
        "local",
    )

    def __init__(self) -> None:
        self.status = 200
        self.content_type = "application/json"
        self.body = b""
        self.usage: Usage | None = None  # of a non-streamed response
        self.resp: UpstreamResponse | None = None
        # The stream stage (a surface's native relay or a StreamChain): usage, events, done.
        self.relay: Any = None
        # Upstream stream bytes → the bytes to send to the client: the stage's own bound
        # ``feed``, so the native path costs no extra call.
        self.feed: Callable[[bytes], bytes] = _no_stream
        self.first_out = b""
        self.first_pc = 0  # perf_counter_ns() when the first client-visible bytes were ready
        self.local = False  # answered by the gateway itself (an estimate): no provider health

    @property
    def stream_complete(self) -> bool:
        """Whether the stream ended properly (its protocol's end marker was seen)."""
        return self.relay is not None and bool(self.relay.done)


def _no_stream(chunk: bytes) -> bytes:
    raise RuntimeError("not a streamed attempt")


def build_request(
    target: ModelTarget,
    entry: PlanEntry,
    req: ParsedRequest,
    surface: Surface,
    extra_headers: list[tuple[str, str]],
) -> tuple[str, list[tuple[str, str]], bytes, bool]:
    """URL, headers and body of one attempt at ``target``, and whether it is native.

    Raises:
        InvalidRequest: the surface has no hub form and the target does not serve it, or the
            request cannot be expressed for the target's provider.
    """
    overrides = entry.override_params or None
    url = target.urls.get(surface.api)
    native = url is not None
    if url is not None:
        body = surface.native_body(req, entry.upstream_model, overrides)
    else:
        if not surface.translatable:
            raise InvalidRequest(
                f"model '{entry.target}' is served by a {target.provider.type} provider, "
                f"which does not serve /v1/{surface.name}",
                param="model",
                code="unsupported_endpoint",
            )
        adapter = target.adapter
        body = adapter.from_hub(
            surface.hub_request(req), entry.upstream_model, dict(overrides) if overrides else None, req.stream
        )
        url = target.urls[adapter.hub_api]
    headers = (
        apply_header_overrides(target.headers, entry)
        if entry.headers_set or entry.headers_remove
        else target.headers
    )
    if native:
        forwarded = surface.native_headers(req)
        if forwarded:
            names = {name for name, _ in forwarded}
            headers = [*(h for h in headers if h[0] not in names), *forwarded]
    return url, [*headers, *extra_headers], body, native


async def run_attempt(
    target: ModelTarget,
    entry: PlanEntry,
    req: ParsedRequest,
    surface: Surface,
    extra_headers: list[tuple[str, str]],
    keep_events: bool = True,
) -> Attempt:
    """Send one attempt and read until it can be committed (see the module docstring).

    Raises:
        UpstreamError: unreachable, timed out (headers or TTFT), error status (its body in the
            provider's error shape), or the stream ended before its first chunk.
        InvalidRequest: the request cannot be expressed for this provider.
    """
    if surface.estimates and surface.api not in target.urls:
        return _estimated(surface.estimate(req))
    url, headers, body, native = build_request(target, entry, req, surface, extra_headers)
    send = target.client.send(
        url, headers, body, stream=req.stream, timeout_s=None if req.stream else entry.timeout_s
    )
    if req.stream and entry.timeout_s is not None:
        # For streams the target timeout bounds the wait for headers only: a long, healthy
        # stream is limited by the provider's read timeout (silence), never cut mid-way.
        try:
            resp = await asyncio.wait_for(send, entry.timeout_s)
        except TimeoutError:
            raise UpstreamTimeout(
                f"no response headers from {entry.target} within {entry.timeout_s:g}s"
            ) from None
    else:
        resp = await send
    if resp.status >= 400:
        err = await resp.read()
        raise UpstreamStatus(resp.status, err, resp.content_type, resp.relayed_headers, target.provider.type)

    attempt = Attempt()
    content_type = resp.content_type or ""
    if not req.stream or not content_type.startswith("text/event-stream"):
        data = await resp.read()
        if native:
            attempt.body = data
            attempt.usage = surface.native_usage(data)
            attempt.content_type = content_type or "application/json"
        else:
            hub = target.adapter.to_hub(data)
            attempt.usage = usage_of(hub)
            attempt.body = surface.from_hub(hub)
            attempt.content_type = "application/json"
        attempt.first_pc = perf_counter_ns()
        return attempt

    attempt.resp = resp
    attempt.content_type = "text/event-stream"
    if native:
        relay = surface.native_stream(req, keep_events)
    else:
        hub_relay = StreamRelay(strip_usage=not req.client_wants_usage, keep_events=keep_events)
        relay = StreamChain(target.adapter.stream_to_hub(), hub_relay, surface.hub_stream(req), keep_events)
    attempt.relay = relay
    attempt.feed = relay.feed
    try:
        await _read_first_output(attempt, resp, entry)
    except BaseException:
        await resp.aclose()
        raise
    return attempt


def _estimated(body: bytes) -> Attempt:
    """An attempt the gateway answered itself (no upstream call: nothing to charge or time)."""
    attempt = Attempt()
    attempt.body = body
    attempt.local = True
    attempt.first_pc = perf_counter_ns()
    return attempt


async def _read_first_output(attempt: Attempt, resp: Any, entry: PlanEntry) -> None:
    """Read until the stream yields client-visible bytes, within the TTFT timeout if set."""

    async def first() -> bytes:
        while True:
            chunk = await resp.next_chunk()
            if chunk is None:
                tail = attempt.relay.flush()
                if tail or attempt.stream_complete:
                    return tail
                raise UpstreamUnreachable(f"{entry.target} closed the stream before sending anything")
            out = attempt.feed(chunk)
            if out:
                return out

    if entry.ttft_timeout_s is None:
        attempt.first_out = await first()
    else:
        try:
            attempt.first_out = await asyncio.wait_for(first(), entry.ttft_timeout_s)
        except TimeoutError:
            raise TTFTTimeout(
                f"no first token from {entry.target} within {entry.ttft_timeout_s:g}s"
            ) from None
    attempt.first_pc = perf_counter_ns()
