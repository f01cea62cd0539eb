"""GenAI content end to end: real gateway → NATS → ``gateway-exporter`` → strict OTLP receiver.

A tool-using streamed chat (OpenAI and Anthropic targets), its follow-up turn with the tool
results, an embedding and a request that never went upstream. At the receiver every content
attribute decodes to the semconv schema's structure, only model-call spans carry ``gen_ai.*``
(so a backend counts each call's tokens once), and a destination with *exclude request data*
receives none of the conversation.
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

from tests import genai_schema
from tests.conftest import Proc, provider, start_exporter
from tests.integration.test_tracing_gateway import attrs, of_trace, wait_spans
from tests.otlp_fixtures import otlp_receiver, second_otlp_receiver  # noqa: F401
from tests.otlp_receiver import OtlpReceiver

pytestmark = [pytest.mark.nats, pytest.mark.timeout(120)]

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
QUESTION = "What is the weather in Paris? (secret-prompt-7731)"
CONTENT_KEYS = set(genai_schema.CHECKS) | {"logfire.json_schema", "tfy.input", "tfy.output", "tfy.input_short_hand"}


def _config(mock: Proc, nats_url: str, full: OtlpReceiver, redacted: OtlpReceiver) -> dict[str, Any]:
    return {
        "providers": [
            provider("mock", mock.url, ["gpt-4o", "text-embedding-3-small"]),
            {"name": "anth", "type": "anthropic", "base_url": mock.url, "api_key": "sk-ant", "models": ["claude-sonnet-4-5"]},
        ],
        "tracing": {"flush_interval_ms": 50, "nats": {"url": nats_url, "subject_prefix": "t-genai"}},
        "exporter": {
            "traces": [
                {"name": "full", "endpoint": full.traces_url},
                {"name": "redacted", "endpoint": redacted.traces_url, "encoding": "json", "exclude_request_data": True},
            ]
        },
    }  # fmt: skip


def _check_trace(spans: dict[str, Any]) -> Any:
    """Only the model call carries gen_ai.*; returns it (None when no call was made)."""
    calls = [s for s in spans.values() if s.kind == 3]
    for s in spans.values():
        a = attrs(s)
        if s.kind == 3:
            assert a["openinference.span.kind"] in ("LLM", "EMBEDDING")
        else:
            assert not [k for k in a if k.startswith("gen_ai.")], (s.name, sorted(a))
            assert a["openinference.span.kind"] == "CHAIN"
    assert len([c for c in calls if "gen_ai.usage.input_tokens" in attrs(c)]) == min(1, len(calls))
    return calls[0] if calls else None


async def _until_connected(gw: Proc, receiver: OtlpReceiver) -> None:
    """Spans recorded before the gateway's NATS connection is up are dropped (and counted) by
    design: send requests until one trace arrives, so the ones under test are not."""
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        while True:
            r = await client.post("/v1/chat/completions", json={"model": "mock/gpt-4o", "messages": []})
            await asyncio.sleep(0.3)
            if of_trace(receiver.spans(), r.headers["x-request-id"]):
                return
            assert time.monotonic() < deadline, "no trace exported"


async def test_conversations_reach_the_backend_in_the_parts_format(
    tmp_path: Path,
    nats_server: str,
    gateway_factory: Callable[..., Proc],
    mock: Proc,
    otlp_receiver: OtlpReceiver,  # noqa: F811
    second_otlp_receiver: OtlpReceiver,  # noqa: F811
) -> None:
    config = _config(mock, nats_server, otlp_receiver, second_otlp_receiver)
    exporter = start_exporter(config, tmp_path)
    try:
        gw = gateway_factory(config)
        await _until_connected(gw, otlp_receiver)
        traces: dict[str, str] = {}
        async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as client:
            # 1. a tool-using streamed chat: the model answers with two parallel tool calls
            turn1: list[Any] = [{"role": "system", "content": "You are a weather bot."}, {"role": "user", "content": QUESTION}]
            raw = await client.chat.completions.with_raw_response.create(
                model="mock/gpt-4o", messages=turn1, tools=TOOLS, stream=True  # type: ignore[arg-type]
            )
            traces["stream"] = raw.headers["x-request-id"]
            calls: dict[int, dict[str, str]] = {}
            async for chunk in raw.parse():
                for tc in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
                    call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] = tc.id or call["id"]
                    call["name"] += (tc.function.name or "") if tc.function else ""
                    call["arguments"] += (tc.function.arguments or "") if tc.function else ""
            assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
            # 2. the follow-up turn with the tool results
            turn2 = [
                *turn1,
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in calls.values()]},
                *({"role": "tool", "tool_call_id": c["id"], "content": f"result of {c['name']}"} for c in calls.values()),
            ]  # fmt: skip
            raw2 = await client.chat.completions.with_raw_response.create(model="mock/gpt-4o", messages=turn2)  # type: ignore[arg-type]
            traces["results"] = raw2.headers["x-request-id"]
            # 3. the same question to an Anthropic target, streamed
            raw3 = await client.chat.completions.with_raw_response.create(
                model="anth/claude-sonnet-4-5", messages=turn1, tools=TOOLS, stream=True, max_tokens=200  # type: ignore[arg-type]
            )
            traces["anthropic"] = raw3.headers["x-request-id"]
            async for _ in raw3.parse():
                pass
            # 4. an embedding, and a model that does not exist (never upstream)
            emb = await client.embeddings.with_raw_response.create(model="mock/text-embedding-3-small", input="hello")
            traces["embedding"] = emb.headers["x-request-id"]
        missing = httpx.post(gw.url + "/v1/chat/completions", json={"model": "nope/x", "messages": turn1})
        assert missing.status_code == 404
        traces["missing"] = missing.headers["x-request-id"]

        spans = await wait_spans(
            otlp_receiver,
            lambda s: all(of_trace(s, t) for t in traces.values()) and len(of_trace(s, traces["stream"])) >= 5,
            timeout_s=30,
        )
        by_trace = {k: of_trace(spans, t) for k, t in traces.items()}

        # --- 1. the streamed tool calls: one LLM call with the whole conversation
        call = _check_trace(by_trace["stream"])
        a = attrs(call)
        found = genai_schema.check_attributes(a)
        assert found["gen_ai.input.messages"] == [
            {"role": "system", "parts": [{"type": "text", "content": "You are a weather bot."}]},
            {"role": "user", "parts": [{"type": "text", "content": QUESTION}]},
        ]
        assert found["gen_ai.tool.definitions"][0]["name"] == "get_weather"
        (out,) = found["gen_ai.output.messages"]
        assert out["finish_reason"] == "tool_call"
        assert [(p["type"], p["name"], p["arguments"]) for p in out["parts"]] == [
            ("tool_call", "get_weather", {"city": "Paris"}),
            ("tool_call", "get_time", {"tz": "CET"}),
        ]
        assert a["gen_ai.response.finish_reasons"] == ["tool_calls"]
        assert a["gen_ai.usage.input_tokens"] == 40 and a["gen_ai.usage.output_tokens"] == 18
        assert a["gen_ai.response.time_to_first_chunk"] > 0 and a["gen_ai.request.stream"] is True

        # --- 2. the tool results went back as tool_call_response parts
        found = genai_schema.check_attributes(attrs(_check_trace(by_trace["results"])))
        inp = found["gen_ai.input.messages"]
        assert [p["type"] for p in inp[2]["parts"]] == ["tool_call", "tool_call"]
        assert inp[3] == {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_w1", "response": "result of get_weather"}]}
        assert found["gen_ai.output.messages"][0]["finish_reason"] == "stop"
        assert "gen_ai.response.time_to_first_chunk" not in attrs(_check_trace(by_trace["results"]))

        # --- 3. Anthropic target: the same parts, from the messages as the gateway received them
        call = _check_trace(by_trace["anthropic"])
        a = attrs(call)
        assert call.name == "chat claude-sonnet-4-5" and a["gen_ai.provider.name"] == "anthropic"
        found = genai_schema.check_attributes(a)
        assert found["gen_ai.input.messages"][1]["parts"] == [{"type": "text", "content": QUESTION}]
        (out,) = found["gen_ai.output.messages"]
        tool_calls = [p for p in out["parts"] if p["type"] == "tool_call"]
        assert tool_calls and tool_calls[0]["arguments"] == {"location": "Paris"} and out["finish_reason"] == "tool_call"

        # --- 4. embeddings carry no messages; a request that never went upstream has no gen_ai.*
        a = attrs(_check_trace(by_trace["embedding"]))
        assert a["openinference.span.kind"] == "EMBEDDING" and a["gen_ai.usage.input_tokens"] == 4
        assert not set(genai_schema.CHECKS) & set(a)
        assert _check_trace(by_trace["missing"]) is None

        # --- the redacted destination: tokens, models and latency, none of the conversation
        red = await wait_spans(
            second_otlp_receiver, lambda s: all(of_trace(s, t) for t in traces.values()), timeout_s=30
        )
        for s in red:
            ra = attrs(s)
            assert not CONTENT_KEYS & set(ra), (s.name, CONTENT_KEYS & set(ra))
            assert "secret-prompt-7731" not in json.dumps({k: str(v) for k, v in ra.items()})
        red_call = _check_trace(of_trace(red, traces["stream"]))
        ra = attrs(red_call)
        assert ra["gen_ai.usage.input_tokens"] == 40 and ra["gen_ai.request.model"] == "gpt-4o"
        assert all("secret-prompt-7731" not in json.dumps(r.raw_json) for r in second_otlp_receiver.received)
    finally:
        exporter.stop()


async def test_max_attribute_chars_keeps_content_valid(
    gateway_factory: Callable[..., Proc],
    mock: Proc,
    otlp_receiver: OtlpReceiver,  # noqa: F811
) -> None:
    gw = gateway_factory(
        {
            "providers": [provider("mock", mock.url, ["gpt-4o"])],
            "tracing": {"flush_interval_ms": 50},
            "exporter": {"traces": [{"name": "small", "endpoint": otlp_receiver.traces_url, "max_attribute_chars": 3000}]},
        }
    )
    long_text = "A long document. " * 2000
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "mock/gpt-4o", "messages": [{"role": "user", "content": long_text}, {"role": "user", "content": "Summarise."}]},
    )  # fmt: skip
    assert r.status_code == 200
    spans = of_trace(await wait_spans(otlp_receiver, lambda s: len(of_trace(s, r.headers["x-request-id"])) >= 4), r.headers["x-request-id"])
    for s in spans.values():
        for key, value in attrs(s).items():
            assert not isinstance(value, str) or len(value) <= 3000, key
    call = next(s for s in spans.values() if s.kind == 3)
    found = genai_schema.check_attributes(attrs(call))
    first, last = found["gen_ai.input.messages"]
    assert first["parts"][0]["truncated"] is True and first["parts"][0]["content"].endswith("…")
    assert last["parts"] == [{"type": "text", "content": "Summarise."}]
    root = next(s for s in spans.values() if s.kind == 2)
    assert json.loads(attrs(root)["tfy.input"])["model"] == "mock/gpt-4o"  # still JSON, cut inside
