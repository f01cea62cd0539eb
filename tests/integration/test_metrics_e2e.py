"""The real gateway's spans → NATS → span metrics → OTLP receiver: numbers match what was served.

Drives the gateway process (with its real hot path and span recording) with a known mix of
requests — non-stream, stream, an upstream error, a rate-limited one — and checks the OTLP
metrics derived from its spans against the responses the client actually got.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.config import MetricsDestination
from exporter.metrics_export import MetricsExporter
from exporter.subscriber import SpanSubscriber
from gateway.telemetry.wire import NatsConfig
from tests.conftest import MODELS, Proc, provider
from tests.otlp_fixtures import otlp_receiver  # noqa: F401 - fixture
from tests.otlp_receiver import OtlpReceiver

pytestmark = [pytest.mark.nats, pytest.mark.timeout(90)]


def _stream_usage(text: str) -> dict[str, int]:
    for line in text.splitlines():
        if line.startswith("data: {"):
            usage = json.loads(line[6:]).get("usage")
            if usage:
                return usage  # type: ignore[no-any-return]
    raise AssertionError("no usage chunk in the stream")


def _sums(metric: Any) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    for p in metric.sum.data_points:
        key = tuple(sorted((kv.key, kv.value.string_value) for kv in p.attributes))
        out[key] = out.get(key, 0) + p.as_int
    return out


async def test_span_metrics_match_the_requests_served(
    gateway_factory: Callable[..., Proc],
    mock: Proc,
    nats_server: str,
    otlp_receiver: OtlpReceiver,  # noqa: F811 - fixture
    tmp_path: Path,
) -> None:
    nats = NatsConfig(url=nats_server, subject_prefix=f"metrics-e2e-{time.monotonic_ns()}")
    exporter = MetricsExporter(
        [MetricsDestination(name="r", endpoint=otlp_receiver.metrics_url, interval_s=3600)]
    )
    subscriber = SpanSubscriber(nats, exporter)
    await subscriber.start()
    await asyncio.wait_for(subscriber.subscribed.wait(), 10)
    gw = gateway_factory(
        {
            "providers": [provider("mock", mock.url, MODELS)],
            "tracing": {
                "nats": {"url": nats.url, "subject_prefix": nats.subject_prefix},
                "flush_interval_ms": 50,
            },
            "rate_limiting": [
                {
                    "id": "embed-rpm",
                    "limit_to": 1,
                    "unit": "requests_per_minute",
                    "when": {"models": ["mock/text-embedding-3-small"]},
                }
            ],
        }
    )
    statuses: Counter[int] = Counter()
    input_tokens = output_tokens = 0
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        for _ in range(3):
            r = await client.post("/v1/chat/completions", json={"model": "mock/gpt-4o", "messages": []})
            statuses[r.status_code] += 1
            input_tokens += r.json()["usage"]["prompt_tokens"]
            output_tokens += r.json()["usage"]["completion_tokens"]
        for _ in range(2):
            body = {
                "model": "mock/gpt-4o",
                "messages": [],
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            r = await client.post("/v1/chat/completions", json=body)
            statuses[r.status_code] += 1
            usage = _stream_usage(r.text)
            input_tokens += usage["prompt_tokens"]
            output_tokens += usage["completion_tokens"]
        r = await client.post("/v1/chat/completions", json={"model": "mock/error-400", "messages": []})
        statuses[r.status_code] += 1
        for _ in range(2):
            r = await client.post(
                "/v1/embeddings", json={"model": "mock/text-embedding-3-small", "input": "hi"}
            )
            statuses[r.status_code] += 1
            if r.status_code == 200:
                input_tokens += r.json()["usage"]["prompt_tokens"]
    assert statuses[429] == 1 and statuses[200] == 6, statuses
    served = sum(statuses.values())
    try:
        deadline = time.monotonic() + 20
        while exporter.aggregator.traces < served:
            assert time.monotonic() < deadline, f"{exporter.aggregator.traces} of {served} traces arrived"
            await asyncio.sleep(0.05)
    finally:
        await subscriber.stop(2)
        await exporter.stop(5)  # the final export
    (received,) = otlp_receiver.received
    metrics = {m.name: m for sm in received.message.resource_metrics[0].scope_metrics for m in sm.metrics}

    by_status: Counter[str] = Counter()
    for key, n in _sums(metrics["llm_gateway_requests"]).items():
        by_status[dict(key)["status_code"]] += int(n)
    assert by_status == Counter({str(s): n for s, n in statuses.items()})
    assert sum(_sums(metrics["llm_gateway_input_tokens"]).values()) == input_tokens
    assert sum(_sums(metrics["llm_gateway_output_tokens"]).values()) == output_tokens
    assert {dict(k)["model_name"] for k in _sums(metrics["llm_gateway_input_tokens"])} == {
        "mock/gpt-4o",
        "mock/text-embedding-3-small",
    }
    assert sum(_sums(metrics["llm_gateway_rate_limit_rejections"]).values()) == 1
    assert sum(_sums(metrics["llm_gateway_errors"]).values()) == served - statuses[200]
    latency = metrics["llm_gateway_request_processing_ms"].histogram.data_points
    assert sum(p.count for p in latency) == served
    # Streams only: a non-streamed response has no first token of its own.
    first_token = metrics["llm_gateway_first_token_latency_ms"].histogram.data_points
    assert sum(p.count for p in first_token) == 2

    usage = metrics["gen_ai.client.token.usage"].histogram.data_points
    token_sums: Counter[str] = Counter()
    for p in usage:
        kind = next(kv.value.string_value for kv in p.attributes if kv.key == "gen_ai.token.type")
        token_sums[kind] += int(p.sum)
    assert token_sums == Counter({"input": input_tokens, "output": output_tokens})
    duration = metrics["gen_ai.client.operation.duration"].histogram.data_points
    assert sum(p.count for p in duration) == served - statuses[429]  # one upstream attempt each
    attrs = {kv.key for p in duration for kv in p.attributes}
    assert {
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "server.address",
    } <= attrs
    ttfc = metrics["gen_ai.client.operation.time_to_first_chunk"].histogram.data_points
    assert sum(p.count for p in ttfc) == 2
