"""The exporter's fast paths against the slow paths they shortcut: same output for every input.

Each fast path (a canonical SSE stream read with two C-level passes, content-only deltas folded
without a call, ...) is checked here against a reference that runs the general code on the same
input, over the realistic streams and over inputs chosen to fall off the fast path halfway.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
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


# --- a chat completion's output and response info in one typed decode ---------------------------


def _response(*choices: Any, **top: Any) -> bytes:
    doc = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o", **top}
    if choices != (None,):
        doc["choices"] = list(choices)
    return json.dumps(doc).encode()


def _choice(index: Any = 0, finish: Any = "stop", **message: Any) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", **message}, "finish_reason": finish}


_DETAILS = {
    "prompt_tokens_details": {"cached_tokens": 5},
    "completion_tokens_details": {"reasoning_tokens": 2},
}

RESPONSES: dict[str, bytes] = {
    "plain": _response(_choice(content="Hello", refusal=None, annotations=[])),
    "usage": _response(_choice(content="x"), usage={"prompt_tokens": 3, "completion_tokens": 4, **_DETAILS}),
    "usage by input/output names": _response(
        _choice(content="x"), usage={"input_tokens": 1, "output_tokens": 2}
    ),
    "usage not an object": _response(_choice(content="x"), usage="many"),
    "details not objects": _response(
        _choice(content="x"),
        usage={"prompt_tokens": True, "prompt_tokens_details": [], "completion_tokens": 1.5},
    ),
    "fingerprint and tier": _response(_choice(content="x"), system_fingerprint="fp", service_tier="default"),
    "empty and odd top-level values": _response(_choice(content="x"), id="", model=5, service_tier=""),
    "n=2 out of order": _response(_choice(1, content="b"), _choice(0, "length", content="a")),
    "index not an int": _response(
        _choice("1", content="b"), _choice(None, content="a"), _choice(True, content="c")
    ),
    "finish reasons": _response(
        _choice(finish=None, content=""), _choice(1, finish="", content="z"), _choice(2, 5)
    ),
    "content null": _response(_choice(content=None)),
    "no content": _response(_choice()),
    "role empty": _response(_choice(content="x", role="")),
    "role null": _response(_choice(content="x", role=None)),
    "role other": _response(_choice(content="x", role="developer")),
    "role tool": _response(_choice(content="x", role="tool", tool_call_id="c")),
    "role function": _response(_choice(content="x", role="function")),
    "role not a string": _response(_choice(content="x", role=3)),
    "content parts": _response(_choice(content=[{"type": "text", "text": "hi"}])),
    "content odd": _response(_choice(content={"a": 1})),
    "refusal": _response(_choice(content=None, refusal="no")),
    "empty refusal": _response(_choice(content="x", refusal="")),
    "reasoning": _response(_choice(content="x", reasoning_content="think")),
    "tool calls": _response(
        _choice(
            content=None,
            tool_calls=[{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        )
    ),
    "empty tool calls": _response(_choice(content="x", tool_calls=[])),
    "function call": _response(_choice(content=None, function_call={"name": "f", "arguments": "{}"})),
    "audio": _response(_choice(content=None, audio={"data": "AAA", "transcript": "hi"})),
    "message null": _response({"index": 0, "message": None, "finish_reason": "stop"}),
    "no message": _response({"index": 0, "finish_reason": "stop"}),
    "message a string": _response({"index": 0, "message": "hi", "finish_reason": "stop"}),
    "choice not an object": _response("x", _choice(content="y")),
    "choices empty": _response(),
    "choices missing": _response(None),
    "choices null": _response(None, choices=None),
    "choices not a list": _response(None, choices={"0": {}}),
    "not an object": b'[{"choices": []}]',
    "not JSON": b'{"choices": [',
    "empty": b"",
    "not UTF-8": b'{"id": "\xff"}',
}


@pytest.mark.parametrize("name", list(RESPONSES))
def test_chat_response_view_equals_the_general_mapping(name: str) -> None:
    from gateway.telemetry import genai
    from gateway.telemetry.genai import chat_view
    from gateway.telemetry.genai.common import decode_object

    body = RESPONSES[name]
    fast = chat_view.chat_response(body)
    if fast is None:  # not the common shape: the caller maps it the general way
        return
    doc = decode_object(body)
    assert fast == (genai.output_messages("chat", doc), genai.response_info("chat", doc)), name


def test_chat_response_view_takes_the_common_shapes() -> None:
    from gateway.telemetry.genai import chat_view

    for name in ("plain", "usage", "n=2 out of order", "index not an int", "finish reasons", "role null"):
        assert chat_view.chat_response(RESPONSES[name]) is not None, name
    for name in (
        "role tool",
        "content parts",
        "refusal",
        "tool calls",
        "audio",
        "message null",
        "not an object",
    ):
        assert chat_view.chat_response(RESPONSES[name]) is None, name


@pytest.mark.parametrize("name", list(RESPONSES))
def test_enriched_model_call_has_the_general_mapping_attributes(name: str) -> None:
    from bench.exporter_throughput import _INPUT
    from exporter.enrich import enrich_batch
    from gateway.telemetry import genai
    from gateway.telemetry.expand import expand_batch
    from gateway.telemetry.wire import SCHEMA_VERSION, Resource, TraceBatch
    from tests.records import chat_record

    body = RESPONSES[name]
    record = msgspec.structs.replace(chat_record(), request_body=_INPUT, response_body=body)
    batch = expand_batch(TraceBatch(SCHEMA_VERSION, Resource("svc", "", "", {}), [record]))
    enrich_batch(batch)
    (call,) = [s for s in batch.spans if s.kind == 3]
    expected = genai.model_call_attributes("chat", _INPUT, body)  # the general path, end to end
    for key, value in expected.items():
        if key.startswith(("gen_ai.usage.", "logfire.")):
            continue  # the gateway's own token counts win; the schema names what the span holds
        assert call.attributes.get(key) == value, (name, key)
    assert ("gen_ai.output.messages" in call.attributes) == ("gen_ai.output.messages" in expected), name
