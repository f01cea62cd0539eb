"""Responses ↔ chat hub translation and Responses streams, without sockets (recorded shapes)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import InvalidRequest
from gateway.responses.request import ResponsesRequest, native_items
from gateway.responses.stream import ChatToResponses, NativeStage
from gateway.responses.translate import chat_to_response, normalize_input, to_chat_request

# What openai-agents' OpenAIResponsesModel sends for an agent with one function tool, second turn.
AGENTS_REQUEST: dict[str, Any] = {
    "model": "chat/gpt-4o",
    "instructions": "You are a helpful agent.",
    "input": [
        {"content": "What's the weather in Paris?", "role": "user"},
        {"arguments": '{"city":"Paris"}', "call_id": "call_1", "name": "get_weather", "type": "function_call",
         "id": "fc_1", "status": "completed"},  # fmt: skip
        {"call_id": "call_1", "output": "sunny", "type": "function_call_output"},
    ],
    "include": [],
    "tools": [{"type": "function", "name": "get_weather", "description": "Weather.", "strict": True,
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                              "additionalProperties": False}}],  # fmt: skip
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "temperature": 0.2,
    "top_p": 0.9,
    "max_output_tokens": 300,
    "truncation": "disabled",
    "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
    "reasoning": {"effort": "low", "summary": "auto"},
    "store": True,
    "stream": True,
}


def test_agents_request_to_chat() -> None:
    body = AGENTS_REQUEST
    chat, dropped = to_chat_request(body, [], normalize_input(body["input"]), "gpt-4o")
    assert dropped == []
    assert chat["model"] == "gpt-4o"
    assert chat["messages"] == [
        {"role": "system", "content": "You are a helpful agent."},
        {"role": "user", "content": [{"type": "text", "text": "What's the weather in Paris?"}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]  # fmt: skip
    assert chat["tools"][0]["function"]["name"] == "get_weather"
    assert chat["tools"][0]["function"]["strict"] is True
    assert chat["tool_choice"] == "auto" and chat["parallel_tool_calls"] is False
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }
    assert chat["reasoning_effort"] == "low"
    assert chat["max_completion_tokens"] == 300
    assert chat["temperature"] == 0.2 and chat["top_p"] == 0.9
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    for gateway_field in ("store", "include", "truncation", "input", "instructions"):
        assert gateway_field not in chat


def test_history_and_parts() -> None:
    history = [
        {"id": "msg_a", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"id": "rs_1", "type": "reasoning", "summary": []},
        {"id": "msg_b", "type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "hello", "annotations": []}]},  # fmt: skip
    ]
    items = normalize_input(
        [
            {"role": "developer", "content": "be nice"},
            {"role": "user", "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
            ]},
        ]
    )  # fmt: skip
    chat, _ = to_chat_request({"model": "m", "input": []}, history, items, "m")
    assert chat["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": "hello"},
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        ]},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"prompt": {"id": "p"}}, "prompt"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
        ({"instructions": 5}, "instructions"),
    ],
)
def test_unsupported_fields_are_named(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        to_chat_request({"model": "m", "input": "x", **body}, [], normalize_input("x"), "m")
    assert err.value.param == param


def test_operator_listed_builtin_tools_are_dropped() -> None:
    body = {"model": "m", "input": "x", "tools": [{"type": "web_search"}, {"type": "mcp", "server_label": "s"}]}
    chat, dropped = to_chat_request(body, [], normalize_input("x"), "m", frozenset({"web_search"}))
    assert dropped == ["web_search"] and "tools" not in chat


@pytest.mark.parametrize(
    ("items", "param"),
    [
        ([{"type": "input_file", "file_id": "f"}], "input[0].content[0]"),
        ([{"type": "input_image", "file_id": "f"}], "input[0].content[0]"),
        ([{"type": "input_audio"}], "input[0].content[0]"),
    ],
)
def test_user_parts_no_chat_model_takes(items: list[Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        to_chat_request({"model": "m", "input": []}, [], normalize_input([{"role": "user", "content": items}]), "m")
    assert err.value.param == param


def test_chat_completion_to_response() -> None:
    chat = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check.", "reasoning_content": "thinking",
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                  "prompt_tokens_details": {"cached_tokens": 4},
                  "completion_tokens_details": {"reasoning_tokens": 2}},
    }  # fmt: skip
    resp = chat_to_response(json.dumps(chat).encode(), {"model": "chat/m", "input": "x"}, "resp_1", 100)
    assert resp["id"] == "resp_1" and resp["object"] == "response" and resp["status"] == "completed"
    assert resp["model"] == "chat/m" and resp["created_at"] == 100
    assert [o["type"] for o in resp["output"]] == ["reasoning", "message", "function_call"]
    assert resp["output"][0]["content"] == [{"type": "reasoning_text", "text": "thinking"}]
    assert resp["output"][1]["content"][0]["text"] == "Let me check."
    call = resp["output"][2]
    assert call["call_id"] == "call_9" and call["name"] == "f" and call["arguments"] == "{}"
    assert resp["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 15,
    }


def test_length_and_refusal() -> None:
    chat = {"choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": None, "refusal": "no"}}]}  # fmt: skip
    resp = chat_to_response(json.dumps(chat).encode(), {"model": "m"}, "resp_2")
    assert resp["status"] == "incomplete"
    assert resp["incomplete_details"] == {"reason": "max_output_tokens"}
    assert resp["output"][0]["content"] == [{"type": "refusal", "refusal": "no"}]


# --- streams ---------------------------------------------------------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    payload = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta,
               "finish_reason": finish}]}  # fmt: skip
    return "data: " + json.dumps(payload) + "\n\n"


CHAT_STREAM = (
    _chunk({"role": "assistant", "content": ""})
    + _chunk({"reasoning_content": "hmm"})
    + _chunk({"content": "Hel"})
    + _chunk({"content": "lo"})
    + _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                              "function": {"name": "f", "arguments": ""}}]})  # fmt: skip
    + _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]})
    + _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]})
    + _chunk({}, "tool_calls")
    + 'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}\n\n'
    + "data: [DONE]\n\n"
).encode()


def _events(data: bytes) -> list[dict[str, Any]]:
    out = []
    for block in data.decode().split("\n\n"):
        lines = block.split("\n")
        if len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "):
            ev = json.loads(lines[1][6:])
            assert ev["type"] == lines[0][7:]
            out.append(ev)
    return out


@pytest.mark.parametrize("step", [1, 7, 64, len(CHAT_STREAM)])
def test_chat_stream_to_responses_events(step: int) -> None:
    conv = ChatToResponses({"model": "chat/m", "input": "x"}, "resp_s", 1)
    data = b"".join(conv.feed(CHAT_STREAM[i : i + step]) for i in range(0, len(CHAT_STREAM), step))
    events = _events(data)
    assert conv.done
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",  # reasoning
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",  # message
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",  # function call
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]["response"]
    assert final["id"] == "resp_s" and final["status"] == "completed"
    assert [o["type"] for o in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][1]["content"][0]["text"] == "Hello"
    assert final["output"][2]["arguments"] == '{"a":1}' and final["output"][2]["call_id"] == "call_1"
    assert final["usage"]["input_tokens"] == 3 and final["usage"]["output_tokens"] == 4
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == [0, 1, 2]


def test_chat_stream_length_is_incomplete() -> None:
    conv = ChatToResponses({"model": "m"}, "r", 1)
    events = _events(conv.feed((_chunk({"content": "a"}) + _chunk({}, "length") + "data: [DONE]\n\n").encode()))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_chat_stream_error_event_fails_the_response() -> None:
    conv = ChatToResponses({"model": "m"}, "r", 1)
    data = conv.feed((_chunk({"content": "a"}) + 'data: {"error":{"message":"boom","type":"overloaded"}}\n\n').encode())
    events = _events(data)
    assert conv.done and events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "overloaded", "message": "boom"}
    assert conv.feed(b"data: [DONE]\n\n") == b""  # nothing after the end


def test_chat_stream_cut_short() -> None:
    conv = ChatToResponses({"model": "m"}, "r", 1)
    conv.feed(_chunk({"content": "a"}).encode())
    events = _events(conv.fail("stream_truncated", "ended early"))
    assert [e["type"] for e in events] == ["response.failed"]
    assert events[0]["response"]["output"][0]["status"] == "incomplete"


NATIVE_STREAM = (
    b'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"r"}}\n\n'
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,'
    b'"delta":"response.completed is just text"}\n\n'
    b'event: response.completed\ndata: {"type":"response.completed","sequence_number":2,'
    b'"response":{"id":"r","status":"completed","usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}}\n\n'
)


@pytest.mark.parametrize("step", [1, 13, len(NATIVE_STREAM)])
def test_native_stage_relays_as_is_and_reads_the_terminal_event(step: int) -> None:
    stage = NativeStage(keep_events=True)
    out = b"".join(stage.feed(NATIVE_STREAM[i : i + step]) for i in range(0, len(NATIVE_STREAM), step))
    assert out == NATIVE_STREAM
    assert stage.done and stage.response is not None and stage.response["status"] == "completed"
    assert stage.usage is not None and stage.usage.prompt_tokens == 5 and stage.usage.total_tokens == 7
    assert stage.count == 3
    assert json.loads(stage.fail("x", "y").split(b"data: ")[1])["sequence_number"] == 3


def test_request_view_and_native_body() -> None:
    raw = json.dumps({"model": "native/gpt-4o", "input": "next", "previous_response_id": "resp_1"}).encode()
    req = ResponsesRequest.parse(raw)
    assert req.client_wants_usage and req.store and req.previous_id == "resp_1"
    req.history = [
        {"id": "msg_1", "type": "message", "role": "user", "status": "completed",
         "content": [{"type": "input_text", "text": "first"}]},
        {"id": "rs_1", "type": "reasoning", "summary": []},
        {"id": "msg_2", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "ok", "annotations": [], "logprobs": []}]},
    ]  # fmt: skip
    body = json.loads(req.native_body("gpt-4o", {"temperature": 0}))
    assert body["model"] == "gpt-4o" and body["temperature"] == 0
    assert "previous_response_id" not in body
    assert body["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "first"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        {"role": "user", "content": "next"},
    ]
    plain = ResponsesRequest.parse(b'{"model":"m","input":"x","stream":true}')
    assert plain.native_body("up", None) == b'{"model":"up","input":"x","stream":true}'


def test_native_items_turn_gateway_mcp_calls_into_function_calls() -> None:
    items = native_items([{"id": "mcp_1", "type": "mcp_call", "name": "add", "arguments": "{}", "output": "3",
                           "server_label": "calc"}, {"type": "mcp_list_tools", "id": "l", "tools": []}])  # fmt: skip
    assert items == [
        {"type": "function_call", "call_id": "mcp_1", "name": "add", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "mcp_1", "output": "3"},
    ]
