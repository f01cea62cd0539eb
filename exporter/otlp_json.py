"""OTLP/JSON spans and attributes, written directly (the JSON half of :mod:`exporter.otlp`).

OTLP/JSON follows the spec's deviations from the proto3 JSON mapping: trace and span ids are
hex (not base64), enums are integers, keys lowerCamelCase, 64-bit integers are strings. The
bytes are those ``msgspec`` makes of the OTLP/JSON dicts (:func:`_attributes_json`), but built
from memoized pieces rather than dicts; the tests check both, and decode every body to the
official messages.
"""

from __future__ import annotations

import math
from binascii import hexlify as _hexlify
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from gateway.telemetry.wire import Span

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_CACHE_MAX: Final = 50_000  # bound of each memo: distinct values cannot grow it forever
_SHORT: Final = 64  # string values up to this length are memoized (model, provider, span type)
_NO_SKIP: Final[frozenset[str]] = frozenset()


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


def memo_get(cache: dict[Any, bytes], cache_key: tuple[str, tuple[Any, ...]]) -> bytes | None:
    """The memoized field of a short list attribute, None when absent or the list is unhashable."""
    try:
        return cache.get(cache_key)
    except TypeError:  # an item that cannot be hashed (a dict)
        return None


def memo_put(cache: dict[Any, bytes], cache_key: tuple[str, tuple[Any, ...]], field: bytes) -> bytes:
    """Memoize ``field`` when the list holds only short strings; returns ``field``.

    Only all-str lists are stored, because a str equals nothing but a str, whereas ``[1]``,
    ``[True]`` and ``[1.0]`` are equal tuples that encode differently.
    """
    if all(type(v) is str and len(v) <= _SHORT for v in cache_key[1]) and len(cache) < _CACHE_MAX:
        cache[cache_key] = field
    return field


def _json_codec(key: str) -> tuple[bytes, bytes, bytes, bytes, bytes, bytes]:
    """Per attribute name, the constant JSON around each kind of value (memoized, bounded).

    (``{"key":<key>,"value":{``, + ``"stringValue":``, + ``"intValue":"``, + ``"doubleValue":``,
    the whole false field, the whole true field).
    """
    codec = _json_codecs.get(key)
    if codec is None:
        head = b'{"key":' + _json_encode(key) + b',"value":{'
        codec = (
            head,
            head + b'"stringValue":',
            head + b'"intValue":"',
            head + b'"doubleValue":',
            head + b'"boolValue":false}}',
            head + b'"boolValue":true}}',
        )
        if len(_json_codecs) < 10_000:
            _json_codecs[key] = codec
    return codec


_json_codecs: dict[str, tuple[bytes, bytes, bytes, bytes, bytes, bytes]] = {}
_json_field_cache: dict[tuple[str, Any], bytes] = {}  # (name, short str or tuple of them) -> object
_json_name_cache: dict[str, bytes] = {}  # span name -> its JSON string


def _span_attributes_json(attributes: dict[str, Any], skip: frozenset[str]) -> bytes:
    """The span's attribute objects, comma-separated.

    Byte for byte what ``msgspec`` makes of :func:`_attributes_json`'s dicts (the tests check it),
    without building those dicts: per value type a memoized prefix and the encoded value.
    """
    fields: list[bytes] = []
    append = fields.append
    for key, value in attributes.items():
        if key in skip:
            continue
        t = type(value)
        if t is str and len(value) <= _SHORT:
            # Memoized whole; only str values are ever stored, and a str equals only a str.
            field = _json_field_cache.get((key, value))
            if field is None:
                field = _json_codec(key)[1] + _json_encode(value) + b"}}"
                if len(_json_field_cache) < _CACHE_MAX:
                    _json_field_cache[(key, value)] = field
            append(field)
            continue
        codec = _json_codecs.get(key) or _json_codec(key)
        if t is int and _INT64_MIN <= value <= _INT64_MAX:
            field = codec[2] + b'%d"}}' % value
        elif t is float and math.isfinite(value):
            field = codec[3] + _json_encode(value) + b"}}"
        elif t is bool:
            field = codec[5] if value else codec[4]
        elif t is str:
            field = codec[1] + _json_encode(value) + b"}}"
        elif t is bytes:
            field = codec[1] + _json_encode(value.decode("utf-8", "replace")) + b"}}"
        elif t is list and len(value) <= 4:
            # Short lists of short strings repeat (finish reasons, rule ids): memoized like strings.
            cache_key = (key, tuple(value))
            cached = memo_get(_json_field_cache, cache_key)
            if cached is None:
                cached = memo_put(
                    _json_field_cache, cache_key, codec[0] + _json_encode(_any_json(value))[1:] + b"}"
                )
            field = cached
        else:
            av = _any_json(value)
            if av is None:
                continue
            field = codec[0] + _json_encode(av)[1:] + b"}"
        append(field)
    return b",".join(fields)


def attributes_json(items: Iterable[tuple[str, Any]]) -> bytes:
    """A JSON array of ``KeyValue`` objects (resource attributes: once per batch, no fast path)."""
    return _json_encode(_attributes_json(items))


def span_object(span: Span, skip: frozenset[str], drop_status_message: bool) -> bytes:
    """The OTLP/JSON object of one span, without the attributes named in ``skip``."""
    parts = [b'{"traceId":"', _hexlify(span.trace_id), b'","spanId":"', _hexlify(span.span_id)]
    if span.parent_span_id:
        parts += (b'","parentSpanId":"', _hexlify(span.parent_span_id))
    name = _json_name_cache.get(span.name)
    if name is None:
        name = _json_encode(span.name)
        if len(_json_name_cache) < _CACHE_MAX:
            _json_name_cache[span.name] = name
    parts += (
        b'","name":',
        name,
        b',"kind":%d,"startTimeUnixNano":"%d","endTimeUnixNano":"%d","attributes":['
        % (span.kind, span.start_ns, span.end_ns),
    )
    parts.append(_span_attributes_json(span.attributes, skip))
    message = "" if drop_status_message else span.status_message
    if span.status_code or message:
        status: dict[str, Any] = {}
        if message:
            status["message"] = message
        if span.status_code:
            status["code"] = span.status_code
        parts += (b'],"status":', _json_encode(status), b"}")
    else:
        parts.append(b"]}")
    return b"".join(parts)
