"""One AgentResponse trace per Responses request, at a real OTLP receiver (embedded exporter)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.conftest import Proc, provider
from tests.integration.test_responses_mcp import mcp_server  # noqa: F401
from tests.integration.test_tracing_gateway import attrs, wait_spans
from tests.otlp_fixtures import otlp_receiver  # noqa: F401
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.timeout(90)


def _by_trace(spans: list[Any], trace_hex: str) -> list[Any]:
    return sorted((s for s in spans if s.trace_id.hex() == trace_hex), key=lambda s: s.start_time_unix_nano)


async def test_agent_loop_is_one_trace(
    gateway_factory: Callable[..., Proc],
    mock: Proc,
    mcp_server: Proc,  # noqa: F811
    otlp_receiver: OtlpReceiver,  # noqa: F811
) -> None:
    gw = gateway_factory(
        {
            "providers": [
                provider("chat", mock.url, ["gpt-4o"]),
                provider("native", mock.url, ["gpt-4o"], responses="native"),
            ],
            "mcp_servers": [{"name": "tools", "url": mcp_server.url}],
            "tracing": {"flush_interval_ms": 50},
            "exporter": {"traces": [{"name": "otlp", "endpoint": otlp_receiver.traces_url}]},
        }
    )
    tools = [{"type": "mcp", "server_label": "tools", "require_approval": "never"}]
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=20) as client:
        first = await client.responses.with_raw_response.create(
            model="chat/gpt-4o", tools=tools, input='call add {"a": 2, "b": 3} then call echo {"text": "hi"}'
        )
        loop_trace = first.headers["x-request-id"]
        first_id = first.parse().id
        second = await client.responses.with_raw_response.create(
            model="native/gpt-4o", input="and now?", previous_response_id=first_id, stream=True
        )
        chain_trace = second.headers["x-request-id"]
        async for _ in second.parse():
            pass

    spans = await wait_spans(
        otlp_receiver,
        lambda s: len(_by_trace(s, loop_trace)) >= 10 and any(x.name == "stream" for x in _by_trace(s, chain_trace)),
    )
    loop = _by_trace(spans, loop_trace)
    names = [s.name for s in loop]
    root = next(s for s in loop if s.name == "POST /v1/responses")
    agent = next(s for s in loop if s.name == "invoke_agent")
    assert root.kind == 2 and agent.kind == 1 and agent.parent_span_id == root.span_id
    r, a = attrs(root), attrs(agent)
    assert r["tfy.span_type"] == "AgentResponse"
    assert not any(k.startswith("gen_ai.") for k in r), "the root carries tfy.* only"
    assert a["openinference.span.kind"] == "AGENT" and a["gen_ai.operation.name"] == "invoke_agent"
    assert a["gen_ai.conversation.id"] == first_id
    # in order under invoke_agent: list tools, model, tool, model, tool, model
    children = [s for s in loop if s.parent_span_id == agent.span_id and not s.name.startswith(("initialize", "notif"))]
    assert [s.name for s in children] == [
        "tools/list", "chat gpt-4o", "execute_tool add", "chat gpt-4o", "execute_tool echo", "chat gpt-4o",
    ], names  # fmt: skip
    model_calls = [s for s in children if s.name == "chat gpt-4o"]
    first_call, last_call = attrs(model_calls[0]), attrs(model_calls[-1])
    assert model_calls[0].kind == 3 and first_call["openai.api.type"] == "chat_completions"
    assert first_call["gen_ai.operation.name"] == "chat" and first_call["gen_ai.usage.input_tokens"] == 12
    assert "call add" in first_call["gen_ai.input.messages"]
    assert json.loads(last_call["gen_ai.output.messages"])[0]["parts"][0]["content"] == "The tool said: hi"
    assert "add" in first_call["gen_ai.tool.definitions"]
    tool = next(s for s in children if s.name == "execute_tool add")
    t = attrs(tool)
    assert t["openinference.span.kind"] == "TOOL" and t["gen_ai.operation.name"] == "execute_tool"
    assert t["gen_ai.tool.name"] == "add" and t["tfy.mcp.server"] == "tools" and t["mcp.method.name"] == "tools/call"
    assert json.loads(t["gen_ai.tool.call.arguments"]) == {"a": 2, "b": 3}
    upstream = [s for s in loop if s.parent_span_id == tool.span_id]
    assert [s.name for s in upstream][-1] == "tools/call add" and upstream[-1].kind == 3
    assert "gen_ai.request.model" not in t, "tool spans are not model calls"

    chain = _by_trace(spans, chain_trace)
    agent2 = attrs(next(s for s in chain if s.name == "invoke_agent"))
    assert agent2["gen_ai.conversation.id"] == first_id  # the chain's first response
    call = attrs(next(s for s in chain if s.name == "chat gpt-4o"))
    assert call["openai.api.type"] == "responses"
    assert "stream" in [s.name for s in chain]
    root2 = attrs(next(s for s in chain if s.name == "POST /v1/responses"))
    assert json.loads(root2["tfy.output"])["object"] == "response"
