"""One error tree, mapped to an HTTP status and an OpenAI error body in exactly one place.

    GatewayError                       500 internal_error (never raised for bad input)
    ├── InvalidRequest                 400 invalid_request_error
    ├── AuthenticationFailed           401 authentication_error
    ├── PermissionDenied               403 permission_error
    ├── NotFound                       404 not_found_error
    │   └── ModelNotFound              404 model_not_found
    ├── MethodNotAllowed               405 invalid_request_error
    ├── RequestTimeout                 408 invalid_request_error (body not received in time)
    ├── PayloadTooLarge                413 invalid_request_error
    ├── RateLimited                    429 rate_limit_error (carries headers)
    ├── ClientDisconnected             499 (never sent: the client left; counted as such)
    ├── ServiceUnavailable             503 service_unavailable (draining)
    └── UpstreamError                  the provider side
        ├── UpstreamUnreachable        502 upstream_error
        ├── UpstreamTimeout            504 timeout_error
        └── UpstreamStatus             the provider's own status and body, relayed

Exceptions carry data; :func:`error_response` is the only place that turns one into bytes.
"""

from __future__ import annotations

import msgspec


class GatewayError(Exception):
    """Base of every error the gateway answers with; ``status`` and ``type`` fix the response."""

    status: int = 500
    type: str = "internal_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or []


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_access_denied"


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(GatewayError):
    """The client did not send its whole body within ``server.body_timeout_s``."""

    status = 408
    type = "invalid_request_error"
    code = "body_timeout"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, rule_id: str, headers: list[tuple[str, str]]) -> None:
        super().__init__(message, headers=headers)
        self.rule_id = rule_id  # the rule that rejected the request (metrics, spans)


class ClientDisconnected(GatewayError):
    """The client closed its connection before the request was answered (nginx's 499).

    Nothing is sent back; the status exists so metrics and traces tell it from our failures."""

    status = 499
    type = "client_closed_request"
    code = "client_disconnected"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "draining"


class UpstreamError(GatewayError):
    """A failure on the provider's side of the gateway."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class UpstreamStatus(UpstreamError):
    """The provider answered with an error status; its body is relayed unchanged to a surface
    with the same error ``shape`` (the provider type: openai, anthropic) and re-encoded for others."""

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str | None,
        headers: list[tuple[str, str]],
        shape: str = "openai",
    ) -> None:
        super().__init__(f"upstream answered {status}", code="upstream_status", headers=headers)
        self.status = status
        self.body = body
        self.content_type = content_type
        self.shape = shape


class _ErrorDetail(msgspec.Struct, omit_defaults=False):
    message: str
    type: str
    param: str | None
    code: str | None


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail


_encode = msgspec.json.Encoder().encode
JSON_HEADERS = [("content-type", "application/json")]


def error_body(exc: GatewayError) -> bytes:
    """The OpenAI error document for ``exc``."""
    return _encode(_ErrorBody(_ErrorDetail(exc.message, exc.type, exc.param, exc.code)))


# Headers the gateway sets itself: a relayed copy would make a second one.
_OWN_HEADERS = frozenset({"content-type", "x-request-id"})


def relayed_error_headers(exc: UpstreamStatus) -> list[tuple[str, str]]:
    """The provider's relayed headers minus those the gateway sets (ours win)."""
    return [h for h in exc.headers if h[0] not in _OWN_HEADERS]


class _UpstreamDetail(msgspec.Struct):
    message: str | None = None
    type: str | None = None


class _UpstreamErrorView(msgspec.Struct):
    # OpenAI {"error": {...}} and Anthropic {"type": "error", "error": {...}} alike.
    error: _UpstreamDetail | str | None = None


_decode_upstream_error = msgspec.json.Decoder(_UpstreamErrorView).decode


def upstream_error_detail(body: bytes, status: int) -> tuple[str, str]:
    """``(type, message)`` of a provider's error body, whatever its shape, for re-encoding."""
    try:
        err = _decode_upstream_error(body).error
    except msgspec.DecodeError:
        err = None
    if isinstance(err, _UpstreamDetail):
        return err.type or "upstream_error", err.message or f"upstream answered {status}"
    if isinstance(err, str) and err:
        return "upstream_error", err
    return "upstream_error", body.decode("utf-8", "replace")[:500] or f"upstream answered {status}"


def error_response(exc: GatewayError) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body for ``exc`` in OpenAI's shape: the one mapping from errors to HTTP."""
    if isinstance(exc, UpstreamStatus):
        headers = relayed_error_headers(exc)
        if exc.shape == "openai":
            return exc.status, [("content-type", exc.content_type or "application/json"), *headers], exc.body
        etype, message = upstream_error_detail(exc.body, exc.status)
        body = _encode(_ErrorBody(_ErrorDetail(message, etype, None, etype)))
        return exc.status, [*JSON_HEADERS, *headers], body
    return exc.status, [*JSON_HEADERS, *exc.headers], error_body(exc)


def sse_error_event(exc: GatewayError) -> bytes:
    """An error in OpenAI's SSE shape, for failures after a stream's first byte was sent."""
    return b"data: " + error_body(exc) + b"\n\n"
