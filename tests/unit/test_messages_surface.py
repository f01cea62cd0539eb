"""The Messages surface without sockets: request/response/stream translation, relay, errors."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pydantic
import pytest

from gateway.errors import (
    InvalidRequest,
    NotFound,
    RateLimited,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from gateway.providers.anthropic import (
    JSON_TOOL,
    AnthropicStreamTranslator,
    to_anthropic_request,
    translate_response,
)
from gateway.surfaces.messages import MESSAGES, MessagesRelay, estimate_input_tokens
from gateway.surfaces.messages_hub import hub_to_message, messages_to_hub
from gateway.surfaces.messages_stream import HubToMessagesStream
from tests.replay_upstream import FIXTURES

EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)


def events(sse: bytes) -> list[dict[str, Any]]:
    """The data payloads of an SSE byte string, each validated as the anthropic SDK does."""
    out = []
    for block in sse.decode().split("\n\n"):
        data = [ln[6:] for ln in block.split("\n") if ln.startswith("data: ")]
        if data:
            payload = json.loads("\n".join(data))
            if payload["type"] != "error":
                EVENT.validate_python(payload)
            out.append(payload)
    return out


def hub(**req: Any) -> dict[str, Any]:
    return messages_to_hub(
        {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **req}
    )


# --- request -------------------------------------------------------------------------------------


def test_request_roles_blocks_and_parameters() -> None:
    req = {
        "model": "m",
        "max_tokens": 99,
        "system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}],
        "messages": [
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}, "title": "r.pdf"},
                {"type": "text", "text": "look"},
            ]},
            {"role": "system", "content": "mid-conversation instruction"},
            {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}, {"type": "text", "text": "ok"}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "is_error": True, "content": [
                    {"type": "text", "text": "boom"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
                ]},
            ]},
        ],
        "cache_control": {"type": "ephemeral"},
        "stop_sequences": ["X"],
        "top_p": 0.9,
        "thinking": {"type": "enabled", "budget_tokens": 5000},
        "tool_choice": {"type": "tool", "name": "f"},
        "tools": [{"name": "f", "input_schema": {"type": "object"}, "strict": True}],
        "service_tier": "standard_only",
        "speed": "standard",
    }  # fmt: skip
    out = messages_to_hub(req)
    msgs = out["messages"]
    assert msgs[0] == {"role": "system", "content": "A\n\nB"}
    assert msgs[1]["content"][0] == {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
    assert msgs[1]["content"][1] == {
        "type": "file",
        "file": {"filename": "r.pdf", "file_data": "data:application/pdf;base64,JVBE"},
    }
    assert msgs[2] == {"role": "system", "content": "mid-conversation instruction"}
    assert msgs[3] == {"role": "assistant", "content": "ok"}
    assert msgs[4] == {"role": "tool", "tool_call_id": "t1", "content": "Error: boom"}
    assert msgs[5] == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}],
    }
    assert out["max_completion_tokens"] == 99 and out["stop"] == ["X"] and out["top_p"] == 0.9
    assert out["reasoning_effort"] == "medium" and out["service_tier"] == "default"
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert out["tools"][0]["function"]["strict"] is True


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"top_k": 3}, "top_k"),
        ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0].type"),
        (
            {"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}},
            "context_management.edits[0].type",
        ),
        ({"mcp_servers": [{"type": "url", "url": "https://m"}]}, "mcp_servers"),
        ({"inference_geo": "eu"}, "inference_geo"),
        ({"speed": "fast"}, "speed"),
        ({"output_config": {"task_budget": 5}}, "output_config.task_budget"),
        (
            {"messages": [{"role": "user", "content": [{"type": "search_result", "source": "s"}]}]},
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                    }
                ]
            },
            "messages[0].content[0].source.type",
        ),
    ],
)
def test_what_an_openai_target_cannot_honour_is_refused_by_name(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        hub(**extra)
    assert info.value.param == param and param.split("[")[0].split(".")[0] in info.value.message


def test_effort_structured_output_and_clear_thinking() -> None:
    out = hub(
        thinking={"type": "adaptive"},
        output_config={"effort": "max", "format": {"type": "json_schema", "schema": {"type": "object"}}},
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    )
    assert out["reasoning_effort"] == "xhigh"
    assert out["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert "reasoning_effort" not in hub(thinking={"type": "adaptive"})
    assert "tool_choice" not in hub(tool_choice={"type": "auto"})  # no tools: nothing to choose


# --- response -------------------------------------------------------------------------------------


def test_response_from_the_hub_validates_as_a_message() -> None:
    msg = json.loads(hub_to_message((FIXTURES / "openai" / "tools.json").read_bytes()))
    parsed = anthropic.types.Message.model_validate(msg)
    assert [b.type for b in parsed.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert parsed.usage.input_tokens == 20 and parsed.usage.cache_read_input_tokens == 100
    refusal = anthropic.types.Message.model_validate(
        json.loads(hub_to_message((FIXTURES / "openai" / "refusal.json").read_bytes()))
    )
    assert refusal.stop_reason == "refusal" and refusal.content[0].text == "I can’t help with that."  # type: ignore[union-attr]
    length = {"id": "c", "model": "g", "choices": [{"message": {"content": "x"}, "finish_reason": "length"}]}
    assert json.loads(hub_to_message(json.dumps(length).encode()))["stop_reason"] == "max_tokens"
    bad = {
        "choices": [
            {"message": {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}}
        ]
    }
    with pytest.raises(UpstreamUnreachable):
        hub_to_message(json.dumps(bad).encode())


# --- streams --------------------------------------------------------------------------------------


def test_hub_stream_byte_by_byte_gives_the_sdk_event_sequence() -> None:
    data = (FIXTURES / "openai" / "tools.sse").read_bytes()
    t = HubToMessagesStream()
    out = b"".join(t.feed(data[i : i + 1]) for i in range(len(data))) + t.flush()
    assert t.done
    evs = events(out)
    kinds = [e["type"] for e in evs]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    starts = [e["content_block"]["type"] for e in evs if e["type"] == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use", "tool_use"]
    assert kinds.count("content_block_stop") == 4
    args = "".join(
        e["delta"]["partial_json"] for e in evs if e["type"] == "content_block_delta" and e["index"] == 3
    )
    assert json.loads(args) == {"city": "São Paulo", "unit": "°C"}
    assert (
        evs[-2]["usage"]["cache_read_input_tokens"] == 100 and evs[-2]["delta"]["stop_reason"] == "tool_use"
    )


def test_hub_stream_refuses_interleaved_tool_fragments_and_reports_truncation() -> None:
    def chunk(delta: dict[str, Any]) -> bytes:
        return (
            b"data: "
            + json.dumps({"id": "c", "model": "g", "choices": [{"index": 0, "delta": delta}]}).encode()
            + b"\n\n"
        )

    call = lambda k, **f: {"tool_calls": [{"index": k, **f}]}  # noqa: E731
    t = HubToMessagesStream()
    out = t.feed(
        chunk(call(0, id="a", function={"name": "f", "arguments": "{"}))
        + chunk(call(1, id="b", function={"name": "g"}))
    )
    out += t.feed(chunk(call(0, function={"arguments": "}"})))
    assert t.done and events(out)[-1]["type"] == "error"
    cut = HubToMessagesStream()
    cut.feed(chunk({"content": "partial"}))
    assert not cut.done  # the proxy then ends the stream with an error event


def test_native_relay_passes_bytes_and_reads_usage() -> None:
    data = (FIXTURES / "anthropic" / "tools.sse").read_bytes()
    relay = MessagesRelay(keep_events=True)
    out = b"".join(relay.feed(data[i : i + 3]) for i in range(0, len(data), 3)) + relay.flush()
    assert out == data and b"".join(relay.events) == data and relay.done
    assert relay.usage is not None and (relay.usage.prompt_tokens, relay.usage.completion_tokens) == (120, 45)
    err = MessagesRelay()
    err.feed((FIXTURES / "anthropic" / "midstream_error.sse").read_bytes())
    assert err.done and err.usage is not None and err.usage.prompt_tokens == 5


@pytest.mark.parametrize("crlf", [False, True])
def test_native_relay_same_at_any_chunking(crlf: bool) -> None:
    """Whole-event chunks (the fast path) and cut ones relay the same bytes, usage and end."""
    import random

    data = (FIXTURES / "anthropic" / "tools.sse").read_bytes()
    sent = data.replace(b"\n", b"\r\n") if crlf else data
    events = [e + b"\n\n" for e in sent.split(b"\n\n" if not crlf else b"\r\n\r\n") if e]
    rng = random.Random(3)
    chunkings = [events, [sent[i : i + 5] for i in range(0, len(sent), 5)]]
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(sent)), rng.randint(1, 40)))
        chunkings.append([sent[a:b] for a, b in zip([0, *cuts], [*cuts, len(sent)], strict=True)])
    for pieces in chunkings:
        relay = MessagesRelay(keep_events=True)
        out = b"".join(relay.feed(p) for p in pieces) + relay.flush()
        assert out == data and relay.done
        assert relay.usage is not None and (relay.usage.prompt_tokens, relay.usage.completion_tokens) == (120, 45)


# --- errors and estimates -------------------------------------------------------------------------


def test_error_shapes() -> None:
    cases = [
        (InvalidRequest("bad"), 400, "invalid_request_error"),
        (NotFound("x"), 404, "not_found_error"),
        (RateLimited("slow", rule_id="r", headers=[("retry-after", "1")]), 429, "rate_limit_error"),
        (UpstreamTimeout("t"), 504, "timeout_error"),
        (UpstreamUnreachable("u"), 502, "api_error"),
    ]
    for exc, status, etype in cases:
        got_status, headers, body = MESSAGES.error_response(exc)
        assert got_status == status and json.loads(body) == {
            "type": "error",
            "error": {"type": etype, "message": exc.message},
        }
    relayed = UpstreamStatus(529, b'{"type":"error","error":{"type":"overloaded_error","message":"o"}}', "application/json",
                             [("content-type", "application/json"), ("x-request-id", "up")], "anthropic")  # fmt: skip
    status, headers, body = MESSAGES.error_response(relayed)
    assert status == 529 and body == relayed.body and [k for k, _ in headers] == ["content-type"]
    oai = UpstreamStatus(
        400, b'{"error":{"message":"bad thing","type":"invalid_request_error"}}', "application/json", []
    )
    assert json.loads(MESSAGES.error_response(oai)[2])["error"] == {
        "type": "invalid_request_error",
        "message": "bad thing",
    }
    assert MESSAGES.stream_error(UpstreamTimeout("late")).startswith(b"event: error\ndata: ")


def test_token_estimate_counts_text_tools_and_attachments() -> None:
    base = {"messages": [{"role": "user", "content": "x" * 400}]}
    n = estimate_input_tokens(base)
    assert n == 100 + 4
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 10000}}
    with_image = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 400}, image]}]}
    assert estimate_input_tokens(with_image) == n + 1600  # the base64 bytes are not text
    assert estimate_input_tokens({**base, "tools": [{"name": "f", "input_schema": {"type": "object"}}]}) > n


# --- the chat → Anthropic audit -------------------------------------------------------------------


def chat(**extra: Any) -> dict[str, Any]:
    return to_anthropic_request({"model": "c", "messages": [{"role": "user", "content": "hi"}], **extra})


def test_response_format_becomes_a_forced_tool_and_comes_back_as_content() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    out = chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert out["tools"] == [
        {"name": JSON_TOOL, "description": "Respond with the JSON answer.", "input_schema": schema}
    ]
    assert out["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
    resp = {"id": "m", "model": "c", "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1},
            "content": [{"type": "tool_use", "id": "t", "name": JSON_TOOL, "input": {"a": 1}}]}  # fmt: skip
    choice = json.loads(translate_response(json.dumps(resp).encode()))["choices"][0]
    assert choice["message"]["content"] == '{"a":1}' and choice["finish_reason"] == "stop"
    assert "tool_calls" not in choice["message"]
    t = AnthropicStreamTranslator(include_usage=False)
    sse = (
        b'data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":1}}}\n\n'
        b'data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"' + JSON_TOOL.encode() + b'","input":{}}}\n\n'
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\\"a\\":"}}\n\n'
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"1}"}}\n\n'
        b'data: {"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":3}}\n\n'
        b'data: {"type":"message_stop"}\n\n'
    )  # fmt: skip
    chunks = [json.loads(ln[6:]) for ln in t.feed(sse).decode().split("\n\n") if ln.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == '{"a":1}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"seed": 1}, "seed"),
        ({"frequency_penalty": 0.2}, "frequency_penalty"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"store": True}, "store"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"service_tier": "flex"}, "service_tier"),
        ({"reasoning_effort": "high", "max_tokens": 800}, "reasoning_effort"),
        (
            {
                "response_format": {"type": "json_object"},
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            "response_format",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "array"}}}},
            "response_format.json_schema.schema",
        ),
    ],
)
def test_chat_fields_an_anthropic_target_cannot_honour_are_refused(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        chat(**extra)
    assert info.value.param == param


def test_chat_fields_that_translate_or_have_no_effect() -> None:
    out = chat(logprobs=False, frequency_penalty=0, store=False, modalities=["text"], top_k=5,
               service_tier="default", reasoning_effort="low", metadata={"k": "v"}, prompt_cache_key="p")  # fmt: skip
    assert out["top_k"] == 5 and out["service_tier"] == "standard_only"
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 2048} and out["max_tokens"] == 2048 + 4096
    capped = chat(reasoning_effort="high", max_completion_tokens=3000)
    assert capped["thinking"]["budget_tokens"] == 2999 and capped["max_tokens"] == 3000
