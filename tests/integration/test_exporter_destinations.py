"""OTLP destinations and the export pipeline against a real OTLP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

import grpc
import pytest

from exporter.config import Destination, ExporterConfig
from exporter.destinations import GrpcDestination, HttpDestination, build_destination
from exporter.pipeline import ExportPipeline
from gateway.telemetry.wire import SCHEMA_VERSION, SPAN_KIND_CLIENT, Resource, Span, SpanBatch, TracingConfig
from tests import otlp_fixtures
from tests.otlp_receiver import Fault, OtlpReceiver

pytestmark = pytest.mark.timeout(60)

otlp_receiver = otlp_fixtures.otlp_receiver
second_otlp_receiver = otlp_fixtures.second_otlp_receiver


def batch(n_traces: int = 2, spans_per_trace: int = 3, **attrs: object) -> SpanBatch:
    spans = []
    for _ in range(n_traces):
        trace_id, root = os.urandom(16), os.urandom(8)
        for i in range(spans_per_trace):
            spans.append(
                Span(
                    trace_id,
                    root if i == 0 else os.urandom(8),
                    b"" if i == 0 else root,
                    f"span {i}",
                    SPAN_KIND_CLIENT,
                    time.time_ns(),
                    time.time_ns() + 1000,
                    attributes={"tfy.input": b'{"messages":[]}', "gen_ai.usage.input_tokens": 5, **attrs},
                )
            )
    return SpanBatch(SCHEMA_VERSION, Resource("tfy-llm-gateway", "0.1.0", "test-1"), spans)


def http_dest(receiver: OtlpReceiver, **kw: object) -> Destination:
    return Destination(name=str(kw.pop("name", "http")), endpoint=receiver.traces_url, **kw)  # type: ignore[arg-type]


def grpc_dest(receiver: OtlpReceiver, **kw: object) -> Destination:
    return Destination(name="grpc", protocol="grpc", endpoint=receiver.grpc_url, **kw)  # type: ignore[arg-type]


async def eventually(predicate: object, timeout_s: float = 3.0) -> None:
    """Wait (bounded) until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


FAST = {"initial_backoff_s": 0.01, "max_backoff_s": 0.05}


# --- transports ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "gzip"])
async def test_http_protobuf_with_headers(otlp_receiver: OtlpReceiver, compression: str) -> None:
    dest = HttpDestination(
        http_dest(otlp_receiver, headers={"signoz-ingestion-key": "k-123"}, compression=compression),  # type: ignore[arg-type]
    )
    try:
        result = await dest.export(batch())
    finally:
        await dest.close()
    assert result.ok and result.exported == 6 and result.retries == 0
    (got,) = otlp_receiver.received
    assert got.content_type == "application/x-protobuf"
    assert got.headers["signoz-ingestion-key"] == "k-123"
    assert got.content_encoding == ("gzip" if compression == "gzip" else "")
    assert len(otlp_receiver.spans()) == 6


async def test_http_json_is_strictly_valid(otlp_receiver: OtlpReceiver) -> None:
    b = batch()
    dest = HttpDestination(http_dest(otlp_receiver, encoding="json", compression="gzip"))
    try:
        result = await dest.export(b)
    finally:
        await dest.close()
    assert result.ok and result.exported == 6
    assert otlp_receiver.errors == []
    (got,) = otlp_receiver.received
    assert got.content_type == "application/json"
    raw_span = got.raw_json["resourceSpans"][0]["scopeSpans"][0]["spans"][1]
    assert raw_span["traceId"] == b.spans[1].trace_id.hex()
    assert raw_span["parentSpanId"] == b.spans[0].span_id.hex()
    assert [s.span_id for s in otlp_receiver.spans()] == [s.span_id for s in b.spans]


@pytest.mark.parametrize("compression", ["none", "gzip"])
async def test_grpc_with_metadata(otlp_receiver: OtlpReceiver, compression: str) -> None:
    dest = GrpcDestination(
        grpc_dest(otlp_receiver, headers={"Authorization": "ApiKey abc"}, compression=compression)
    )  # type: ignore[arg-type]
    try:
        result = await dest.export(batch())
    finally:
        await dest.close()
    assert result.ok and result.exported == 6
    (got,) = otlp_receiver.received
    assert got.transport == "grpc" and got.headers["authorization"] == "ApiKey abc"
    assert len(otlp_receiver.spans("grpc")) == 6


async def test_exclude_request_data_and_resource_attributes_reach_the_backend(
    otlp_receiver: OtlpReceiver,
) -> None:
    cfg = http_dest(
        otlp_receiver, exclude_request_data=True, resource_attributes={"deployment.environment": "prod"}
    )
    dest = build_destination(cfg)
    try:
        assert (await dest.export(batch())).ok
    finally:
        await dest.close()
    rs = otlp_receiver.received[0].message.resource_spans[0]
    assert {kv.key: kv.value.string_value for kv in rs.resource.attributes}[
        "deployment.environment"
    ] == "prod"
    for span in otlp_receiver.spans():
        keys = {kv.key for kv in span.attributes}
        assert "tfy.input" not in keys and "gen_ai.usage.input_tokens" in keys


async def test_large_batch_is_split_under_the_cap(otlp_receiver: OtlpReceiver) -> None:
    dest = HttpDestination(http_dest(otlp_receiver), max_request_bytes=2_000)
    try:
        result = await dest.export(batch(n_traces=10, spans_per_trace=2))
    finally:
        await dest.close()
    assert result.ok and result.exported == 20
    assert len(otlp_receiver.received) > 1 and len(otlp_receiver.spans()) == 20


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429, 502, 504])
async def test_retryable_status_then_success(otlp_receiver: OtlpReceiver, status: int) -> None:
    otlp_receiver.fail("http", Fault(status=status))
    dest = HttpDestination(http_dest(otlp_receiver), **FAST)  # type: ignore[arg-type]
    try:
        result = await dest.export(batch())
    finally:
        await dest.close()
    assert result.ok and result.retries == 1 and result.exported == 6
    assert [a.status for a in otlp_receiver.attempts] == [status, 200]


async def test_retry_after_is_honoured(otlp_receiver: OtlpReceiver) -> None:
    otlp_receiver.fail("http", Fault(status=503, headers={"Retry-After": "1"}))
    dest = HttpDestination(http_dest(otlp_receiver), **FAST)  # type: ignore[arg-type]
    try:
        result = await dest.export(batch())
    finally:
        await dest.close()
    assert result.ok and result.retries == 1
    first, second = otlp_receiver.attempts
    assert second.at - first.at >= 0.95  # not our 10 ms backoff: the server's one second


async def test_retry_after_beyond_the_timeout_gives_up_at_once(otlp_receiver: OtlpReceiver) -> None:
    otlp_receiver.fail("http", Fault(status=429, headers={"Retry-After": "120"}))
    dest = HttpDestination(http_dest(otlp_receiver, timeout_ms=2000), **FAST)  # type: ignore[arg-type]
    started = time.monotonic()
    try:
        result = await dest.export(batch())
        assert not result.ok and result.reason == "http_429" and result.dropped == 6
        # The next batch respects the same Retry-After without asking the server again.
        result = await dest.export(batch())
        assert not result.ok and result.reason == "backoff" and result.dropped == 6
    finally:
        await dest.close()
    assert time.monotonic() - started < 5.0  # not the 120 s the server asked for
    assert [a.status for a in otlp_receiver.attempts] == [429]


async def test_400_is_not_retried(otlp_receiver: OtlpReceiver) -> None:
    otlp_receiver.fail("http", Fault(status=400), times=3)
    dest = HttpDestination(http_dest(otlp_receiver), **FAST)  # type: ignore[arg-type]
    try:
        result = await dest.export(batch())
    finally:
        await dest.close()
    assert not result.ok and result.reason == "http_400" and result.retries == 0 and result.dropped == 6
    assert [a.status for a in otlp_receiver.attempts] == [400]


async def test_retries_are_bounded(otlp_receiver: OtlpReceiver) -> None:
    otlp_receiver.fail("http", Fault(status=503), times=10)
    dest = HttpDestination(http_dest(otlp_receiver, max_retries=2), **FAST)  # type: ignore[arg-type]
    try:
        result = await dest.export(batch())
    finally:
        await dest.close()
    assert not result.ok and result.retries == 2 and len(otlp_receiver.attempts) == 3


async def test_unreachable_endpoint_is_dropped_within_the_timeout() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = Destination(name="down", endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout_ms=500)
    dest = HttpDestination(cfg, **FAST)  # type: ignore[arg-type]
    started = time.monotonic()
    try:
        result = await dest.export(batch())
    finally:
        await dest.close()
    assert not result.ok and result.reason == "connection" and result.retries >= 1
    assert time.monotonic() - started < 5.0  # bounded by the 500 ms timeout (generous: shared CI)


async def test_grpc_unavailable_is_retried_and_invalid_argument_is_not(otlp_receiver: OtlpReceiver) -> None:
    otlp_receiver.fail("grpc", Fault(grpc_code=grpc.StatusCode.UNAVAILABLE))
    dest = GrpcDestination(grpc_dest(otlp_receiver), **FAST)  # type: ignore[arg-type]
    try:
        assert (await dest.export(batch())).retries == 1
        otlp_receiver.fail("grpc", Fault(grpc_code=grpc.StatusCode.INVALID_ARGUMENT))
        result = await dest.export(batch())
        assert not result.ok and result.reason == "grpc_invalid_argument" and result.retries == 0
        otlp_receiver.fail("grpc", Fault(grpc_code=grpc.StatusCode.RESOURCE_EXHAUSTED))
        result = await dest.export(batch())
        assert not result.ok and result.reason == "grpc_resource_exhausted" and result.retries == 0
    finally:
        await dest.close()


async def test_grpc_retry_info_is_honoured(otlp_receiver: OtlpReceiver) -> None:
    otlp_receiver.fail("grpc", Fault(grpc_code=grpc.StatusCode.RESOURCE_EXHAUSTED, retry_delay_s=0.6))
    dest = GrpcDestination(grpc_dest(otlp_receiver), **FAST)  # type: ignore[arg-type]
    try:
        result = await dest.export(batch())
    finally:
        await dest.close()
    assert result.ok and result.retries == 1
    first, second = otlp_receiver.attempts
    assert second.at - first.at >= 0.55


@pytest.mark.parametrize("transport", ["http", "grpc"])
async def test_partial_success_is_counted_and_logged(
    otlp_receiver: OtlpReceiver, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    otlp_receiver.fail(transport, Fault(status=200, grpc_code=grpc.StatusCode.OK, rejected=2))  # type: ignore[arg-type]
    cfg = http_dest(otlp_receiver) if transport == "http" else grpc_dest(otlp_receiver)
    dest = build_destination(cfg)
    with caplog.at_level(logging.WARNING, logger="exporter"):
        try:
            result = await dest.export(batch())
        finally:
            await dest.close()
    assert result.ok and result.rejected == 2 and result.exported == 4
    assert "rejected 2 of 6 spans" in caplog.text


# --- pipeline -----------------------------------------------------------------------------------


async def test_hanging_destination_does_not_delay_another(
    otlp_receiver: OtlpReceiver,
    second_otlp_receiver: OtlpReceiver,
) -> None:
    hanging, healthy = otlp_receiver, second_otlp_receiver
    hanging.fail("http", Fault(hang=True), times=100)
    cfg = ExporterConfig(
        traces=[
            http_dest(hanging, name="hanging", timeout_ms=30_000),
            Destination(name="healthy", protocol="grpc", endpoint=healthy.grpc_url),
        ]
    )
    pipeline = ExportPipeline(cfg, TracingConfig(), env={})
    await pipeline.start()
    try:
        pipeline.submit(batch())
        pipeline.submit(batch())
        await healthy.wait_for(2, timeout_s=3.0)  # while the other one is still hanging
        assert [a.status for a in hanging.attempts] == ["hang"] and hanging.received == []
        await eventually(lambda: pipeline.counters["healthy"].batches_exported == 2)
        assert pipeline.counters["healthy"].spans_exported == 12
    finally:
        await pipeline.stop(timeout_s=0.5)
    assert pipeline.counters["hanging"].batches_dropped == {"shutdown": 2}


async def test_full_queue_drops_and_counts(otlp_receiver: OtlpReceiver) -> None:
    otlp_receiver.fail("http", Fault(hang=True), times=100)
    cfg = ExporterConfig(traces=[http_dest(otlp_receiver, queue_size=1, timeout_ms=30_000)])
    pipeline = ExportPipeline(cfg, TracingConfig(), env={})
    await pipeline.start()
    try:
        pipeline.submit(batch())
        for _ in range(100):  # bounded wait until the worker holds the first batch
            if otlp_receiver.attempts:
                break
            await asyncio.sleep(0.02)
        assert otlp_receiver.attempts
        for _ in range(4):
            pipeline.submit(batch())  # one fits the queue, three do not
        counters = pipeline.counters["http"]
        assert counters.batches_dropped == {"queue_full": 3} and counters.spans_dropped == {"queue_full": 18}
        assert pipeline.queued() == {"http": 1}
    finally:
        await pipeline.stop(timeout_s=0.2)
    assert pipeline.counters["http"].batches_dropped == {"queue_full": 3, "shutdown": 2}


async def test_stop_flushes_queued_batches_and_counts(otlp_receiver: OtlpReceiver) -> None:
    otlp_receiver.fail("http", Fault(status=503))
    cfg = ExporterConfig(traces=[http_dest(otlp_receiver)])
    pipeline = ExportPipeline(cfg, TracingConfig(), env={})
    await pipeline.start()
    for _ in range(5):
        pipeline.submit(batch())
    await pipeline.stop(timeout_s=10)
    c = pipeline.counters["http"]
    assert c.batches_exported == 5 and c.spans_exported == 30 and c.retries == 1 and c.batches_dropped == {}
    pipeline.submit(batch())  # after stop: counted, not queued
    assert c.batches_dropped == {"not_running": 1}


async def test_env_vars_add_a_destination(otlp_receiver: OtlpReceiver) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.http_base,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=s%20k",
    }
    pipeline = ExportPipeline(ExporterConfig(), TracingConfig(), env=env)
    assert pipeline.destinations == ["otel-env"]
    await pipeline.start()
    try:
        pipeline.submit(batch())
        (got,) = await otlp_receiver.wait_for(1)
    finally:
        await pipeline.stop(timeout_s=2)
    assert got.content_type == "application/json" and got.headers["x-api-key"] == "s k"


async def test_disabled_tracing_makes_the_pipeline_inert(otlp_receiver: OtlpReceiver) -> None:
    cfg = ExporterConfig(traces=[http_dest(otlp_receiver)])
    pipeline = ExportPipeline(cfg, TracingConfig(enabled=False), env={})
    await pipeline.start()
    pipeline.submit(batch())
    await pipeline.stop(timeout_s=1)
    assert pipeline.destinations == [] and otlp_receiver.attempts == []


async def test_metrics_endpoint_accepts_protobuf(otlp_receiver: OtlpReceiver) -> None:
    """The receiver's /v1/metrics side, for the metrics exporter's tests."""
    import httpx
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    async with httpx.AsyncClient() as client:
        r = await client.post(
            otlp_receiver.metrics_url,
            content=ExportMetricsServiceRequest().SerializeToString(),
            headers={"content-type": "application/x-protobuf"},
        )
        assert r.status_code == 200
        r = await client.post(
            otlp_receiver.metrics_url, content=b"{}", headers={"content-type": "application/json"}
        )
        assert r.status_code == 200
    assert [x.signal for x in otlp_receiver.received] == ["metrics", "metrics"]


async def test_grpc_hang_is_bounded_by_the_timeout(otlp_receiver: OtlpReceiver) -> None:
    otlp_receiver.fail("grpc", Fault(hang=True), times=10)
    dest = GrpcDestination(grpc_dest(otlp_receiver, timeout_ms=500), **FAST)  # type: ignore[arg-type]
    started = time.monotonic()
    try:
        result = await dest.export(batch())
    finally:
        await dest.close()
    assert not result.ok and result.dropped == 6
    assert result.reason in {"grpc_deadline_exceeded", "timeout"}
    assert time.monotonic() - started < 5.0  # bounded by the 500 ms timeout, not the hang


async def test_big_gzip_body_compresses_off_the_loop(otlp_receiver: OtlpReceiver) -> None:
    b = batch(n_traces=20, spans_per_trace=2, **{"tfy.output": os.urandom(4096).hex()})  # > 64 KiB
    dest = HttpDestination(http_dest(otlp_receiver, compression="gzip", encoding="json"))
    try:
        result = await dest.export(b)
    finally:
        await dest.close()
    assert result.ok and result.exported == 40
    assert otlp_receiver.received[0].content_encoding == "gzip" and otlp_receiver.errors == []


async def test_max_attribute_chars_per_destination_counted(
    otlp_receiver: OtlpReceiver,
    second_otlp_receiver: OtlpReceiver,
) -> None:
    """One destination cuts long values (JSON kept valid), the other gets them whole; the
    shared batch is not changed by the first; the pipeline counts what was cut."""
    long_input = b'{"messages":[{"role":"user","content":"' + b"x" * 5000 + b'"}]}'
    cfg = ExporterConfig(
        traces=[
            http_dest(otlp_receiver, name="small", max_attribute_chars=500),
            http_dest(second_otlp_receiver, name="whole"),
        ]
    )
    pipeline = ExportPipeline(cfg, TracingConfig(), env={"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "100000"})
    await pipeline.start()
    try:
        pipeline.submit(batch(1, 2, **{"tfy.input": long_input}))
        await eventually(lambda: otlp_receiver.spans() and second_otlp_receiver.spans())
    finally:
        await pipeline.stop(5)
    small = {kv.key: kv.value.string_value for kv in otlp_receiver.spans()[0].attributes}
    whole = {kv.key: kv.value.string_value for kv in second_otlp_receiver.spans()[0].attributes}
    assert len(small["tfy.input"]) <= 500 and json.loads(small["tfy.input"])["messages"][0]["role"] == "user"
    assert whole["tfy.input"].encode() == long_input
    assert pipeline.counters["small"].attributes_truncated == 2  # one value on each span
    assert pipeline.counters["whole"].attributes_truncated == 0
