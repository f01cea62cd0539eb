"""Every request through the real gateway becomes OTLP spans at a real receiver.

Embedded mode (no NATS: the exporter pipeline runs in the gateway process) and NATS mode (the
gateway publishes, a separate ``gateway-exporter`` process exports), with the faults that must
never reach a client: NATS stopped mid-run, the exporter stopped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Proc, provider, start_exporter
from tests.nats_fixtures import NatsServer
from tests.otlp_fixtures import otlp_receiver, second_otlp_receiver  # noqa: F401
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.timeout(90)

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


def attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        value = getattr(kv.value, kind)
        if kind == "array_value":
            value = [getattr(v, v.WhichOneof("value")) for v in value.values]
        out[kv.key] = value
    return out


def resource_attrs(receiver: OtlpReceiver) -> dict[str, Any]:
    return attrs(receiver.received[0].message.resource_spans[0].resource)


async def wait_spans(
    receiver: OtlpReceiver, predicate: Callable[[list[Any]], bool], timeout_s: float = 15
) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        spans = receiver.spans()
        if predicate(spans):
            return spans
        await asyncio.sleep(0.05)
    raise AssertionError(f"spans did not arrive: {[s.name for s in receiver.spans()]}")


def of_trace(spans: list[Any], trace_hex: str) -> dict[str, Any]:
    return {s.name: s for s in spans if s.trace_id.hex() == trace_hex}


async def test_embedded_pipeline_exports_full_traces(
    gateway_factory: Callable[..., Proc],
    mock: Proc,
    otlp_receiver: OtlpReceiver,  # noqa: F811
    second_otlp_receiver: OtlpReceiver,  # noqa: F811
) -> None:
    gw = gateway_factory(
        {
            "providers": [provider("mock", mock.url, ["gpt-4o", "error-503"])],
            "tracing": {"flush_interval_ms": 50},
            "exporter": {
                "traces": [
                    {
                        "name": "proto",
                        "endpoint": otlp_receiver.traces_url,
                        "headers": {"x-backend-key": "k-1"},
                    },
                    {
                        "name": "redacted-json",
                        "endpoint": second_otlp_receiver.traces_url,
                        "encoding": "json",
                        "exclude_request_data": True,
                        "resource_attributes": {"deployment.environment": "test"},
                    },
                ]
            },
        }
    )
    httpx.delete(mock.url + "/_mock/requests")
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="mock/gpt-4o",
            messages=[{"role": "user", "content": "hello there"}],
            temperature=0.3,
            extra_headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"},
        )
        assert raw.headers["x-request-id"] == PARENT_TRACE
        stream = await client.chat.completions.with_raw_response.create(
            model="mock/gpt-4o", messages=[{"role": "user", "content": "stream please"}], stream=True
        )
        stream_trace = stream.headers["x-request-id"]
        async for _ in stream.parse():
            pass
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(
                model="mock/error-503", messages=[{"role": "user", "content": "x"}]
            )

    spans = await wait_spans(
        otlp_receiver, lambda s: len({x.trace_id for x in s}) >= 3 and len(of_trace(s, stream_trace)) >= 5
    )

    # --- the non-streaming trace: parent/child links and attributes
    t = of_trace(spans, PARENT_TRACE)
    root, auth, res, call = t["POST /v1/chat/completions"], t["auth"], t["model resolution"], t["chat gpt-4o"]
    assert root.kind == 2 and root.parent_span_id.hex() == PARENT_SPAN  # child of the caller's span
    assert {auth.parent_span_id, res.parent_span_id, call.parent_span_id} == {root.span_id}
    assert call.kind == 3
    a = attrs(root)
    assert a["tfy.span_type"] == "ChatCompletion" and a["openinference.span.kind"] == "CHAIN"
    assert not [k for k in a if k.startswith("gen_ai.")]  # the root is no model call
    assert "hello there" in a["tfy.input"] and "chatcmpl-mock" in a["tfy.output"]
    assert json.loads(a["tfy.input_short_hand"])["content"] == "hello there"
    assert json.loads(a["tfy.input_short_hand"])["has_image"] is False
    assert a["tfy.data_routing.destination"] == "mock/gpt-4o"
    assert a["tfy.request.created_by_subject"] == "anonymous"
    assert a["tfy.request.model"] == "mock/gpt-4o" and a["tfy.data_routing.provider"] == "openai"
    assert a["tfy.usage.input_tokens"] == 12 and a["tfy.usage.output_tokens"] == 8
    assert a["http.response.status_code"] == 200 and a["tfy.model.metric.latency_in_ms"] > 0
    assert "tfy.model.metric.time_to_first_token_in_ms" not in a  # not streamed
    c = attrs(call)
    assert c["server.address"] == "127.0.0.1" and c["gen_ai.request.model"] == "gpt-4o"
    assert c["gen_ai.request.temperature"] == 0.3 and c["gen_ai.response.id"] == "chatcmpl-mock"
    assert c["gen_ai.usage.input_tokens"] == 12 and c["gen_ai.usage.output_tokens"] == 8
    assert c["gen_ai.response.finish_reasons"] == ["stop"] and c["openinference.span.kind"] == "LLM"
    assert "gen_ai.response.time_to_first_chunk" not in c
    # the provider saw a traceparent naming the CLIENT span of this trace
    seen = [r for r in httpx.get(mock.url + "/_mock/requests").json() if "hello there" in r["body"]]
    assert seen[0]["headers"]["traceparent"] == f"00-{PARENT_TRACE}-{call.span_id.hex()}-01"

    # --- the stream: a stream span, the assembled output, time to first chunk
    s = of_trace(spans, stream_trace)
    assert "stream" in s
    sa = attrs(s["POST /v1/chat/completions"])
    out = json.loads(sa["tfy.output"])
    assert (
        out["choices"][0]["message"]["content"].startswith("tok0 tok1")
        and out["choices"][0]["finish_reason"] == "stop"
    )
    assert sa["tfy.model.metric.time_to_first_token_in_ms"] > 0 and sa["tfy.request.stream"] is True
    sc = attrs(next(x for x in s.values() if x.kind == 3))
    assert sc["gen_ai.response.time_to_first_chunk"] > 0 and sc["gen_ai.request.stream"] is True
    assert "tfy.output.sse" not in sa  # the raw events are the exporter's input, not an attribute

    # --- the failure: error status and error.type on root and CLIENT span
    failed = next(x for x in spans if x.name == "chat error-503")
    f_root = of_trace(spans, failed.trace_id.hex())["POST /v1/chat/completions"]
    assert f_root.status.code == 2 and attrs(f_root)["http.response.status_code"] == 503
    assert failed.status.code == 2 and attrs(failed)["error.type"]

    # --- resource and backend headers
    r = resource_attrs(otlp_receiver)
    assert r["service.name"] == "tfy-llm-gateway" and r["service.version"] and r["service.instance.id"]
    assert all(x.headers.get("x-backend-key") == "k-1" for x in otlp_receiver.received)

    # --- the JSON destination: strictly decoded by the receiver, request data excluded
    red = await wait_spans(second_otlp_receiver, lambda s: len({x.trace_id for x in s}) >= 3)
    assert all(x.content_type.startswith("application/json") for x in second_otlp_receiver.received)
    assert second_otlp_receiver.received[0].raw_json is not None
    red_root = of_trace(red, PARENT_TRACE)["POST /v1/chat/completions"]
    ra = attrs(red_root)
    assert not {"tfy.input", "tfy.output", "tfy.input_short_hand"} & set(ra)
    assert ra["tfy.usage.input_tokens"] == 12 and ra["tfy.data_routing.destination"] == "mock/gpt-4o"
    assert resource_attrs(second_otlp_receiver)["deployment.environment"] == "test"


async def test_nats_mode_survives_nats_and_exporter_outages(
    tmp_path: Path,
    gateway_factory: Callable[..., Proc],
    mock: Proc,
    otlp_receiver: OtlpReceiver,  # noqa: F811
) -> None:
    nats = NatsServer()
    nats.start()
    config = {
        "providers": [provider("mock", mock.url, ["gpt-4o"])],
        "tracing": {"flush_interval_ms": 50, "nats": {"url": nats.url, "subject_prefix": "t-nats"}},
        "exporter": {"traces": [{"name": "grpc", "protocol": "grpc", "endpoint": otlp_receiver.grpc_url}]},
    }
    exporter = start_exporter(config, tmp_path)
    try:
        gw = gateway_factory(config)
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:

            async def chat() -> httpx.Response:
                return await client.post(
                    "/v1/chat/completions", json={"model": "mock/gpt-4o", "messages": []}
                )

            async def exported_after_retries(what: str) -> None:
                # Spans recorded while the gateway is not (yet) connected are dropped and
                # counted by design; keep sending until one request's trace arrives.
                deadline = time.monotonic() + 20
                while True:
                    r = await chat()
                    assert r.status_code == 200
                    await asyncio.sleep(0.3)
                    if any(x.trace_id.hex() == r.headers["x-request-id"] for x in otlp_receiver.spans()):
                        return
                    assert time.monotonic() < deadline, f"no export {what}"

            await exported_after_retries("at start-up")
            assert all(x.transport == "grpc" for x in otlp_receiver.received)

            nats.stop()  # the broker goes away: requests must not notice
            during = [await chat() for _ in range(20)]
            assert [r.status_code for r in during] == [200] * 20
            assert max(r.elapsed.total_seconds() for r in during) < 2.0  # no NATS timeout in the path

            nats.start()  # same port: gateway and exporter reconnect on their own
            await exported_after_retries("after NATS came back")

            assert exporter.stop() == 0  # the exporter goes away (SIGTERM): the gateway does not care
            assert [(await chat()).status_code for _ in range(10)] == [200] * 10
        assert "nats" in gw.output().lower()  # the outage was logged (rate-limited)
    finally:
        exporter.stop()
        nats.close()


def test_tracing_off_still_propagates_the_trace_id(gateway_factory: Callable[..., Proc], mock: Proc) -> None:
    gw = gateway_factory(
        {"providers": [provider("mock", mock.url, ["gpt-4o"])], "tracing": {"enabled": False}}
    )
    httpx.delete(mock.url + "/_mock/requests")
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "mock/gpt-4o", "messages": [{"role": "user", "content": "no tracing"}]},
        headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"},
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == PARENT_TRACE
    sent = httpx.get(mock.url + "/_mock/requests").json()[-1]["headers"]["traceparent"]
    assert sent.startswith(f"00-{PARENT_TRACE}-") and PARENT_SPAN not in sent  # a new span of the same trace
    metrics = httpx.get(gw.url + "/metrics").text
    assert "llm_gateway_spans_recorded_total 0.0" in metrics
