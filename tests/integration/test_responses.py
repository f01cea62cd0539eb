"""/v1/responses through the real gateway with the official openai SDK.

Three targets behind one mock: an OpenAI-type provider that speaks Responses (passed
through), an OpenAI-compatible chat-only provider and an Anthropic provider (both translated
through the chat hub). Two API keys, so one caller can try to read the other's responses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Proc, provider, start_gateway

pytestmark = pytest.mark.timeout(60)

TARGETS = ["native/gpt-4o", "chat/gpt-4o", "claude/claude-x"]
TEXT = "".join(f"tok{i} " for i in range(8))
# The mock models follow scripts in the user's text (bench/mock_responses.py).
ASK_WEATHER = 'what is the weather in Paris? call get_weather {"location": "Paris"}'
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def gateway_config(mock_url: str, **responses: object) -> dict:
    return {
        "providers": [
            provider("native", mock_url, ["gpt-4o", "error-400", "cut-5"], responses="native"),
            provider("chat", mock_url, ["gpt-4o", "error-503", "cut-4"]),
            {"name": "claude", "type": "anthropic", "base_url": mock_url, "api_key": "sk-ant",
             "models": ["claude-x"]},  # fmt: skip
        ],
        "auth": {
            "api_keys": [
                {"subject": "user:alice", "key_sha256": _sha("sk-alice")},
                {"subject": "user:bob", "key_sha256": _sha("sk-bob")},
            ]
        },
        "responses": {"drop_builtin_tools": ["web_search_preview"], **responses},
    }


@pytest.fixture(scope="module")
def gateway(mock: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = start_gateway(gateway_config(mock.url), tmp_path_factory.mktemp("gw-responses"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def alice(gateway: Proc) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-alice", max_retries=0, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def bob(gateway: Proc) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-bob", max_retries=0, timeout=10) as c:
        yield c


def _last_upstream(mock: Proc) -> dict:
    seen = httpx.get(mock.url + "/_mock/requests").json()[-1]
    return {"path": seen["path"], "body": json.loads(seen["body"])}


@pytest.mark.parametrize("model", TARGETS)
def test_create_every_target(alice: openai.OpenAI, mock: Proc, model: str) -> None:
    resp = alice.responses.create(model=model, input="hi", instructions="be brief", max_output_tokens=50)
    assert resp.status == "completed"
    assert resp.output_text == TEXT
    assert resp.usage is not None and resp.usage.input_tokens == 12 and resp.usage.output_tokens == 8
    assert resp.usage.input_tokens_details.cached_tokens == 0
    assert resp.usage.output_tokens_details.reasoning_tokens == 0
    upstream = _last_upstream(mock)
    if model.startswith("native/"):
        assert upstream["path"] == "/v1/responses"
        assert upstream["body"]["model"] == "gpt-4o" and upstream["body"]["input"] == "hi"
    elif model.startswith("chat/"):
        assert upstream["path"] == "/v1/chat/completions"
        assert upstream["body"]["messages"] == [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ]
        assert upstream["body"]["max_completion_tokens"] == 50
    else:
        assert upstream["path"] == "/v1/messages"
        assert upstream["body"]["system"] == "be brief" and upstream["body"]["max_tokens"] == 50


@pytest.mark.parametrize("model", TARGETS)
def test_stream_every_target(alice: openai.OpenAI, model: str) -> None:
    with alice.responses.stream(model=model, input="hi") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == TEXT and final.output_text == TEXT
    assert "response.output_text.done" in kinds and "response.content_part.done" in kinds
    assert final.usage is not None and final.usage.output_tokens == 8


@pytest.mark.parametrize("model", TARGETS)
def test_function_tool_round_trip_with_previous_response_id(
    alice: openai.OpenAI, mock: Proc, model: str
) -> None:
    first = alice.responses.create(model=model, input=ASK_WEATHER, tools=[WEATHER_TOOL])
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"location": "Paris"}
    second = alice.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21C"}],
        tools=[WEATHER_TOOL],
    )
    assert second.previous_response_id == first.id
    if not model.startswith("claude/"):
        assert second.output_text == "The tool said: sunny, 21C"
        return
    # The Anthropic mock does not quote tool results: the request shows the round trip.
    assert second.output_text
    messages = _last_upstream(mock)["body"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"][-1]["type"] == "tool_use"
    result = messages[2]["content"][0]
    assert result["type"] == "tool_result" and result["content"] == "sunny, 21C"
    assert result["tool_use_id"] == calls[0].call_id


@pytest.mark.parametrize("model", ["chat/gpt-4o", "claude/claude-x"])
def test_streamed_function_call_arguments(alice: openai.OpenAI, model: str) -> None:
    with alice.responses.stream(model=model, input=ASK_WEATHER, tools=[WEATHER_TOOL]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"location": "Paris"}
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and json.loads(done[0].arguments) == {"location": "Paris"}
    assert [o.type for o in final.output][-1] == "function_call"  # after any text


def test_retrieve_and_input_items(alice: openai.OpenAI) -> None:
    resp = alice.responses.create(
        model="chat/gpt-4o",
        input=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
        metadata={"k": "v"},
    )
    got = alice.responses.retrieve(resp.id)
    assert got.id == resp.id and got.output_text == TEXT and got.metadata == {"k": "v"}
    items = alice.responses.input_items.list(resp.id)
    texts = [i.content[0].text for i in items.data]
    assert texts == ["two", "one"]  # newest first, as OpenAI lists them
    asc = alice.responses.input_items.list(resp.id, order="asc", limit=1)
    assert [i.content[0].text for i in asc.data] == ["one"] and asc.has_more


def test_previous_response_id_carries_the_conversation(alice: openai.OpenAI, mock: Proc) -> None:
    first = alice.responses.create(model="claude/claude-x", input="my name is Ada", instructions="sys one")
    alice.responses.create(model="chat/gpt-4o", input="what is my name?", previous_response_id=first.id)
    messages = _last_upstream(mock)["body"]["messages"]
    # instructions are not carried over; the earlier turn (on another provider) is
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": "my name is Ada"}]},
        {"role": "assistant", "content": TEXT},
        {"role": "user", "content": [{"type": "text", "text": "what is my name?"}]},
    ]


def test_previous_response_id_expanded_for_native_target(alice: openai.OpenAI, mock: Proc) -> None:
    first = alice.responses.create(model="chat/gpt-4o", input="remember 42")
    alice.responses.create(model="native/gpt-4o", input="what number?", previous_response_id=first.id)
    body = _last_upstream(mock)["body"]
    assert "previous_response_id" not in body
    assert [i.get("role") for i in body["input"]] == ["user", "assistant", "user"]
    assert body["input"][-1]["content"] == "what number?"


def test_store_false_keeps_nothing(alice: openai.OpenAI) -> None:
    resp = alice.responses.create(model="chat/gpt-4o", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        alice.responses.retrieve(resp.id)


def test_whole_history_with_store_false(alice: openai.OpenAI, mock: Proc) -> None:
    """Codex CLI style: no state, the whole history every time."""
    history = [
        {"role": "user", "content": ASK_WEATHER},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "rain"},
    ]
    resp = alice.responses.create(model="chat/gpt-4o", input=history, store=False, tools=[WEATHER_TOOL])
    assert resp.output_text == "The tool said: rain"
    resp = alice.responses.create(model="claude/claude-x", input=history, store=False, tools=[WEATHER_TOOL])
    assert resp.status == "completed"
    messages = _last_upstream(mock)["body"]["messages"]
    assert messages[1]["content"][0]["type"] == "tool_use" and messages[2]["content"][0]["content"] == "rain"


def test_delete(alice: openai.OpenAI) -> None:
    resp = alice.responses.create(model="chat/gpt-4o", input="hi")
    alice.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        alice.responses.retrieve(resp.id)


def test_other_callers_responses_do_not_exist(alice: openai.OpenAI, bob: openai.OpenAI) -> None:
    resp = alice.responses.create(model="chat/gpt-4o", input="secret")
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.input_items.list(resp.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(resp.id)
    with pytest.raises(openai.BadRequestError) as err:
        bob.responses.create(model="chat/gpt-4o", input="hi", previous_response_id=resp.id)
    assert err.value.code == "previous_response_not_found"
    assert err.value.param == "previous_response_id"
    assert alice.responses.retrieve(resp.id).id == resp.id  # still there for its owner


def test_unknown_previous_response_id(alice: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        alice.responses.create(model="native/gpt-4o", input="hi", previous_response_id="resp_nope")
    assert err.value.code == "previous_response_not_found"


def test_builtin_tool_on_translated_target_is_refused(alice: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        alice.responses.create(model="chat/gpt-4o", input="hi", tools=[{"type": "file_search", "vector_store_ids": ["x"]}])
    assert err.value.param == "tools[0].type"
    assert "file_search" in err.value.message


def test_builtin_tool_passes_to_native_target(alice: openai.OpenAI, mock: Proc) -> None:
    alice.responses.create(model="native/gpt-4o", input="hi", tools=[{"type": "web_search"}])
    assert _last_upstream(mock)["body"]["tools"] == [{"type": "web_search"}]


def test_operator_listed_builtin_tool_is_dropped_and_reported(gateway: Proc, mock: Proc) -> None:
    resp = httpx.post(
        gateway.url + "/v1/responses",
        headers={"authorization": "Bearer sk-alice"},
        json={"model": "chat/gpt-4o", "input": "hi", "tools": [{"type": "web_search_preview"}, WEATHER_TOOL]},
    )
    assert resp.status_code == 200
    assert resp.headers["x-tfy-dropped-tools"] == "web_search_preview"
    assert [t["function"]["name"] for t in _last_upstream(mock)["body"]["tools"]] == ["get_weather"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "chat/gpt-4o"}, "input"),
        ({"input": "hi"}, "model"),
        ({"model": "chat/gpt-4o", "input": 5}, "input"),
        ({"model": "chat/gpt-4o", "input": [5]}, "input[0]"),
        ({"model": "chat/gpt-4o", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "chat/gpt-4o", "input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
        ({"model": "chat/gpt-4o", "input": [{"type": "bogus"}]}, "input[0].type"),
        ({"model": "chat/gpt-4o", "input": "hi", "stream": "yes"}, "stream"),
        ({"model": "chat/gpt-4o", "input": "hi", "background": True}, "background"),
        ({"model": "chat/gpt-4o", "input": "hi", "conversation": "c"}, "conversation"),
        ({"model": "chat/gpt-4o", "input": "hi", "tool_choice": {"type": "file_search"}, "tools": [WEATHER_TOOL]},
         "tool_choice"),  # fmt: skip
    ],
)
def test_bad_input_is_a_400_naming_the_field(gateway: Proc, body: dict, param: str) -> None:
    resp = httpx.post(gateway.url + "/v1/responses", headers={"authorization": "Bearer sk-alice"}, json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param


def test_malformed_json_and_auth(gateway: Proc) -> None:
    resp = httpx.post(gateway.url + "/v1/responses", headers={"authorization": "Bearer sk-alice"}, content=b"{")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
    resp = httpx.post(gateway.url + "/v1/responses", json={"model": "chat/gpt-4o", "input": "hi"})
    assert resp.status_code == 401
    resp = httpx.get(gateway.url + "/v1/responses/resp_x")
    assert resp.status_code == 401
    resp = httpx.get(gateway.url + "/v1/responses", headers={"authorization": "Bearer sk-alice"})
    assert resp.status_code == 405


def test_upstream_error_status_relayed(alice: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        alice.responses.create(model="native/error-400", input="hi")
    with pytest.raises(openai.InternalServerError):
        alice.responses.create(model="chat/error-503", input="hi")


@pytest.mark.parametrize("model", ["native/cut-5", "chat/cut-4"])
def test_stream_cut_short_ends_with_failure(gateway: Proc, model: str) -> None:
    with httpx.stream(
        "POST", gateway.url + "/v1/responses", headers={"authorization": "Bearer sk-alice"},
        json={"model": model, "input": "hi", "stream": True}, timeout=10,
    ) as resp:  # fmt: skip
        assert resp.status_code == 200
        events = [json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:")]
    assert events[-1]["type"] in ("response.failed", "error")
    assert all(e["type"] != "response.completed" for e in events)


def test_unknown_model(alice: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        alice.responses.create(model="nope/x", input="hi")


def test_config_rejects_native_anthropic(tmp_path: Path, mock: Proc) -> None:
    cfg = gateway_config(mock.url)
    cfg["providers"][2]["responses"] = "native"
    with pytest.raises(RuntimeError, match="only openai-type providers"):
        start_gateway(cfg, tmp_path)
