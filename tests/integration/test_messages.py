"""/v1/messages and /v1/messages/count_tokens through the real gateway, with the anthropic SDK.

Against an Anthropic target (native pass-through) and an OpenAI-type target (through the hub),
both served by the bench mock; plus the fixes real clients found (one header per relayed error,
the translator audit, ``GET /v1/models/{id}``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pydantic
import pytest

from gateway.surfaces.messages import estimate_input_tokens
from tests.conftest import Proc, provider, start_gateway
from tests.sdk_clients import close_sdk_clients, opened  # noqa: F401

pytestmark = pytest.mark.timeout(120)


KEY, OTHER = "sk-msg-0123456789", "sk-other-0123456789"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a place",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def gw(mock: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    config = {
        "providers": [
            provider("oai", mock.url, ["gpt-4o", "error-503", "error-429"]),
            {
                "name": "ant",
                "type": "anthropic",
                "base_url": mock.url,
                "api_key": "sk-upstream-ant",
                "models": ["claude-x", "error-503", "error-429"],
            },
        ],  # fmt: skip
        "virtual_models": [
            {
                "name": "coder",
                "type": "priority-based-routing",
                "load_balance_targets": [
                    {"target": "ant/error-503", "priority": 0, "retry_config": {"attempts": 0}},
                    {"target": "oai/gpt-4o", "priority": 1},
                ],
            }
        ],
        "auth": {
            "api_keys": [
                {"subject": "user:dev", "key_sha256": sha(KEY)},
                {"subject": "user:other", "key_sha256": sha(OTHER)},
            ]
        },
        "access": [
            {"subjects": ["user:dev"], "models": ["*"]},
            {"subjects": ["user:other"], "models": ["oai/gpt-4o"]},
        ],
        "rate_limiting": [
            {
                "id": "other-tokens",
                "when": {"subjects": ["user:other"], "models": ["*"]},
                "limit_to": 30,
                "unit": "tokens_per_minute",
                "rate_limit_applies_per": ["user"],
            }
        ],
    }
    proc = start_gateway(config, tmp_path_factory.mktemp("messages"))
    yield proc
    proc.stop()


def client(gw: Proc, key: str = KEY, **kw: Any) -> anthropic.Anthropic:
    return opened(anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, **kw))


def seen(mock: Proc) -> list[dict[str, Any]]:
    return httpx.get(mock.url + "/_mock/requests").json()


def clear(mock: Proc) -> None:
    httpx.delete(mock.url + "/_mock/requests")


def test_native_pass_through_rewrites_only_the_model(gw: Proc, mock: Proc) -> None:
    clear(mock)
    extra = {
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "a_field_from_the_future": {"x": [1, 2]},
    }
    msg = client(gw).messages.create(
        model="ant/claude-x",
        max_tokens=50,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "hi"}],
        extra_body=extra,
        extra_headers={"anthropic-beta": "context-management-2025-06-27,interleaved-thinking-2025-05-14"},
    )
    assert msg.content[0].text.startswith("tok0")  # type: ignore[union-attr]
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (12, 8)
    (req,) = [r for r in seen(mock) if r["path"] == "/v1/messages"]
    body = json.loads(req["body"])
    assert body["model"] == "claude-x"
    assert {k: body[k] for k in extra} == extra and body["system"][0]["cache_control"] == {
        "type": "ephemeral"
    }
    headers = req["headers"]
    assert headers["anthropic-beta"] == "context-management-2025-06-27,interleaved-thinking-2025-05-14"
    # The client's API version, not the gateway's default (2023-06-01 when a client sends none).
    assert headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert headers["x-api-key"] == "sk-upstream-ant"
    assert "authorization" not in headers  # the client's key stays at the gateway


@pytest.mark.parametrize("model", ["ant/claude-x", "oai/gpt-4o"])
def test_stream_and_create_on_both_target_types(gw: Proc, model: str) -> None:
    c = client(gw)
    with c.messages.stream(model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
        texts = list(s.text_stream)
        final = s.get_final_message()
    assert "".join(texts) == final.content[0].text == "".join(f"tok{i} " for i in range(8))  # type: ignore[union-attr]
    assert (
        final.stop_reason == "end_turn" and final.usage.output_tokens == 8 and final.usage.input_tokens == 12
    )
    cut = c.messages.create(model=model.replace("claude-x", "claude-x"), max_tokens=3, messages=ASK)
    if model.startswith("ant/"):
        assert cut.stop_reason == "max_tokens"


def test_tools_and_images_to_an_anthropic_target(gw: Proc) -> None:
    c = client(gw)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    content = [image, {"type": "text", "text": "What is the weather in Paris?"}]
    msg = c.messages.create(
        model="ant/claude-x",
        max_tokens=200,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": content}],
    )
    tool = next(b for b in msg.content if b.type == "tool_use")
    assert msg.stop_reason == "tool_use" and tool.input == {"location": "Paris"}  # type: ignore[union-attr]
    with c.messages.stream(model="ant/claude-x", max_tokens=200, tools=[WEATHER_TOOL], messages=ASK) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"] and final.content[1].input == {
        "location": "Paris"
    }  # type: ignore[union-attr]


def test_tools_images_and_tool_results_translated_for_an_openai_target(gw: Proc, mock: Proc) -> None:
    clear(mock)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    messages = [
        {"role": "user", "content": [image, {"type": "text", "text": "Weather?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "call the tool", "signature": "sig"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"location": "Zürich"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "rain"}], "is_error": False},
            {"type": "text", "text": "Summarise."},
        ]},
    ]  # fmt: skip
    msg = client(gw).messages.create(
        model="oai/gpt-4o", max_tokens=100, system="Be brief.", tools=[WEATHER_TOOL],
        tool_choice={"type": "any", "disable_parallel_tool_use": True}, messages=messages,  # type: ignore[arg-type]
        stop_sequences=["END"], metadata={"user_id": "u-1"}, extra_body={"temperature": 0.5},
    )  # fmt: skip
    assert msg.content[0].type == "text"
    (req,) = [r for r in seen(mock) if r["path"] == "/v1/chat/completions"]
    sent = json.loads(req["body"])
    assert sent["model"] == "gpt-4o" and sent["max_completion_tokens"] == 100 and sent["stop"] == ["END"]
    assert sent["temperature"] == 0.5
    assert (
        sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False and sent["user"] == "u-1"
    )
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool", "user"]
    assert sent["messages"][1]["content"][0] == {
        "type": "image_url",
        "image_url": {"url": f"data:image/png;base64,{PNG}"},
    }
    calls = sent["messages"][2]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [
        {"location": "Paris"},
        {"location": "Zürich"},
    ]
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}
    assert req["headers"]["authorization"] == "Bearer sk-test"


def test_a_field_an_openai_target_cannot_honour_is_refused_by_name(gw: Proc) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client(gw).messages.create(model="oai/gpt-4o", max_tokens=10, messages=ASK, extra_body={"top_k": 5})
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "top_k" in info.value.body["error"]["message"]  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as info:
        client(gw).messages.create(model="oai/gpt-4o", max_tokens=10, messages=ASK,
                                   tools=[{"type": "web_search_20250305", "name": "web_search"}])  # fmt: skip
    assert "tools[0].type" in info.value.body["error"]["message"]  # type: ignore[index]


@pytest.mark.parametrize("model", ["ant/claude-x", "oai/gpt-4o"])
def test_count_tokens(gw: Proc, mock: Proc, model: str) -> None:
    clear(mock)
    req = {
        "messages": [{"role": "user", "content": "hello there, how are you today?"}],
        "system": "Be brief.",
    }
    count = client(gw).messages.count_tokens(model=model, **req)  # type: ignore[arg-type]
    upstream = [r for r in seen(mock) if r["path"].endswith("/count_tokens")]
    if model.startswith("ant/"):
        (sent,) = upstream
        assert json.loads(sent["body"])["model"] == "claude-x"
        assert count.input_tokens == len(sent["body"].encode()) // 4  # the mock's own count, relayed
    else:
        assert upstream == []  # an estimate, answered by the gateway
        assert count.input_tokens == estimate_input_tokens(req) > 0


def test_errors_in_anthropic_shape(gw: Proc, mock: Proc) -> None:
    with pytest.raises(anthropic.AuthenticationError) as auth:
        client(gw, key="sk-wrong").messages.create(model="ant/claude-x", max_tokens=5, messages=ASK)
    assert auth.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": auth.value.body["error"]["message"]},
    }  # type: ignore[index]
    bearer = client(gw, key="unused", default_headers={"authorization": f"Bearer {KEY}", "x-api-key": ""})
    assert bearer.messages.create(model="ant/claude-x", max_tokens=5, messages=ASK).content
    with pytest.raises(anthropic.NotFoundError) as missing:
        client(gw).messages.create(model="nope/none", max_tokens=5, messages=ASK)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    r = httpx.post(gw.url + "/v1/messages", content=b"{not json", headers={"x-api-key": KEY})
    assert (
        r.status_code == 400
        and r.json()["type"] == "error"
        and r.json()["error"]["type"] == "invalid_request_error"
    )
    r = httpx.post(
        gw.url + "/v1/messages", json={"model": "ant/claude-x", "messages": []}, headers={"x-api-key": KEY}
    )
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    r = httpx.get(gw.url + "/v1/messages", headers={"x-api-key": KEY})
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
    for model in ("ant/error-429", "oai/error-429"):  # relayed (Anthropic) and re-encoded (OpenAI)
        with pytest.raises(anthropic.RateLimitError) as limited:
            client(gw).messages.create(model=model, max_tokens=5, messages=ASK)
        assert (
            limited.value.body["type"] == "error"
            and limited.value.body["error"]["type"] == "rate_limit_error"
        )  # type: ignore[index]
        headers = limited.value.response.headers
        assert len(headers.get_list("content-type")) == 1 and len(headers.get_list("x-request-id")) == 1


def test_fallback_from_an_anthropic_to_an_openai_target(gw: Proc) -> None:
    msg = client(gw).messages.create(model="coder", max_tokens=20, messages=ASK)
    assert msg.content[0].text.startswith("tok0") and msg.type == "message"  # type: ignore[union-attr]


def test_rate_limit_charges_real_usage(gw: Proc) -> None:
    c = client(gw, key=OTHER)
    statuses = []
    for _ in range(4):  # 20 tokens a call against a 30-token minute
        try:
            c.messages.create(model="oai/gpt-4o", max_tokens=5, messages=ASK)
            statuses.append(200)
        except anthropic.RateLimitError as exc:
            statuses.append(429)
            assert exc.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert statuses[0] == 200 and 429 in statuses


def test_relayed_openai_errors_carry_each_header_once(gw: Proc) -> None:
    oai = opened(openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0))
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model="oai/error-429", messages=[{"role": "user", "content": "hi"}])
    headers = info.value.response.headers
    assert len(headers.get_list("content-type")) == 1 and len(headers.get_list("x-request-id")) == 1
    assert info.value.request_id == headers["x-request-id"] and "," not in (info.value.request_id or "")


class Weather(pydantic.BaseModel):
    location: str


def test_openai_sdk_parse_through_an_anthropic_target(gw: Proc, mock: Proc) -> None:
    oai = opened(openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0))
    clear(mock)
    done = oai.chat.completions.parse(
        model="ant/claude-x",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        response_format=Weather,
    )
    assert (
        done.choices[0].message.parsed == Weather(location="Paris")
        and done.choices[0].finish_reason == "stop"
    )
    (req,) = [r for r in seen(mock) if r["path"] == "/v1/messages"]
    sent = json.loads(req["body"])
    assert (
        sent["tool_choice"]["type"] == "tool" and sent["tools"][0]["input_schema"]["properties"]["location"]
    )
    with oai.chat.completions.stream(
        model="ant/claude-x", messages=[{"role": "user", "content": "weather?"}], response_format=Weather
    ) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.parsed == Weather(location="Paris")
    for field, value in (("logprobs", True), ("seed", 7), ("frequency_penalty", 0.5)):
        with pytest.raises(openai.BadRequestError) as info:
            oai.chat.completions.create(
                model="ant/claude-x", messages=[{"role": "user", "content": "hi"}], **{field: value}
            )
        assert info.value.body["param"] == field  # type: ignore[index]


def test_models_retrieve_with_visibility(gw: Proc) -> None:
    assert (
        opened(openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY)).models.retrieve("ant/claude-x").id
        == "ant/claude-x"
    )
    other = opened(openai.OpenAI(base_url=gw.url + "/v1", api_key=OTHER, max_retries=0))
    assert other.models.retrieve("oai/gpt-4o").id == "oai/gpt-4o"
    with pytest.raises(openai.NotFoundError):
        other.models.retrieve("ant/claude-x")  # exists, but not for this caller
    with pytest.raises(openai.NotFoundError):
        other.models.retrieve("oai/none")
    info = client(gw).models.retrieve("coder")
    assert info.id == "coder" and info.type == "model"
    assert [m.id for m in client(gw, key=OTHER).models.list()] == ["oai/gpt-4o"]


def test_metrics_count_messages_like_chat(gw: Proc) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def tokens() -> dict[tuple[str, str], float]:
        text = httpx.get(gw.url + "/metrics").text
        out: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name in ("llm_gateway_input_tokens_total", "llm_gateway_output_tokens_total"):
                    key = (s.name.split("_")[2], s.labels.get("model_name", ""))
                    out[key] = out.get(key, 0) + s.value
        return out

    models = ("ant/claude-x", "oai/gpt-4o")
    before = tokens()
    c = client(gw)
    for model in models:
        with c.messages.stream(model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
            s.get_final_message()
        c.messages.create(model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    expected = {
        (kind, m): n for m in models for kind, n in (("input", 24), ("output", 16))
    }  # the mock's 12/8, twice
    deadline = time.monotonic() + 5
    while True:  # metrics are flushed to the scrape at least once a second
        now = tokens()
        got = {key: now.get(key, 0) - before.get(key, 0) for key in expected}
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got == expected
