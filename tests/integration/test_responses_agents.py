"""openai-agents with its default model (the Responses API) pointed at the gateway.

A function tool round trip through ``Runner.run`` and ``Runner.run_streamed``, against an
OpenAI-type target (passed through), a chat-only one and an Anthropic one (translated), and a
conversation continued with ``previous_response_id``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from agents import (
    Agent,
    ModelSettings,
    Runner,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from tests.conftest import Proc, provider, start_gateway

pytestmark = pytest.mark.timeout(60)

# Virtual models (the SDK reads "x/y" as a provider prefix); "agent-fallback" fails over from a
# passed-through target to a translated one.
TARGETS = ["agent-native", "agent-chat", "agent-claude", "agent-fallback"]


@pytest.fixture(scope="module")
def gateway(mock: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    config = {
        "providers": [
            provider("native", mock.url, ["gpt-4o", "error-503"], responses="native"),
            provider("chat", mock.url, ["gpt-4o"]),
            {"name": "claude", "type": "anthropic", "base_url": mock.url, "api_key": "k", "models": ["claude-x"]},
        ],
        "virtual_models": [
            {"name": "agent-native", "load_balance_targets": [{"target": "native/gpt-4o"}]},
            {"name": "agent-chat", "load_balance_targets": [{"target": "chat/gpt-4o"}]},
            {"name": "agent-claude", "load_balance_targets": [{"target": "claude/claude-x"}]},
            {
                "name": "agent-fallback",
                "type": "priority-based-routing",
                "load_balance_targets": [
                    {"target": "native/error-503", "priority": 0, "retry_config": {"attempts": 0}},
                    {"target": "chat/gpt-4o", "priority": 1},
                ],
            },
        ],
    }
    proc = start_gateway(config, tmp_path_factory.mktemp("gw-agents"))
    yield proc
    proc.stop()


calls: list[str] = []
ASK = 'What is the weather in Paris? call get_weather {"location": "Paris"}'  # the mock's script


@function_tool
def get_weather(location: str) -> str:
    """The weather in a city."""
    calls.append(location)
    return f"sunny in {location}"


def _agent(model: str) -> Agent[Any]:
    return Agent(
        name="weather",
        instructions="Answer with the weather tool.",
        tools=[get_weather],
        model=model,  # a name: the SDK's default provider, i.e. the Responses API
        model_settings=ModelSettings(temperature=0.1),
    )


def _setup(gateway: Proc) -> AsyncOpenAI:
    set_tracing_disabled(True)  # the SDK would export its own traces to api.openai.com
    set_default_openai_api("responses")
    client = AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=10)
    set_default_openai_client(client, use_for_tracing=False)
    return client


@pytest.mark.parametrize("model", TARGETS)
def test_runner_run_with_a_function_tool(gateway: Proc, model: str) -> None:
    async def run() -> None:
        client = _setup(gateway)
        calls.clear()
        result = await Runner.run(_agent(model), ASK)
        assert calls == ["Paris"]
        if model != "agent-claude":  # the Anthropic mock does not quote tool results
            assert result.final_output == "The tool said: sunny in Paris"
        else:
            assert result.final_output
        # continue the conversation from the stored response
        follow = await Runner.run(_agent(model), "thanks", previous_response_id=result.last_response_id)
        assert follow.final_output
        await client.close()

    asyncio.run(run())


@pytest.mark.parametrize("model", TARGETS)
def test_runner_run_streamed(gateway: Proc, model: str) -> None:
    async def run() -> None:
        client = _setup(gateway)
        calls.clear()
        result = Runner.run_streamed(_agent(model), ASK)
        kinds = []
        async for event in result.stream_events():
            if event.type == "raw_response_event":
                kinds.append(event.data.type)
        assert calls == ["Paris"]
        assert "response.function_call_arguments.delta" in kinds
        assert kinds.count("response.completed") == 2  # the tool call, then the answer
        assert result.final_output
        await client.close()

    asyncio.run(run())
