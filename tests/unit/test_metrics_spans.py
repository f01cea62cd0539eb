"""Metrics from the span stream: token sums, counts, buckets, attributes, temporality, encoding."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from exporter.metrics import (
    DURATION_BUCKETS,
    OVERFLOW_ATTRS,
    TOKEN_BUCKETS,
    DeltaTracker,
    Hist,
    MetricPoints,
    SpanMetrics,
    to_json,
    to_proto,
)
from gateway.telemetry.wire import (
    SCHEMA_VERSION,
    SPAN_KIND_CLIENT,
    SPAN_KIND_INTERNAL,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    Resource,
    Span,
    SpanBatch,
)

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def trace(
    *,
    model: str = "openai-main/gpt-4o",
    user: str = "alice",
    status: int = 200,
    attempts: list[dict[str, Any]] | None = None,
    root_attrs: dict[str, Any] | None = None,
    duration_ms: int = 800,
) -> list[Span]:
    """One request: SERVER root, an INTERNAL auth span, a CLIENT span per upstream attempt."""
    tid = os.urandom(16)
    root_id = os.urandom(8)
    attrs: dict[str, Any] = {
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "http.response.status_code": status,
        "tfy.request.model": model,
        "tfy.request.created_by_subject": user,
        "tfy.model.metric.latency_in_ms": float(duration_ms),
        **(root_attrs or {}),
    }
    spans = [
        Span(
            tid,
            root_id,
            b"",
            "POST /v1/chat/completions",
            SPAN_KIND_SERVER,
            T0,
            T0 + duration_ms * MS,
            0,
            "",
            attrs,
        ),
        Span(tid, os.urandom(8), root_id, "auth", SPAN_KIND_INTERNAL, T0, T0 + MS),
    ]
    for i, a in enumerate(attempts if attempts is not None else [{}]):
        ca: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "server.address": "api.openai.com",
            "server.port": 443,
            "tfy.data_routing.destination": "openai-main/gpt-4o",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 50,
            **a,
        }
        ca = {k: v for k, v in ca.items() if v is not None}
        start = T0 + (2 + i * 100) * MS
        dur = int(ca.pop("_duration_ms", 500))
        status_code = STATUS_ERROR if "error.type" in ca else 0
        spans.append(
            Span(
                tid,
                os.urandom(8),
                root_id,
                "chat gpt-4o",
                SPAN_KIND_CLIENT,
                start,
                start + dur * MS,
                status_code,
                "",
                ca,
            )
        )
    return spans


def batch(*traces: list[Span]) -> SpanBatch:
    return SpanBatch(
        SCHEMA_VERSION,
        Resource("tfy-llm-gateway", "0.1.0", "w1"),
        [s for t in traces for s in t],
    )


def streams(points: list[MetricPoints], name: str) -> dict[tuple, Any]:
    for mp in points:
        if mp.instrument.name == name:
            return {k: v for k, v in mp.points}
    return {}


def one(points: list[MetricPoints], name: str, **attrs: Any) -> Any:
    found = [
        v for k, v in streams(points, name).items() if all(dict(k).get(a) == w for a, w in attrs.items())
    ]
    assert len(found) == 1, (name, attrs, streams(points, name))
    return found[0]


def test_gen_ai_semconv_metrics() -> None:
    agg = SpanMetrics()
    agg.observe(
        batch(
            trace(),
            trace(
                attempts=[
                    {"gen_ai.usage.input_tokens": 3000, "gen_ai.usage.output_tokens": 1, "_duration_ms": 50}
                ]
            ),
            trace(
                attempts=[
                    {
                        "gen_ai.request.stream": True,
                        "gen_ai.response.time_to_first_chunk": 0.15,
                        "_duration_ms": 3000,
                    }
                ]
            ),
        )
    )
    pts = agg.collect(T0 + 10**10)
    usage_in = one(pts, "gen_ai.client.token.usage", **{"gen_ai.token.type": "input"})
    usage_out = one(pts, "gen_ai.client.token.usage", **{"gen_ai.token.type": "output"})
    assert (usage_in.count, usage_in.sum) == (3, 3200)
    assert (usage_out.count, usage_out.sum) == (3, 101)
    assert len(usage_in.buckets) == len(TOKEN_BUCKETS) + 1
    assert usage_in.buckets[TOKEN_BUCKETS.index(256)] == 2  # 100 in (64, 256]
    assert usage_in.buckets[TOKEN_BUCKETS.index(4096)] == 1  # 3000 in (1024, 4096]
    assert usage_out.buckets[0] == 1  # 1 in (-inf, 1]
    key = next(iter(streams(pts, "gen_ai.client.token.usage")))
    assert dict(key) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "server.address": "api.openai.com",
        "server.port": 443,
        "gen_ai.token.type": "input",
    }
    duration = one(pts, "gen_ai.client.operation.duration")
    assert duration.count == 3 and duration.sum == pytest.approx(3.55)
    assert duration.buckets[DURATION_BUCKETS.index(0.08)] == 1  # 0.05 s
    assert duration.buckets[DURATION_BUCKETS.index(0.64)] == 1  # 0.5 s
    assert duration.buckets[DURATION_BUCKETS.index(5.12)] == 1  # 3 s
    ttfc = one(pts, "gen_ai.client.operation.time_to_first_chunk")
    assert ttfc.count == 1 and ttfc.sum == pytest.approx(0.15)  # streams only


def test_catalog_from_root_spans() -> None:
    agg = SpanMetrics(metadata_label_keys=["env"])
    agg.observe(
        batch(
            trace(
                root_attrs={
                    "tfy.request.metadata": '{"env": "prod", "secret": "x"}',
                    "tfy.model.metric.cost_in_usd": 0.01,
                }
            ),
            trace(user="bob", root_attrs={"tfy.model.metric.time_to_first_token_in_ms": 120.0}),
            trace(
                status=502,
                root_attrs={"error.type": "upstream_error"},
                attempts=[
                    {
                        "error.type": "502",
                        "gen_ai.usage.input_tokens": None,
                        "gen_ai.usage.output_tokens": None,
                    },
                    {
                        "error.type": "502",
                        "gen_ai.usage.input_tokens": None,
                        "gen_ai.usage.output_tokens": None,
                    },
                    {
                        "tfy.data_routing.destination": "azure-eu/gpt-4o",
                        "error.type": "502",
                        "gen_ai.usage.input_tokens": None,
                        "gen_ai.usage.output_tokens": None,
                    },
                ],
            ),  # fmt: skip
            trace(
                status=429,
                attempts=[],
                root_attrs={"applied_ratelimit_rule_ids": ["per-user-rpm"], "error.type": "rate_limited"},
            ),
        )
    )
    pts = agg.collect(T0 + 10**10)
    prod = {"model_name": "openai-main/gpt-4o", "username": "alice", "llm_gateway_metadata_env": "prod"}
    assert one(pts, "llm_gateway_input_tokens", **prod) == 100
    assert one(pts, "llm_gateway_output_tokens", **prod) == 50
    assert one(pts, "llm_gateway_request_cost", **prod) == pytest.approx(0.01)
    assert sum(streams(pts, "llm_gateway_input_tokens").values()) == 200  # errors had no usage
    reqs = streams(pts, "llm_gateway_requests")
    by_status: dict[str, float] = {}
    for k, v in reqs.items():
        by_status[dict(k)["status_code"]] = by_status.get(dict(k)["status_code"], 0) + v
    assert by_status == {"200": 2, "502": 1, "429": 1}
    assert all(
        dict(k).keys() >= {"model_name", "tenant_name", "username", "llm_gateway_metadata_env"} for k in reqs
    )
    assert not any("secret" in name for k in reqs for name, _ in k)
    assert one(pts, "llm_gateway_errors", error_type="upstream_error") == 1
    assert one(pts, "llm_gateway_errors", error_type="rate_limited") == 1
    assert one(pts, "llm_gateway_rate_limit_rejections", rule_id="per-user-rpm") == 1
    assert one(pts, "llm_gateway_retries", target="openai-main/gpt-4o") == 1
    assert one(pts, "llm_gateway_fallbacks", target="azure-eu/gpt-4o") == 1
    processing = [h for h in streams(pts, "llm_gateway_request_processing_ms").values()]
    assert sum(h.count for h in processing) == 4
    first = one(pts, "llm_gateway_first_token_latency_ms", username="bob")
    assert first.count == 1 and first.sum == 120.0
    duration = streams(pts, "gen_ai.client.operation.duration")
    assert sum(h.count for k, h in duration.items() if dict(k).get("error.type") == "502") == 3


def test_cumulative_and_delta_across_intervals() -> None:
    agg = SpanMetrics()
    delta = DeltaTracker(T0)
    agg.observe(batch(trace(), trace()))
    t1 = T0 + 10 * 10**9
    cum1 = agg.collect(t1)
    d1 = delta.collect(agg.snapshot(), t1)
    delta.commit()
    assert one(cum1, "llm_gateway_input_tokens") == 200 and one(d1, "llm_gateway_input_tokens") == 200
    assert d1[0].temporality == "delta" and d1[0].start_ns == T0 and d1[0].time_ns == t1

    agg.observe(batch(trace(user="alice")))
    t2 = t1 + 10 * 10**9
    cum2 = agg.collect(t2)
    d2 = delta.collect(agg.snapshot(), t2)
    assert one(cum2, "llm_gateway_input_tokens") == 300
    assert cum2[0].start_ns == T0  # cumulative windows keep their start
    assert one(d2, "llm_gateway_input_tokens") == 100
    assert one(d2, "gen_ai.client.operation.duration").count == 1
    assert d2[0].start_ns == t1 and d2[0].time_ns == t2
    # Not committed (the export failed): the next delta covers both intervals.
    agg.observe(batch(trace(user="alice")))
    t3 = t2 + 10 * 10**9
    d3 = delta.collect(agg.snapshot(), t3)
    delta.commit()
    assert one(d3, "llm_gateway_input_tokens") == 200 and d3[0].start_ns == t1
    # Nothing new: no points at all.
    assert delta.collect(agg.snapshot(), t3 + 1) == []


def test_streams_are_bounded() -> None:
    agg = SpanMetrics(max_streams=3)
    agg.observe(batch(*[trace(user=f"user{i}") for i in range(10)]))
    reqs = streams(agg.collect(T0 + 1), "llm_gateway_requests")
    assert len(reqs) == 4 and OVERFLOW_ATTRS in reqs
    assert sum(reqs.values()) == 10


def test_odd_attributes_do_not_break_aggregation() -> None:
    agg = SpanMetrics(metadata_label_keys=["env"])
    agg.observe(
        batch(
            trace(
                root_attrs={"tfy.request.metadata": "not json", "tfy.model.metric.latency_in_ms": "slow"},
                attempts=[{"gen_ai.usage.input_tokens": "many", "server.port": None}],
            )
        )
    )
    agg.observe(SpanBatch(SCHEMA_VERSION, Resource("x", "", "w"), []))
    pts = agg.collect(T0 + 1)
    assert sum(h.count for h in streams(pts, "llm_gateway_request_processing_ms").values()) == 1
    assert "gen_ai.client.token.usage" in {mp.instrument.name for mp in pts}  # output tokens still counted


def test_proto_and_json_encoding() -> None:
    agg = SpanMetrics()
    agg.observe(batch(trace()))
    pts = agg.collect(T0 + 10**9)
    req = to_proto(
        pts,
        {"service.name": "tfy-llm-gateway", "service.instance.id": "e1", "deployment.environment": "prod"},
    )
    decoded = ExportMetricsServiceRequest.FromString(req.SerializeToString())
    metrics = {m.name: m for m in decoded.resource_metrics[0].scope_metrics[0].metrics}
    usage = metrics["gen_ai.client.token.usage"]
    assert usage.unit == "{token}"
    assert list(usage.histogram.data_points[0].explicit_bounds) == list(TOKEN_BUCKETS)
    assert usage.histogram.aggregation_temporality == 2  # CUMULATIVE
    assert metrics["gen_ai.client.operation.duration"].unit == "s"
    tokens = metrics["llm_gateway_input_tokens"]
    assert tokens.sum.is_monotonic and tokens.sum.data_points[0].as_int == 100
    assert metrics["llm_gateway_request_processing_ms"].unit == "ms"
    doc = json.loads(to_json(req))
    metric = doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]
    assert metric["histogram"]["aggregationTemporality"] == 2  # enums as integers (OTLP/JSON)
    roundtrip = ExportMetricsServiceRequest()
    json_format.Parse(to_json(req), roundtrip)
    assert roundtrip == decoded


def test_hist_copy_is_deep() -> None:
    h = Hist(3)
    h.buckets[0] = 1
    c = h.copy()
    c.buckets[0] = 5
    assert h.buckets[0] == 1


def test_gateway_span_layout_usage_once_on_the_call_that_answered() -> None:
    """As gateway.telemetry.expand builds them: the root's totals under tfy.*, usage and TTFC on
    the attempt that answered only, attempts labelled by kind. Each call is counted once."""
    no_usage = {"gen_ai.usage.input_tokens": None, "gen_ai.usage.output_tokens": None}
    t = trace(
        root_attrs={
            "tfy.usage.input_tokens": 7,
            "tfy.usage.output_tokens": 3,
            "tfy.model.metric.time_to_first_token_in_ms": 250.0,
        },
        attempts=[
            {**no_usage, "error.type": "upstream_error", "gen_ai.request.stream": True},
            {
                **no_usage,
                "tfy.attempt.kind": "retry",
                "error.type": "upstream_error",
                "gen_ai.request.stream": True,
            },
            {
                "gen_ai.usage.input_tokens": 7,
                "gen_ai.usage.output_tokens": 3,
                "gen_ai.response.time_to_first_chunk": 0.2,
                "tfy.attempt.kind": "fallback",
                "tfy.data_routing.destination": "azure-eu/gpt-4o",
                "gen_ai.request.stream": True,
            },
        ],  # fmt: skip
    )
    agg = SpanMetrics()
    agg.observe(batch(t))
    pts = agg.collect(T0 + 1)
    usage = streams(pts, "gen_ai.client.token.usage")
    assert sorted(h.sum for h in usage.values()) == [3, 7]  # once, on the attempt that answered
    assert one(pts, "gen_ai.client.operation.time_to_first_chunk").count == 1
    assert one(pts, "gen_ai.client.operation.duration", **{"error.type": "upstream_error"}).count == 2
    assert one(pts, "llm_gateway_retries", target="openai-main/gpt-4o") == 1
    assert one(pts, "llm_gateway_fallbacks", target="azure-eu/gpt-4o") == 1
    assert one(pts, "llm_gateway_input_tokens") == 7
    assert one(pts, "llm_gateway_output_tokens") == 3
    assert one(pts, "llm_gateway_first_token_latency_ms").count == 1


def test_non_streamed_request_has_no_time_to_first_token() -> None:
    t = trace(attempts=[{"gen_ai.request.stream": False, "gen_ai.usage.input_tokens": 2}])
    agg = SpanMetrics()
    agg.observe(batch(t))
    names = {mp.instrument.name for mp in agg.collect(T0 + 1)}
    assert "gen_ai.client.operation.time_to_first_chunk" not in names
    assert "llm_gateway_first_token_latency_ms" not in names
    assert "gen_ai.client.token.usage" in names


def test_rate_limited_without_rule_attribute() -> None:
    agg = SpanMetrics()
    agg.observe(batch(trace(status=429, attempts=[], root_attrs={"error.type": "rate_limit_exceeded"})))
    agg.observe(batch(trace(status=429, attempts=[], root_attrs={"tfy.ratelimit.rule_id": "rpm"})))
    pts = agg.collect(T0 + 1)
    assert one(pts, "llm_gateway_rate_limit_rejections", rule_id="unknown") == 1
    assert one(pts, "llm_gateway_rate_limit_rejections", rule_id="rpm") == 1
