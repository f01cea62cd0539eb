"""exporter.otlp: span batches → OTLP protobuf and OTLP/JSON, checked with the official messages."""

from __future__ import annotations

import math
import os
import re

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from exporter import otlp
from exporter.otlp import EncodeOptions
from gateway.telemetry.wire import (
    SCHEMA_VERSION,
    SPAN_KIND_CLIENT,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    Resource,
    Span,
    SpanBatch,
)
from tests.otlp_receiver import decode_json_strict

ALL_TYPES = {
    "s": "text é",
    "b": b'{"messages":[{"role":"user","content":"hi"}]}',
    "bad_utf8": b"ab\xffcd",
    "t": True,
    "f": False,
    "i": 42,
    "neg": -7,
    "i64max": 2**63 - 1,
    "huge": 2**70,
    "d": 0.25,
    "nan": float("nan"),
    "inf": float("inf"),
    "ls": ["stop", "length"],
    "li": [1, 2, 3],
    "lf": [0.5, 1.5],
    "empty": [],
    "kv": {"a": 1, "b": "x"},
    "none": None,
}


def value_of(av: AnyValue) -> object:
    """An AnyValue as a Python value (for comparisons)."""
    kind = av.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in av.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in av.kvlist_value.values}
    if kind is None:
        return None
    return getattr(av, kind)


def attrs_of(span_or_resource: object) -> dict[str, object]:
    return {kv.key: value_of(kv.value) for kv in span_or_resource.attributes}  # type: ignore[attr-defined]


def make_span(trace_id: bytes | None = None, parent: bytes = b"", **attrs: object) -> Span:
    return Span(
        trace_id=trace_id or os.urandom(16),
        span_id=os.urandom(8),
        parent_span_id=parent,
        name="chat gpt-4o",
        kind=SPAN_KIND_CLIENT,
        start_ns=1_700_000_000_123_456_789,
        end_ns=1_700_000_001_987_654_321,
        status_code=STATUS_ERROR,
        status_message='upstream said: {"error": "your prompt: hi"}',
        attributes=dict(attrs),
    )


def make_batch(spans: list[Span], **resource_attrs: object) -> SpanBatch:
    return SpanBatch(
        SCHEMA_VERSION, Resource("tfy-llm-gateway", "1.2.3", "pod-1", dict(resource_attrs)), spans
    )


def only_span(req: ExportTraceServiceRequest) -> object:
    (rs,) = req.resource_spans
    (ss,) = rs.scope_spans
    (span,) = ss.spans
    return span


def test_every_attribute_type_in_protobuf() -> None:
    span = make_span(**ALL_TYPES)
    got = attrs_of(only_span(otlp.to_proto(make_batch([span]))))
    assert got["s"] == "text é"
    assert got["b"] == ALL_TYPES["b"].decode()  # type: ignore[union-attr]
    assert got["bad_utf8"] == "ab\ufffdcd"
    assert got["t"] is True and got["f"] is False
    assert got["i"] == 42 and got["neg"] == -7 and got["i64max"] == 2**63 - 1
    assert got["huge"] == str(2**70)  # beyond int64: kept as text rather than wrapped
    assert got["d"] == 0.25 and math.isnan(got["nan"]) and got["inf"] == math.inf  # type: ignore[arg-type]
    assert got["ls"] == ["stop", "length"] and got["li"] == [1, 2, 3] and got["lf"] == [0.5, 1.5]
    assert got["empty"] == []
    assert got["kv"] == {"a": 1, "b": "x"}
    assert "none" not in got


def test_span_fields_in_protobuf() -> None:
    parent = os.urandom(8)
    span = make_span(parent=parent)
    pb = only_span(otlp.to_proto(make_batch([span])))
    assert pb.trace_id == span.trace_id and pb.span_id == span.span_id and pb.parent_span_id == parent  # type: ignore[attr-defined]
    assert pb.name == "chat gpt-4o" and pb.kind == SPAN_KIND_CLIENT  # type: ignore[attr-defined]
    assert pb.start_time_unix_nano == span.start_ns and pb.end_time_unix_nano == span.end_ns  # type: ignore[attr-defined]
    assert pb.status.code == STATUS_ERROR and "your prompt" in pb.status.message  # type: ignore[attr-defined]


def test_root_span_unset_status_has_no_parent_or_status() -> None:
    span = Span(os.urandom(16), os.urandom(8), b"", "POST /v1/chat/completions", SPAN_KIND_SERVER, 1, 2)
    pb = only_span(otlp.to_proto(make_batch([span])))
    assert pb.parent_span_id == b"" and not pb.HasField("status")  # type: ignore[attr-defined]


def test_scope_and_resource_attributes() -> None:
    batch = make_batch([make_span()], **{"host.name": "n1", "deployment.environment": "dev"})
    req = otlp.to_proto(
        batch, EncodeOptions(resource_attributes={"deployment.environment": "prod", "team": "ml"})
    )
    (rs,) = req.resource_spans
    assert rs.scope_spans[0].scope.name == "llm-gateway"
    assert attrs_of(rs.resource) == {
        "service.name": "tfy-llm-gateway",
        "service.version": "1.2.3",
        "service.instance.id": "pod-1",
        "host.name": "n1",
        "deployment.environment": "prod",  # the destination's value wins
        "team": "ml",
    }


def test_json_follows_otlp_json_rules_and_parses_strictly() -> None:
    parent = os.urandom(8)
    span = make_span(parent=parent, **ALL_TYPES)
    batch = make_batch([span], **{"k": 5})
    body = otlp.to_json_bytes(batch)
    message, raw = decode_json_strict("traces", body)
    assert message == otlp.to_proto(batch) or _equal_with_nan(message, otlp.to_proto(batch))

    js = raw["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert js["traceId"] == span.trace_id.hex() and len(js["traceId"]) == 32
    assert js["spanId"] == span.span_id.hex() and js["parentSpanId"] == parent.hex()
    assert js["kind"] == SPAN_KIND_CLIENT  # enums as integers
    assert js["startTimeUnixNano"] == str(span.start_ns)  # 64-bit integers as strings
    assert js["status"] == {"code": STATUS_ERROR, "message": span.status_message}
    values = {a["key"]: a["value"] for a in js["attributes"]}
    assert values["i"] == {"intValue": "42"}
    assert values["d"] == {"doubleValue": 0.25}
    assert values["nan"] == {"doubleValue": "NaN"} and values["inf"] == {"doubleValue": "Infinity"}
    assert values["t"] == {"boolValue": True}
    assert values["s"] == {"stringValue": "text é"}
    assert values["li"] == {
        "arrayValue": {"values": [{"intValue": "1"}, {"intValue": "2"}, {"intValue": "3"}]}
    }
    resource = {a["key"]: a["value"] for a in raw["resourceSpans"][0]["resource"]["attributes"]}
    assert resource["k"] == {"intValue": "5"}
    assert raw["resourceSpans"][0]["scopeSpans"][0]["scope"] == {"name": "llm-gateway"}
    # lowerCamelCase keys only
    assert not re.search(rb'"[a-z]+_[a-z_]+":', body)


def _equal_with_nan(a: ExportTraceServiceRequest, b: ExportTraceServiceRequest) -> bool:
    # NaN != NaN: compare the textual forms instead.
    return str(a) == str(b)


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_exclude_request_data(encoding: str) -> None:
    span = make_span(
        **{
            "tfy.input": b'{"messages":[{"role":"user","content":"secret"}]}',
            "tfy.output": b'{"content":"secret answer"}',
            "tfy.input_short_hand": '{"has_image":false}',
            "tfy.error_message": "bad request: secret",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 3,
            "gen_ai.request.model": "gpt-4o",
            "tfy.model.metric.latency_in_ms": 812.5,
            "error.type": "400",
        }
    )
    opts = EncodeOptions(exclude_request_data=True)
    batch = make_batch([span])
    if encoding == "proto":
        requests, _ = otlp.proto_requests(batch, opts)
        req = ExportTraceServiceRequest.FromString(requests[0].body)
        body = requests[0].body
    else:
        requests, _ = otlp.json_requests(batch, opts)
        req, _raw = decode_json_strict("traces", requests[0].body)
        body = requests[0].body
    pb = only_span(req)
    attrs = attrs_of(pb)
    assert not set(attrs) & {"tfy.input", "tfy.output", "tfy.input_short_hand", "tfy.error_message"}
    assert attrs["gen_ai.usage.input_tokens"] == 12 and attrs["gen_ai.usage.output_tokens"] == 3
    assert attrs["gen_ai.request.model"] == "gpt-4o" and attrs["tfy.model.metric.latency_in_ms"] == 812.5
    assert attrs["error.type"] == "400"
    assert pb.status.code == STATUS_ERROR and pb.status.message == ""  # type: ignore[attr-defined]
    assert b"secret" not in body


def test_sampling_keeps_or_drops_whole_traces() -> None:
    spans = []
    for _ in range(2000):
        trace_id = os.urandom(16)
        spans += [make_span(trace_id=trace_id) for _ in range(4)]
    kept = otlp.sample(spans, 0.5)
    by_trace: dict[bytes, int] = {}
    for s in kept:
        by_trace[s.trace_id] = by_trace.get(s.trace_id, 0) + 1
    assert set(by_trace.values()) == {4}  # every kept trace is complete
    assert 800 <= len(by_trace) <= 1200
    assert otlp.sample(spans, 0.5) == kept  # deterministic: every replica decides alike
    assert otlp.sample(spans, 0.0) == [] and otlp.sample(spans, 1.0) == spans


def test_sampling_compares_lower_trace_id_bytes() -> None:
    low = make_span(trace_id=b"\xff" * 8 + b"\x00" * 8)
    high = make_span(trace_id=b"\x00" * 8 + b"\xff" * 8)
    assert otlp.sample([low, high], 0.01) == [low]


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_requests_are_split_under_the_size_cap(encoding: str) -> None:
    spans = [make_span(**{"tfy.input": b"x" * 1000}) for _ in range(50)]
    spans.append(make_span(**{"tfy.input": b"y" * 20_000}))  # can never fit
    encode = otlp.proto_requests if encoding == "proto" else otlp.json_requests
    requests, oversize = encode(make_batch(spans), otlp.DEFAULT_OPTIONS, 10_000)
    assert oversize == 1
    assert len(requests) > 1 and all(len(r.body) <= 10_000 for r in requests)
    assert sum(r.spans for r in requests) == 50
    for r in requests:
        if encoding == "proto":
            msg = ExportTraceServiceRequest.FromString(r.body)
        else:
            msg, _ = decode_json_strict("traces", r.body)
        assert len(msg.resource_spans[0].scope_spans[0].spans) == r.spans
        assert attrs_of(msg.resource_spans[0].resource)["service.name"] == "tfy-llm-gateway"


def test_proto_bytes_match_the_official_classes() -> None:
    """Our hand-written bytes parse into the very message the official classes build."""
    from opentelemetry.proto.common.v1.common_pb2 import ArrayValue, InstrumentationScope, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

    parent = os.urandom(8)
    span = make_span(parent=parent, s="v", i=-3, d=1.5, t=True, ls=["a"], b=b"body")
    expected = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=PbResource(
                    attributes=[
                        KeyValue(key="service.name", value=AnyValue(string_value="tfy-llm-gateway")),
                        KeyValue(key="service.version", value=AnyValue(string_value="1.2.3")),
                        KeyValue(key="service.instance.id", value=AnyValue(string_value="pod-1")),
                    ]
                ),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(name="llm-gateway"),
                        spans=[
                            PbSpan(
                                trace_id=span.trace_id,
                                span_id=span.span_id,
                                parent_span_id=parent,
                                name=span.name,
                                kind=PbSpan.SPAN_KIND_CLIENT,
                                start_time_unix_nano=span.start_ns,
                                end_time_unix_nano=span.end_ns,
                                attributes=[
                                    KeyValue(key="s", value=AnyValue(string_value="v")),
                                    KeyValue(key="i", value=AnyValue(int_value=-3)),
                                    KeyValue(key="d", value=AnyValue(double_value=1.5)),
                                    KeyValue(key="t", value=AnyValue(bool_value=True)),
                                    KeyValue(
                                        key="ls",
                                        value=AnyValue(
                                            array_value=ArrayValue(values=[AnyValue(string_value="a")])
                                        ),
                                    ),
                                    KeyValue(key="b", value=AnyValue(string_value="body")),
                                ],
                                status=Status(code=Status.STATUS_CODE_ERROR, message=span.status_message),
                            )
                        ],
                    )
                ],
            )
        ]
    )
    assert otlp.to_proto(make_batch([span])) == expected
    requests, _ = otlp.proto_requests(make_batch([span]))
    assert ExportTraceServiceRequest.FromString(requests[0].body) == expected
