"""The Anthropic Messages surface: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Anthropic targets get the client's bytes with only ``model`` rewritten (nothing else is
validated, so fields newer than this gateway pass), its ``anthropic-version`` and
``anthropic-beta`` headers, and their stream relayed event by event (:class:`MessagesRelay`
reads usage from ``message_start``/``message_delta``). Other targets are reached through the
hub (:mod:`gateway.surfaces.messages_hub`).

Errors use Anthropic's shape, ``{"type":"error","error":{"type","message"}}``, which is what
its SDK parses; the mapping from the gateway's error tree is :data:`ERROR_TYPES`, here only.

``count_tokens`` is native on Anthropic targets; for any other target the gateway answers an
*estimate* itself (:func:`estimate_input_tokens`: no tokenizer of the target's is at hand).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from gateway.body import ParsedRequest, parse_request
from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    UpstreamStatus,
    UpstreamTimeout,
    relayed_error_headers,
    upstream_error_detail,
)
from gateway.sse import Usage
from gateway.surfaces import StreamStage, Surface
from gateway.surfaces.messages_hub import hub_to_message, messages_to_hub
from gateway.surfaces.messages_stream import HubToMessagesStream

__all__ = ["COUNT_TOKENS", "MESSAGES", "MessagesRelay", "MessagesSurface", "estimate_input_tokens"]

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

# Client headers the native path forwards (they replace the target's defaults).
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")

# The gateway's error tree → Anthropic error types (by class, most specific first).
ERROR_TYPES: tuple[tuple[type[GatewayError], str], ...] = (
    (InvalidRequest, "invalid_request_error"),
    (AuthenticationFailed, "authentication_error"),
    (PermissionDenied, "permission_error"),
    (NotFound, "not_found_error"),
    (PayloadTooLarge, "request_too_large"),
    (RateLimited, "rate_limit_error"),
    (UpstreamTimeout, "timeout_error"),
)
# Status → Anthropic error type, for errors known only by status (a provider's, re-encoded).
STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
JSON = [("content-type", "application/json")]


class MessagesRequest(ParsedRequest):
    """A Messages request view; ``forward`` holds the client headers for the native path."""

    __slots__ = ("forward",)

    def __init__(
        self,
        body: bytes,
        fields: dict[str, msgspec.Raw],
        model: str,
        stream: bool,
        forward: list[tuple[str, str]],
    ) -> None:
        # Anthropic streams always report usage: the hub relay must not strip it.
        super().__init__(body, fields, model, stream, True)
        self.forward = forward


def _parse(body: bytes, headers: Any, require_max_tokens: bool) -> MessagesRequest:
    # The envelope (JSON object, model, messages, stream) is checked as for every surface.
    req = parse_request(body, "messages")
    if require_max_tokens and "max_tokens" not in req.fields:
        raise InvalidRequest(
            "max_tokens: Field required", param="max_tokens", code="missing_required_parameter"
        )
    if req.stream and not require_max_tokens:
        raise InvalidRequest(
            "stream: not supported when counting tokens", param="stream", code="invalid_value"
        )
    forward = [(name, value) for name in FORWARDED_HEADERS if (value := headers.get(name))]
    return MessagesRequest(body, req.fields, req.model, req.stream, forward)


class _Usage(msgspec.Struct):
    """Anthropic's token counts (a view: server tool counts and the like are ignored)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


def _usage(u: _Usage | None) -> Usage | None:
    """The gateway's usage of Anthropic's counts: cached input is input the client sent."""
    if u is None:
        return None
    prompt = (u.input_tokens or 0) + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0)
    completion = u.output_tokens or 0
    return Usage(prompt, completion, prompt + completion)


class _MessageView(msgspec.Struct):
    usage: _Usage | None = None


class _EventView(msgspec.Struct):
    type: str = ""
    message: _MessageView | None = None
    usage: _Usage | None = None


_decode_message = msgspec.json.Decoder(_MessageView).decode
_decode_event = msgspec.json.Decoder(_EventView).decode


class MessagesRelay:
    """Relay an Anthropic event stream event by event (sans-IO), reading usage on the way.

    Only events that mention ``"message_`` or ``"error"`` are decoded (a small view): the
    content deltas between them pass as bytes. ``done`` once ``message_stop`` or an ``error``
    event went by.
    """

    __slots__ = ("_tail", "usage", "events", "keep_events", "done", "_counts")

    def __init__(self, keep_events: bool = False) -> None:
        self._tail = b""
        self.usage: Usage | None = None
        self.keep_events = keep_events
        self.events: list[bytes] = []
        self.done = False
        self._counts = _Usage()

    def feed(self, chunk: bytes) -> bytes:
        """The complete events in ``tail + chunk`` (possibly none), unchanged."""
        # The idioms of gateway.sse.StreamRelay.feed (METH_O rpartition, no copy of a whole-event
        # chunk; ``in`` on bytes formats an exception per call): ~1.0 -> ~0.45 us per delta event.
        data = self._tail + chunk if self._tail else chunk
        if data.rpartition(b"\r")[1]:
            data = data.replace(b"\r\n", b"\n")
        if data[-2:] == b"\n\n":  # the usual chunk: whole events
            complete = data
            self._tail = b""
        else:
            head, sep, tail = data.rpartition(b"\n\n")
            if not sep:
                self._tail = data
                return b""
            complete = head + sep
            self._tail = tail
        if complete.rpartition(b'"message_')[1] or complete.rpartition(b'"error"')[1]:
            for event in complete.split(b"\n\n"):
                if b'"message_stop"' in event[:64]:  # the type comes first in Anthropic's events
                    self.done = True
                elif b'"message_' in event or b'"error"' in event:
                    self._read(event)
        if self.keep_events:
            self.events.append(complete)
        return complete

    def flush(self) -> bytes:
        tail, self._tail = self._tail, b""
        return tail

    def _read(self, event: bytes) -> None:
        payload = b"\n".join(ln[5:].lstrip() for ln in event.split(b"\n") if ln.startswith(b"data:"))
        try:
            view = _decode_event(payload)
        except msgspec.DecodeError:
            return
        kind = view.type
        if kind == "message_start" and view.message is not None and view.message.usage is not None:
            self._counts = view.message.usage
        elif kind == "message_delta" and view.usage is not None:
            # Cumulative counts; input and cache counts appear here only sometimes.
            counts, new = self._counts, view.usage
            for field in _Usage.__struct_fields__:
                if getattr(new, field) is None:
                    setattr(new, field, getattr(counts, field))
            self._counts = new
        elif kind in ("message_stop", "error"):
            self.done = True
            return
        else:
            return
        self.usage = _usage(self._counts)


class MessagesSurface(Surface):
    """``POST /v1/messages``."""

    name = "messages"
    operation = "chat"
    api = "messages"
    error_shape = "anthropic"
    translatable = True

    def parse(self, body: bytes, headers: Any) -> ParsedRequest:
        return _parse(body, headers, require_max_tokens=True)

    def native_body(self, req: ParsedRequest, model: str, overrides: Mapping[str, Any] | None) -> bytes:
        fields = dict(req.fields)
        fields["model"] = msgspec.Raw(_encode(model))
        if overrides:  # a target's override_params, by the Messages API's own names here
            for key, value in overrides.items():
                fields[key] = msgspec.Raw(_encode(value))
        return _encode(fields)

    def native_headers(self, req: ParsedRequest) -> list[tuple[str, str]] | None:
        return req.forward if isinstance(req, MessagesRequest) else None

    def hub_request(self, req: ParsedRequest) -> dict[str, Any]:
        return messages_to_hub(_decode(req.body))

    def native_usage(self, body: bytes) -> Usage | None:
        try:
            return _usage(_decode_message(body).usage)
        except msgspec.DecodeError:
            return None

    def native_stream(self, req: ParsedRequest, keep_events: bool) -> MessagesRelay:
        return MessagesRelay(keep_events)

    def from_hub(self, body: bytes) -> bytes:
        return hub_to_message(body)

    def hub_stream(self, req: ParsedRequest) -> StreamStage | None:
        return HubToMessagesStream()

    def error_response(self, exc: GatewayError) -> tuple[int, list[tuple[str, str]], bytes]:
        if isinstance(exc, UpstreamStatus):
            headers = relayed_error_headers(exc)
            if exc.shape == "anthropic":
                return (
                    exc.status,
                    [("content-type", exc.content_type or "application/json"), *headers],
                    exc.body,
                )
            _, message = upstream_error_detail(exc.body, exc.status)
            return (
                exc.status,
                [*JSON, *headers],
                error_body(STATUS_TYPES.get(exc.status, "api_error"), message),
            )
        return exc.status, [*JSON, *exc.headers], error_body(error_type(exc), exc.message)

    def stream_error(self, exc: GatewayError) -> bytes:
        return b"event: error\ndata: " + error_body(error_type(exc), exc.message) + b"\n\n"


def error_type(exc: GatewayError) -> str:
    """The Anthropic error type of one of the gateway's errors."""
    for cls, etype in ERROR_TYPES:
        if isinstance(exc, cls):
            return etype
    return STATUS_TYPES.get(exc.status, "api_error")


def error_body(etype: str, message: str) -> bytes:
    """An Anthropic error document."""
    return _encode({"type": "error", "error": {"type": etype, "message": message}})


# --- count_tokens ----------------------------------------------------------------------------------

# A rough tokens-per-byte rate for English text and code with BPE vocabularies (~4 bytes a
# token), a per-message framing cost, and a flat cost for an image or a document page set
# (Anthropic's own figure for a ~1.15 megapixel image is ~1,600 tokens).
BYTES_PER_TOKEN = 4.0
TOKENS_PER_MESSAGE = 4
TOKENS_PER_ATTACHMENT = 1600


def _text_bytes(value: Any) -> tuple[int, int]:
    """(UTF-8 bytes of the text in ``value``, number of images and documents)."""
    if isinstance(value, str):
        return len(value.encode()), 0
    total = attachments = 0
    if isinstance(value, list):
        for item in value:
            n, a = _text_bytes(item)
            total, attachments = total + n, attachments + a
    elif isinstance(value, dict):
        if value.get("type") in ("image", "document"):
            return 0, 1
        for key, item in value.items():
            if key == "input":  # a tool call's arguments: the model reads them as JSON
                total += len(_encode(item))
            elif key not in _NOT_TEXT:
                n, a = _text_bytes(item)
                total, attachments = total + n, attachments + a
    return total, attachments


_NOT_TEXT = frozenset({"type", "role", "cache_control", "id", "tool_use_id", "signature", "citations"})


def estimate_input_tokens(req: dict[str, Any]) -> int:
    """An *estimate* of a Messages request's input tokens, for targets without ``count_tokens``.

    UTF-8 bytes of the system prompt, message text and tool definitions divided by
    :data:`BYTES_PER_TOKEN`, plus :data:`TOKENS_PER_MESSAGE` per message and
    :data:`TOKENS_PER_ATTACHMENT` per image or document. Expect it within tens of percent of
    the provider's own count for prose and code; it is not the provider's tokenizer.
    """
    text, attachments = _text_bytes(req.get("system"))
    messages = req.get("messages") or []
    n, a = _text_bytes(messages)
    text, attachments = text + n, attachments + a
    tools = req.get("tools")
    if tools:
        text += len(_encode(tools))
    return (
        math.ceil(text / BYTES_PER_TOKEN)
        + TOKENS_PER_MESSAGE * len(messages)
        + TOKENS_PER_ATTACHMENT * attachments
    )


class CountTokensSurface(MessagesSurface):
    """``POST /v1/messages/count_tokens``: native on Anthropic targets, estimated elsewhere."""

    name = "count_tokens"
    operation = "count_tokens"
    api = "count_tokens"
    translatable = False
    estimates = True

    def parse(self, body: bytes, headers: Any) -> ParsedRequest:
        return _parse(body, headers, require_max_tokens=False)

    def native_usage(self, body: bytes) -> Usage | None:
        return None  # counting generates nothing: no tokens to charge or price

    def estimate(self, req: ParsedRequest) -> bytes:
        """The count_tokens answer for a target without the endpoint (an estimate)."""
        return _encode({"input_tokens": estimate_input_tokens(_decode(req.body))})


MESSAGES = MessagesSurface()
COUNT_TOKENS = CountTokensSurface()
