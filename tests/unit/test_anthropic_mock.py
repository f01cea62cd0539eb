"""The official ``openai`` SDK against the Anthropic mock, through this package's translation.

The SDK's HTTP client gets a transport that does what the gateway does for an anthropic
target (translate, POST to ``/v1/messages``, translate back), so the round trip runs against
the real mock server (the session's ``mock`` fixture) without needing the gateway process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from gateway.providers.anthropic import (
    AnthropicStreamTranslator,
    encode_request,
    messages_url,
    request_headers,
    translate_error,
    translate_response,
    wants_usage,
)
from tests.conftest import Proc

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def mock_url(mock: Proc) -> str:
    return mock.url


@pytest.fixture
def sdk(mock_url: str) -> Iterator[openai.OpenAI]:
    upstream = httpx.Client(timeout=10)

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        payload = encode_request(request.content, model=body["model"])
        up = upstream.post(messages_url(mock_url), content=payload, headers=request_headers("sk-test"))
        if up.status_code >= 400:
            content = translate_error(up.content, up.status_code)
            return httpx.Response(
                up.status_code, content=content, headers={"content-type": "application/json"}
            )
        if not body.get("stream"):
            return httpx.Response(
                200, content=translate_response(up.content), headers={"content-type": "application/json"}
            )
        t = AnthropicStreamTranslator(include_usage=wants_usage(body))
        raw = up.content
        out = b"".join(t.feed(raw[i : i + 7]) for i in range(0, len(raw), 7))  # odd chunking on purpose
        assert t.done
        return httpx.Response(200, content=out, headers={"content-type": "text/event-stream"})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    with upstream, client:
        yield openai.OpenAI(
            api_key="unused", base_url="http://gateway.test/v1", http_client=client, max_retries=0
        )


def test_non_stream_round_trip(sdk: openai.OpenAI) -> None:
    resp = sdk.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    )
    assert resp.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (12, 8)


def test_non_stream_tool_call_and_max_tokens(sdk: openai.OpenAI) -> None:
    client = sdk
    resp = client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "What is the weather?"}],
        tools=TOOLS,  # type: ignore[arg-type]
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls and json.loads(choice.message.tool_calls[0].function.arguments) == {
        "location": "Paris"
    }
    resp = client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert resp.choices[0].finish_reason == "length"


def test_stream_tool_call_round_trip(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=TOOLS,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    text, args, finish, usage = "", "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            for tc in c.delta.tool_calls or []:
                args += (tc.function.arguments or "") if tc.function else ""
            finish = c.finish_reason or finish
    assert text == "Let me check the weather."
    assert json.loads(args) == {"location": "Paris"}
    assert finish == "tool_calls"
    assert usage is not None and usage.prompt_tokens == 12


def test_stream_text_round_trip(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "
    )


def test_programmed_error_reaches_the_sdk_in_openai_shape(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as err:
        sdk.chat.completions.create(model="error-429", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body == {
        "message": "mock: programmed 429",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_error",
    }


def test_mock_rejects_requests_without_the_version_header(mock_url: str) -> None:
    r = httpx.post(mock_url + "/v1/messages", json={"model": "m", "max_tokens": 5, "messages": []})
    assert r.status_code == 400 and r.json()["type"] == "error"


HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "sk-test"}


def _req(model: str, stream: bool = False) -> dict[str, object]:
    return {
        "model": model,
        "max_tokens": 50,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_mock_programmed_failures_mirror_the_openai_mock(mock_url: str) -> None:
    url = mock_url + "/v1/messages"
    r = httpx.post(url, json=_req("error-503"), headers=HEADERS)
    assert r.status_code == 503 and r.json()["error"]["type"] == "api_error"
    started = time.monotonic()
    r = httpx.post(url, json=_req("slow-300"), headers=HEADERS)
    assert r.status_code == 200 and time.monotonic() - started >= 0.3
    # cut-<n>: n text deltas, then the stream ends (granian may close it cleanly or not)
    # without message_stop: the translator must not report a finished message.
    t = AnthropicStreamTranslator()
    out = b""
    try:
        with httpx.stream("POST", url, json=_req("cut-2", True), headers=HEADERS) as resp:
            for chunk in resp.iter_raw():
                out += t.feed(chunk)
    except httpx.HTTPError:
        pass
    assert not t.done and out.count(b'"content":"tok') == 2
    # stall-<n>: n text deltas, then silence.
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.stream(
            "POST", url, json=_req("stall-1", True), headers=HEADERS, timeout=httpx.Timeout(5, read=0.5)
        ) as resp,
    ):
        for _ in resp.iter_raw():
            pass
