"""OpenAI <-> Anthropic Messages translation: requests, responses, errors and streams."""

from __future__ import annotations

import json

import msgspec
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.errors import InvalidRequest
from gateway.providers.anthropic import (
    AnthropicStreamTranslator,
    encode_request,
    finish_reason,
    from_anthropic_response,
    messages_url,
    request_headers,
    to_anthropic_request,
    translate_error,
    translate_response,
    wants_usage,
)

PNG = "iVBORw0KGgo="


def test_request_translation() -> None:
    body = {
        "model": "anthropic-main/claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this and the weather?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather of a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "temperature": 1.5,
        "top_p": 0.9,
        "stop": "END",
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u-1",
    }
    out = to_anthropic_request(body, model="claude-sonnet-4-5")
    assert out["model"] == "claude-sonnet-4-5"
    assert out["max_tokens"] == 4096
    assert out["system"] == "Be brief.\n\nUse metric units."
    assert out["temperature"] == 1.0 and out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END"]
    assert out["stream"] is True
    assert out["metadata"] == {"user_id": "u-1"}
    assert out["tools"] == [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "description": "Weather of a city",
        }
    ]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    user, assistant, results = out["messages"]
    assert user["role"] == "user"
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert user["content"][2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/a.jpg"},
    }
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
        ],
    }
    # Both tool results and the following user text merge into one user turn.
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "rain"},
            {"type": "text", "text": "Thanks"},
        ],
    }
    assert wants_usage(body)
    assert "stream_options" not in out and "parallel_tool_calls" not in out


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
    ],
)
def test_tool_choice(choice: object, expected: dict[str, object]) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": choice,
        "max_tokens": 10,
    }
    out = to_anthropic_request(body)
    assert out["tool_choice"] == expected
    assert out["max_tokens"] == 10
    assert out["tools"][0]["input_schema"] == {"type": "object", "properties": {}}


def test_request_errors_and_bytes_api() -> None:
    with pytest.raises(InvalidRequest):
        to_anthropic_request({"messages": "hi"})
    with pytest.raises(InvalidRequest):
        to_anthropic_request({"messages": [{"role": "oracle", "content": "hi"}]})
    with pytest.raises(InvalidRequest):
        encode_request(b"{nope")
    raw = encode_request(
        b'{"model":"x","max_completion_tokens":7,"messages":[{"role":"user","content":"hi"}]}', "m"
    )
    assert json.loads(raw) == {
        "model": "m",
        "max_tokens": 7,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }


def test_upstream_url_and_headers() -> None:
    assert messages_url("https://api.anthropic.com") == "https://api.anthropic.com/v1/messages"
    assert messages_url("https://api.anthropic.com/v1/") == "https://api.anthropic.com/v1/messages"
    headers = dict(request_headers("sk-ant"))
    assert headers["x-api-key"] == "sk-ant" and headers["anthropic-version"] == "2023-06-01"
    assert "x-api-key" not in dict(request_headers(None))


RESPONSE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 9},
}


def test_response_translation() -> None:
    out = from_anthropic_response(RESPONSE, created=1)
    ChatCompletion.model_validate(out)
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Let me check."
    assert msg["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["usage"] == {
        "prompt_tokens": 25,
        "completion_tokens": 9,
        "total_tokens": 34,
        "prompt_tokens_details": {"cached_tokens": 5, "cache_creation_input_tokens": 0},
    }
    assert (out["id"], out["model"], out["created"]) == ("msg_01", "claude-sonnet-4-5", 1)
    plain = json.loads(
        translate_response(msgspec.json.encode({**RESPONSE, "content": [], "stop_reason": "max_tokens"}))
    )
    assert plain["choices"][0]["message"] == {"role": "assistant", "content": None}
    assert plain["choices"][0]["finish_reason"] == "length"


def test_stop_reasons() -> None:
    assert [finish_reason(r) for r in ("end_turn", "stop_sequence", "max_tokens", "tool_use", None)] == [
        "stop",
        "stop",
        "length",
        "tool_calls",
        None,
    ]


def test_error_translation() -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert json.loads(translate_error(body, 529)) == {
        "error": {
            "message": "Overloaded",
            "type": "overloaded_error",
            "param": None,
            "code": "overloaded_error",
        }
    }
    assert (
        json.loads(translate_error(b"<html>bad gateway</html>", 502))["error"]["message"]
        == "<html>bad gateway</html>"
    )


def sse(kind: str, data: dict[str, object]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


RECORDED = b"".join(
    [
        sse(
            "message_start",
            {
                "message": {
                    "id": "msg_01",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-5",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 25, "output_tokens": 1},
                }
            },
        ),
        sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        sse("ping", {}),
        sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Héllo"}}),
        sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": ", checking."}}),
        sse("content_block_stop", {"index": 0}),
        sse(
            "content_block_start",
            {
                "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
            },
        ),
        sse("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        sse(
            "content_block_delta",
            {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'}},
        ),
        sse(
            "content_block_delta",
            {"index": 1, "delta": {"type": "input_json_delta", "partial_json": 'ris"}'}},
        ),
        sse("content_block_stop", {"index": 1}),
        sse(
            "message_delta",
            {"delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 42}},
        ),
        sse("message_stop", {}),
    ]
)


def chunks_of(out: bytes) -> list[dict[str, object] | str]:
    events = out.split(b"\n\n")
    assert events[-1] == b""
    parsed: list[dict[str, object] | str] = []
    for ev in events[:-1]:
        assert ev.startswith(b"data: ")
        payload = ev[6:]
        parsed.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return parsed


def test_stream_translation() -> None:
    t = AnthropicStreamTranslator(include_usage=True, created=1)
    out = chunks_of(t.feed(RECORDED))
    assert t.done and not t.failed
    assert out[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(c) for c in out[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Héllo, checking."
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id == "toolu_1" and calls[0].function and calls[0].function.name == "get_weather"
    assert {tc.index for tc in calls} == {0}
    assert "".join(tc.function.arguments or "" for tc in calls if tc.function) == '{"city": "Paris"}'
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["tool_calls"]
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage is not None
    assert (usage.usage.prompt_tokens, usage.usage.completion_tokens, usage.usage.total_tokens) == (
        25,
        42,
        67,
    )
    assert all(c.id == "msg_01" and c.model == "claude-sonnet-4-5" for c in chunks)
    assert t.usage == {"prompt_tokens": 25, "completion_tokens": 42, "total_tokens": 67}
    assert t.finish_reason == "tool_calls"


def test_stream_any_chunk_boundary_gives_the_same_output() -> None:
    whole = AnthropicStreamTranslator(include_usage=True, created=1).feed(RECORDED)
    for cut in range(1, len(RECORDED)):  # bounded: one pass per byte position
        t = AnthropicStreamTranslator(include_usage=True, created=1)
        assert t.feed(RECORDED[:cut]) + t.feed(RECORDED[cut:]) == whole, cut
    t = AnthropicStreamTranslator(include_usage=True, created=1)
    assert b"".join(t.feed(RECORDED[i : i + 1]) for i in range(len(RECORDED))) == whole


def test_stream_crlf_and_no_usage_chunk_unless_asked() -> None:
    t = AnthropicStreamTranslator(created=1)
    out = chunks_of(t.feed(RECORDED.replace(b"\n", b"\r\n")))
    assert out[-1] == "[DONE]"
    assert all(c == "[DONE]" or c["choices"] for c in out)  # no usage-only chunk


def test_stream_error_event_ends_in_openai_error_shape() -> None:
    t = AnthropicStreamTranslator(created=1)
    data = RECORDED.split(b"event: content_block_stop")[0] + sse(
        "error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    out = chunks_of(t.feed(data))
    assert t.done and t.failed
    assert out[-1] == {
        "error": {
            "message": "Overloaded",
            "type": "overloaded_error",
            "param": None,
            "code": "overloaded_error",
        }
    }
    assert "[DONE]" not in out
    assert t.feed(b"event: ping\ndata: {}\n\n") == b""  # nothing after the end


def test_stream_cut_short_is_not_done() -> None:
    t = AnthropicStreamTranslator(created=1)
    t.feed(RECORDED[: RECORDED.index(b"event: message_delta")])
    assert not t.done  # the handler ends the stream with an error event (errors.sse_error_event)


def test_overrides_use_openai_names() -> None:
    raw = encode_request(
        b'{"model":"x","messages":[{"role":"user","content":"hi"}]}', "m", {"max_tokens": 9, "stop": ["x"]}
    )
    out = json.loads(raw)
    assert out["max_tokens"] == 9 and out["stop_sequences"] == ["x"]


def test_more_than_one_choice_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        to_anthropic_request({"n": 2, "messages": [{"role": "user", "content": "hi"}]})
