"""The exporter's fast paths against the slow paths they shortcut: same output for every input.

Each fast path (a canonical SSE stream read with two C-level passes, content-only deltas folded
without a call, ...) is checked here against a reference that runs the general code on the same
input, over the realistic streams and over inputs chosen to fall off the fast path halfway.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.exporter_throughput import _TOOLS_SSE
from gateway.telemetry.genai import openai
from gateway.telemetry.genai.common import DECODE_ERRORS


def _reference_assemble(chunks: list[bytes], usage: tuple[int | None, int | None] | None) -> dict[str, Any]:
    """assemble_chat_stream as it was before the fast paths: line by line, _merge per choice."""
    first = None
    usage_doc = None
    choices: dict[int, Any] = {}
    is_text = False
    payloads = openai.sse_payloads(chunks)
    try:
        decoded = openai._decode_chunks(b"[" + b",".join(payloads) + b"]")
    except DECODE_ERRORS:
        decoded = []
        for p in payloads:
            try:
                decoded.append(openai._decode_chunk(p))
            except DECODE_ERRORS:
                pass
    for c in decoded:
        first = c if first is None or first.id is None else first
        usage_doc = usage_doc if c.usage is None else c.usage
        for ch in c.choices:  # every choice through _merge: no shortcut for content-only deltas
            is_text = openai._merge(choices.setdefault(ch.index, openai._Acc()), ch) or is_text
    return openai._document(first, usage_doc, choices, is_text, usage)


_BASE = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}


def _chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, index: int = 0, **extra: Any
) -> dict:
    choice: dict[str, Any] = {"index": index, "finish_reason": finish, **extra}
    if delta is not None:
        choice["delta"] = delta
    return {**_BASE, "choices": [choice]}


def _canonical(*events: Any, done: bool = True) -> bytes:
    raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return raw + (b"data: [DONE]\n\n" if done else b"")


def _call(call_id: str, name: str) -> dict[str, Any]:
    return {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}


_USAGE = {**_BASE, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}

STREAMS: dict[str, bytes] = {
    "bench tools-stream": _TOOLS_SSE,
    "role, content, finish, usage": _canonical(
        _chunk({"role": "assistant", "content": ""}),
        *[_chunk({"content": f"w{i} "}) for i in range(5)],
        _chunk({}, "stop"),
        _USAGE,
    ),
    "tool calls": _canonical(
        _chunk({"role": "assistant", "content": None, "tool_calls": [_call("call_a", "f")]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '": 1}'}}]}),
        _chunk({}, "tool_calls"),
    ),  # fmt: skip
    "refusal, reasoning, two choices": _canonical(
        _chunk({"reasoning_content": "think"}),
        _chunk({"content": "a"}, index=1),
        _chunk({"refusal": "no"}),
        _chunk({"content": "b"}, index=1),
        _chunk({"content": "c"}, "length", index=1),
        {**_BASE, "system_fingerprint": "fp", "service_tier": "default", "choices": []},
    ),
    "legacy text": _canonical(*[{"id": "c", "choices": [{"index": 0, "text": t}]} for t in ("a", "b")]),
    "no [DONE]": _canonical(_chunk({"content": "x"}), done=False),
    "empty finish reason": _canonical(_chunk({"content": "x"}, ""), _chunk({"content": "y"})),
    "no delta": _canonical(_chunk(None), _chunk({"content": "y"})),
    "no id first": _canonical({"choices": []}, _chunk({"content": "y"})),
    # Off the canonical form: every one must read as the line-by-line path reads it.
    "no space after data:": _canonical(_chunk({"content": "x"})).replace(b"data: ", b"data:"),
    "CRLF": _canonical(_chunk({"content": "x"}), _chunk({"content": "y"})).replace(b"\n", b"\r\n"),
    "event lines": b"event: x\n" + _canonical(_chunk({"content": "x"})),
    "comment line": _canonical(_chunk({"content": "x"})) + b": keep-alive\n\n",
    "empty payload mid-stream": b"data: \n\n" + _canonical(_chunk({"content": "x"})),
    "[DONE] mid-stream": _canonical(_chunk({"content": "x"})) + _canonical(_chunk({"content": "y"})),
    "bad JSON event": _canonical(_chunk({"content": "x"})) + b"data: {nope\n\n" + _canonical(_USAGE),
    "bad type event": _canonical(_chunk({"content": "x"}), {"choices": "x"}, _chunk({"content": "y"})),
    "cut mid-event": _canonical(_chunk({"content": "x"}), _chunk({"content": "y"}))[:-30],
    "blank line only": b"\n\n",
    "only [DONE]": b"data: [DONE]\n\n",
    "empty": b"",
    "vertical tab": b"data: " + json.dumps(_chunk({"content": "x"})).encode() + b"\x0b\n\n",
    "content with data: inside": _canonical(_chunk({"content": "\n\ndata: {}"})),
}


@pytest.mark.parametrize("usage", [None, (7, 9), (None, None)])
@pytest.mark.parametrize("name", list(STREAMS))
def test_assemble_chat_stream_equals_the_line_by_line_path(name: str, usage: Any) -> None:
    raw = STREAMS[name]
    expected = _reference_assemble([raw], usage)
    assert openai.assemble_chat_stream([raw], usage) == expected, name
    # However the network cut it.
    for cut in (1, 7, 64):
        pieces = [raw[i : i + cut] for i in range(0, len(raw), cut)]
        assert openai.assemble_chat_stream(pieces, usage) == expected, (name, cut)


def test_canonical_array_only_accepts_one_data_line_per_event() -> None:
    assert openai.canonical_array(b'data: {"a":1}\n\ndata: [1]\n\ndata: [DONE]\n\n') == b'[{"a":1},[1]]'
    assert openai.canonical_array(b'data: {"a":1}\n\n') == b'[{"a":1}]'
    for raw in (b"", b'data: {"a":1}\n', b"event: e\ndata: {}\n\n", b"data: {}\ndata: {}\n\n"):
        assert openai.canonical_array(raw) is None, raw


def test_client_attributes_from_the_template_equal_the_built_ones() -> None:
    from gateway.telemetry.expand import _client_attributes, client_attributes
    from gateway.telemetry.wire import AttemptRecord, TargetInfo

    targets = [
        TargetInfo("openai-main/gpt-4o", "openai", "gpt-4o", "api.openai.com", 443),
        TargetInfo("local/llama", "vllm", "llama", "", 0),
    ]
    for target in targets:
        for kind in ("primary", "retry", "fallback"):
            for status, error in ((200, ""), (0, ""), (502, "UpstreamError")):
                attempt = AttemptRecord(b"s" * 8, target, kind, 1, 2, status, error, "boom" if error else "")
                for endpoint in ("chat", "embeddings", "completions"):
                    for stream in (False, True):
                        expected = _client_attributes(attempt, endpoint, stream)
                        for _ in range(2):  # built, then from the template
                            got = client_attributes(attempt, endpoint, stream)
                            assert list(got.items()) == list(expected.items())
                            got["changed"] = True  # the caller's copy: never the template
