"""The OpenAI surfaces: ``/v1/chat/completions`` (the hub itself), ``/v1/completions``, ``/v1/embeddings``.

Chat completions is the hub shape, so its translation is the identity: a target with another
API (Anthropic) is reached through that provider's adapter alone. Completions and embeddings
have no hub form; they reach only targets that serve them natively.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from gateway.body import ParsedRequest, parse_request
from gateway.errors import GatewayError, error_response, sse_error_event
from gateway.sse import StreamRelay, Usage, usage_of
from gateway.surfaces import Surface

__all__ = ["CHAT", "COMPLETIONS", "EMBEDDINGS", "ChatRelay", "OpenAISurface"]

_decode = msgspec.json.Decoder().decode


class ChatRelay(StreamRelay):
    """The native OpenAI stream relay (its ``done`` is the one every stream stage reports)."""

    __slots__ = ()


class OpenAISurface(Surface):
    """An OpenAI API served natively by OpenAI-compatible targets."""

    error_shape = "openai"

    def __init__(self, name: str, translatable: bool) -> None:
        self.name = self.operation = self.api = name
        self.translatable = translatable

    def parse(self, body: bytes, headers: Any) -> ParsedRequest:
        return parse_request(body, self.name)

    def native_body(self, req: ParsedRequest, model: str, overrides: Mapping[str, Any] | None) -> bytes:
        return req.upstream_body(model, dict(overrides) if overrides else None)

    def hub_request(self, req: ParsedRequest) -> dict[str, Any]:
        # parse_request already checked that the body is a JSON object.
        hub: dict[str, Any] = _decode(req.body)
        return hub

    def native_usage(self, body: bytes) -> Usage | None:
        return usage_of(body)

    def native_stream(self, req: ParsedRequest, keep_events: bool) -> ChatRelay:
        return ChatRelay(strip_usage=not req.client_wants_usage, keep_events=keep_events)

    def error_response(self, exc: GatewayError) -> tuple[int, list[tuple[str, str]], bytes]:
        return error_response(exc)

    def stream_error(self, exc: GatewayError) -> bytes:
        return sse_error_event(exc)


CHAT = OpenAISurface("chat", translatable=True)
COMPLETIONS = OpenAISurface("completions", translatable=False)
EMBEDDINGS = OpenAISurface("embeddings", translatable=False)
