"""OTLP metrics reach a real receiver over HTTP proto, HTTP JSON and gRPC, with headers."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.config import MetricsDestination
from exporter.metrics import DURATION_BUCKETS, TOKEN_BUCKETS
from exporter.metrics_export import MetricsExporter
from tests.otlp_fixtures import otlp_receiver  # noqa: F401 - fixture
from tests.otlp_receiver import Fault, OtlpReceiver
from tests.unit.test_metrics_spans import batch, trace

CUMULATIVE, DELTA = 2, 1


def metrics_of(received: Any) -> dict[str, Any]:
    rm = received.message.resource_metrics[0]
    return {m.name: m for sm in rm.scope_metrics for m in sm.metrics}


def resource_of(received: Any) -> dict[str, Any]:
    attrs = received.message.resource_metrics[0].resource.attributes
    return {
        kv.key: kv.value.WhichOneof("value") and getattr(kv.value, kv.value.WhichOneof("value"))
        for kv in attrs
    }


def check_catalog(metrics: dict[str, Any], temporality: int, requests: int) -> None:
    usage = metrics["gen_ai.client.token.usage"]
    assert usage.unit == "{token}"
    points = usage.histogram.data_points
    assert usage.histogram.aggregation_temporality == temporality
    assert {tuple(p.explicit_bounds) for p in points} == {TOKEN_BUCKETS}
    by_type = {
        next(kv.value.string_value for kv in p.attributes if kv.key == "gen_ai.token.type"): p for p in points
    }
    assert by_type["input"].sum == 100 * requests and by_type["input"].count == requests
    assert by_type["output"].sum == 50 * requests
    duration = metrics["gen_ai.client.operation.duration"]
    assert (
        duration.unit == "s" and tuple(duration.histogram.data_points[0].explicit_bounds) == DURATION_BUCKETS
    )
    if "gen_ai.client.operation.time_to_first_chunk" in metrics:  # streams only
        assert metrics["gen_ai.client.operation.time_to_first_chunk"].unit == "s"
    tokens = metrics["llm_gateway_input_tokens"]
    assert tokens.sum.is_monotonic and tokens.sum.aggregation_temporality == temporality
    assert sum(p.as_int for p in tokens.sum.data_points) == 100 * requests
    assert sum(p.as_int for p in metrics["llm_gateway_requests"].sum.data_points) == requests
    assert metrics["llm_gateway_request_processing_ms"].unit == "ms"


def streaming_trace() -> list:
    return trace(attempts=[{"gen_ai.request.stream": True, "gen_ai.response.time_to_first_chunk": 0.2}])


@pytest.mark.parametrize(
    ("protocol", "encoding", "compression"),
    [("http", "proto", "none"), ("http", "json", "gzip"), ("grpc", "proto", "gzip")],
)
async def test_export_each_transport(
    otlp_receiver: OtlpReceiver,  # noqa: F811 - fixture
    protocol: str,
    encoding: str,
    compression: str,
) -> None:
    endpoint = otlp_receiver.grpc_url if protocol == "grpc" else otlp_receiver.metrics_url
    dest = MetricsDestination(
        name="backend",
        protocol=protocol,  # type: ignore[arg-type]
        endpoint=endpoint,
        encoding=encoding,  # type: ignore[arg-type]
        compression=compression,  # type: ignore[arg-type]
        headers={"x-api-key": "secret-1", "Authorization": "Bearer t"},
        resource_attributes={"deployment.environment": "test"},
        interval_s=0.05,
    )
    exporter = MetricsExporter([dest], resource_attributes={"k8s.cluster.name": "c1"})
    await exporter.start()
    try:
        exporter.observe(batch(streaming_trace(), trace()))
        received = await otlp_receiver.wait_for(1, timeout_s=10)
    finally:
        await exporter.stop(5)
    r = received[0]
    assert r.signal == "metrics" and r.transport == protocol
    assert r.headers["x-api-key"] == "secret-1" and r.headers["authorization"] == "Bearer t"
    if protocol == "http":
        assert r.content_type == ("application/json" if encoding == "json" else "application/x-protobuf")
        assert r.content_encoding == ("gzip" if compression == "gzip" else "")
    if encoding == "json":
        doc_metric = r.raw_json["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]
        kind = "histogram" if "histogram" in doc_metric else "sum"
        assert doc_metric[kind]["aggregationTemporality"] == CUMULATIVE
    check_catalog(metrics_of(r), CUMULATIVE, requests=2)
    resource = resource_of(r)
    assert resource["service.name"] == "tfy-llm-gateway"
    assert resource["deployment.environment"] == "test" and resource["k8s.cluster.name"] == "c1"
    assert resource["service.instance.id"] == exporter.instance_id
    assert metrics_of(r)["gen_ai.client.operation.time_to_first_chunk"].histogram.data_points[0].count == 1


async def test_delta_temporality_and_retry(otlp_receiver: OtlpReceiver) -> None:  # noqa: F811 - fixture
    dest = MetricsDestination(
        name="delta",
        endpoint=otlp_receiver.metrics_url,
        temporality="delta",
        interval_s=3600,  # driven by hand below
        timeout_ms=5000,
    )
    exporter = MetricsExporter([dest], initial_backoff_s=0.01, max_backoff_s=0.02)
    lane = exporter.lanes[0]
    exporter.observe(batch(trace(), trace()))
    assert await exporter.export_once(lane)
    exporter.observe(batch(trace()))
    otlp_receiver.fail("http", Fault(status=503), times=1)  # retried, then delivered
    assert await exporter.export_once(lane)
    assert lane.counters.retries == 1
    otlp_receiver.fail("http", Fault(status=400), times=1)  # permanent: this delta is kept for later
    exporter.observe(batch(trace()))
    assert not await exporter.export_once(lane)
    exporter.observe(batch(trace()))
    assert await exporter.export_once(lane)
    await exporter.stop(2)  # nothing new: no final request
    got = [metrics_of(r) for r in otlp_receiver.received]
    assert len(got) == 3
    check_catalog(got[0], DELTA, requests=2)
    check_catalog(got[1], DELTA, requests=1)
    check_catalog(got[2], DELTA, requests=2)  # the failed interval's request is not lost
    first = got[0]["llm_gateway_input_tokens"].sum.data_points[0]
    second = got[1]["llm_gateway_input_tokens"].sum.data_points[0]
    assert second.start_time_unix_nano == first.time_unix_nano  # contiguous windows


async def test_only_metrics_no_traces_and_final_flush(otlp_receiver: OtlpReceiver) -> None:  # noqa: F811
    dest = MetricsDestination(name="m", endpoint=otlp_receiver.metrics_url, interval_s=3600)
    exporter = MetricsExporter([dest])
    await exporter.start()
    exporter.observe(batch(trace()))
    await exporter.stop(5)  # the final export at shutdown delivers what the interval did not
    assert [r.signal for r in otlp_receiver.received] == ["metrics"]
    check_catalog(metrics_of(otlp_receiver.received[0]), CUMULATIVE, requests=1)


async def test_no_destinations_is_inert() -> None:
    exporter = MetricsExporter([])
    assert not exporter.enabled
    exporter.observe(batch(trace()))
    assert exporter.aggregator.spans == 0
    await exporter.start()
    await exporter.stop(1)


async def test_fanout_feeds_traces_and_metrics(otlp_receiver: OtlpReceiver) -> None:  # noqa: F811
    from exporter.config import Destination, ExporterConfig
    from exporter.metrics_export import SpanFanout
    from exporter.pipeline import ExportPipeline
    from gateway.telemetry.wire import TracingConfig

    traces = Destination(name="t", endpoint=otlp_receiver.traces_url)
    pipeline = ExportPipeline(ExporterConfig(traces=[traces]), TracingConfig(), env={})
    metrics = MetricsExporter(
        [MetricsDestination(name="m", endpoint=otlp_receiver.metrics_url, interval_s=3600)]
    )
    fanout = SpanFanout(pipeline, metrics)
    await fanout.start()
    fanout.submit(batch(trace(), trace()))
    await fanout.stop(5)
    assert fanout.destinations == ["t"]  # the pipeline's own attributes stay reachable
    assert len(otlp_receiver.spans()) == 2 * 3
    got = [r for r in otlp_receiver.received if r.signal == "metrics"]
    assert len(got) == 1
    check_catalog(metrics_of(got[0]), CUMULATIVE, requests=2)
