"""Anthropic Messages and OpenAI Responses bodies → GenAI content attributes (semconv parts)."""

from __future__ import annotations

import json
from typing import Any

from gateway.telemetry import genai
from tests import genai_schema


def _sse(*events: dict[str, Any]) -> bytes:
    # Anthropic and Responses streams name each event; the data line carries the same type.
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + json.dumps(e).encode() + b"\n\n" for e in events
    )


def _check(attrs: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return genai_schema.check_attributes(attrs)


# --- Anthropic Messages -------------------------------------------------------------------------

MESSAGES_REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "system": [
        {"type": "text", "text": "You are a weather bot.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be brief."},
    ],
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/map.jpg"}},
                {"type": "document", "source": {"type": "file", "file_id": "file_011"}},
                {"type": "text", "text": "Weather where this is?"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "The map shows Paris.", "signature": "EqQB"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "12C, rain"}]},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": "boom", "is_error": True},
            ],
        },
    ],
    "temperature": 0.2,
    "top_k": 40,
    "stop_sequences": ["END"],
}

MESSAGES_RESPONSE = {
    "id": "msg_01XF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "Rain in Paris.", "signature": "x"},
        {"type": "text", "text": "It is 12C and raining."},
        {"type": "tool_use", "id": "toolu_03", "name": "get_weather", "input": {"city": "Lyon"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 50,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 2000,
        "output_tokens": 80,
        "service_tier": "standard",
    },
}


def test_anthropic_messages_request_and_response() -> None:
    attrs = genai.model_call_attributes(
        "messages", json.dumps(MESSAGES_REQUEST).encode(), json.dumps(MESSAGES_RESPONSE).encode()
    )
    found = _check(attrs)
    assert found["gen_ai.system_instructions"] == [
        {"type": "text", "content": "You are a weather bot."},
        {"type": "text", "content": "Be brief."},
    ]
    user, assistant, results = found["gen_ai.input.messages"]
    assert user == {
        "role": "user",
        "parts": [
            {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "iVBORw0KGgo="},
            {"type": "uri", "modality": "image", "mime_type": "image/jpeg", "uri": "https://example.com/map.jpg"},
            {"type": "file", "modality": "document", "file_id": "file_011"},
            {"type": "text", "content": "Weather where this is?"},
        ],
    }
    assert assistant["parts"] == [
        {"type": "reasoning", "content": "The map shows Paris."},
        {"type": "text", "content": "Let me check."},
        {"type": "tool_call", "id": "toolu_01", "name": "get_weather", "arguments": {"city": "Paris"}},
    ]
    # tool results arrive in a user message: the role is kept as the API sent it
    assert results == {
        "role": "user",
        "parts": [
            {"type": "tool_call_response", "id": "toolu_01", "response": "12C, rain"},
            {"type": "tool_call_response", "id": "toolu_02", "response": "boom"},
        ],
    }
    assert found["gen_ai.tool.definitions"] == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"type": "web_search_20250305", "name": "web_search"},
    ]
    (out,) = found["gen_ai.output.messages"]
    assert out["finish_reason"] == "tool_call" and [p["type"] for p in out["parts"]] == ["reasoning", "text", "tool_call"]
    assert attrs["gen_ai.response.finish_reasons"] == ["tool_use"]
    # input tokens include cache reads and writes (the convention's total)
    assert attrs["gen_ai.usage.input_tokens"] == 2150
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 2000
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 100
    assert attrs["gen_ai.usage.output_tokens"] == 80


def test_anthropic_stream_with_tool_input_fragments() -> None:
    sse = _sse(
        {"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
                                              "content": [], "stop_reason": None, "usage": {"input_tokens": 20, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "need "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "weather"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "ping"},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Checking"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": 'ris"}'}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 42}},
        {"type": "message_stop"},
    )  # fmt: skip
    attrs = genai.model_call_attributes("messages", json.dumps(MESSAGES_REQUEST).encode(), sse=sse)
    (out,) = _check(attrs)["gen_ai.output.messages"]
    assert out == {
        "role": "assistant",
        "parts": [
            {"type": "reasoning", "content": "need weather"},
            {"type": "text", "content": "Checking"},
            {"type": "tool_call", "id": "toolu_9", "name": "get_weather", "arguments": {"city": "Paris"}},
        ],
        "finish_reason": "tool_call",
    }
    assert attrs["gen_ai.response.id"] == "msg_s" and attrs["gen_ai.usage.output_tokens"] == 42
    assert attrs["gen_ai.usage.input_tokens"] == 20


def test_anthropic_string_system_and_content() -> None:
    body = {"model": "c", "system": "Be kind.", "messages": [{"role": "user", "content": "hi"}]}
    found = _check(genai.model_call_attributes("messages", json.dumps(body).encode()))
    assert found["gen_ai.system_instructions"] == [{"type": "text", "content": "Be kind."}]
    assert found["gen_ai.input.messages"] == [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]


def test_anthropic_malformed_blocks_degrade() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}, 5, {"type": "tool_use"}]}, "x"]}
    found = _check(genai.model_call_attributes("messages", json.dumps(body).encode(), b'{"content": "x"}'))
    parts = found["gen_ai.input.messages"][0]["parts"]
    assert [p["type"] for p in parts] == ["image", "unknown", "tool_use"]
    assert "gen_ai.output.messages" not in found


# --- OpenAI Responses ------------------------------------------------------------------------------

RESPONSES_REQUEST = {
    "model": "gpt-5",
    "instructions": "You are a travel agent.",
    "input": [
        {"role": "user", "content": [
            {"type": "input_text", "text": "Flights to Rome?"},
            {"type": "input_image", "image_url": "data:image/webp;base64,UklGRg==", "detail": "auto"},
            {"type": "input_file", "file_id": "file-9"},
        ]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Need flight search."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_A", "name": "search_flights", "arguments": '{"to":"FCO"}'},
        {"type": "function_call", "id": "fc_2", "call_id": "call_B", "name": "search_hotels", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "call_A", "output": '[{"flight":"AZ1"}]'},
        {"type": "function_call_output", "call_id": "call_B", "output": "none"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Found AZ1.", "annotations": []}]},
        {"role": "user", "content": "Book it."},
        {"type": "item_reference", "id": "msg_old"},
    ],
    "tools": [
        {"type": "function", "name": "search_flights", "description": "Find flights",
         "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}, "strict": True},
        {"type": "web_search_preview"},
        {"type": "mcp", "server_label": "deepwiki", "server_url": "https://mcp.deepwiki.com/mcp"},
    ],
    "max_output_tokens": 500,
}  # fmt: skip

RESPONSES_RESPONSE = {
    "id": "resp_67c",
    "object": "response",
    "created_at": 1741476542,
    "status": "completed",
    "model": "gpt-5-2025-08-07",
    "output": [
        {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "User wants booking."}]},
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Booking AZ1.", "annotations": []}]},
        {"type": "function_call", "id": "fc_3", "call_id": "call_C", "name": "book", "arguments": '{"flight":"AZ1"}', "status": "completed"},
    ],
    "usage": {
        "input_tokens": 328,
        "input_tokens_details": {"cached_tokens": 128},
        "output_tokens": 52,
        "output_tokens_details": {"reasoning_tokens": 32},
        "total_tokens": 380,
    },
}  # fmt: skip


def test_responses_request_and_response() -> None:
    attrs = genai.model_call_attributes(
        "responses", json.dumps(RESPONSES_REQUEST).encode(), json.dumps(RESPONSES_RESPONSE).encode()
    )
    found = _check(attrs)
    assert found["gen_ai.system_instructions"] == [{"type": "text", "content": "You are a travel agent."}]
    msgs = found["gen_ai.input.messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant", "user", "user"]
    assert msgs[0]["parts"] == [
        {"type": "text", "content": "Flights to Rome?"},
        {"type": "blob", "modality": "image", "mime_type": "image/webp", "content": "UklGRg=="},
        {"type": "file", "modality": "document", "file_id": "file-9"},
    ]
    assert msgs[1]["parts"] == [
        {"type": "reasoning", "content": "Need flight search."},
        {"type": "tool_call", "id": "call_A", "name": "search_flights", "arguments": {"to": "FCO"}},
        {"type": "tool_call", "id": "call_B", "name": "search_hotels", "arguments": {"city": "Rome"}},
    ]
    assert msgs[2]["parts"] == [
        {"type": "tool_call_response", "id": "call_A", "response": '[{"flight":"AZ1"}]'},
        {"type": "tool_call_response", "id": "call_B", "response": "none"},
    ]
    assert msgs[3]["parts"] == [{"type": "text", "content": "Found AZ1."}]
    assert msgs[5]["parts"] == [{"type": "item_reference", "id": "msg_old"}]
    assert found["gen_ai.tool.definitions"] == [
        {"type": "function", "name": "search_flights", "description": "Find flights",
         "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}},
        {"type": "web_search_preview", "name": "web_search_preview"},
        {"type": "mcp", "name": "deepwiki"},
    ]  # fmt: skip
    (out,) = found["gen_ai.output.messages"]
    assert out["finish_reason"] == "tool_call"
    assert out["parts"] == [
        {"type": "reasoning", "content": "User wants booking."},
        {"type": "text", "content": "Booking AZ1."},
        {"type": "tool_call", "id": "call_C", "name": "book", "arguments": {"flight": "AZ1"}},
    ]
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 128
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 32
    assert attrs["gen_ai.response.id"] == "resp_67c" and attrs["gen_ai.response.model"] == "gpt-5-2025-08-07"


def test_responses_stream_uses_the_final_response() -> None:
    created = {**RESPONSES_RESPONSE, "status": "in_progress", "output": [], "usage": None}
    sse = _sse(
        {"type": "response.created", "sequence_number": 0, "response": created},
        {"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "role": "assistant", "content": []}},
        {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "Booking"},
        {"type": "response.completed", "sequence_number": 9, "response": RESPONSES_RESPONSE},
    )  # fmt: skip
    attrs = genai.model_call_attributes("responses", b'{"input": "Book it."}', sse=sse)
    found = _check(attrs)
    assert len(found["gen_ai.output.messages"][0]["parts"]) == 3
    assert attrs["gen_ai.usage.input_tokens"] == 328
    assert found["gen_ai.input.messages"] == [{"role": "user", "parts": [{"type": "text", "content": "Book it."}]}]


def test_responses_stream_cut_short_keeps_what_arrived() -> None:
    created = {**RESPONSES_RESPONSE, "status": "in_progress", "output": [], "usage": None}
    sse = _sse(
        {"type": "response.created", "response": created},
        {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "Book"},
        {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "ing"},
    )
    (out,) = _check(genai.model_call_attributes("responses", b'{"input": "x"}', sse=sse))["gen_ai.output.messages"]
    assert out["parts"] == [{"type": "text", "content": "Booking"}]
    assert out["finish_reason"] == "error"  # it never said it finished


def test_responses_incomplete_and_failed() -> None:
    incomplete = {"id": "r", "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
                  "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Par"}]}]}  # fmt: skip
    (out,) = genai.output_messages("responses", incomplete) or []
    assert out.finish_reason == "length"
    failed = {"id": "r", "status": "failed", "error": {"code": "server_error"}, "output": []}
    (out,) = genai.output_messages("responses", failed) or []
    assert out.finish_reason == "error" and out.parts == []
