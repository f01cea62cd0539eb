"""One upstream attempt: build the provider's request, send it, and read far enough to commit.

An attempt succeeds only once it is safe to answer the client from it: a non-streaming
response has been read whole; a stream has produced its first chunk (within the target's
TTFT timeout). Until then every failure is an :class:`~gateway.errors.UpstreamError` that the
retry/fallback loop in :mod:`gateway.proxy` may act on; after it, the client has bytes and a
failure can only end the stream with an error event.

Provider differences live here and only here: OpenAI-compatible targets get the client's
bytes with ``model`` rewritten; Anthropic targets get a translated Messages request, and
their responses are translated back.
"""

from __future__ import annotations

import asyncio
from time import perf_counter_ns
from typing import Any

from gateway.body import ParsedRequest
from gateway.errors import InvalidRequest, UpstreamStatus, UpstreamTimeout, UpstreamUnreachable
from gateway.providers import anthropic
from gateway.routing import PlanEntry, apply_header_overrides
from gateway.runtime import ModelTarget
from gateway.sse import StreamRelay
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
        "resp",
        "relay",
        "translator",
        "first_out",
        "first_pc",
        "relayed_headers",
    )

    def __init__(self) -> None:
        self.status = 200
        self.content_type = "application/json"
        self.body = b""
        self.resp: UpstreamResponse | None = None
        self.relay: StreamRelay | None = None
        self.translator: anthropic.AnthropicStreamTranslator | None = None
        self.first_out = b""
        self.first_pc = 0  # perf_counter_ns() when the first client-visible bytes were ready
        self.relayed_headers: list[tuple[str, str]] = []

    def feed(self, chunk: bytes) -> bytes:
        """Upstream stream bytes → the bytes to send to the client (translated if needed)."""
        assert self.relay is not None
        if self.translator is not None:
            chunk = self.translator.feed(chunk)
            if not chunk:
                return b""
        return self.relay.feed(chunk)

    @property
    def stream_complete(self) -> bool:
        """Whether the stream ended properly (``[DONE]``, or the translator saw the end)."""
        if self.translator is not None:
            return self.translator.done
        return self.relay is not None and self.relay.saw_done


def build_request(
    target: ModelTarget,
    entry: PlanEntry,
    req: ParsedRequest,
    endpoint: str,
    extra_headers: list[tuple[str, str]],
) -> tuple[str, list[tuple[str, str]], bytes]:
    """URL, headers and body of one attempt at ``target``."""
    if target.provider.type == "anthropic":
        if endpoint != "chat":
            raise InvalidRequest(
                f"model '{entry.target}' is an Anthropic model: only /v1/chat/completions is supported",
                param="model",
                code="unsupported_endpoint",
            )
        body = anthropic.encode_request(req.body, entry.upstream_model, entry.override_params or None)
        url = target.messages_url
    else:
        body = req.upstream_body(
            entry.upstream_model, dict(entry.override_params) if entry.override_params else None
        )
        url = target.urls[endpoint]
    headers = (
        apply_header_overrides(target.headers, entry)
        if entry.headers_set or entry.headers_remove
        else target.headers
    )
    return url, [*headers, *extra_headers], body


async def run_attempt(
    target: ModelTarget,
    entry: PlanEntry,
    req: ParsedRequest,
    endpoint: str,
    extra_headers: list[tuple[str, str]],
    keep_events: bool = True,
) -> Attempt:
    """Send one attempt and read until it can be committed (see the module docstring).

    Raises:
        UpstreamError: unreachable, timed out (headers or TTFT), error status (translated
            for Anthropic), or the stream ended before its first chunk.
        InvalidRequest: the request cannot be expressed for this provider.
    """
    url, headers, body = build_request(target, entry, req, endpoint, extra_headers)
    is_anthropic = target.provider.type == "anthropic"
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
        if is_anthropic:
            raise UpstreamStatus(
                resp.status, anthropic.translate_error(err, resp.status), "application/json", []
            )
        raise UpstreamStatus(resp.status, err, resp.content_type, resp.relayed_headers)

    attempt = Attempt()
    attempt.relayed_headers = resp.relayed_headers
    content_type = resp.content_type or ""
    if not req.stream or not content_type.startswith("text/event-stream"):
        data = await resp.read()
        attempt.body = anthropic.translate_response(data) if is_anthropic else data
        attempt.content_type = "application/json" if is_anthropic else (content_type or "application/json")
        attempt.first_pc = perf_counter_ns()
        return attempt

    attempt.resp = resp
    attempt.content_type = "text/event-stream"
    attempt.relay = StreamRelay(strip_usage=not req.client_wants_usage, keep_events=keep_events)
    if is_anthropic:
        attempt.translator = anthropic.AnthropicStreamTranslator(include_usage=True)
    try:
        await _read_first_output(attempt, resp, entry)
    except BaseException:
        await resp.aclose()
        raise
    return attempt


async def _read_first_output(attempt: Attempt, resp: Any, entry: PlanEntry) -> None:
    """Read until the stream yields client-visible bytes, within the TTFT timeout if set."""

    async def first() -> bytes:
        while True:
            chunk = await resp.next_chunk()
            if chunk is None:
                tail = attempt.relay.flush() if attempt.relay is not None else b""
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
