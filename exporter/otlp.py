"""Span batches → OTLP request bodies (protobuf and OTLP/JSON). Pure: no I/O, no clock.

The protobuf bytes are written by hand rather than through ``opentelemetry-proto`` message
objects: building a few hundred thousand small ``KeyValue`` objects per second costs more than
the whole budget, while the wire format is a handful of tag/length prefixes (field numbers from
``opentelemetry/proto/trace/v1/trace.proto``; the unit tests parse every body with the official
messages). :func:`to_proto` still hands out an ``ExportTraceServiceRequest`` for the gRPC stub.

Per span the work is done once per destination option set; a batch is then framed into one or
more request bodies, each under a byte limit (OTLP receivers reject huge requests), keeping
the spans whole.

OTLP/JSON follows the spec's deviations from the proto3 JSON mapping: trace and span ids are
hex (not base64), enums are integers, keys lowerCamelCase, 64-bit integers are strings.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import msgspec
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gateway.telemetry.spans import GEN_AI_CONTENT, LOGFIRE_JSON_SCHEMA
from gateway.telemetry.wire import Resource, Span, SpanBatch

__all__ = [
    "MAX_REQUEST_BYTES",
    "REQUEST_DATA_ATTRIBUTES",
    "SCOPE_NAME",
    "DEFAULT_OPTIONS",
    "EncodeOptions",
    "EncodedRequest",
    "json_requests",
    "pack_json",
    "pack_proto",
    "proto_requests",
    "resource_json",
    "resource_proto",
    "sample",
    "span_json",
    "span_proto",
    "to_json_bytes",
    "to_proto",
]

SCOPE_NAME: Final = "llm-gateway"
MAX_REQUEST_BYTES: Final = 64 * 1024 * 1024
# Attributes that carry (or may echo) the user's request or response: the bodies, the GenAI
# content attributes (and Logfire's schema naming them), echoed error text.
REQUEST_DATA_ATTRIBUTES: Final = frozenset(
    {
        "tfy.input",
        "tfy.output",
        "tfy.output.sse",
        "tfy.input_short_hand",
        "tfy.error_message",
        *GEN_AI_CONTENT,
        LOGFIRE_JSON_SCHEMA,
    }  # fmt: skip
    | {"gen_ai.tool.call.arguments", "gen_ai.tool.call.result"}  # MCP tool calls (expand_mcp)
)

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_U64: Final = (1 << 64) - 1


class EncodeOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What one destination changes in the spans it receives."""

    exclude_request_data: bool = False
    resource_attributes: Mapping[str, Any] = {}
    sampling_ratio: float = 1.0


DEFAULT_OPTIONS: Final = EncodeOptions()


class EncodedRequest(msgspec.Struct, frozen=True):
    """One request body and how many spans it holds."""

    body: bytes
    spans: int


# --- sampling ---------------------------------------------------------------------------------


def sample(spans: Sequence[Span], ratio: float) -> list[Span]:
    """Keep the spans whose trace id falls under ``ratio``.

    The decision uses only the trace id (its lower 8 bytes as an unsigned integer, as the SDK's
    ``TraceIdRatioBased`` sampler does), so every span of a trace shares it and whole traces
    are kept or dropped together, in every exporter replica.
    """
    if ratio >= 1.0:
        return list(spans)
    if ratio <= 0.0:
        return []
    bound = round(ratio * (1 << 64))
    return [s for s in spans if int.from_bytes(s.trace_id[-8:], "big") < bound]


# --- protobuf ---------------------------------------------------------------------------------

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_SMALL_VARINTS: Final = [bytes([i]) for i in range(128)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL_VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _varint(len(payload)) + payload


def _utf8(value: bytes) -> bytes:
    """Wire bytes are UTF-8 text; keep them as they are unless they are not valid UTF-8."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("utf-8", errors="replace").encode("utf-8")
    return value


# Tags (field number << 3 | wire type) of the messages we write.
_T_ANY_STRING = b"\x0a"  # AnyValue.string_value = 1
_T_ANY_BOOL = b"\x10"  # AnyValue.bool_value = 2
_T_ANY_INT = b"\x18"  # AnyValue.int_value = 3
_T_ANY_DOUBLE = b"\x21"  # AnyValue.double_value = 4 (fixed64)
_T_ANY_ARRAY = b"\x2a"  # AnyValue.array_value = 5
_T_ANY_KVLIST = b"\x32"  # AnyValue.kvlist_value = 6
_T_1 = b"\x0a"  # field 1, length-delimited (KeyValue.key, ArrayValue.values, ...)
_T_2 = b"\x12"  # field 2, length-delimited (KeyValue.value, ScopeSpans.spans, ...)
_T_SPAN_PARENT = b"\x22"  # Span.parent_span_id = 4
_T_SPAN_NAME = b"\x2a"  # Span.name = 5
_T_SPAN_KIND = b"\x30"  # Span.kind = 6
_T_SPAN_START = b"\x39"  # Span.start_time_unix_nano = 7 (fixed64)
_T_SPAN_END = b"\x41"  # Span.end_time_unix_nano = 8 (fixed64)
_T_SPAN_ATTR = b"\x4a"  # Span.attributes = 9
_T_SPAN_STATUS = b"\x7a"  # Span.status = 15
_T_STATUS_MESSAGE = b"\x12"  # Status.message = 2
_T_STATUS_CODE = b"\x18"  # Status.code = 3

_key_cache: dict[str, bytes] = {}
_field_cache: dict[tuple[bytes, str, str], bytes] = {}


def _any_proto(value: Any) -> bytes | None:
    """AnyValue payload, or None for a value OTLP cannot carry (None)."""
    t = type(value)
    if t is str:
        return _ld(_T_ANY_STRING, value.encode("utf-8"))
    if t is bytes:
        return _ld(_T_ANY_STRING, _utf8(value))
    if t is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if t is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return _T_ANY_INT + _varint(value & _U64)
        return _ld(_T_ANY_STRING, str(value).encode())  # beyond int64: keep the digits
    if t is float:
        return _T_ANY_DOUBLE + _pack_double(value)
    if t is list or t is tuple:
        items = b"".join(_ld(_T_1, p) for p in map(_any_proto, value) if p is not None)
        return _ld(_T_ANY_ARRAY, items)
    if t is dict:
        return _ld(_T_ANY_KVLIST, _attributes_proto(value.items(), _T_1))
    if value is None:
        return None
    return _ld(_T_ANY_STRING, str(value).encode("utf-8"))


def _attributes_proto(
    items: Iterable[tuple[str, Any]], tag: bytes, skip: frozenset[str] = frozenset()
) -> bytes:
    parts = []
    for key, value in items:
        if key in skip:
            continue
        if type(value) is str and len(value) <= 64:
            # Short strings repeat across spans (model, provider, span type): memoize the
            # whole encoded field. Bounded, so distinct values cannot grow it forever.
            cache_key = (tag, key, value)
            field = _field_cache.get(cache_key)
            if field is None:
                field = _kv_field(tag, key, _ld(_T_ANY_STRING, value.encode("utf-8")))
                if len(_field_cache) < 50_000:
                    _field_cache[cache_key] = field
            parts.append(field)
            continue
        av = _any_proto(value)
        if av is None:
            continue
        parts.append(_kv_field(tag, key, av))
    return b"".join(parts)


def _kv_field(tag: bytes, key: str, av: bytes) -> bytes:
    """A tagged ``KeyValue`` field holding an encoded ``AnyValue``."""
    prefix = _key_cache.get(key)
    if prefix is None:
        prefix = _ld(_T_1, key.encode("utf-8"))
        if len(_key_cache) < 10_000:  # attribute names are a small fixed set; bound it anyway
            _key_cache[key] = prefix
    kv = prefix + _T_2 + _varint(len(av)) + av
    return tag + _varint(len(kv)) + kv


def span_proto(span: Span, exclude_request_data: bool = False) -> bytes:
    """The serialized ``opentelemetry.proto.trace.v1.Span`` of one span."""
    skip = REQUEST_DATA_ATTRIBUTES if exclude_request_data else frozenset()
    name = span.name.encode("utf-8")
    parts = [
        b"\x0a" + _varint(len(span.trace_id)) + span.trace_id,
        b"\x12" + _varint(len(span.span_id)) + span.span_id,
    ]
    if span.parent_span_id:
        parts.append(_ld(_T_SPAN_PARENT, span.parent_span_id))
    parts += [
        _T_SPAN_NAME + _varint(len(name)) + name,
        _T_SPAN_KIND + _varint(span.kind),
        _T_SPAN_START + _pack_fixed64(span.start_ns),
        _T_SPAN_END + _pack_fixed64(span.end_ns),
        _attributes_proto(span.attributes.items(), _T_SPAN_ATTR, skip),
    ]
    # The status message is free text that may quote the request (a provider's error body).
    message = "" if exclude_request_data else span.status_message
    if span.status_code or message:
        status = b""
        if message:
            status = _ld(_T_STATUS_MESSAGE, message.encode("utf-8"))
        if span.status_code:
            status += _T_STATUS_CODE + _varint(span.status_code)
        parts.append(_ld(_T_SPAN_STATUS, status))
    return b"".join(parts)


def _resource_items(resource: Resource, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Merged resource attributes: identity, then the gateway's, then the destination's."""
    items: dict[str, Any] = {"service.name": resource.service_name}
    if resource.service_version:
        items["service.version"] = resource.service_version
    if resource.instance_id:
        items["service.instance.id"] = resource.instance_id
    items.update(resource.attributes)
    items.update(extra)
    return items


def resource_proto(resource: Resource, extra: Mapping[str, Any] = {}) -> bytes:  # noqa: B006 - read only
    """The serialized ``opentelemetry.proto.resource.v1.Resource``."""
    return _attributes_proto(_resource_items(resource, extra).items(), _T_1)


_SCOPE_PROTO: Final = _ld(_T_1, _ld(_T_1, SCOPE_NAME.encode()))  # ScopeSpans.scope


def _frame_proto(resource: bytes, spans: Sequence[bytes]) -> bytes:
    scope_spans = _SCOPE_PROTO + b"".join([_T_2 + _varint(len(s)) + s for s in spans])
    resource_spans = _ld(_T_1, resource) + _ld(_T_2, scope_spans)
    return _ld(_T_1, resource_spans)  # ExportTraceServiceRequest.resource_spans


def pack_proto(
    resource: bytes, spans: Sequence[bytes], max_bytes: int = MAX_REQUEST_BYTES
) -> tuple[list[EncodedRequest], int]:
    """Frame span payloads into ``ExportTraceServiceRequest`` bodies of at most ``max_bytes``.

    Returns:
        The request bodies, and the number of spans too large to fit any request (dropped).
    """
    overhead = len(resource) + len(_SCOPE_PROTO) + 32  # three length prefixes, generously
    return _pack(spans, max_bytes - overhead, 6, lambda chunk: _frame_proto(resource, chunk))


# --- OTLP/JSON --------------------------------------------------------------------------------

_json_encode = msgspec.json.Encoder().encode


def _any_json(value: Any) -> dict[str, Any] | None:
    t = type(value)
    if t is str:
        return {"stringValue": value}
    if t is bytes:
        return {"stringValue": value.decode("utf-8", errors="replace")}
    if t is bool:
        return {"boolValue": value}
    if t is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return {"intValue": str(value)}
        return {"stringValue": str(value)}
    if t is float:
        if math.isfinite(value):
            return {"doubleValue": value}
        # proto3 JSON spells non-finite doubles as these strings.
        return {"doubleValue": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if t is list or t is tuple:
        return {"arrayValue": {"values": [v for v in map(_any_json, value) if v is not None]}}
    if t is dict:
        return {"kvlistValue": {"values": _attributes_json(value.items())}}
    if value is None:
        return None
    return {"stringValue": str(value)}


def _attributes_json(
    items: Iterable[tuple[str, Any]], skip: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    out = []
    for key, value in items:
        if key in skip:
            continue
        av = _any_json(value)
        if av is not None:
            out.append({"key": key, "value": av})
    return out


def span_json(span: Span, exclude_request_data: bool = False) -> bytes:
    """The OTLP/JSON object of one span."""
    skip = REQUEST_DATA_ATTRIBUTES if exclude_request_data else frozenset()
    obj: dict[str, Any] = {"traceId": span.trace_id.hex(), "spanId": span.span_id.hex()}
    if span.parent_span_id:
        obj["parentSpanId"] = span.parent_span_id.hex()
    obj["name"] = span.name
    obj["kind"] = span.kind
    obj["startTimeUnixNano"] = str(span.start_ns)
    obj["endTimeUnixNano"] = str(span.end_ns)
    obj["attributes"] = _attributes_json(span.attributes.items(), skip)
    message = "" if exclude_request_data else span.status_message
    if span.status_code or message:
        status: dict[str, Any] = {}
        if message:
            status["message"] = message
        if span.status_code:
            status["code"] = span.status_code
        obj["status"] = status
    return _json_encode(obj)


def resource_json(resource: Resource, extra: Mapping[str, Any] = {}) -> bytes:  # noqa: B006 - read only
    """The OTLP/JSON ``resource`` object."""
    return _json_encode({"attributes": _attributes_json(_resource_items(resource, extra).items())})


_JSON_HEAD: Final = b'{"resourceSpans":[{"resource":'
_JSON_SCOPE: Final = b',"scopeSpans":[{"scope":{"name":"' + SCOPE_NAME.encode() + b'"},"spans":['
_JSON_TAIL: Final = b"]}]}]}"


def pack_json(
    resource: bytes, spans: Sequence[bytes], max_bytes: int = MAX_REQUEST_BYTES
) -> tuple[list[EncodedRequest], int]:
    """Frame span objects into OTLP/JSON request bodies of at most ``max_bytes``."""
    overhead = len(_JSON_HEAD) + len(resource) + len(_JSON_SCOPE) + len(_JSON_TAIL)
    return _pack(
        spans,
        max_bytes - overhead,
        1,
        lambda chunk: _JSON_HEAD + resource + _JSON_SCOPE + b",".join(chunk) + _JSON_TAIL,
    )


# --- shared -----------------------------------------------------------------------------------


def _pack(spans: Sequence[bytes], budget: int, per_span: int, frame: Any) -> tuple[list[EncodedRequest], int]:
    """Greedy split of encoded spans into requests whose payload stays within ``budget``.

    ``per_span`` is the framing each span adds (a tag and length prefix, or a comma).
    """
    requests: list[EncodedRequest] = []
    oversize = 0
    chunk: list[bytes] = []
    size = 0
    for s in spans:
        cost = len(s) + per_span
        if cost > budget:
            oversize += 1
            continue
        if size + cost > budget and chunk:
            requests.append(EncodedRequest(frame(chunk), len(chunk)))
            chunk, size = [], 0
        chunk.append(s)
        size += cost
    if chunk:
        requests.append(EncodedRequest(frame(chunk), len(chunk)))
    return requests, oversize


def proto_requests(
    batch: SpanBatch, opts: EncodeOptions = DEFAULT_OPTIONS, max_bytes: int = MAX_REQUEST_BYTES
) -> tuple[list[EncodedRequest], int]:
    """Sample, redact and encode a batch as protobuf request bodies (see :func:`pack_proto`)."""
    spans = [span_proto(s, opts.exclude_request_data) for s in sample(batch.spans, opts.sampling_ratio)]
    return pack_proto(resource_proto(batch.resource, opts.resource_attributes), spans, max_bytes)


def json_requests(
    batch: SpanBatch, opts: EncodeOptions = DEFAULT_OPTIONS, max_bytes: int = MAX_REQUEST_BYTES
) -> tuple[list[EncodedRequest], int]:
    """Sample, redact and encode a batch as OTLP/JSON request bodies (see :func:`pack_json`)."""
    spans = [span_json(s, opts.exclude_request_data) for s in sample(batch.spans, opts.sampling_ratio)]
    return pack_json(resource_json(batch.resource, opts.resource_attributes), spans, max_bytes)


def to_proto(batch: SpanBatch, opts: EncodeOptions = DEFAULT_OPTIONS) -> ExportTraceServiceRequest:
    """The whole batch as one ``ExportTraceServiceRequest`` (no size limit applied)."""
    spans = [span_proto(s, opts.exclude_request_data) for s in sample(batch.spans, opts.sampling_ratio)]
    return ExportTraceServiceRequest.FromString(
        _frame_proto(resource_proto(batch.resource, opts.resource_attributes), spans)
    )


def to_json_bytes(batch: SpanBatch, opts: EncodeOptions = DEFAULT_OPTIONS) -> bytes:
    """The whole batch as one OTLP/JSON body (no size limit applied)."""
    spans = [span_json(s, opts.exclude_request_data) for s in sample(batch.spans, opts.sampling_ratio)]
    return (
        _JSON_HEAD
        + resource_json(batch.resource, opts.resource_attributes)
        + _JSON_SCOPE
        + b",".join(spans)
        + _JSON_TAIL
    )


def iter_chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items (the I/O side yields to the loop between them)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
