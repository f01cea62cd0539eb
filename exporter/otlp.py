"""Span batches → OTLP request bodies (protobuf and OTLP/JSON). Pure: no I/O, no clock.

The protobuf bytes are written by hand rather than through ``opentelemetry-proto`` message
objects: building a few hundred thousand small ``KeyValue`` objects per second costs more than
the whole budget, while the wire format is a handful of tag/length prefixes (field numbers from
``opentelemetry/proto/trace/v1/trace.proto``; tests/unit/test_otlp_equivalence.py decodes every
test batch, both encodings, to the message the official classes build from the same spans).
:func:`to_proto` still hands out an ``ExportTraceServiceRequest`` for the gRPC stub.

Per span the work is done once per destination option set; a batch is then framed into one or
more request bodies, each under a byte limit (OTLP receivers reject huge requests), keeping
the spans whole.

The OTLP/JSON pieces are in :mod:`exporter.otlp_json`; this module frames both.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import msgspec
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from exporter.otlp_json import _CACHE_MAX, _NO_SKIP, _SHORT, attributes_json, memo_get, memo_put, span_object
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
# Speed matters here (the exporter's CPU is fleet cost): one list of byte strings per span, joined
# once; varints of lengths from a table; the fields that repeat across spans (attribute names,
# short string values, span names) encoded once and memoized in bounded dicts.

_pack_double = struct.Struct("<d").pack
_pack_times = struct.Struct("<BQBQ").pack  # Span.start_time_unix_nano = 7, end = 8 (fixed64 each)
_VARINT_TABLE: Final = 1 << 14  # every length but a large body's: a list index instead of a loop
_VARINTS: Final = [
    bytes([i]) if i < 0x80 else bytes([(i & 0x7F) | 0x80, i >> 7]) for i in range(_VARINT_TABLE)
]


def _varint(n: int) -> bytes:
    if n < _VARINT_TABLE:
        return _VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    n = len(payload)
    return tag + (_VARINTS[n] if n < _VARINT_TABLE else _varint(n)) + payload


def _utf8(value: bytes) -> bytes:
    """Wire bytes are UTF-8 text; keep them as they are unless they are not valid UTF-8."""
    if value.isascii():  # the common case, and far cheaper than a trial decode
        return value
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
_F_SPAN_START = 0x39  # Span.start_time_unix_nano = 7 (fixed64)
_F_SPAN_END = 0x41  # Span.end_time_unix_nano = 8 (fixed64)
_T_SPAN_ATTR = b"\x4a"  # Span.attributes = 9
_T_SPAN_STATUS = b"\x7a"  # Span.status = 15
_T_STATUS_MESSAGE = b"\x12"  # Status.message = 2
_T_STATUS_CODE = b"\x18"  # Status.code = 3
_BOOL_PROTO: Final = {True: b"\x10\x01", False: b"\x10\x00"}

_key_cache: dict[str, bytes] = {}  # attribute name -> KeyValue.key field
_field_cache: dict[tuple[bytes, str, str], bytes] = {}  # (tag, name, short str) -> whole field
_span_field_cache: dict[tuple[str, str], bytes] = {}  # (name, short str) -> Span.attributes field
_name_cache: dict[str, bytes] = {}  # span name -> Span.name field


def _any_proto(value: Any) -> bytes | None:
    """AnyValue payload, or None for a value OTLP cannot carry (None)."""
    t = type(value)
    if t is str:
        return _ld(_T_ANY_STRING, value.encode("utf-8"))
    if t is bytes:
        return _ld(_T_ANY_STRING, _utf8(value))
    if t is bool:
        return _BOOL_PROTO[value]
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
    """``KeyValue`` fields under ``tag`` (resource and kvlist attributes; spans take the fast path)."""
    parts = []
    for key, value in items:
        if key in skip:
            continue
        if type(value) is str and len(value) <= _SHORT:
            cache_key = (tag, key, value)
            field = _field_cache.get(cache_key)
            if field is None:
                field = _kv_field(tag, key, _ld(_T_ANY_STRING, value.encode("utf-8")))
                if len(_field_cache) < _CACHE_MAX:
                    _field_cache[cache_key] = field
            parts.append(field)
            continue
        av = _any_proto(value)
        if av is None:
            continue
        parts.append(_kv_field(tag, key, av))
    return b"".join(parts)


def _key_field(key: str) -> bytes:
    prefix = _key_cache.get(key)
    if prefix is None:
        prefix = _ld(_T_1, key.encode("utf-8"))
        if len(_key_cache) < 10_000:  # attribute names are a small fixed set; bound it anyway
            _key_cache[key] = prefix
    return prefix


def _kv_field(tag: bytes, key: str, av: bytes) -> bytes:
    """A tagged ``KeyValue`` field holding an encoded ``AnyValue``."""
    return _ld(tag, _ld(_key_field(key) + _T_2, av))


def _span_codec(key: str) -> tuple[bytes, bytes, bytes, bytes, bytes, bytes]:
    """Per attribute name, the constant bytes around each scalar value of a ``Span.attributes`` field.

    (key field, int prefix for 1-byte varints, for 2-byte varints, double prefix, false field,
    true field): a field is then one concatenation (the lengths of these fields are fixed).
    """
    codec = _span_codecs.get(key)
    if codec is None:
        kp = _key_field(key)
        codec = (
            kp,
            _ld(_T_SPAN_ATTR, kp + b"\x12\x02\x18\x00")[:-1],
            _ld(_T_SPAN_ATTR, kp + b"\x12\x03\x18\x80\x01")[:-2],
            _ld(_T_SPAN_ATTR, kp + b"\x12\x09\x21" + bytes(8))[:-8],
            _ld(_T_SPAN_ATTR, kp + b"\x12\x02\x10\x00"),
            _ld(_T_SPAN_ATTR, kp + b"\x12\x02\x10\x01"),
        )
        if len(_span_codecs) < 10_000:
            _span_codecs[key] = codec
    return codec


_span_codecs: dict[str, tuple[bytes, bytes, bytes, bytes, bytes, bytes]] = {}
_list_field_cache: dict[tuple[str, tuple[Any, ...]], bytes] = {}  # (name, short strs) -> field


def _span_attributes_proto(parts: list[bytes], attributes: dict[str, Any], skip: frozenset[str]) -> None:
    """Append the ``Span.attributes`` fields to ``parts``: ``_attributes_proto`` unrolled for spans.

    Every value type of ``wire.Span`` has its branch here (the tests compare each with the
    official messages); anything else goes through :func:`_any_proto`.
    """
    append = parts.append
    for key, value in attributes.items():
        if key in skip:
            continue
        t = type(value)
        if t is str and len(value) <= _SHORT:
            # Memoized whole; only str values are ever stored, and a str equals only a str.
            field = _span_field_cache.get((key, value))
            if field is None:
                field = _kv_field(_T_SPAN_ATTR, key, _ld(_T_ANY_STRING, value.encode("utf-8")))
                if len(_span_field_cache) < _CACHE_MAX:
                    _span_field_cache[(key, value)] = field
            append(field)
            continue
        codec = _span_codecs.get(key) or _span_codec(key)
        if t is int and 0 <= value < _VARINT_TABLE:
            append((codec[1] if value < 0x80 else codec[2]) + _VARINTS[value])
            continue
        if t is float:
            append(codec[3] + _pack_double(value))
            continue
        if t is bool:
            append(codec[5] if value else codec[4])
            continue
        if t is str or t is bytes:
            raw = value.encode("utf-8") if t is str else (value if value.isascii() else _utf8(value))
            n = len(raw)
            av = _T_ANY_STRING + (_VARINTS[n] if n < _VARINT_TABLE else _varint(n)) + raw
        elif t is list and len(value) <= 4:
            # Short lists of short strings repeat (finish reasons, rule ids): memoized like strings.
            cache_key = (key, tuple(value))
            field = memo_get(_list_field_cache, cache_key)
            if field is None:
                any_value = _any_proto(value)
                assert any_value is not None  # noqa: S101 - a list always encodes
                field = memo_put(_list_field_cache, cache_key, _kv_field(_T_SPAN_ATTR, key, any_value))
            append(field)
            continue
        else:
            any_value = _any_proto(value)
            if any_value is None:
                continue
            av = any_value
        n = len(av)
        kv = codec[0] + _T_2 + (_VARINTS[n] if n < _VARINT_TABLE else _varint(n)) + av
        n = len(kv)
        append(_T_SPAN_ATTR + (_VARINTS[n] if n < _VARINT_TABLE else _varint(n)) + kv)


def span_proto(span: Span, exclude_request_data: bool = False) -> bytes:
    """The serialized ``opentelemetry.proto.trace.v1.Span`` of one span."""
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) == 16 and len(span_id) == 8:
        parts = [b"\x0a\x10" + trace_id + b"\x12\x08" + span_id]
    else:
        parts = [_ld(b"\x0a", trace_id) + _ld(b"\x12", span_id)]
    if parent:
        parts.append(_ld(_T_SPAN_PARENT, parent))
    name = _name_cache.get(span.name)
    if name is None:
        name = _ld(_T_SPAN_NAME, span.name.encode("utf-8"))
        if len(_name_cache) < _CACHE_MAX:
            _name_cache[span.name] = name
    parts.append(name)
    parts.append(
        _T_SPAN_KIND
        + _varint(span.kind)
        + _pack_times(_F_SPAN_START, span.start_ns, _F_SPAN_END, span.end_ns)
    )
    _span_attributes_proto(
        parts, span.attributes, REQUEST_DATA_ATTRIBUTES if exclude_request_data else _NO_SKIP
    )
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
    """``ExportTraceServiceRequest`` bytes: lengths computed up front, so the spans are copied once."""
    parts = [b""]  # the head, once the lengths are known
    append = parts.append
    for s in spans:
        n = len(s)
        append(_T_2 + (_VARINTS[n] if n < _VARINT_TABLE else _varint(n)))  # ScopeSpans.spans
        append(s)
    scope_len = len(_SCOPE_PROTO) + sum(map(len, parts))
    resource_field = _ld(_T_1, resource)  # ResourceSpans.resource
    scope_head = _T_2 + _varint(scope_len) + _SCOPE_PROTO  # ResourceSpans.scope_spans
    rs_len = len(resource_field) + len(scope_head) - len(_SCOPE_PROTO) + scope_len
    parts[0] = _T_1 + _varint(rs_len) + resource_field + scope_head  # .resource_spans
    return b"".join(parts)


def pack_proto(
    resource: bytes, spans: Sequence[bytes], max_bytes: int = MAX_REQUEST_BYTES
) -> tuple[list[EncodedRequest], int]:
    """Frame span payloads into ``ExportTraceServiceRequest`` bodies of at most ``max_bytes``.

    Returns:
        The request bodies, and the number of spans too large to fit any request (dropped).
    """
    overhead = len(resource) + len(_SCOPE_PROTO) + 32  # three length prefixes, generously
    return _pack(spans, max_bytes - overhead, 6, lambda chunk: _frame_proto(resource, chunk))


# --- OTLP/JSON (the pieces are in exporter/otlp_json.py) --------------------------------------


def span_json(span: Span, exclude_request_data: bool = False) -> bytes:
    """The OTLP/JSON object of one span."""
    return span_object(
        span, REQUEST_DATA_ATTRIBUTES if exclude_request_data else _NO_SKIP, exclude_request_data
    )


def resource_json(resource: Resource, extra: Mapping[str, Any] = {}) -> bytes:  # noqa: B006 - read only
    """The OTLP/JSON ``resource`` object."""
    return b'{"attributes":' + attributes_json(_resource_items(resource, extra).items()) + b"}"


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
        lambda chunk: _frame_json(resource, chunk),
    )


def _frame_json(resource: bytes, spans: Sequence[bytes]) -> bytes:
    """The request body; the head and tail ride on the first and last span, so one join copies all."""
    parts = list(spans)
    parts[0] = _JSON_HEAD + resource + _JSON_SCOPE + parts[0]
    parts[-1] += _JSON_TAIL
    return b",".join(parts)


# --- shared -----------------------------------------------------------------------------------


def _pack(spans: Sequence[bytes], budget: int, per_span: int, frame: Any) -> tuple[list[EncodedRequest], int]:
    """Greedy split of encoded spans into requests whose payload stays within ``budget``.

    ``per_span`` is the framing each span adds (a tag and length prefix, or a comma).
    """
    if sum(map(len, spans)) + per_span * len(spans) <= budget:  # the common case: all in one
        return ([EncodedRequest(frame(spans), len(spans))] if spans else []), 0
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
