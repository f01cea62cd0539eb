"""Gateway-run MCP tools in /v1/responses: real MCP servers (official SDK) behind the registry.

The mock model follows scripts in the user's text (``call add {"a": 2, "b": 3} then …``), so
every step of the loop is the gateway's doing: listing, calling, feeding results back.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import LOG_DIR, ROOT, Proc, free_port, provider, start_gateway

pytestmark = pytest.mark.timeout(90)

TARGETS = ["native/gpt-4o", "chat/gpt-4o", "claude/claude-x"]
TOOLS = {"type": "mcp", "server_label": "tools", "require_approval": "never"}


def _start_mcp(name: str) -> Proc:
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"mcp-{port}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tests.mcp_upstream", "--port", str(port), "--name", name],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=0.5)
            return Proc(popen, url, log)
        except httpx.TransportError:
            time.sleep(0.1)
    popen.kill()
    raise RuntimeError(f"MCP server did not start: {log.read_text()}")


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[Proc]:
    proc = _start_mcp("tools")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gateway(mock: Proc, mcp_server: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    config = {
        "providers": [
            provider("native", mock.url, ["gpt-4o"], responses="native"),
            provider("chat", mock.url, ["gpt-4o"]),
            {"name": "claude", "type": "anthropic", "base_url": mock.url, "api_key": "k", "models": ["claude-x"]},
        ],
        "virtual_models": [{"name": "agent-claude", "load_balance_targets": [{"target": "claude/claude-x"}]},
                           {"name": "agent-chat", "load_balance_targets": [{"target": "chat/gpt-4o"}]}],  # fmt: skip
        "auth": {"api_keys": [{"subject": "user:alice", "key_sha256": _sha("sk-alice")},
                              {"subject": "user:bob", "key_sha256": _sha("sk-bob")}]},  # fmt: skip
        "mcp_servers": [{"name": "tools", "url": mcp_server.url, "timeout_s": 2}],
        "access_mcp": [{"subjects": ["user:alice"], "servers": ["tools"], "tools": ["*"]},
                       {"subjects": ["user:bob"], "servers": ["tools"], "tools": ["echo"]}],  # fmt: skip
        "responses": {"max_tool_calls": 3},
    }
    proc = start_gateway(config, tmp_path_factory.mktemp("gw-mcp"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def alice(gateway: Proc) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-alice", max_retries=0, timeout=20) as c:
        yield c


def _types(resp: Any) -> list[str]:
    return [o.type for o in resp.output]


@pytest.mark.parametrize("model", TARGETS)
def test_loop_runs_mcp_tools_for_every_target(alice: openai.OpenAI, mock: Proc, model: str) -> None:
    resp = alice.responses.create(
        model=model, tools=[TOOLS], input='call add {"a": 2, "b": 3} then call echo {"text": "hi"}'
    )
    assert resp.status == "completed"
    # (the Anthropic mock says "Calling." before each tool use: a message item each time)
    assert [t for t in _types(resp) if t != "message"] == ["mcp_list_tools", "mcp_call", "mcp_call"]
    assert _types(resp)[-1] == "message"
    listing = resp.output[0]
    assert listing.server_label == "tools" and {"add", "echo", "fail"} <= {t.name for t in listing.tools}
    add, echo = (o for o in resp.output if o.type == "mcp_call")
    assert (add.name, json.loads(add.arguments), add.output) == ("add", {"a": 2, "b": 3}, "5")
    assert (echo.name, echo.output, echo.error) == ("echo", "hi", None)
    assert resp.output_text.endswith("The tool said: hi")
    assert resp.usage is not None and resp.usage.input_tokens == 36  # three model calls
    # MCP tools never reach the provider: they are offered as function tools
    sent = json.loads(httpx.get(mock.url + "/_mock/requests").json()[-1]["body"])
    assert "mcp" not in json.dumps(sent.get("tools"))


def test_streamed_loop(alice: openai.OpenAI) -> None:
    with alice.responses.stream(model="chat/gpt-4o", tools=[TOOLS], input='call add {"a": 1, "b": 1}') as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.mcp_list_tools.completed" in kinds and "response.mcp_call.completed" in kinds
    assert kinds.index("response.mcp_call.completed") < kinds.index("response.output_text.delta")
    assert _types(final) == ["mcp_list_tools", "mcp_call", "message"]
    assert final.output_text == "The tool said: 2"


def test_tool_failure_goes_back_to_the_model(alice: openai.OpenAI) -> None:
    resp = alice.responses.create(model="claude/claude-x", tools=[TOOLS], input='call fail {"reason": "x"}')
    call = next(o for o in resp.output if o.type == "mcp_call")
    assert call.output is None and call.error is not None
    assert resp.output[-1].type == "message" and resp.status == "completed"


def test_max_tool_calls_ends_incomplete(alice: openai.OpenAI) -> None:
    script = " then ".join(['call add {"a": 1, "b": 1}'] * 4)
    resp = alice.responses.create(model="chat/gpt-4o", tools=[TOOLS], input=script, max_tool_calls=2)
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None and resp.incomplete_details.reason == "max_tool_calls"
    assert _types(resp).count("mcp_call") == 2
    resp = alice.responses.create(model="chat/gpt-4o", tools=[TOOLS], input=script)  # the gateway cap: 3
    assert resp.status == "incomplete" and _types(resp).count("mcp_call") == 3


def test_approval_then_continue(alice: openai.OpenAI) -> None:
    tools = [{"type": "mcp", "server_label": "tools"}]  # require_approval defaults to always
    first = alice.responses.create(model="chat/gpt-4o", tools=tools, input='call add {"a": 4, "b": 5}')
    assert _types(first) == ["mcp_list_tools", "mcp_approval_request"]
    ask = first.output[1]
    second = alice.responses.create(
        model="chat/gpt-4o",
        tools=tools,
        previous_response_id=first.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": ask.id, "approve": True}],
    )
    assert _types(second) == ["mcp_call", "message"]  # the chain already lists the tools
    assert second.output[0].approval_request_id == ask.id and second.output[0].output == "9"
    assert second.output_text == "The tool said: 9"


def test_allowed_tools_and_access_rules(gateway: Proc, alice: openai.OpenAI) -> None:
    resp = alice.responses.create(
        model="chat/gpt-4o", input="hello", tools=[{**TOOLS, "allowed_tools": ["add", "ec*"]}]
    )
    assert sorted(t.name for t in resp.output[0].tools) == ["add", "echo"]
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-bob", max_retries=0, timeout=20) as bob:
        resp = bob.responses.create(model="chat/gpt-4o", input="hello", tools=[TOOLS])
        assert [t.name for t in resp.output[0].tools] == ["echo"]  # bob's MCP access
        denied = bob.responses.create(model="chat/gpt-4o", input='call add {"a": 1, "b": 1}', tools=[TOOLS])
        # the model named a tool bob may not call: not an MCP tool for him, so it goes back to the client
        assert _types(denied) == ["mcp_list_tools", "function_call"]


def test_hanging_tool_times_out_into_an_error(alice: openai.OpenAI) -> None:
    resp = alice.responses.create(model="chat/gpt-4o", tools=[TOOLS], input='call hang {"seconds": 10}')
    call = resp.output[1]
    assert call.type == "mcp_call" and call.error is not None
    assert resp.output[-1].type == "message"


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ([{"type": "mcp", "server_label": "nope"}], "tools[0].server_label"),
        ([{"type": "mcp"}], "tools[0].server_label"),
    ],
)
def test_bad_mcp_tools(gateway: Proc, tools: list[Any], param: str) -> None:
    resp = httpx.post(
        gateway.url + "/v1/responses", headers={"authorization": "Bearer sk-alice"},
        json={"model": "chat/gpt-4o", "input": "hi", "tools": tools},
    )  # fmt: skip
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param


@pytest.mark.parametrize("stream", [False, True])
def test_approval_response_for_unknown_request(gateway: Proc, stream: bool) -> None:
    resp = httpx.post(
        gateway.url + "/v1/responses", headers={"authorization": "Bearer sk-alice"},
        json={"model": "chat/gpt-4o", "tools": [TOOLS], "stream": stream,
              "input": [{"type": "mcp_approval_response", "approval_request_id": "mcpr_x", "approve": True}]},
    )  # fmt: skip
    # refused before a stream starts: a plain 400, not a failed stream
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "input[0].approval_request_id"


def test_client_leaving_stops_the_loop(gateway: Proc, mock: Proc) -> None:
    httpx.delete(mock.url + "/_mock/requests")
    body = {"model": "chat/gpt-4o", "tools": [TOOLS], "stream": True,
            "input": 'call hang {"seconds": 1.5} then call add {"a": 1, "b": 2}'}  # fmt: skip
    with httpx.stream("POST", gateway.url + "/v1/responses", json=body, timeout=10,
                      headers={"authorization": "Bearer sk-alice"}) as resp:  # fmt: skip
        for line in resp.iter_lines():
            if "response.mcp_list_tools.completed" in line:
                break  # leave while the first tool call hangs
    time.sleep(3)  # longer than the hang: a loop still running would have called the model again
    calls = [r for r in httpx.get(mock.url + "/_mock/requests").json() if r["path"].endswith("/chat/completions")]
    assert len(calls) == 1


def test_openai_agents_with_a_hosted_mcp_tool(gateway: Proc) -> None:
    import asyncio

    from agents import (
        Agent,
        HostedMCPTool,
        Runner,
        set_default_openai_api,
        set_default_openai_client,
        set_tracing_disabled,
    )

    async def run() -> None:
        set_tracing_disabled(True)
        set_default_openai_api("responses")
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-alice", max_retries=0, timeout=20)
        set_default_openai_client(client, use_for_tracing=False)
        for model in ("agent-chat", "agent-claude"):
            agent = Agent(name="calc", instructions="Use the tools.", model=model,
                          tools=[HostedMCPTool(tool_config={"type": "mcp", "server_label": "tools",
                                                            "require_approval": "never"})])  # fmt: skip
            result = await Runner.run(agent, 'call add {"a": 20, "b": 22} then call echo {"text": "done"}')
            assert result.final_output == "The tool said: done"
            kinds = [item.type for item in result.new_items]
            assert kinds.count("tool_call_item") >= 2 or "mcp_list_tools_item" in kinds
            follow = await Runner.run(agent, "thanks", previous_response_id=result.last_response_id)
            assert follow.final_output
        await client.close()

    asyncio.run(run())
