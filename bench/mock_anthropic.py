"""Anthropic-compatible ``POST /v1/messages`` for the mock provider (``bench/mock_upstream.py``).

The mock routes every POST whose path ends in ``/messages`` here. It answers like the Messages
API: a ``message`` object, or with ``"stream": true`` the real event sequence
(``message_start``, ``content_block_start``, ``ping``, ``content_block_delta`` …,
``content_block_stop``, ``message_delta`` with ``stop_reason`` and usage, ``message_stop``).

- The request must carry ``anthropic-version`` and ``max_tokens`` (400 otherwise, as upstream).
- When the request has ``tools`` and the last user text mentions "weather", the answer is a
  short text block plus a ``tool_use`` of the first tool with ``{"location": "Paris"}``
  (``stop_reason: tool_use``); its input streams as several ``input_json_delta`` fragments.
- ``max_tokens`` below the mock's chunk count cuts the text and answers ``max_tokens``.
- ``…/messages/count_tokens`` answers ``{"input_tokens": len(body) // 4}``.
- Model names program failures exactly as in the OpenAI mock: ``error-<status>``,
  ``slow-<ms>``, ``stall-<n>``, ``cut-<n>``; errors use Anthropic's error body shape.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from bench import mock_upstream as base

_json = msgspec.json.Encoder()
_decode = msgspec.json.Decoder()

JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
TOOL_INPUT = {"location": "Paris"}
TOOL_ID = "toolu_mock01"


def _error(status: int, message: str) -> bytes:
    etype = _ERROR_TYPES.get(status, "api_error")
    return _json.encode({"type": "error", "error": {"type": etype, "message": message}})


def _last_user_text(messages: list[Any]) -> str:
    for m in reversed(messages):
        if not isinstance(m, dict) or m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(
                b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
            )
        return ""
    return ""


def _wants_tool(req: dict[str, Any]) -> bool:
    tools = req.get("tools")
    return bool(tools) and "weather" in _last_user_text(req.get("messages") or []).lower()


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _json.encode({"type": kind, **data}) + b"\n\n"


def _plan(req: dict[str, Any]) -> tuple[list[str], dict[str, Any] | None, str]:
    """Text pieces, the tool_use block (or None) and the stop reason of the answer."""
    from bench.mock_responses import anthropic_plan  # scripted tool calls (agent loop tests)

    planned = anthropic_plan(req)
    if planned is not None:
        return planned
    if _wants_tool(req):
        tool = req["tools"][0]
        forced = (req.get("tool_choice") or {}).get("type") in ("any", "tool")
        return (
            [] if forced else ["Let me check ", "the weather."],  # as the API: no text before a forced tool
            {"id": TOOL_ID, "name": tool.get("name", "tool")},
            "tool_use",
        )
    n = base.CHUNKS
    max_tokens = int(req.get("max_tokens") or n)
    if max_tokens < n:
        return base.WORDS[:max_tokens], None, "max_tokens"
    return base.WORDS[:n], None, "end_turn"


def _usage(output_tokens: int) -> dict[str, Any]:
    """``usage`` as the Messages API reports it (cache counters and service tier included)."""
    return {
        "input_tokens": base.PROMPT_TOKENS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _message(model: str, req: dict[str, Any]) -> bytes:
    pieces, tool, stop = _plan(req)
    content: list[dict[str, Any]] = [{"type": "text", "text": "".join(pieces)}] if pieces else []
    if tool is not None:
        content.append({"type": "tool_use", "id": tool["id"], "name": tool["name"], "input": tool.get("input", TOOL_INPUT)})
    out_tokens = len(pieces) + (5 if tool else 0)
    return _json.encode(
        {
            "id": "msg_mock",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": _usage(out_tokens),
        }
    )


async def _stream(proto: Any, model: str, req: dict[str, Any], stall_after: int, cut_after: int) -> None:
    pieces, tool, stop = _plan(req)
    t = proto.response_stream(200, SSE)
    start = {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(1),
    }
    await t.send_bytes(_event("message_start", {"message": start}))
    await t.send_bytes(
        _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    )
    await t.send_bytes(_event("ping", {}))
    for i, piece in enumerate(pieces):
        if stall_after >= 0 and i == stall_after:
            await asyncio.sleep(60)
        if cut_after >= 0 and i == cut_after:
            raise ConnectionAbortedError("mock: cut the stream")  # granian drops the connection
        if base.CHUNK_DELAY_S:
            await asyncio.sleep(base.CHUNK_DELAY_S)
        delta = {"type": "text_delta", "text": piece}
        await t.send_bytes(_event("content_block_delta", {"index": 0, "delta": delta}))
    await t.send_bytes(_event("content_block_stop", {"index": 0}))
    out_tokens = len(pieces)
    if tool is not None:
        block = {"type": "tool_use", "id": tool["id"], "name": tool["name"], "input": {}}
        await t.send_bytes(_event("content_block_start", {"index": 1, "content_block": block}))
        args = _json.encode(tool.get("input", TOOL_INPUT)).decode()
        # Fragments split mid-token, as the real API does.
        for frag in (args[:1], args[1:7], args[7:]):
            delta = {"type": "input_json_delta", "partial_json": frag}
            await t.send_bytes(_event("content_block_delta", {"index": 1, "delta": delta}))
        await t.send_bytes(_event("content_block_stop", {"index": 1}))
        out_tokens += 5
    delta_msg = {
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": out_tokens},
    }
    await t.send_bytes(_event("message_delta", delta_msg))
    await t.send_bytes(_event("message_stop", {}))


async def handle(scope: Any, proto: Any, body: bytes) -> None:
    """Answer one ``POST …/messages`` (the body has already been read)."""
    try:
        req = _decode.decode(body)
    except msgspec.DecodeError:
        proto.response_bytes(400, JSON, _error(400, "mock: invalid JSON"))
        return
    if not isinstance(req, dict):
        proto.response_bytes(400, JSON, _error(400, "mock: body must be an object"))
        return
    if not scope.headers.get("anthropic-version"):
        proto.response_bytes(400, JSON, _error(400, "anthropic-version: header is required"))
        return
    if not isinstance(req.get("max_tokens"), int) or not isinstance(req.get("messages"), list):
        proto.response_bytes(400, JSON, _error(400, "max_tokens and messages are required"))
        return
    model = str(req.get("model") or "mock")
    kind, arg = base._behaviour(model)
    if base.FAIL_STATUS:
        proto.response_bytes(base.FAIL_STATUS, JSON, _error(base.FAIL_STATUS, "mock: programmed failure"))
        return
    if kind == "error":
        proto.response_bytes(arg, JSON, _error(arg, f"mock: programmed {arg}"))
        return
    delay = base.LATENCY_S + (arg / 1000 if kind == "slow" else 0)
    if delay:
        await asyncio.sleep(delay)
    if req.get("stream"):
        await _stream(proto, model, req, arg if kind == "stall" else -1, arg if kind == "cut" else -1)
    else:
        proto.response_bytes(200, JSON, _message(model, req))


def count_tokens(scope: Any, proto: Any, body: bytes) -> None:
    """Answer ``POST …/messages/count_tokens``: one token per 4 bytes of the body, at least 1."""
    if not scope.headers.get("anthropic-version"):
        proto.response_bytes(400, JSON, _error(400, "anthropic-version: header is required"))
        return
    try:
        req = _decode.decode(body)
    except msgspec.DecodeError:
        proto.response_bytes(400, JSON, _error(400, "mock: invalid JSON"))
        return
    if not isinstance(req, dict) or not isinstance(req.get("messages"), list):
        proto.response_bytes(400, JSON, _error(400, "messages: Field required"))
        return
    proto.response_bytes(200, JSON, _json.encode({"input_tokens": max(1, len(body) // 4)}))
