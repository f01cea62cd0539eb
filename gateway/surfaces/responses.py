"""The OpenAI Responses surface: ``POST /v1/responses``.

Native for targets that speak Responses (``urls["responses"]``: an openai provider with
``responses: native``, the default for api.openai.com): the client's bytes with ``model``
rewritten (and a stored ``previous_response_id`` chain expanded into ``input``). Every other
target is reached through the chat hub (:mod:`gateway.responses.translate`); its stream comes
back through :class:`gateway.responses.stream.ChatToResponses`.

Non-streamed hub responses are turned into Response objects by the Responses handler
(:mod:`gateway.responses.handler`), which holds the request's state (:meth:`from_hub` is the
identity); the stream stage carries that state itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.body import ParsedRequest
from gateway.errors import GatewayError, error_response
from gateway.responses.request import ResponsesRequest
from gateway.responses.stream import ChatToResponses, NativeStage, sse, usage_of_response
from gateway.responses.translate import decode
from gateway.sse import Usage
from gateway.surfaces import Surface

__all__ = ["RESPONSES", "ResponsesSurface"]


def _view(req: ParsedRequest) -> ResponsesRequest:
    assert isinstance(req, ResponsesRequest)
    return req


class ResponsesSurface(Surface):
    """``/v1/responses``: the request view is a :class:`ResponsesRequest`."""

    name = "responses"
    operation = "responses"
    api = "responses"
    error_shape = "openai"
    translatable = True

    def parse(self, body: bytes, headers: Any) -> ResponsesRequest:
        return ResponsesRequest.parse(body)

    def native_body(self, req: ParsedRequest, model: str, overrides: Mapping[str, Any] | None) -> bytes:
        return _view(req).native_body(model, overrides)

    def hub_request(self, req: ParsedRequest) -> dict[str, Any]:
        return _view(req).hub_request()

    def native_usage(self, body: bytes) -> Usage | None:
        try:
            obj = decode(body)
        except ValueError:
            return None
        return usage_of_response(obj) if isinstance(obj, dict) else None

    def native_stream(self, req: ParsedRequest, keep_events: bool) -> NativeStage:
        return NativeStage(keep_events)

    def hub_stream(self, req: ParsedRequest) -> ChatToResponses:
        view = _view(req)
        return ChatToResponses(view.obj, view.resp_id)

    def error_response(self, exc: GatewayError) -> tuple[int, list[tuple[str, str]], bytes]:
        return error_response(exc)

    def stream_error(self, exc: GatewayError) -> bytes:
        # Stages end their own streams with numbered events (``fail``); this is the fallback.
        payload = {"type": "error", "sequence_number": 0, "code": exc.code, "message": exc.message,
                   "param": exc.param}  # fmt: skip
        return sse("error", payload)


RESPONSES = ResponsesSurface()
