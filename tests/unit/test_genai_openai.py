"""OpenAI chat / completions / embeddings bodies → GenAI content attributes (semconv parts)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.telemetry import genai
from tests import genai_schema


def _body(**doc: Any) -> bytes:
    return json.dumps({"model": "gpt-4o", **doc}).encode()


def _sse(*events: dict[str, Any], cut: int = 29) -> bytes:
    raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    return raw


def _attrs(request: bytes, response: bytes | None = None, sse: bytes | None = None) -> dict[str, Any]:
    attrs = genai.model_call_attributes("chat", request, response, sse)
    genai_schema.check_attributes(attrs)
    return attrs


def _in(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(attrs["gen_ai.input.messages"])


def _out(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(attrs["gen_ai.output.messages"])


def _completion(*choices: dict[str, Any], usage: dict[str, Any] | None = None) -> bytes:
    doc: dict[str, Any] = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1730000000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_1",
        "choices": [{"index": i, "logprobs": None, **c} for i, c in enumerate(choices)],
    }
    if usage is not None:
        doc["usage"] = usage
    return json.dumps(doc).encode()


def test_plain_chat() -> None:
    attrs = _attrs(
        _body(messages=[{"role": "user", "content": "Hello!"}]),
        _completion(
            {"message": {"role": "assistant", "content": "Hi there.", "refusal": None}, "finish_reason": "stop"},
            usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
        ),
    )
    assert _in(attrs) == [{"role": "user", "parts": [{"type": "text", "content": "Hello!"}]}]
    assert _out(attrs) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hi there."}], "finish_reason": "stop"}
    ]
    assert "gen_ai.system_instructions" not in attrs and "gen_ai.tool.definitions" not in attrs
    assert attrs["gen_ai.response.id"] == "chatcmpl-9"
    assert attrs["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (9, 3)
    assert "gen_ai.usage.cache_read.input_tokens" not in attrs
    assert json.loads(attrs["logfire.json_schema"]) == {
        "type": "object",
        "properties": {"gen_ai.input.messages": {"type": "array"}, "gen_ai.output.messages": {"type": "array"}},
    }


def test_system_and_multi_turn_stay_in_the_input_in_order() -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?", "name": "alice"},
        {"role": "assistant", "content": "Paris."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in one word."}]},
        {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "text", "text": "Italy?"}]},
    ]
    attrs = _attrs(_body(messages=messages))
    assert _in(attrs) == [
        {"role": "system", "parts": [{"type": "text", "content": "You are terse."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Capital of France?"}], "name": "alice"},
        {"role": "assistant", "parts": [{"type": "text", "content": "Paris."}]},
        {"role": "developer", "parts": [{"type": "text", "content": "Answer in one word."}]},
        {"role": "user", "parts": [{"type": "text", "content": "And "}, {"type": "text", "content": "Italy?"}]},
    ]
    # The chat API carries the system prompt in the history: no separate instructions.
    assert "gen_ai.system_instructions" not in attrs
    assert "gen_ai.output.messages" not in attrs  # no response given


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    },
}


def test_parallel_tool_calls_and_their_results() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "rainy, 12C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": '{"sky":"clear"}'}]},
    ]
    attrs = _attrs(
        _body(messages=messages, tools=[WEATHER_TOOL], parallel_tool_calls=True),
        _completion(
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_3", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
                        {"id": "call_4", "type": "function", "function": {"name": "get_weather", "arguments": "not json"}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ),
    )
    inp = _in(attrs)
    assert inp[1] == {
        "role": "assistant",
        "parts": [
            {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}},
            {"type": "tool_call", "id": "call_2", "name": "get_weather", "arguments": {"city": "Rome"}},
        ],
    }
    assert inp[2] == {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "rainy, 12C"}]}
    assert inp[3]["parts"] == [{"type": "tool_call_response", "id": "call_2", "response": '{"sky":"clear"}'}]
    (out,) = _out(attrs)
    assert out["finish_reason"] == "tool_call"  # the spec's value for OpenAI's "tool_calls"
    assert out["parts"] == [
        {"type": "tool_call", "id": "call_3", "name": "get_weather", "arguments": {"city": "Oslo"}},
        {"type": "tool_call", "id": "call_4", "name": "get_weather", "arguments": "not json"},
    ]
    assert attrs["gen_ai.response.finish_reasons"] == ["tool_calls"]  # as the provider said it
    assert json.loads(attrs["gen_ai.tool.definitions"]) == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]


def test_streamed_tool_calls_are_assembled_from_argument_fragments() -> None:
    base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    sse = _sse(
        chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        {**base, "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}},
    )  # fmt: skip
    attrs = _attrs(_body(messages=[{"role": "user", "content": "hi"}], stream=True), sse=sse)
    assert _out(attrs) == [
        {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "id": "call_a", "name": "get_weather", "arguments": {"city": "Paris"}},
                {"type": "tool_call", "id": "call_b", "name": "get_time", "arguments": {}},
            ],
            "finish_reason": "tool_call",
        }
    ]
    assert attrs["gen_ai.usage.input_tokens"] == 30 and attrs["gen_ai.response.id"] == "chatcmpl-s"
    # A stream cut mid-argument keeps what arrived, and says it did not finish.
    cut = sse[: sse.index(b'ty\\": \\"Paris')]
    (out,) = _out(_attrs(_body(messages=[]), sse=cut))
    assert out["parts"][0]["arguments"] == '{"ci' and out["finish_reason"] == "error"


def test_images_by_url_and_data_url() -> None:
    content = [
        {"type": "text", "text": "Compare these"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png?x=1", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/render"}},
    ]
    parts = _in(_attrs(_body(messages=[{"role": "user", "content": content}])))[0]["parts"]
    assert parts == [
        {"type": "text", "content": "Compare these"},
        {"type": "uri", "modality": "image", "mime_type": "image/png", "uri": "https://example.com/cat.png?x=1"},
        {"type": "blob", "modality": "image", "mime_type": "image/jpeg", "content": "/9j/4AAQSkZJRg=="},
        {"type": "uri", "modality": "image", "uri": "https://example.com/render"},
    ]


def test_audio_input_and_files() -> None:
    content = [
        {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZF", "format": "wav"}},
        {"type": "input_audio", "input_audio": {"data": "SUQzBAAAAAAA", "format": "mp3"}},
        {"type": "file", "file": {"file_id": "file-abc123"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
    ]
    parts = _in(_attrs(_body(messages=[{"role": "user", "content": content}])))[0]["parts"]
    assert parts == [
        {"type": "blob", "modality": "audio", "mime_type": "audio/wav", "content": "UklGRiQAAABXQVZF"},
        {"type": "blob", "modality": "audio", "mime_type": "audio/mpeg", "content": "SUQzBAAAAAAA"},
        {"type": "file", "modality": "document", "file_id": "file-abc123"},
        {"type": "blob", "modality": "document", "mime_type": "application/pdf", "content": "JVBERi0x"},
    ]


def test_n2_gives_one_output_message_per_choice_in_index_order() -> None:
    body = json.loads(
        _completion(
            {"message": {"role": "assistant", "content": "A"}, "finish_reason": "stop"},
            {"message": {"role": "assistant", "content": "B"}, "finish_reason": "length"},
        )
    )
    body["choices"].reverse()  # index, not position, orders them
    attrs = _attrs(_body(messages=[{"role": "user", "content": "x"}], n=2), json.dumps(body).encode())
    assert [(m["parts"][0]["content"], m["finish_reason"]) for m in _out(attrs)] == [("A", "stop"), ("B", "length")]
    # the same from a stream with two choices interleaved
    base = {"id": "c", "model": "m"}
    sse = _sse(
        {**base, "choices": [{"index": 1, "delta": {"role": "assistant", "content": "B"}}]},
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "A"}}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "!"}, "finish_reason": "stop"}]},
        {**base, "choices": [{"index": 1, "delta": {}, "finish_reason": "length"}]},
    )
    out = _out(_attrs(_body(messages=[], n=2, stream=True), sse=sse))
    assert [(m["parts"], m["finish_reason"]) for m in out] == [
        ([{"type": "text", "content": "A!"}], "stop"),
        ([{"type": "text", "content": "B"}], "length"),
    ]


def test_refusal_is_a_generic_part() -> None:
    attrs = _attrs(
        _body(messages=[{"role": "user", "content": "bad"}]),
        _completion({"message": {"role": "assistant", "content": None, "refusal": "I can't help with that."}, "finish_reason": "stop"}),
    )
    assert _out(attrs)[0]["parts"] == [{"type": "refusal", "content": "I can't help with that."}]


def test_length_finish() -> None:
    attrs = _attrs(
        _body(messages=[{"role": "user", "content": "long story"}], max_tokens=5),
        _completion({"message": {"role": "assistant", "content": "Once upon a"}, "finish_reason": "length"}),
    )
    assert _out(attrs)[0]["finish_reason"] == "length"


def test_reasoning_tokens_cached_tokens_and_reasoning_content() -> None:
    attrs = _attrs(
        _body(messages=[{"role": "user", "content": "think"}]),
        _completion(
            {"message": {"role": "assistant", "content": "42", "reasoning_content": "6 times 7"}, "finish_reason": "stop"},
            usage={
                "prompt_tokens": 1200,
                "completion_tokens": 300,
                "total_tokens": 1500,
                "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 256, "audio_tokens": 0},
            },
        ),
    )
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 1024
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 256
    assert _out(attrs)[0]["parts"] == [{"type": "reasoning", "content": "6 times 7"}, {"type": "text", "content": "42"}]


def test_embeddings_carry_no_messages() -> None:
    request = json.dumps({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 256}).encode()
    response = json.dumps(
        {"object": "list", "model": "text-embedding-3-small", "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
         "usage": {"prompt_tokens": 4, "total_tokens": 4}}
    ).encode()  # fmt: skip
    attrs = genai.model_call_attributes("embeddings", request, response)
    assert not [k for k in attrs if k in genai_schema.CHECKS or k == "logfire.json_schema"]
    assert attrs == {"gen_ai.response.model": "text-embedding-3-small", "gen_ai.usage.input_tokens": 4}


def test_legacy_completions() -> None:
    attrs = genai.model_call_attributes(
        "completions",
        b'{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test"}',
        b'{"id":"cmpl-1","object":"text_completion","model":"gpt-3.5-turbo-instruct","choices":[{"text":"This is a test.","index":0,"finish_reason":"length"}]}',
    )
    genai_schema.check_attributes(attrs)
    assert _in(attrs) == [{"role": "user", "parts": [{"type": "text", "content": "Say this is a test"}]}]
    assert _out(attrs) == [{"role": "assistant", "parts": [{"type": "text", "content": "This is a test."}], "finish_reason": "length"}]


@pytest.mark.parametrize(
    "request_body",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'{"messages": "hello"}',
        b'{"messages": [42, null, {"role": 7, "content": {"odd": true}}]}',
        b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": 5}, 3, {"no": "type"}]}]}',
        b'{"messages": [{"role": "assistant", "tool_calls": [{"function": "x"}, 1]}], "tools": [{"type": 1}, "x"]}',
        b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png"}}]}]}',
        b'{"messages": [{"role": "user", "content": "\\ud800 lone surrogate"}]}',
        b'{"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "' + b"[" * 100_000 + b'"}}]}]}',
        b'{"messages": ' + b"[" * 100_000,
    ],
)
def test_malformed_bodies_never_raise_and_are_counted(request_body: bytes) -> None:
    before = sum(genai.COUNTERS.values())
    attrs = genai.model_call_attributes("chat", request_body, b'{"choices": [{"message": 3}, "x"]}')
    genai_schema.check_attributes(attrs)  # whatever came out is still valid
    assert sum(genai.COUNTERS.values()) > before


def test_unknown_parts_pass_through_as_generic_parts() -> None:
    content = [{"type": "input_video", "video_url": "https://v/x.mp4"}, {"type": "text", "text": "what happens?"}]
    parts = _in(_attrs(_body(messages=[{"role": "user", "content": content}])))[0]["parts"]
    assert parts[0] == {"type": "input_video", "video_url": "https://v/x.mp4"}
