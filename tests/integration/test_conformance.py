"""Conformance: recorded-shape provider traffic through every inbound × provider pair.

The replay upstream (``tests/replay_upstream.py``) answers from ``tests/fixtures/``: OpenAI
chunks with ``"usage": null`` on every chunk and ``obfuscation`` fields, parallel tool calls
whose arguments stream in fragments, reasoning, refusals, ``n=2``, Anthropic event sequences
with thinking, signatures and tool use, errors in mid-stream. Streams arrive in 7-byte pieces,
so events and UTF-8 characters are split. Each case asserts what the official SDK parses:
``openai`` on /v1/chat/completions, ``anthropic`` on /v1/messages, against an OpenAI-type
and an Anthropic target, streamed and not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import Proc, start_gateway
from tests.replay_upstream import FIXTURES, pieces, start_replay
from tests.sdk_clients import close_sdk_clients, opened  # noqa: F401

pytestmark = pytest.mark.timeout(120)


SCENARIOS = ["text", "tools", "refusal", "n2", "midstream_error"]
PROVIDERS = {"openai": "rp-oai", "anthropic": "rp-ant"}
TEXT = "Bonjour! Café ☕ 日本語 🚀 done."
REASONING = "Need weather for two cities."
CALLS = [("get_weather", {"city": "Zürich"}), ("get_weather", {"city": "São Paulo", "unit": "°C"})]
REFUSAL = "I can’t help with that."
TOOLS_OAI = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
TOOLS_ANT = [
    {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
]


@pytest.fixture(scope="module")
def replay() -> Iterator[Proc]:
    proc = start_replay()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gw(replay: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    models = [*SCENARIOS, "script-cc"]
    config = {
        "providers": [
            {
                "name": "rp-oai",
                "type": "openai",
                "base_url": replay.url + "/v1",
                "api_key": "sk-o",
                "models": models,
            },
            {
                "name": "rp-ant",
                "type": "anthropic",
                "base_url": replay.url,
                "api_key": "sk-a",
                "models": models,
            },
        ]
    }
    proc = start_gateway(config, tmp_path_factory.mktemp("conformance"))
    yield proc
    proc.stop()


# --- the openai SDK on /v1/chat/completions ------------------------------------------------------


def chat(gw: Proc, provider: str, scenario: str, stream: bool) -> dict[str, Any]:
    """What the openai SDK hands the caller, reduced to comparable values."""
    client = opened(openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test", max_retries=0))
    kw: dict[str, Any] = {
        "model": f"{PROVIDERS[provider]}/{scenario}",
        "messages": [{"role": "user", "content": "hi"}],
    }
    if scenario == "tools":
        kw["tools"] = TOOLS_OAI
    if scenario == "n2":
        kw["n"] = 2
    if not stream:
        resp = client.chat.completions.create(**kw)
        choices = []
        for c in resp.choices:
            extra = c.message.model_extra or {}
            calls = [(t.function.name, json.loads(t.function.arguments)) for t in c.message.tool_calls or []]
            choices.append(
                {"content": c.message.content, "refusal": c.message.refusal, "reasoning": extra.get("reasoning_content"),
                 "calls": calls, "finish": c.finish_reason}
            )  # fmt: skip
        return {"choices": choices, "usage": resp.usage.model_dump(exclude_none=True) if resp.usage else None}
    acc: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage.model_dump(exclude_none=True)
        for c in chunk.choices:
            a = acc.setdefault(
                c.index, {"content": None, "refusal": None, "reasoning": None, "calls": {}, "finish": None}
            )
            d = c.delta
            for key, value in (
                ("content", d.content),
                ("refusal", d.refusal),
                ("reasoning", (d.model_extra or {}).get("reasoning_content")),
            ):
                if value:
                    a[key] = (a[key] or "") + value
            for t in d.tool_calls or []:
                call = a["calls"].setdefault(t.index, {"name": "", "args": ""})
                if t.function and t.function.name:
                    call["name"] = t.function.name
                if t.function and t.function.arguments:
                    call["args"] += t.function.arguments
            if c.finish_reason:
                a["finish"] = c.finish_reason
    choices = []
    for _, a in sorted(acc.items()):
        a["calls"] = [(c["name"], json.loads(c["args"])) for _, c in sorted(a["calls"].items())]
        choices.append(a)
    return {"choices": choices, "usage": usage}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("scenario", ["text", "tools", "refusal"])
def test_openai_sdk_on_chat(gw: Proc, provider: str, scenario: str, stream: bool) -> None:
    out = chat(gw, provider, scenario, stream)
    (choice,) = out["choices"]
    usage = out["usage"]
    if scenario == "text":
        assert choice["content"] == TEXT and choice["finish"] == "stop"
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (20, 9)
        assert usage["prompt_tokens_details"]["cached_tokens"] == 4
    elif scenario == "tools":
        assert choice["content"] == "Checking both." and choice["calls"] == CALLS
        assert choice["reasoning"] == REASONING and choice["finish"] == "tool_calls"
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (120, 45)
        assert usage["prompt_tokens_details"]["cached_tokens"] == 100
    elif provider == "openai":  # a refusal, as OpenAI sends it
        assert choice["refusal"] == REFUSAL and choice["content"] is None and choice["finish"] == "stop"
    else:  # Anthropic's refusal stop: the text it sent, finish_reason content_filter
        assert choice["content"] == REFUSAL and choice["finish"] == "content_filter"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openai_sdk_n2(gw: Proc, stream: bool) -> None:
    out = chat(gw, "openai", "n2", stream)
    assert [(c["content"], c["finish"]) for c in out["choices"]] == [
        ("Première réponse", "stop"),
        ("Second answer ✓", "length"),
    ]
    with pytest.raises(openai.BadRequestError) as info:
        chat(gw, "anthropic", "n2", stream)
    assert info.value.body["param"] == "n"  # type: ignore[index]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_openai_sdk_midstream_error(gw: Proc, provider: str) -> None:
    client = opened(openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test", max_retries=0))
    seen = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(
            model=f"{PROVIDERS[provider]}/midstream_error",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        ):
            seen.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(seen) == "Partial"
    assert ("server had an error" in str(info.value)) or ("Overloaded" in str(info.value))


# --- the anthropic SDK on /v1/messages -----------------------------------------------------------


def messages(gw: Proc, provider: str, scenario: str, stream: bool) -> anthropic.types.Message:
    client = opened(anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0))
    kw: dict[str, Any] = {
        "model": f"{PROVIDERS[provider]}/{scenario}", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}],
    }  # fmt: skip
    if scenario == "tools":
        kw["tools"] = TOOLS_ANT
    if not stream:
        return client.messages.create(**kw)
    with client.messages.stream(**kw) as s:
        return s.get_final_message()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("scenario", ["text", "tools", "refusal"])
def test_anthropic_sdk_on_messages(gw: Proc, provider: str, scenario: str, stream: bool) -> None:
    msg = messages(gw, provider, scenario, stream)
    kinds = [b.type for b in msg.content]
    if scenario == "text":
        assert kinds == ["text"] and msg.content[0].text == TEXT and msg.stop_reason == "end_turn"  # type: ignore[union-attr]
        assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (
            16,
            4,
            9,
        )
    elif scenario == "tools":
        assert kinds == ["thinking", "text", "tool_use", "tool_use"] and msg.stop_reason == "tool_use"
        assert msg.content[0].thinking == REASONING  # type: ignore[union-attr]
        assert msg.content[1].text == "Checking both."  # type: ignore[union-attr]
        assert [(b.name, b.input) for b in msg.content[2:]] == CALLS  # type: ignore[union-attr]
        ids = [b.id for b in msg.content[2:]]  # type: ignore[union-attr]
        assert len(set(ids)) == 2 and all(ids)
        assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (
            20,
            100,
            45,
        )
    else:
        assert kinds == ["text"] and msg.content[0].text == REFUSAL and msg.stop_reason == "refusal"  # type: ignore[union-attr]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_anthropic_sdk_midstream_error(gw: Proc, provider: str) -> None:
    client = opened(anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0))
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(
            model=f"{PROVIDERS[provider]}/midstream_error",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
        ) as s:
            texts.extend(s.text_stream)
    assert "".join(texts) == "Partial"
    assert ("server had an error" in str(info.value)) or ("Overloaded" in str(info.value))


def test_fixture_streams_really_split_utf8() -> None:
    """The premise of the suite: the replayed pieces cut the multi-byte characters of every
    fixture that has some (tool arguments included), and join back to the fixture."""
    for fixture in ("openai/tools.sse", "anthropic/tools.sse", "openai/text.sse", "anthropic/text.sse"):
        data = (FIXTURES / fixture).read_bytes()
        parts = pieces(data)
        assert b"".join(parts) == data
        broken = 0
        for part in parts:
            try:
                part.decode()
            except UnicodeDecodeError:
                broken += 1
        assert broken >= sum(ord(c) > 127 for c in data.decode()) > 0, fixture
