"""OTLP metrics computed from the span stream: pure aggregation and encoding, no I/O.

The exporter process derives metrics from the spans it receives (the way SigNoz's span-metrics
processor does) instead of every gateway worker keeping a second set of numbers: the request
path pays nothing, and the metrics exporter works whether or not a trace destination is
configured. :class:`SpanMetrics` folds :class:`gateway.telemetry.wire.SpanBatch` es into
cumulative streams; :class:`DeltaTracker` turns two cumulative snapshots into a delta for
destinations that want ``temporality: delta``; :func:`to_proto` / :func:`to_json` build an
``ExportMetricsServiceRequest``.

Per trace (a batch carries whole traces), from the CLIENT spans (one per upstream attempt),
the OpenTelemetry GenAI client metrics:

- ``gen_ai.client.token.usage`` (histogram, ``{token}``, ``gen_ai.token.type`` = input|output),
- ``gen_ai.client.operation.duration`` (histogram, ``s``, ``error.type`` when it failed),
- ``gen_ai.client.operation.time_to_first_chunk`` (histogram, ``s``, streams only),

with ``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model``, ``server.address``, ``server.port`` and the convention's bucket
boundaries. Each model call is counted once, from its own span: only model-call spans carry
``gen_ai.*`` (usage on the attempt that answered). From the SERVER root span (one per request,
its values under ``tfy.*``), the Prometheus catalog of :mod:`gateway.metrics.catalog` under the
same names (``llm_gateway_*``) and labels.

Gaps: spans dropped before they reach the exporter (ring full, NATS down) are missing here
too; the gateway counts them in ``llm_gateway_spans_dropped`` so the gap is visible.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

from gateway.telemetry.wire import (
    FIRST_TOKEN_MS_BUCKETS,
    INTER_TOKEN_MS_BUCKETS,
    PROCESSING_MS_BUCKETS,
    SPAN_KIND_CLIENT,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    Span,
    SpanBatch,
)

__all__ = [
    "CATALOG",
    "GEN_AI",
    "DeltaTracker",
    "Instrument",
    "MetricPoints",
    "SpanMetrics",
    "to_json",
    "to_proto",
]

Temporality = Literal["cumulative", "delta"]
AttrKey = tuple[tuple[str, Any], ...]

SCOPE_NAME: Final = "llm-gateway.span-metrics"
SCOPE_VERSION: Final = "0.1.0"
OVERFLOW_ATTRS: Final[AttrKey] = (("otel.metric.overflow", True),)  # the OTel SDK's overflow set

# GenAI semantic conventions (bucket boundaries as the convention specifies them).
TOKEN_BUCKETS: Final = (
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
)  # fmt: skip
DURATION_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
# Span attributes read here (names as in gateway.telemetry.spans and shared/design.md).
_OP, _PROVIDER = "gen_ai.operation.name", "gen_ai.provider.name"
_REQ_MODEL, _RESP_MODEL = "gen_ai.request.model", "gen_ai.response.model"
_IN_TOKENS, _OUT_TOKENS = "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"
_STREAM, _TTFC_S = "gen_ai.request.stream", "gen_ai.response.time_to_first_chunk"
_ADDR, _PORT, _ERROR = "server.address", "server.port", "error.type"
_STATUS = "http.response.status_code"
_TTFT_MS, _LATENCY_MS = "tfy.model.metric.time_to_first_token_in_ms", "tfy.model.metric.latency_in_ms"
_COST, _ITL_MS = "tfy.model.metric.cost_in_usd", "tfy.model.metric.inter_token_latency_in_ms"
_SUBJECT, _METADATA = "tfy.request.created_by_subject", "tfy.request.metadata"
_TENANT, _DESTINATION = "tfy.tenant_name", "tfy.data_routing.destination"
_TFY_MODEL = "tfy.request.model"
_TFY_IN_TOKENS, _TFY_OUT_TOKENS = "tfy.usage.input_tokens", "tfy.usage.output_tokens"
_RL_RULES = "applied_ratelimit_rule_ids"
_RL_RULE = "tfy.ratelimit.rule_id"  # the rule that refused a request (proposed to the gateway)
_ATTEMPT_KIND = "tfy.attempt.kind"  # CLIENT spans: primary | retry | fallback
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


# eq=False: identity hash. Instruments key the stream dicts, and a generated hash would
# re-hash the bucket tuple on every lookup.
@dataclass(frozen=True, slots=True, eq=False)
class Instrument:
    """One metric: name, unit, kind, and bucket boundaries for histograms."""

    name: str
    unit: str
    description: str
    kind: Literal["histogram", "sum"]
    boundaries: tuple[float, ...] = ()
    integer: bool = False  # Sum points as as_int (token and request counts)


TOKEN_USAGE: Final = Instrument(
    "gen_ai.client.token.usage",
    "{token}",
    "Number of input and output tokens used.",
    "histogram",
    TOKEN_BUCKETS,
)
OPERATION_DURATION: Final = Instrument(
    "gen_ai.client.operation.duration", "s", "GenAI operation duration.", "histogram", DURATION_BUCKETS
)
TIME_TO_FIRST_CHUNK: Final = Instrument(
    "gen_ai.client.operation.time_to_first_chunk",
    "s",
    "Time to receive the first chunk of a streaming response.",
    "histogram",
    DURATION_BUCKETS,
)
GEN_AI: Final = (TOKEN_USAGE, OPERATION_DURATION, TIME_TO_FIRST_CHUNK)

INPUT_TOKENS: Final = Instrument("llm_gateway_input_tokens", "{token}", "Input tokens.", "sum", integer=True)
OUTPUT_TOKENS: Final = Instrument(
    "llm_gateway_output_tokens", "{token}", "Output tokens.", "sum", integer=True
)
REQUEST_COST: Final = Instrument("llm_gateway_request_cost", "USD", "Cost of requests in USD.", "sum")
PROCESSING_MS: Final = Instrument(
    "llm_gateway_request_processing_ms",
    "ms",
    "Request latency in the gateway.",
    "histogram",
    PROCESSING_MS_BUCKETS,
)
FIRST_TOKEN_MS: Final = Instrument(
    "llm_gateway_first_token_latency_ms",
    "ms",
    "Time to the first token.",
    "histogram",
    FIRST_TOKEN_MS_BUCKETS,
)
INTER_TOKEN_MS: Final = Instrument(
    "llm_gateway_inter_token_latency_ms",
    "ms",
    "Mean time between tokens.",
    "histogram",
    INTER_TOKEN_MS_BUCKETS,
)
REQUESTS: Final = Instrument("llm_gateway_requests", "{request}", "Requests, by status.", "sum", integer=True)
ERRORS: Final = Instrument(
    "llm_gateway_errors", "{request}", "Failed requests, by error type.", "sum", integer=True
)
RATE_LIMITED: Final = Instrument(
    "llm_gateway_rate_limit_rejections",
    "{request}",
    "Requests refused by a rate-limit rule.",
    "sum",
    integer=True,
)
FALLBACKS: Final = Instrument(
    "llm_gateway_fallbacks", "{call}", "Fallbacks to another target.", "sum", integer=True
)
RETRIES: Final = Instrument(
    "llm_gateway_retries", "{call}", "Retries of an upstream call.", "sum", integer=True
)
CATALOG: Final = (
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    REQUEST_COST,
    PROCESSING_MS,
    FIRST_TOKEN_MS,
    INTER_TOKEN_MS,
    REQUESTS,
    ERRORS,
    RATE_LIMITED,
    FALLBACKS,
    RETRIES,
)
INSTRUMENTS: Final = (*GEN_AI, *CATALOG)
# Catalog instrument, the root's attribute, the model-call spans' attribute (summed when the
# root lacks it).
_USAGE: Final = (
    (INPUT_TOKENS, _TFY_IN_TOKENS, _IN_TOKENS),
    (OUTPUT_TOKENS, _TFY_OUT_TOKENS, _OUT_TOKENS),
    (REQUEST_COST, _COST, _COST),
)


class Hist:
    """Histogram state: count, sum, and one count per bucket (the last is +Inf)."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self, n_buckets: int) -> None:
        self.count = 0
        self.sum = 0.0
        self.buckets = [0] * n_buckets

    def copy(self) -> Hist:
        h = Hist(0)
        h.count, h.sum, h.buckets = self.count, self.sum, list(self.buckets)
        return h


Point = Hist | float


@dataclass(slots=True)
class MetricPoints:
    """What one instrument reports for one export: its streams and their time window."""

    instrument: Instrument
    temporality: Temporality
    start_ns: int
    time_ns: int
    points: list[tuple[AttrKey, Point]] = field(default_factory=list)


def _bucket(boundaries: tuple[float, ...], value: float) -> int:
    # Upper bounds are inclusive (OTLP explicit buckets: (b[i-1], b[i]]): bisect_left is exactly that.
    return bisect_left(boundaries, value)


def _num(value: Any) -> float | None:
    """A number attribute, or ``None`` (bools and strings are not numbers here)."""
    t = type(value)
    if t is int or t is float:
        return value
    return None


def _key(pairs: Iterable[tuple[str, Any]]) -> AttrKey:
    return tuple([(k, v) for k, v in pairs if v is not None and v != ""])


def metadata_label_name(key: str) -> str:
    """``llm_gateway_metadata_<key>``, as the gateway's Prometheus labels spell it."""
    return "llm_gateway_metadata_" + _INVALID_LABEL_CHARS.sub("_", key)


class SpanMetrics:
    """Cumulative metric streams folded from span batches (see the module docstring).

    Not thread-safe: call :meth:`observe` and :meth:`snapshot` from one event loop.
    """

    def __init__(
        self,
        metadata_label_keys: Sequence[str] = (),
        *,
        max_streams: int = 2000,
        start_ns: int = 0,
    ) -> None:
        """Args:
        metadata_label_keys: ``tfy.request.metadata`` keys that become attributes (the gateway's
            ``metrics.metadata_label_keys``); other keys are ignored, bounding cardinality.
        max_streams: attribute sets per instrument; further ones fold into
            ``otel.metric.overflow=true``, as the OpenTelemetry SDK's cardinality limit does.
        start_ns: the start of the cumulative window (default: the first batch observed).
        """
        self.metadata_keys = tuple(dict.fromkeys(metadata_label_keys))
        self._metadata_names = tuple(metadata_label_name(k) for k in self.metadata_keys)
        self.max_streams = max_streams
        self.start_ns = start_ns
        self.last_ns = start_ns  # the latest span end seen
        self.spans = 0
        self.traces = 0
        self.service_name = ""
        self.service_version = ""
        self._streams: dict[Instrument, dict[AttrKey, Point]] = {i: {} for i in INSTRUMENTS}

    # --- folding spans in -----------------------------------------------------------------------

    def observe(self, batch: SpanBatch) -> None:
        """Fold one batch in; spans of one trace must arrive in one batch (the wire contract)."""
        if not batch.spans:
            return
        self.service_name = batch.resource.service_name
        self.service_version = batch.resource.service_version
        traces: defaultdict[bytes, list[Span]] = defaultdict(list)
        for span in batch.spans:
            traces[span.trace_id].append(span)
            if span.end_ns > self.last_ns:
                self.last_ns = span.end_ns
            if not self.start_ns or span.start_ns < self.start_ns:
                self.start_ns = span.start_ns
        self.spans += len(batch.spans)
        for spans in traces.values():
            self.traces += 1
            self._observe_trace(spans)

    def _observe_trace(self, spans: list[Span]) -> None:
        ids = {s.span_id for s in spans}
        root = next((s for s in spans if s.kind == SPAN_KIND_SERVER and s.parent_span_id not in ids), None)
        if root is not None and root.attributes.get("tfy.span_type") == "MCPGateway":
            return  # MCP traces are not model calls: llm_gateway_mcp_* counts them (gateway/metrics/mcp.py)
        clients = [s for s in spans if s.kind == SPAN_KIND_CLIENT]
        if len(clients) > 1:
            clients.sort(key=_start_ns)
        for c in clients:
            if _OP in c.attributes:
                self._observe_client(c)
        if root is not None:
            self._observe_request(root, clients)

    def _observe_client(self, c: Span) -> None:
        a = c.attributes
        common = (
            (_OP, a.get(_OP)),
            (_PROVIDER, a.get(_PROVIDER)),
            (_REQ_MODEL, a.get(_REQ_MODEL)),
            (_RESP_MODEL, a.get(_RESP_MODEL)),
            (_ADDR, a.get(_ADDR)),
            (_PORT, a.get(_PORT)),
        )
        error = a.get(_ERROR) or ("_OTHER" if c.status_code == STATUS_ERROR else None)
        with_error = _key((*common, (_ERROR, error)))
        self._hist(OPERATION_DURATION, with_error, max(0, c.end_ns - c.start_ns) / 1e9)
        if a.get(_STREAM, True):
            ttfc = _num(a.get(_TTFC_S))
            if ttfc is None and (ms := _num(a.get(_TTFT_MS))) is not None:
                ttfc = ms / 1000
            if ttfc is not None:
                self._hist(TIME_TO_FIRST_CHUNK, with_error, ttfc)
        for token_type, attr in (("input", _IN_TOKENS), ("output", _OUT_TOKENS)):
            n = _num(a.get(attr))
            if n is not None:
                self._hist(TOKEN_USAGE, _key((*common, ("gen_ai.token.type", token_type))), n)

    def _observe_request(self, root: Span, clients: list[Span]) -> None:
        a = root.attributes
        last = clients[-1].attributes if clients else {}
        model = a.get(_TFY_MODEL) or last.get(_DESTINATION) or last.get(_REQ_MODEL) or ""
        labels = [
            ("model_name", str(model)),
            ("tenant_name", str(a.get(_TENANT) or "")),
            ("username", str(a.get(_SUBJECT) or "")),
        ]
        if self.metadata_keys:
            meta = _metadata(a.get(_METADATA))
            for k, name in zip(self.metadata_keys, self._metadata_names, strict=True):
                v = meta.get(k)
                labels.append((name, v if isinstance(v, str) else ("" if v is None else str(v))))
        key = tuple(labels)  # every label always present, as in Prometheus

        for inst, attr, call_attr in _USAGE:
            n = _num(a.get(attr))
            if n is None:  # not on the root: the sum over the model calls
                n = sum([v for c in clients if (v := _num(c.attributes.get(call_attr))) is not None])
            if n:
                self._add(inst, key, n)
        latency = _num(a.get(_LATENCY_MS))
        self._hist(
            PROCESSING_MS, key, latency if latency is not None else (root.end_ns - root.start_ns) / 1e6
        )
        ttft = _num(a.get(_TTFT_MS))
        if ttft is None:
            ttft = _num(last.get(_TTFT_MS))
        if ttft is not None:
            self._hist(FIRST_TOKEN_MS, key, ttft)
        itl = _num(a.get(_ITL_MS))
        if itl is not None:
            self._hist(INTER_TOKEN_MS, key, itl)
        status = a.get(_STATUS)
        self._add(REQUESTS, (*key, ("status_code", str(status if status is not None else ""))), 1)
        error = a.get(_ERROR)
        if error:
            self._add(ERRORS, (("model_name", key[0][1]), ("error_type", str(error))), 1)
        if status == 429 and not clients:
            # Refused before any upstream call: the gateway's own rate limit, not the provider's.
            rules = a.get(_RL_RULES) or a.get(_RL_RULE) or "unknown"
            for rule in [rules] if isinstance(rules, str) else rules:
                self._add(RATE_LIMITED, (("rule_id", str(rule)),), 1)
        previous = None
        for c in clients:
            ca = c.attributes
            target = ca.get(_DESTINATION) or ca.get(_REQ_MODEL) or ""
            kind = ca.get(_ATTEMPT_KIND)
            if kind is None and previous is not None:
                # Without the gateway's label: the same target again is a retry, another a fallback.
                kind = "retry" if target == previous else "fallback"
            if kind == "retry":
                self._add(RETRIES, (("target", str(target)),), 1)
            elif kind == "fallback":
                self._add(FALLBACKS, (("target", str(target)),), 1)
            previous = target

    # --- stream updates -------------------------------------------------------------------------

    def _hist(self, inst: Instrument, key: AttrKey, value: float) -> None:
        streams = self._streams[inst]
        h = streams.get(key)
        if h is None:
            if len(streams) >= self.max_streams:
                key = OVERFLOW_ATTRS
                h = streams.get(key)
            if h is None:
                h = streams[key] = Hist(len(inst.boundaries) + 1)
        assert isinstance(h, Hist)
        h.count += 1
        h.sum += value
        h.buckets[_bucket(inst.boundaries, value)] += 1

    def _add(self, inst: Instrument, key: AttrKey, amount: float) -> None:
        streams = self._streams[inst]
        if key not in streams and len(streams) >= self.max_streams:
            key = OVERFLOW_ATTRS
        current = streams.get(key, 0.0)
        assert not isinstance(current, Hist)
        streams[key] = current + amount

    # --- reading ----------------------------------------------------------------------------------

    def snapshot(self) -> dict[Instrument, dict[AttrKey, Point]]:
        """A deep copy of every stream's cumulative state."""
        return {
            inst: {k: (p.copy() if isinstance(p, Hist) else p) for k, p in streams.items()}
            for inst, streams in self._streams.items()
        }

    def collect(self, now_ns: int) -> list[MetricPoints]:
        """Cumulative points of every instrument with data, window ``[start_ns, now_ns]``."""
        return _points(self.snapshot(), "cumulative", self.start_ns or now_ns, now_ns)


def _start_ns(span: Span) -> int:
    return span.start_ns


def _metadata(value: Any) -> Mapping[str, Any]:
    """``tfy.request.metadata`` as a mapping: the attribute holds a JSON object (text or bytes)."""
    if isinstance(value, Mapping):
        return value
    if isinstance(value, str | bytes) and value:
        try:
            doc = msgspec.json.decode(value)
        except msgspec.DecodeError:
            return {}
        return doc if isinstance(doc, dict) else {}
    return {}


def _points(
    state: Mapping[Instrument, Mapping[AttrKey, Point]], temporality: Temporality, start_ns: int, now_ns: int
) -> list[MetricPoints]:
    out = []
    for inst in INSTRUMENTS:
        streams = state.get(inst)
        if streams:
            out.append(MetricPoints(inst, temporality, start_ns, now_ns, list(streams.items())))
    return out


class DeltaTracker:
    """Delta temporality for one destination: each export reports what changed since the last
    *successful* one, so a failed export's data is sent with the next (no gap, no double count).
    """

    def __init__(self, start_ns: int) -> None:
        self._base: dict[Instrument, dict[AttrKey, Point]] = {}
        self._base_ns = start_ns
        self._pending: tuple[dict[Instrument, dict[AttrKey, Point]], int] | None = None

    def collect(self, current: dict[Instrument, dict[AttrKey, Point]], now_ns: int) -> list[MetricPoints]:
        """Points for ``[last success, now_ns]``; streams without change are left out."""
        delta: dict[Instrument, dict[AttrKey, Point]] = {}
        for inst, streams in current.items():
            base = self._base.get(inst, {})
            changed: dict[AttrKey, Point] = {}
            for key, point in streams.items():
                before = base.get(key)
                if isinstance(point, Hist):
                    d = point.copy()
                    if isinstance(before, Hist):
                        d.count -= before.count
                        d.sum -= before.sum
                        d.buckets = [x - y for x, y in zip(point.buckets, before.buckets, strict=True)]
                    if d.count:
                        changed[key] = d
                else:
                    value = point - (before if isinstance(before, float | int) else 0.0)
                    if value:
                        changed[key] = value
            if changed:
                delta[inst] = changed
        self._pending = (current, now_ns)
        return _points(delta, "delta", self._base_ns, now_ns)

    def commit(self) -> None:
        """The last collected delta was delivered: the next one starts where it ended."""
        if self._pending is not None:
            self._base, self._base_ns = self._pending
            self._pending = None


# --- encoding -----------------------------------------------------------------------------------


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def _attrs(pairs: Iterable[tuple[str, Any]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any(v)) for k, v in pairs]


_TEMPORALITY = {
    "cumulative": metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE,
    "delta": metrics_pb2.AGGREGATION_TEMPORALITY_DELTA,
}


def _metric(mp: MetricPoints) -> metrics_pb2.Metric:
    inst = mp.instrument
    m = metrics_pb2.Metric(name=inst.name, unit=inst.unit, description=inst.description)
    temporality = _TEMPORALITY[mp.temporality]
    if inst.kind == "histogram":
        m.histogram.aggregation_temporality = temporality
        for key, p in mp.points:
            assert isinstance(p, Hist)
            m.histogram.data_points.append(
                metrics_pb2.HistogramDataPoint(
                    attributes=_attrs(key),
                    start_time_unix_nano=mp.start_ns,
                    time_unix_nano=mp.time_ns,
                    count=p.count,
                    sum=p.sum,
                    bucket_counts=p.buckets,
                    explicit_bounds=inst.boundaries,
                )
            )
    else:
        m.sum.aggregation_temporality = temporality
        m.sum.is_monotonic = True
        for key, v in mp.points:
            assert not isinstance(v, Hist)
            dp = metrics_pb2.NumberDataPoint(
                attributes=_attrs(key), start_time_unix_nano=mp.start_ns, time_unix_nano=mp.time_ns
            )
            if inst.integer:
                dp.as_int = round(v)
            else:
                dp.as_double = v
            m.sum.data_points.append(dp)
    return m


def to_proto(metrics: Sequence[MetricPoints], resource: Mapping[str, Any]) -> ExportMetricsServiceRequest:
    """One ``ExportMetricsServiceRequest``: one resource, one scope, the given metrics."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend(_attrs(resource.items()))
    sm = rm.scope_metrics.add()
    sm.scope.name = SCOPE_NAME
    sm.scope.version = SCOPE_VERSION
    sm.metrics.extend(_metric(mp) for mp in metrics)
    return request


def to_json(request: ExportMetricsServiceRequest) -> bytes:
    """OTLP/JSON: lowerCamelCase field names, enums as integers (the OTLP/JSON rules)."""
    return json_format.MessageToJson(request, use_integers_for_enums=True, indent=None).encode()
