"""Span batches → store rows: one wide request row per trace, one row per span (pure, no I/O).

Both backends take the same rows, encoded as JSON lines (``JSONEachRow`` for ClickHouse,
``read_json`` for DuckDB), so one encoder serves both and no per-row SQL is ever built.

Attributes are read defensively: while the GenAI attribute rework lands, the root may carry
``gen_ai.usage.*`` and ``gen_ai.request.model`` (older spans) or only ``tfy.*`` names, with the
model calls' usage on their own spans; both give the same row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from exporter.otlp import REQUEST_DATA_ATTRIBUTES
from gateway.telemetry.wire import SPAN_KIND_SERVER, STATUS_ERROR, Span

__all__ = [
    "CONTENT_ATTRIBUTES",
    "REQUEST_COLUMNS",
    "SPAN_COLUMNS",
    "RequestRow",
    "SpanRow",
    "build_rows",
    "encode_rows",
]

# What exclude_request_data strips (the OTLP set plus the GenAI content keys and tool I/O).
CONTENT_ATTRIBUTES: Final = REQUEST_DATA_ATTRIBUTES | {
    "tfy.output.sse",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.definitions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "mcp.request.params",
    "mcp.response.result",
}

# Kept in the request row's input/output columns only, never twice; the API puts them back on the root.
BODY_ATTRIBUTES: Final = frozenset({"tfy.input", "tfy.output", "tfy.output.sse"})
_BINARY_ATTRIBUTES: Final = BODY_ATTRIBUTES  # where bytes values come from (see wire.py)

_EPOCH: Final = dt.date(1970, 1, 1)
_MAX_CONTENT_CHARS: Final = 256 * 1024  # one request's stored input/output, each


class RequestRow(msgspec.Struct, gc=False):
    """One trace, as the request log and the dashboards read it (column order = table order)."""

    day: str
    ts: int  # start, unix epoch microseconds
    trace_id: str
    span_type: str
    model: str
    target: str
    provider: str
    subject: str
    teams: list[str]
    metadata: str  # JSON object of x-tfy-metadata
    status: int
    error_code: str
    error_message: str
    latency_ms: float
    ttft_ms: float | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: float
    tool_calls: int
    span_count: int
    preview: str  # the last user message (tfy.input_short_hand), for the log
    input: str
    output: str


class SpanRow(msgspec.Struct, gc=False):
    """One span, for the trace page."""

    day: str
    ts: int
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    duration_us: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]  # written as a JSON object, stored and read back as JSON text


REQUEST_COLUMNS: Final = tuple(RequestRow.__struct_fields__)
SPAN_COLUMNS: Final = tuple(SpanRow.__struct_fields__)

_encoder = msgspec.json.Encoder()


def _text(value: Any, limit: int = _MAX_CONTENT_CHARS) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8", "replace")
    elif value is None:
        return ""
    elif not isinstance(value, str):
        value = str(value)
    return value if len(value) <= limit else value[:limit] + "…"


def _first(attrs: dict[str, Any], *names: str) -> Any:
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


def _int(value: Any) -> int:
    try:
        return int(value) if value is not None else 0
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


_PLAIN_TYPES: Final = frozenset({str, int, float, bool, list, tuple, dict, type(None)})


def _attrs_value(attrs: dict[str, Any], exclude: bool) -> dict[str, Any]:
    """The attributes as stored: a JSON object inside the row (the engines keep it as text), so
    the row is encoded once rather than holding a JSON string escaped inside JSON."""
    drop = CONTENT_ATTRIBUTES if exclude else BODY_ATTRIBUTES
    if drop.isdisjoint(attrs) and (
        # One C-level pass over the value types decides nearly every span; anything unusual
        # (a bytes subclass, a custom type) takes the exact isinstance scan.
        _PLAIN_TYPES.issuperset(map(type, attrs.values()))
        or not any(isinstance(v, bytes) for v in attrs.values())
    ):
        return attrs  # the common case: internal and client spans
    clean: dict[str, Any] = {}
    for key, value in attrs.items():
        if key in drop:
            continue
        if isinstance(value, bytes | bytearray | memoryview):
            value = _text(value)  # msgspec would write bytes as base64
        clean[key] = value
    return clean


MODEL_OPERATIONS: Final = frozenset({"chat", "text_completion", "embeddings", "generate_content"})


def _is_model_call(span: Span) -> bool:
    # invoke_agent and execute_tool spans carry gen_ai.operation.name too, but call no model.
    return span.kind != SPAN_KIND_SERVER and span.attributes.get("gen_ai.operation.name") in MODEL_OPERATIONS


def _is_tool_call(span: Span) -> bool:
    a = span.attributes
    return a.get("gen_ai.operation.name") == "execute_tool" or a.get("mcp.method.name") == "tools/call"


def _usage(root: Span, calls: list[Span], key: str, *aliases: str) -> int:
    """A usage counter: the root's (tfy.* or legacy gen_ai.* names), else the sum over model calls."""
    value = _first(root.attributes, *aliases, key)
    if value is not None:
        return _int(value)
    return sum(_int(s.attributes.get(key)) for s in calls)


_DAY_US: Final = 86_400_000_000
_days: dict[int, str] = {}


def _day(ts_us: int) -> str:
    n = ts_us // _DAY_US
    day = _days.get(n)
    if day is None:  # a handful of distinct days per process lifetime: memoised
        if len(_days) > 4096:
            _days.clear()
        day = _days[n] = (_EPOCH + dt.timedelta(days=n)).isoformat()
    return day


def request_row(root: Span, spans: list[Span], exclude: bool) -> RequestRow:
    """The request row of one trace from its root span and all its spans."""
    a = root.attributes
    calls = [s for s in spans if _is_model_call(s)]
    last_call = calls[-1].attributes if calls else {}
    ts = root.start_ns // 1000
    status = _int(_first(a, "http.response.status_code"))
    error_code = _first(a, "error.type") or ""
    if not status and root.status_code == STATUS_ERROR:
        status = 500
    latency = _float(_first(a, "tfy.model.metric.latency_in_ms"))
    if latency is None:
        latency = (root.end_ns - root.start_ns) / 1e6
    metadata = _first(a, "tfy.request.metadata") or "{}"
    teams = a.get("tfy.request.created_by_teams") or []
    tool_calls = sum(1 for s in spans if _is_tool_call(s))
    return RequestRow(
        day=_day(ts),
        ts=ts,
        trace_id=root.trace_id.hex(),
        span_type=_text(_first(a, "tfy.span_type") or "", 64),
        model=_text(
            _first(a, "tfy.request.model", "gen_ai.request.model", "tfy.mcp.server")
            or _first(last_call, "gen_ai.request.model")
            or "",
            256,
        ),
        target=_text(
            _first(a, "tfy.data_routing.destination")
            or _first(last_call, "tfy.data_routing.destination")
            or "",
            256,
        ),
        provider=_text(
            _first(a, "tfy.data_routing.provider", "gen_ai.provider.name")
            or _first(last_call, "gen_ai.provider.name")
            or "",
            64,
        ),
        subject=_text(_first(a, "tfy.request.created_by_subject") or "", 256),
        teams=[str(t) for t in teams] if isinstance(teams, list | tuple) else [str(teams)],
        metadata=_text(metadata, 4096) if isinstance(metadata, str) else _encoder.encode(metadata).decode(),
        status=status,
        error_code=_text(error_code, 128),
        error_message="" if exclude else _text(_first(a, "tfy.error_message") or root.status_message, 4096),
        latency_ms=latency,
        ttft_ms=_float(_first(a, "tfy.model.metric.time_to_first_token_in_ms")),
        input_tokens=_usage(root, calls, "gen_ai.usage.input_tokens", "tfy.usage.input_tokens"),
        output_tokens=_usage(root, calls, "gen_ai.usage.output_tokens", "tfy.usage.output_tokens"),
        cached_tokens=_usage(
            root, calls, "gen_ai.usage.cache_read.input_tokens", "tfy.usage.cache_read.input_tokens"
        ),
        reasoning_tokens=_usage(
            root, calls, "gen_ai.usage.reasoning.output_tokens", "tfy.usage.reasoning.output_tokens"
        ),
        cost_usd=_float(_first(a, "tfy.model.metric.cost_in_usd")) or 0.0,
        tool_calls=tool_calls,
        span_count=len(spans),
        preview="" if exclude else _preview(a),
        input="" if exclude else _text(_first(a, "tfy.input")),
        output="" if exclude else _text(_first(a, "tfy.output")),
    )


class _ShortHand(msgspec.Struct):
    content: str = ""


_short_hand = msgspec.json.Decoder(_ShortHand)


def _preview(attrs: dict[str, Any]) -> str:
    raw = attrs.get("tfy.input_short_hand")
    if isinstance(raw, str | bytes):
        try:
            return _text(_short_hand.decode(raw).content, 200)
        except msgspec.DecodeError:
            return ""
    return ""


def span_row(span: Span, exclude: bool, trace_id: str | None = None) -> SpanRow:
    """The stored form of one span (``trace_id``: its hex, when the caller has it already)."""
    ts = span.start_ns // 1000
    message = span.status_message
    if exclude:
        message = ""
    elif message.__class__ is not str or len(message) > 4096:  # the rare case, off the hot path
        message = _text(message, 4096)
    # Positional, in field order: keywords cost a lookup each, once per span.
    return SpanRow(
        _day(ts),
        ts,
        trace_id if trace_id is not None else span.trace_id.hex(),
        span.span_id.hex(),
        span.parent_span_id.hex(),
        span.name,
        span.kind,
        max(0, (span.end_ns - span.start_ns) // 1000),
        span.status_code,
        message,
        _attrs_value(span.attributes, exclude),
    )


def build_rows(spans: Iterable[Span], exclude: bool = False) -> tuple[list[RequestRow], list[SpanRow]]:
    """Request rows (one per trace that has its SERVER root in ``spans``) and span rows."""
    by_trace: dict[bytes, list[Span]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    requests: list[RequestRow] = []
    span_rows: list[SpanRow] = []
    for trace_id, group in by_trace.items():
        root = next((s for s in group if s.kind == SPAN_KIND_SERVER), None)
        if root is not None:
            requests.append(request_row(root, group, exclude))
        hex_id = trace_id.hex()
        span_rows.extend([span_row(s, exclude, hex_id) for s in group])
    return requests, span_rows


def encode_rows(rows: list[Any]) -> bytes:
    """Newline-delimited JSON objects, one per row (``JSONEachRow``), each ending in a newline.

    One ``encode_lines`` call into one buffer: half the cost of encoding row by row and joining."""
    return _encoder.encode_lines(rows)
