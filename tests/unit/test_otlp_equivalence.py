"""The hand-written OTLP encoders against the official ``opentelemetry-proto`` messages.

Every batch here is encoded twice: by :mod:`exporter.otlp` (protobuf bytes and OTLP/JSON
written directly) and by building ``opentelemetry-proto`` message objects from the same spans
(the reference below, independent of the encoder). Both protobuf and JSON bodies must decode to
the reference message, the JSON strictly (hex ids, lowerCamelCase), and each twice: the second
pass runs on the encoder's memoized fields.
"""

from __future__ import annotations

import math
import os
from typing import Any

import msgspec
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from bench.exporter_throughput import make_batches
from exporter import otlp, otlp_json
from exporter.enrich import enrich_batch
from exporter.otlp import EncodeOptions
from gateway.telemetry.expand import expand_batch
from gateway.telemetry.wire import SCHEMA_VERSION, Resource, Span, SpanBatch, decode_batch
from tests.otlp_receiver import decode_json_strict

# --- the reference: official message objects ---------------------------------------------------


def ref_any(value: Any) -> AnyValue | None:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(string_value=value.decode("utf-8", errors="replace"))
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return AnyValue(int_value=value)
        return AnyValue(string_value=str(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[v for v in map(ref_any, value) if v is not None]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=ref_attributes(value)))
    if value is None:
        return None
    return AnyValue(string_value=str(value))


def ref_attributes(attrs: dict[str, Any], skip: frozenset[str] = frozenset()) -> list[KeyValue]:
    out = []
    for key, value in attrs.items():
        av = ref_any(value)
        if key not in skip and av is not None:
            out.append(KeyValue(key=key, value=av))
    return out


def reference(batch: SpanBatch, opts: EncodeOptions) -> ExportTraceServiceRequest:
    skip = otlp.REQUEST_DATA_ATTRIBUTES if opts.exclude_request_data else frozenset()
    res = batch.resource
    res_attrs: dict[str, Any] = {"service.name": res.service_name}
    if res.service_version:
        res_attrs["service.version"] = res.service_version
    if res.instance_id:
        res_attrs["service.instance.id"] = res.instance_id
    res_attrs.update(res.attributes)
    res_attrs.update(opts.resource_attributes)
    spans = []
    for s in otlp.sample(batch.spans, opts.sampling_ratio):
        message = "" if opts.exclude_request_data else s.status_message
        pb = PbSpan(
            trace_id=s.trace_id,
            span_id=s.span_id,
            parent_span_id=s.parent_span_id,
            name=s.name,
            kind=s.kind,  # type: ignore[arg-type]
            start_time_unix_nano=s.start_ns,
            end_time_unix_nano=s.end_ns,
            attributes=ref_attributes(s.attributes, skip),
        )
        if s.status_code or message:
            pb.status.CopyFrom(Status(code=s.status_code, message=message))  # type: ignore[arg-type]
        spans.append(pb)
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=PbResource(attributes=ref_attributes(res_attrs)),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name=otlp.SCOPE_NAME), spans=spans)],
            )
        ]
    )


# --- the batches -------------------------------------------------------------------------------


def span(attrs: dict[str, Any], **fields: Any) -> Span:
    base: dict[str, Any] = {
        "trace_id": os.urandom(16),
        "span_id": os.urandom(8),
        "parent_span_id": os.urandom(8),
        "name": "chat gpt-4o",
        "kind": 3,
        "start_ns": 1_700_000_000_123_456_789,
        "end_ns": 1_700_000_001_987_654_321,
        "attributes": attrs,
    }
    base.update(fields)
    return Span(**base)


EDGE_VALUES: dict[str, Any] = {
    "s": "text é ✓ \U0001f600",
    "empty": "",
    "quote": 'a "quoted" \\ back\nslash\t\x00\x1f',
    "long": "x" * 65,
    "longer": "é" * 20_000,
    "b": b'{"messages":[{"role":"user","content":"hi"}]}',
    "b_utf8": "héllo".encode(),
    "b_bad": b"ab\xffcd\xc3",
    "b_big": b"y" * 20_000,
    "t": True,
    "f": False,
    "zero": 0,
    "i127": 127,
    "i128": 128,
    "i16383": 16383,
    "i16384": 16384,
    "neg": -1,
    "min": -(2**63),
    "max": 2**63 - 1,
    "huge": 2**64,
    "neg_huge": -(2**63) - 1,
    "d": 0.25,
    "negzero": -0.0,
    "big": 1e300,
    "tiny": 5e-324,
    "inf": math.inf,
    "ninf": -math.inf,
    "ls": ["stop"],
    "ls4": ["a", "b", "c", "d"],
    "ls5": ["a", "b", "c", "d", "e"],
    "li": [1, 2, 3],
    "lf": [0.5, 1.5],
    "lb": [True, False],
    "lmix": ["a", 1, 2.5, True, b"x", None],
    "ldict": [{"a": 1}],
    "lempty": [],
    "tuple": ("x", "y"),
    "kv": {"a": 1, "b": "x", "c": [1], "d": {"e": None}},
    "none": None,
    "ключ ✓": "unicode key",
    'k"q': 'key with a "quote"',
    "tfy.input": b'{"secret": 1}',
    "tfy.output": b"answer",
    "tfy.input_short_hand": "short",
    "tfy.error_message": "boom",
}

# The same name with values that compare equal across types (1 == True == 1.0, "1" != 1): the
# memoized fields must keep them apart.
LOOKALIKES: list[Any] = [1, True, 1.0, "1", ["1"], [1], [True], [1.0], 0, False, 0.0, "", [], ("1",)]


def batches() -> list[tuple[str, SpanBatch]]:
    resource = Resource("tfy-llm-gateway", "1.2.3", "pod-1", {"k": 5, "host.name": "n1", "l": ["a"]})
    out = [
        ("edge values", SpanBatch(SCHEMA_VERSION, resource, [span(dict(EDGE_VALUES))])),
        (
            "look-alike values",
            SpanBatch(SCHEMA_VERSION, resource, [span({"same": v, "other": v}) for v in LOOKALIKES]),
        ),
        (
            "span fields",
            SpanBatch(
                SCHEMA_VERSION,
                Resource("svc", "", "", {}),
                [
                    span({}, parent_span_id=b"", kind=2, status_code=0, status_message=""),
                    span({}, status_code=2, status_message='upstream said: {"error": "x"} é'),
                    span({}, status_code=1, status_message=""),
                    span({}, status_code=0, status_message="message only"),
                    span({}, name="é ✓ \"n\"", start_ns=0, end_ns=2**64 - 1, kind=0),
                    span({}, name="n" * 20_000),
                ],
            ),
        ),
    ]
    for raw in make_batches(64):  # the bench's realistic traces, built and enriched as exported
        batch = expand_batch(decode_batch(raw))
        enrich_batch(batch)
        out.append(("bench traces", batch))
    return out


OPTIONS = [
    EncodeOptions(),
    EncodeOptions(exclude_request_data=True),
    EncodeOptions(resource_attributes={"deployment.environment": "prod", "k": [1, "x"], "n": None}),
    EncodeOptions(sampling_ratio=0.5),
]


def same(a: ExportTraceServiceRequest, b: ExportTraceServiceRequest) -> bool:
    # Bytes of a deterministic serialization: NaN-safe, unlike ==.
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


@pytest.mark.parametrize("opts", OPTIONS, ids=["default", "exclude", "resource", "sampled"])
@pytest.mark.parametrize(("label", "batch"), batches(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_batch_decodes_to_the_reference_message(label: str, batch: SpanBatch, opts: EncodeOptions) -> None:
    expected = reference(batch, opts)
    kept = len(expected.resource_spans[0].scope_spans[0].spans)
    for _ in range(2):  # the second pass is served from the memoized fields
        for encode, decode in ((otlp.proto_requests, _proto), (otlp.json_requests, _json)):
            requests, dropped = encode(batch, opts)
            assert dropped == 0 and len(requests) == (1 if kept else 0)
            if kept:
                assert same(decode(requests[0].body), expected), label
        assert same(otlp.to_proto(batch, opts), expected)
        assert same(_json(otlp.to_json_bytes(batch, opts)), expected)


def _proto(body: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(body)


def _json(body: bytes) -> ExportTraceServiceRequest:
    message, _ = decode_json_strict("traces", body)
    return message  # type: ignore[return-value]


def _dict_span_json(s: Span) -> bytes:
    """What the encoder wrote before it stopped building dicts (msgspec of the OTLP/JSON object)."""
    obj: dict[str, Any] = {"traceId": s.trace_id.hex(), "spanId": s.span_id.hex()}
    if s.parent_span_id:
        obj["parentSpanId"] = s.parent_span_id.hex()
    obj |= {"name": s.name, "kind": s.kind, "startTimeUnixNano": str(s.start_ns)}
    obj |= {"endTimeUnixNano": str(s.end_ns), "attributes": otlp_json._attributes_json(s.attributes.items())}
    if s.status_code or s.status_message:
        status: dict[str, Any] = {}
        if s.status_message:
            status["message"] = s.status_message
        if s.status_code:
            status["code"] = s.status_code
        obj["status"] = status
    return msgspec.json.encode(obj)


@pytest.mark.parametrize(("label", "batch"), batches(), ids=lambda x: x if isinstance(x, str) else "")
def test_json_spans_are_byte_identical_to_the_dict_encoding(label: str, batch: SpanBatch) -> None:
    for s in batch.spans:
        assert otlp.span_json(s) == _dict_span_json(s), label


def test_ids_of_other_lengths_in_protobuf() -> None:
    """The fast path writes 16- and 8-byte ids with constant prefixes; other lengths still encode."""
    batch = SpanBatch(
        SCHEMA_VERSION,
        Resource("svc", "", "", {}),
        [span({}, trace_id=b"\x01" * 3, span_id=b"", parent_span_id=b"\x02" * 300)],
    )
    (request,), _ = otlp.proto_requests(batch)
    assert same(_proto(request.body), reference(batch, otlp.DEFAULT_OPTIONS))


def test_split_requests_hold_every_span_once() -> None:
    batch = batches()[-1][1]
    for encode in (otlp.proto_requests, otlp.json_requests):
        requests, dropped = encode(batch, otlp.DEFAULT_OPTIONS, 20_000)
        assert dropped == 0 and len(requests) > 1
        ids = []
        for r in requests:
            if encode is otlp.proto_requests:
                msg = ExportTraceServiceRequest.FromString(r.body)
            else:
                msg, _ = decode_json_strict("traces", r.body)
            assert len(r.body) <= 20_000
            ids += [s.span_id for s in msg.resource_spans[0].scope_spans[0].spans]
        assert ids == [s.span_id for s in batch.spans]
