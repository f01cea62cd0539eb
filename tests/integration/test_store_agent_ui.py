"""An agent trace (Responses API shape: invoke_agent, model calls with GenAI messages, an MCP tool
call) in a real store, served by the real API/UI server, opened in Chromium: the conversation is
rendered from ``gen_ai.*.messages`` with the tool call's arguments and result."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from time import time_ns
from typing import Any

import httpx
import pytest

from exporter.store.config import StoreConfig, UiConfig
from exporter.store.embed import serve_http
from exporter.store.service import TraceStore
from exporter.store.web import StoreWeb
from gateway.access.credentials import ANONYMOUS
from gateway.telemetry.wire import (
    SCHEMA_VERSION,
    SPAN_KIND_CLIENT,
    SPAN_KIND_INTERNAL,
    SPAN_KIND_SERVER,
    Resource,
    Span,
    SpanBatch,
)
from tests.conftest import free_port
from tests.integration.store_browser import browser, screenshot, wait_for  # noqa: F401

TRACE = bytes.fromhex("5e1f" * 8)


def sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def agent_spans() -> list[Span]:
    t = time_ns()
    ms = 1_000_000
    j = json.dumps
    user = [{"role": "user", "parts": [{"type": "text", "content": "What's the weather in Paris?"}]}]
    call = {"type": "tool_call", "id": "call_7", "name": "get_weather", "arguments": {"city": "Paris"}}
    first_out = [{"role": "assistant", "parts": [call], "finish_reason": "tool_call"}]
    second_in = [
        *user,
        {"role": "assistant", "parts": [call]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_7", "response": {"temp_c": 18}}]},
    ]
    final = [{"role": "assistant", "parts": [{"type": "text", "content": "18°C and clear in Paris."}], "finish_reason": "stop"}]
    chat = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}
    body = j({"model": "mock/gpt-4o", "input": "What's the weather in Paris?", "tools": [{"type": "mcp"}]})
    return [
        Span(TRACE, sid(1), b"", "POST /v1/responses", SPAN_KIND_SERVER, t, t + 900 * ms, 0, "", {
            "tfy.span_type": "AgentResponse", "tfy.request.model": "mock/gpt-4o", "http.response.status_code": 200,
            "tfy.data_routing.destination": "mock/gpt-4o", "tfy.request.created_by_subject": "user:alice",
            "tfy.input": body.encode(), "tfy.output": b'{"object":"response","output":[]}',
            "tfy.model.metric.latency_in_ms": 900.0,
        }),
        Span(TRACE, sid(2), sid(1), "auth", SPAN_KIND_INTERNAL, t + 1 * ms, t + 2 * ms, 0, "", {}),
        Span(TRACE, sid(3), sid(1), "invoke_agent", SPAN_KIND_INTERNAL, t + 3 * ms, t + 890 * ms, 0, "",
             {"gen_ai.operation.name": "invoke_agent", "openinference.span.kind": "AGENT"}),
        Span(TRACE, sid(4), sid(3), "chat gpt-4o", SPAN_KIND_CLIENT, t + 5 * ms, t + 300 * ms, 0, "", {
            **chat, "gen_ai.input.messages": j(user), "gen_ai.output.messages": j(first_out),
            "gen_ai.usage.input_tokens": 20, "gen_ai.usage.output_tokens": 10,
        }),
        Span(TRACE, sid(5), sid(3), "execute_tool get_weather", SPAN_KIND_CLIENT, t + 310 * ms, t + 500 * ms, 0, "", {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather", "mcp.method.name": "tools/call",
            "tfy.mcp.server": "weather", "gen_ai.tool.call.id": "call_7",
            "gen_ai.tool.call.arguments": j({"city": "Paris"}), "gen_ai.tool.call.result": j({"temp_c": 18}),
        }),
        Span(TRACE, sid(6), sid(3), "chat gpt-4o", SPAN_KIND_CLIENT, t + 510 * ms, t + 880 * ms, 0, "", {
            **chat, "gen_ai.input.messages": j(second_in), "gen_ai.output.messages": j(final),
            "gen_ai.usage.input_tokens": 40, "gen_ai.usage.output_tokens": 12,
        }),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    store = TraceStore(StoreConfig(path=str(tmp_path_factory.mktemp("agent") / "t.duckdb")))
    web = StoreWeb(store, UiConfig(), lambda h: ANONYMOUS, lambda: True)
    listen = f"127.0.0.1:{free_port()}"

    async def setup() -> Any:
        await store.export(SpanBatch(SCHEMA_VERSION, Resource("gw", "0", "h"), agent_spans()))
        await store.flush()
        return await serve_http(web, listen)

    runner = asyncio.run_coroutine_threadsafe(setup(), loop).result(30)
    yield f"http://{listen}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    asyncio.run_coroutine_threadsafe(store.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_agent_row_sums_model_calls_and_counts_tools(server: str) -> None:
    (row,) = httpx.get(server + "/api/v1/traces", timeout=10).json()["data"]
    assert row["span_type"] == "AgentResponse" and row["model"] == "mock/gpt-4o"
    assert (row["input_tokens"], row["output_tokens"], row["tool_calls"]) == (60, 22, 1)
    detail = httpx.get(server + f"/api/v1/traces/{TRACE.hex()}", timeout=10).json()
    (root,) = detail["spans"]
    agent = next(c for c in root["children"] if c["name"] == "invoke_agent")
    assert [c["name"] for c in agent["children"]] == ["chat gpt-4o", "execute_tool get_weather", "chat gpt-4o"]
    assert root["attributes"]["tfy.input"].startswith('{"model"')  # bodies back on the root


def test_agent_trace_page(browser: Any, server: str) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    browser.get(server + f"/ui#/trace/{TRACE.hex()}")
    convo = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "div#conversation"), what="conversation")
    messages = convo.find_elements(By.CSS_SELECTOR, ".msg")
    kinds = [m.get_attribute("class").split()[1] for m in messages]
    assert kinds == ["user", "assistant", "tool", "assistant"], kinds
    assert "get_weather" in messages[1].text and "Paris" in messages[1].text
    tool = messages[2].text.lower()  # the role line is upper-cased by CSS
    assert "get_weather on weather" in tool and "temp_c" in tool and "paris" in tool
    assert "18°C and clear in Paris." in messages[3].text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#waterfall .wf-row[data-span-id]")) == 6
    screenshot(browser, "agent-trace")
