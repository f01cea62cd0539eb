"""MCP's JSON-RPC framing, sans-IO: decode a message view, rewrite the few fields the gateway
touches, parse and write SSE events, and the one error tree of the MCP surface.

Only what the gateway decides on is decoded (``method``, ``id``, ``params.name``, a result's
``tools``); everything else stays as the bytes the peer sent (:class:`msgspec.Raw`).

    McpError                         JSON-RPC error object; ``http_status`` for the HTTP answer
    ├── ParseError          -32700   body is not JSON                               (HTTP 400)
    ├── InvalidRequest      -32600   not one JSON-RPC 2.0 message, batch, bad header  (HTTP 400)
    ├── MethodNotFound      -32601   method a composite server does not serve         (HTTP 200)
    ├── InvalidParams       -32602   tools/call without a string name                 (HTTP 200)
    ├── ToolDenied          -32003   the caller may not call this tool                (HTTP 200)
    ├── ToolRateLimited     -32029   a rate-limit rule refused the call; data.retryAfterSeconds
    ├── UpstreamFailed      -32050   upstream unreachable, answered garbage or ended early
    ├── UpstreamTimedOut    -32051   upstream silent for longer than the server's timeout_s
    ├── HeaderMismatch      -32020   Mcp-Method header differs from the body (2026-07-28, HTTP 400)
    └── UnsupportedVersion  -32022   MCP-Protocol-Version the gateway does not speak (HTTP 400)

Errors about one request are JSON-RPC errors carrying its ``id`` (HTTP 200), so an agent sees
which call failed; errors about the HTTP message itself are HTTP 4xx with an ``id``-less error.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "HANDSHAKE_VERSIONS",
    "MODERN_VERSIONS",
    "SUPPORTED_VERSIONS",
    "HeaderMismatch",
    "InvalidParams",
    "InvalidRequest",
    "McpError",
    "Message",
    "MethodNotFound",
    "ParseError",
    "SseEvent",
    "SseParser",
    "ToolDenied",
    "ToolRateLimited",
    "UnsupportedVersion",
    "UpstreamFailed",
    "UpstreamTimedOut",
    "decode_message",
    "encode_error",
    "sse_event",
]

HANDSHAKE_VERSIONS = ("2025-03-26", "2025-06-18", "2025-11-25")  # initialize + sessions
MODERN_VERSIONS = ("2026-07-28",)  # stateless: version in every request's _meta
SUPPORTED_VERSIONS = (*HANDSHAKE_VERSIONS, *MODERN_VERSIONS)
DEFAULT_VERSION = "2025-03-26"  # the spec's assumption when a request carries no version header
PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"

JsonId = int | str | None


class McpError(Exception):
    """A JSON-RPC error object; ``http_status`` is what the HTTP answer carries."""

    code = -32603
    http_status = 200

    def __init__(self, message: str, data: Any = None, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        if http_status is not None:
            self.http_status = http_status

    @property
    def error_type(self) -> str:
        """``error.type`` on spans: the JSON-RPC code as a string."""
        return str(self.code)


class ParseError(McpError):
    code = -32700
    http_status = 400


class InvalidRequest(McpError):
    code = -32600
    http_status = 400


class MethodNotFound(McpError):
    code = -32601


class InvalidParams(McpError):
    code = -32602


class ToolDenied(McpError):
    code = -32003


class ToolRateLimited(McpError):
    code = -32029

    def __init__(self, message: str, *, rule_id: str, retry_after_s: int) -> None:
        super().__init__(message, {"retryAfterSeconds": retry_after_s, "rule": rule_id})
        self.rule_id = rule_id
        self.retry_after_s = retry_after_s


class UpstreamFailed(McpError):
    code = -32050


class UpstreamTimedOut(McpError):
    code = -32051


class HeaderMismatch(McpError):
    code = -32020
    http_status = 400


class UnsupportedVersion(McpError):
    code = -32022
    http_status = 400

    def __init__(self, requested: str) -> None:
        super().__init__(
            f"Unsupported protocol version {requested!r}",
            {"supported": list(SUPPORTED_VERSIONS), "requested": requested},
        )


# --- decoding -------------------------------------------------------------------------------------


class Message(msgspec.Struct, gc=False):
    """A view of one JSON-RPC message; absent members are ``UNSET``, values stay raw."""

    jsonrpc: Any = msgspec.UNSET
    id: Any = msgspec.UNSET
    method: Any = msgspec.UNSET
    params: msgspec.Raw = msgspec.Raw(b"")
    result: msgspec.Raw = msgspec.Raw(b"")
    error: msgspec.Raw = msgspec.Raw(b"")

    @property
    def is_request(self) -> bool:
        return self.method is not msgspec.UNSET and self.id is not msgspec.UNSET

    @property
    def is_notification(self) -> bool:
        return self.method is not msgspec.UNSET and self.id is msgspec.UNSET

    @property
    def is_response(self) -> bool:
        return self.method is msgspec.UNSET and (bool(self.result) or bool(self.error))


_decode_message = msgspec.json.Decoder(Message).decode
_decode_any = msgspec.json.Decoder().decode
_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_encode = msgspec.json.Encoder().encode


def decode_message(body: bytes) -> Message:
    """One JSON-RPC 2.0 message from a client's POST body.

    Raises:
        ParseError: not JSON. InvalidRequest: a batch (array), not an object, wrong ``jsonrpc``,
            a non-string method or an id that is neither string nor integer.
    """
    stripped = body.lstrip()
    if stripped[:1] == b"[":
        try:
            _decode_any(body)
        except msgspec.DecodeError as exc:
            raise ParseError(f"Parse error: {exc}") from None
        raise InvalidRequest("JSON-RPC batches are not supported; send one message per POST")
    try:
        msg = _decode_message(body)
    except msgspec.ValidationError:
        raise InvalidRequest("Invalid Request: expected a JSON-RPC 2.0 object") from None
    except msgspec.DecodeError as exc:
        raise ParseError(f"Parse error: {exc}") from None
    if msg.jsonrpc != "2.0":
        raise InvalidRequest('Invalid Request: "jsonrpc" must be "2.0"')
    if msg.method is not msgspec.UNSET and not isinstance(msg.method, str):
        raise InvalidRequest('Invalid Request: "method" must be a string')
    if msg.id is not msgspec.UNSET and (isinstance(msg.id, bool) or not isinstance(msg.id, int | str)):
        raise InvalidRequest('Invalid Request: "id" must be a string or an integer')
    if msg.method is msgspec.UNSET and not (msg.result or msg.error):
        raise InvalidRequest("Invalid Request: neither a request, a notification nor a response")
    if msg.params and bytes(memoryview(msg.params)[:1]) not in (b"{", b"["):
        raise InvalidRequest('Invalid Request: "params" must be an object')
    return msg


def decode_params(raw: msgspec.Raw) -> dict[str, msgspec.Raw]:
    """``params`` as top-level fields (values raw); empty for absent params."""
    if not raw:
        return {}
    try:
        return _decode_fields(raw)
    except msgspec.DecodeError:  # includes ValidationError (an array)
        raise InvalidParams("Invalid params: expected an object") from None


def str_field(fields: dict[str, msgspec.Raw], key: str) -> str | None:
    """A string member of ``fields``, or None when absent or not a string."""
    raw = fields.get(key)
    if raw is None:
        return None
    value = _decode_any(raw)
    return value if isinstance(value, str) else None


def encode_params(fields: dict[str, Any]) -> msgspec.Raw:
    return msgspec.Raw(_encode(fields))


def with_meta(fields: dict[str, msgspec.Raw], extra: dict[str, Any]) -> dict[str, msgspec.Raw]:
    """``fields`` with ``extra`` merged into ``_meta`` (trace context goes upstream there)."""
    out = dict(fields)
    meta_raw = out.get("_meta")
    meta = _decode_any(meta_raw) if meta_raw is not None else {}
    if not isinstance(meta, dict):
        meta = {}
    meta.update(extra)
    out["_meta"] = msgspec.Raw(_encode(meta))
    return out


def encode_request(id_: JsonId, method: str, params: Any) -> bytes:
    """A JSON-RPC request; ``params`` may be a dict of raw fields or plain values."""
    return _encode({"jsonrpc": "2.0", "id": id_, "method": method, "params": params})


def encode_notification(method: str, params: Any = None) -> bytes:
    if params is None:
        return _encode({"jsonrpc": "2.0", "method": method})
    return _encode({"jsonrpc": "2.0", "method": method, "params": params})


def encode_result(id_: JsonId, result: Any) -> bytes:
    return _encode({"jsonrpc": "2.0", "id": id_, "result": result})


def encode_error(id_: JsonId, exc: McpError) -> bytes:
    """The JSON-RPC error response for ``exc`` (``id`` null when the request had none)."""
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        error["data"] = exc.data
    return _encode({"jsonrpc": "2.0", "id": id_, "error": error})


def error_fields(raw: msgspec.Raw) -> tuple[int, str]:
    """``(code, message)`` of a peer's error object (``(-32603, "")`` when odd)."""
    try:
        err = _decode_any(raw)
    except msgspec.DecodeError:
        return -32603, ""
    if not isinstance(err, dict):
        return -32603, ""
    code = err.get("code")
    msg = err.get("message")
    return (code if isinstance(code, int) else -32603), (msg if isinstance(msg, str) else "")


def result_is_error(raw: msgspec.Raw) -> bool:
    """Whether a tools/call result says ``isError: true`` (the tool failed, the call did not)."""
    if b'"isError"' not in bytes(raw):
        return False
    try:
        fields = _decode_fields(raw)
    except msgspec.DecodeError:
        return False
    flag = fields.get("isError")
    return flag is not None and bytes(flag).strip() == b"true"


# --- tools/list results -------------------------------------------------------------------------


def tool_list(raw: msgspec.Raw) -> tuple[dict[str, msgspec.Raw], list[tuple[str, dict[str, msgspec.Raw]]]]:
    """A tools/list result as (other fields, [(name, tool fields)]); tools without a name are dropped."""
    fields = _decode_fields(raw) if raw else {}
    tools_raw = fields.pop("tools", None)
    out: list[tuple[str, dict[str, msgspec.Raw]]] = []
    if tools_raw is not None:
        try:
            items = msgspec.json.decode(tools_raw, type=list[dict[str, msgspec.Raw]])
        except msgspec.DecodeError:
            items = []
        for tool in items:
            name = str_field(tool, "name")
            if name is not None:
                out.append((name, tool))
    return fields, out


def encode_tool_list(fields: dict[str, msgspec.Raw], tools: list[dict[str, msgspec.Raw]]) -> bytes:
    return _encode({**fields, "tools": tools})


def renamed(tool: dict[str, msgspec.Raw], name: str) -> dict[str, msgspec.Raw]:
    return {**tool, "name": msgspec.Raw(_encode(name))}


# --- SSE ----------------------------------------------------------------------------------------


class SseEvent:
    """One server-sent event: ``data`` joined, ``raw`` the bytes as received (for pass-through)."""

    __slots__ = ("data", "event", "id", "raw")

    def __init__(self, raw: bytes, data: bytes, event: str, id_: str | None) -> None:
        self.raw = raw
        self.data = data
        self.event = event
        self.id = id_


class SseParser:
    """Feed bytes, get complete events (``\\n``, ``\\r\\n`` or ``\\r`` line ends; comments kept raw)."""

    __slots__ = ("_buf", "max_event_bytes")

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._buf = b""
        self.max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Complete events in ``chunk`` (plus what was buffered); raises UpstreamFailed when an
        event grows past ``max_event_bytes``."""
        buf = self._buf + chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[SseEvent] = []
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            block, buf = buf[:end], buf[end + 2 :]
            events.append(_parse_block(block))
        if len(buf) > self.max_event_bytes:
            raise UpstreamFailed("the MCP server sent an SSE event larger than the gateway accepts")
        self._buf = buf
        return events

    @property
    def pending(self) -> bool:
        return bool(self._buf.strip())


def _parse_block(block: bytes) -> SseEvent:
    data: list[bytes] = []
    event, id_ = "message", None
    for line in block.split(b"\n"):
        if not line or line[:1] == b":":
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"id":
            id_ = value.decode("utf-8", "replace")
    return SseEvent(block + b"\n\n", b"\n".join(data), event, id_)


def sse_event(data: bytes, id_: str | None = None) -> bytes:
    """One ``message`` event carrying a JSON-RPC message."""
    head = b"event: message\n" if id_ is None else b"event: message\nid: " + id_.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"
