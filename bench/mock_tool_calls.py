"""OpenAI tool calls for the mock provider (``bench/mock_upstream.py``), as the real API sends them.

When a chat request has ``tools`` and its last user message mentions "weather", the answer is
two parallel tool calls (``get_weather`` of the first tool's name with ``{"city": "Paris"}``,
then ``get_time`` with ``{"tz": "CET"}``) and ``finish_reason: tool_calls``. Streamed, the
arguments arrive as fragments interleaved across the two calls, like the real API's deltas.
"""

from __future__ import annotations

from typing import Any

import msgspec

_json = msgspec.json.Encoder()
USAGE = {"prompt_tokens": 40, "completion_tokens": 18, "total_tokens": 58}


def wants_tool_calls(messages: list[Any], tools: Any) -> bool:
    """Whether the mock answers this chat request with tool calls."""
    if not tools or not isinstance(tools, list):
        return False
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            text = content if isinstance(content, str) else str(content)
            return "weather" in text.lower()
    return False


def _first_tool(tools: list[Any]) -> str:
    fn = tools[0].get("function") if isinstance(tools[0], dict) else None
    return str(fn.get("name")) if isinstance(fn, dict) and fn.get("name") else "get_weather"


def body(model: str, tools: list[Any]) -> bytes:
    """A non-streamed chat completion with the two tool calls."""
    calls = [
        {"id": "call_w1", "type": "function", "function": {"name": _first_tool(tools), "arguments": '{"city": "Paris"}'}},
        {"id": "call_t2", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}},
    ]  # fmt: skip
    message = {"role": "assistant", "content": None, "tool_calls": calls, "refusal": None}
    return _json.encode(
        {
            "id": "chatcmpl-tools",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls", "logprobs": None}],
            "usage": USAGE,
        }
    )


def events(model: str, tools: list[Any], include_usage: bool) -> list[bytes]:
    """The SSE events of the same answer, streamed."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {
            "id": "chatcmpl-tools", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }  # fmt: skip
        return b"data: " + _json.encode(payload) + b"\n\n"

    def args(index: int, fragment: str) -> bytes:
        return chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})

    out = [
        chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_w1", "type": "function", "function": {"name": _first_tool(tools), "arguments": ""}}]}),
        args(0, '{"ci'),
        chunk({"tool_calls": [
            {"index": 1, "id": "call_t2", "type": "function", "function": {"name": "get_time", "arguments": ""}}]}),
        args(0, 'ty": "Par'),
        args(1, '{"tz": "CET"}'),
        args(0, 'is"}'),
        chunk({}, "tool_calls"),
    ]  # fmt: skip
    if include_usage:
        usage = {"id": "chatcmpl-tools", "object": "chat.completion.chunk", "created": 0, "model": model,
                 "choices": [], "usage": USAGE}  # fmt: skip
        out.append(b"data: " + _json.encode(usage) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out
