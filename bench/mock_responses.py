"""OpenAI ``POST /v1/responses`` and tool-calling chat for the mock provider (``bench/mock_upstream.py``).

The mock routes here every POST to ``…/responses`` and every chat completion with ``tools``
whose text holds a script (see below):

- ``/responses`` answers a Response object, or with ``"stream": true`` the real event sequence
  (``response.created``, ``response.in_progress``, ``response.output_item.added``,
  ``response.content_part.added``, ``response.output_text.delta`` …, ``response.output_text.done``,
  ``response.content_part.done``, ``response.output_item.done``, ``response.completed``), each
  with its ``sequence_number``; usage with ``input_tokens_details`` / ``output_tokens_details``.
- ``/responses`` with tools: when the last user text mentions "weather" and no tool result
  follows it, the answer is a call of the first function tool with ``{"location": "Paris"}``
  (arguments stream as several deltas); once a tool result is there, the answer is text quoting
  that result.
- Scripts: a user text ``call add {"a": 2, "b": 3} then call echo {"text": "hi"}`` makes the
  answers call those tools in turn (one per tool result seen), then quote the last result; the
  Anthropic mock follows the same scripts (:func:`anthropic_plan`).
- Model names ``error-<status>`` answer that status; ``cut-<n>`` ends a stream after n events.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec

from bench import mock_upstream as base

_json = msgspec.json.Encoder()
_decode = msgspec.json.Decoder().decode

JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
TOOL_ARGS = '{"location": "Paris"}'
CALL_ID = "call_mock01"


def _args(tool: dict[str, Any]) -> str:
    return str(tool.get("arguments", TOOL_ARGS))


def _call_id(tool: dict[str, Any]) -> str:
    return str(tool.get("call_id", CALL_ID))


def handles(path: str, body: bytes) -> bool:
    """Whether a POST belongs here rather than to the plain chat mock."""
    # Chat with tools only when scripted: the plain chat mock has its own tool calls (mock_tool_calls).
    scripted = b'"tools"' in body and b"call " in body
    return path.endswith("/responses") or (path.endswith("/chat/completions") and scripted)


def _plan_items(items: list[Any]) -> tuple[str, str | None, int]:
    """(last user text, the last tool result after it or None, results after it) of input items."""
    user, result, step = "", None, 0
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type") or ("message" if "role" in item else "")
        if kind == "message" and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                user = content
            elif isinstance(content, list):
                user = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            result, step = None, 0
        elif kind == "function_call_output":
            result, step = str(item.get("output")), step + 1
    return user, result, step


def _plan_messages(messages: list[Any]) -> tuple[str, str | None, int]:
    user, result, step = "", None, 0
    for m in messages:
        if not isinstance(m, dict):
            continue
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                user = content
            elif isinstance(content, list):
                user = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            result, step = None, 0
        elif m.get("role") == "tool":
            result, step = str(m.get("content")), step + 1
    return user, result, step


_SCRIPT = re.compile(r"call (\w+) (\{[^}]*\})")


def scripted(user: str, step: int) -> tuple[str, str] | None:
    """The ``step``-th call of a script in the user's text (``call add {"a": 1} then call …``)."""
    calls = _SCRIPT.findall(user)
    return (calls[step][0], calls[step][1]) if step < len(calls) else None


def anthropic_plan(req: dict[str, Any]) -> tuple[list[str], dict[str, Any] | None, str] | None:
    """The mock Messages answer for a scripted user text (None: not scripted)."""
    user, step, result = "", 0, None
    for m in req.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        if m.get("role") == "user" and any(b.get("type") == "text" for b in blocks):
            user = " ".join(b.get("text", "") for b in blocks if b.get("type") == "text")
            step, result = 0, None
        for b in blocks:
            if b.get("type") == "tool_result":
                step += 1
                result = b.get("content")
                result = result if isinstance(result, str) else _json.encode(result).decode()
    if not _SCRIPT.search(user):
        return None
    call = scripted(user, step)
    if call is None:
        return [f"The tool said: {result}"], None, "end_turn"
    tool = {"id": f"toolu_mock{step}", "name": call[0], "input": _decode(call[1])}
    return ["Calling."], tool, "tool_use"


def _answer(req: dict[str, Any], user: str, result: str | None, step: int = 0) -> tuple[list[str], dict[str, Any] | None]:
    """Text pieces and the tool to call (or None)."""
    tools = [t for t in req.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    call = scripted(user, step)
    if call is not None:
        return [], {"name": call[0], "arguments": call[1], "call_id": f"call_mock{step}"}
    if tools and result is None and "weather" in user.lower():
        tool = tools[0]
        name = tool.get("name") or (tool.get("function") or {}).get("name") or "tool"
        return [], {"name": name}
    if result is not None:
        return [f"The tool said: {result}"], None
    return base.WORDS[: base.CHUNKS], None


# --- /v1/responses --------------------------------------------------------------------------------


def _usage(n_out: int) -> dict[str, Any]:
    return {
        "input_tokens": base.PROMPT_TOKENS,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": n_out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": base.PROMPT_TOKENS + n_out,
    }


def _response(req: dict[str, Any], status: str, output: list[Any], usage: Any, rid: str = "") -> dict[str, Any]:
    return {
        "id": rid or "resp_mock" + str(time.time_ns()),
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": req.get("instructions"),
        "model": req.get("model"),
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": req.get("tool_choice", "auto"),
        "tools": req.get("tools") or [],
        "store": req.get("store", True),
        "usage": usage,
        "metadata": req.get("metadata") or {},
    }


def _items(pieces: list[str], tool: dict[str, Any] | None) -> list[dict[str, Any]]:
    if tool is not None:
        return [{"id": "fc_mock01", "type": "function_call", "status": "completed", "call_id": _call_id(tool),
                 "name": tool["name"], "arguments": _args(tool)}]  # fmt: skip
    text = "".join(pieces)
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return [{"id": "msg_mock01", "type": "message", "role": "assistant", "status": "completed", "content": [part]}]


def _event(seq: list[int], kind: str, **fields: Any) -> bytes:
    fields = {"type": kind, "sequence_number": seq[0], **fields}
    seq[0] += 1
    return b"event: " + kind.encode() + b"\ndata: " + _json.encode(fields) + b"\n\n"


def _stream_events(req: dict[str, Any], pieces: list[str], tool: dict[str, Any] | None) -> list[bytes]:
    seq = [0]
    resp = _response(req, "in_progress", [], None)
    rid = resp["id"]
    events = [_event(seq, "response.created", response=resp), _event(seq, "response.in_progress", response=resp)]
    items = _items(pieces, tool)
    item = items[0]
    if tool is not None:
        added = {**item, "arguments": "", "status": "in_progress"}
        events.append(_event(seq, "response.output_item.added", output_index=0, item=added))
        args = _args(tool)
        for k in range(0, len(args), 8):
            events.append(_event(seq, "response.function_call_arguments.delta", item_id=item["id"],
                                 output_index=0, delta=args[k : k + 8]))  # fmt: skip
        events.append(_event(seq, "response.function_call_arguments.done", item_id=item["id"], output_index=0,
                             name=item["name"], arguments=args))  # fmt: skip
    else:
        added = {**item, "content": [], "status": "in_progress"}
        ids = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        events.append(_event(seq, "response.output_item.added", output_index=0, item=added))
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        events.append(_event(seq, "response.content_part.added", **ids, part=empty))
        for piece in pieces:
            events.append(_event(seq, "response.output_text.delta", **ids, delta=piece, logprobs=[]))
        text = "".join(pieces)
        events.append(_event(seq, "response.output_text.done", **ids, text=text, logprobs=[]))
        events.append(_event(seq, "response.content_part.done", **ids, part=item["content"][0]))
    events.append(_event(seq, "response.output_item.done", output_index=0, item=item))
    done = _response(req, "completed", items, _usage(max(len(pieces), 1)), rid)
    events.append(_event(seq, "response.completed", response=done))
    return events


# --- chat completions with tools -------------------------------------------------------------------


def _chat_chunk(model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    payload = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
    return b"data: " + _json.encode(payload) + b"\n\n"


def _chat_events(req: dict[str, Any], pieces: list[str], tool: dict[str, Any] | None) -> list[bytes]:
    model = req.get("model", "mock")
    events = [_chat_chunk(model, {"role": "assistant", "content": ""}, None)]
    if tool is not None:
        call = {"index": 0, "id": _call_id(tool), "type": "function", "function": {"name": tool["name"], "arguments": ""}}
        events.append(_chat_chunk(model, {"tool_calls": [call]}, None))
        args = _args(tool)
        for k in range(0, len(args), 8):
            frag = {"index": 0, "function": {"arguments": args[k : k + 8]}}
            events.append(_chat_chunk(model, {"tool_calls": [frag]}, None))
        events.append(_chat_chunk(model, {}, "tool_calls"))
    else:
        events += [_chat_chunk(model, {"content": p}, None) for p in pieces]
        events.append(_chat_chunk(model, {}, "stop"))
    if (req.get("stream_options") or {}).get("include_usage"):
        n = max(len(pieces), 1)
        usage = {"prompt_tokens": base.PROMPT_TOKENS, "completion_tokens": n, "total_tokens": base.PROMPT_TOKENS + n}
        payload = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model,
                   "choices": [], "usage": usage}  # fmt: skip
        events.append(b"data: " + _json.encode(payload) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def _chat_body(req: dict[str, Any], pieces: list[str], tool: dict[str, Any] | None) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces) or None}
    if tool is not None:
        message["tool_calls"] = [{"id": _call_id(tool), "type": "function",
                                  "function": {"name": tool["name"], "arguments": _args(tool)}}]  # fmt: skip
    n = max(len(pieces), 1)
    return _json.encode(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model"),
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if tool else "stop"}],  # fmt: skip
            "usage": {"prompt_tokens": base.PROMPT_TOKENS, "completion_tokens": n,
                      "total_tokens": base.PROMPT_TOKENS + n},  # fmt: skip
        }
    )


async def handle(scope: Any, proto: Any, path: str, body: bytes) -> None:
    """Answer a Responses request or a chat completion with tools (see the module docstring)."""
    try:
        req = _decode(body)
    except msgspec.DecodeError:
        proto.response_bytes(400, JSON, base._error(400, "mock: invalid JSON"))
        return
    if not isinstance(req, dict):
        proto.response_bytes(400, JSON, base._error(400, "mock: expected an object"))
        return
    kind, arg = base._behaviour(str(req.get("model", "")))
    if base._state["fail"] or kind == "error":
        status = base._state["fail"] or arg
        proto.response_bytes(status, JSON, base._error(status, "mock: programmed failure"))
        return
    responses = path.endswith("/responses")
    if responses:
        raw_input = req.get("input")
        items = [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else raw_input or []
        pieces, tool = _answer(req, *_plan_items(items))
    else:
        pieces, tool = _answer(req, *_plan_messages(req.get("messages") or []))
    if not req.get("stream"):
        if responses:
            items_out = _items(pieces, tool)
            data = _json.encode(_response(req, "completed", items_out, _usage(max(len(pieces), 1))))
        else:
            data = _chat_body(req, pieces, tool)
        proto.response_bytes(200, JSON, data)
        return
    events = _stream_events(req, pieces, tool) if responses else _chat_events(req, pieces, tool)
    transport = proto.response_stream(200, SSE)
    for sent, event in enumerate(events):
        if kind == "cut" and sent == arg:
            raise ConnectionAbortedError("mock: cut the stream")
        await transport.send_bytes(event)
