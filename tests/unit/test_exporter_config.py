"""exporter.config (section, checks, OTEL_EXPORTER_OTLP_* env vars) and exporter.retry."""

from __future__ import annotations

import email.utils
import random

import grpc
import msgspec
import pytest
from google.rpc import error_details_pb2, status_pb2

from exporter.config import Destination, ExporterConfig, check_exporter, env_destination, parse_headers
from exporter.retry import backoff_delay, grpc_retry_delay, grpc_retryable, parse_retry_after


def decode(doc: dict[str, object]) -> ExporterConfig:
    return msgspec.convert(doc, ExporterConfig)


def test_issue_example_decodes_without_problems() -> None:
    cfg = decode(
        {
            "traces": [
                {
                    "name": "signoz",
                    "protocol": "http",
                    "endpoint": "https://ingest.in2.signoz.cloud:443/v1/traces",
                    "encoding": "proto",
                    "headers": {"signoz-ingestion-key": "k"},
                    "exclude_request_data": False,
                    "resource_attributes": {"deployment.environment": "prod"},
                    "compression": "gzip",
                    "timeout_ms": 10000,
                    "sampling_ratio": 1.0,
                }
            ],
            "metrics": [
                {"name": "m", "endpoint": "https://x/v1/metrics", "temporality": "delta", "interval_s": 30}
            ],
        }
    )
    assert list(check_exporter(cfg)) == []
    assert cfg.metrics[0].temporality == "delta"


def test_unknown_keys_are_rejected_with_their_path() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"traces\[0\]"):
        decode({"traces": [{"name": "a", "endpoint": "http://x", "endpont": "typo"}]})
    with pytest.raises(msgspec.ValidationError):
        decode({"traces": [{"name": "a", "endpoint": "http://x", "protocol": "thrift"}]})


def test_semantic_problems_have_paths() -> None:
    cfg = ExporterConfig(
        traces=[
            Destination(name="a", endpoint="localhost:4318"),
            Destination(
                name="a", endpoint="http://x:4317", protocol="grpc", encoding="json", sampling_ratio=1.5
            ),
            Destination(name="c", endpoint="http://x", timeout_ms=0, queue_size=0, headers={"bad name": "v"}),
        ]
    )
    problems = list(check_exporter(cfg))
    assert "exporter.traces[0].endpoint: expected a URL (http:// or https://)" in problems
    assert "exporter.traces[1].name: duplicate destination name 'a'" in problems
    assert "exporter.traces[1].encoding: json is only available with protocol http" in problems
    assert "exporter.traces[1].sampling_ratio: must be within [0, 1]" in problems
    assert "exporter.traces[2].timeout_ms: must be > 0" in problems
    assert "exporter.traces[2].queue_size: must be >= 1" in problems
    assert any(p.startswith("exporter.traces[2].headers") for p in problems)


def test_check_accepts_a_parent_config_object() -> None:
    class Parent:
        exporter = ExporterConfig(traces=[Destination(name="a", endpoint="ftp://x")])

    assert list(check_exporter(Parent())) == [
        "exporter.traces[0].endpoint: expected a URL (http:// or https://)"
    ]


def test_env_destination_absent_without_endpoint() -> None:
    assert env_destination({}) is None
    assert env_destination({"OTEL_EXPORTER_OTLP_HEADERS": "a=b"}) is None


def test_env_generic_endpoint_gets_signal_path_for_http() -> None:
    d = env_destination({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318"})
    assert d is not None and d.endpoint == "https://collector:4318/v1/traces"
    assert (
        d.protocol == "http" and d.encoding == "proto" and d.compression == "none" and d.timeout_ms == 10_000
    )
    d = env_destination({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/base/"})
    assert d is not None and d.endpoint == "https://collector:4318/base/v1/traces"


def test_env_signal_endpoint_used_as_is_and_wins() -> None:
    d = env_destination(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://generic:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://specific:4318/custom",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "api-key=a%20b%3D,x-team = ml ,broken",
            "OTEL_EXPORTER_OTLP_HEADERS": "ignored=1",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2500",
        }
    )
    assert d is not None
    assert d.endpoint == "https://specific:4318/custom" and d.encoding == "json"
    assert d.headers == {"api-key": "a b=", "x-team": "ml"}
    assert d.compression == "gzip" and d.timeout_ms == 2500
    assert list(check_exporter(ExporterConfig(traces=[d]))) == []


def test_env_grpc_endpoint_unchanged() -> None:
    d = env_destination(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    )
    assert d is not None and d.protocol == "grpc" and d.endpoint == "http://collector:4317"


def test_parse_headers() -> None:
    assert parse_headers("") == {}
    assert parse_headers("Authorization=Basic%20abc%3D%3D") == {"Authorization": "Basic abc=="}


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("3", 0) == 3.0
    assert parse_retry_after(None, 0) is None and parse_retry_after("soon", 0) is None
    now = 1_800_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 7, usegmt=True), now) == pytest.approx(7, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 7, usegmt=True), now) == 0.0


def test_backoff_is_jittered_exponential_and_capped() -> None:
    rng = random.Random(1)
    for attempt, step in [(0, 0.5), (1, 1.0), (2, 2.0), (10, 8.0)]:
        d = backoff_delay(attempt, 0.5, 8.0, rng)
        assert step / 2 <= d <= step


def test_grpc_retry_policy() -> None:
    assert grpc_retryable(grpc.StatusCode.UNAVAILABLE, None)
    assert not grpc_retryable(grpc.StatusCode.INVALID_ARGUMENT, None)
    assert not grpc_retryable(grpc.StatusCode.RESOURCE_EXHAUSTED, None)
    assert grpc_retryable(grpc.StatusCode.RESOURCE_EXHAUSTED, 1.0)
    info = error_details_pb2.RetryInfo()
    info.retry_delay.seconds, info.retry_delay.nanos = 2, 500_000_000
    status = status_pb2.Status(code=8)
    status.details.add().Pack(info)
    assert grpc_retry_delay([("grpc-status-details-bin", status.SerializeToString())]) == 2.5
    assert grpc_retry_delay([("other", "x")]) is None and grpc_retry_delay(None) is None
