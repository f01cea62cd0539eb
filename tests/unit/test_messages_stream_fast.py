"""The templated fast path of hub → Messages streams gives the general path's bytes exactly."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from bench import openai_shapes
from gateway.sse import StreamRelay
from gateway.surfaces import StreamChain, messages_stream
from gateway.surfaces.messages_stream import HubToMessagesStream

TEXTS = [
    'say "hi"',
    "back\\slash \\n \\u0041",
    "ünïcødé — 日本語 🙂",
    "ctl \x00\x01\x1f\x7f tab\t nl\n\n cr\r",
    "\u2028\u2029 </script> & <b>",
    "data: [DONE]\n\n",
    '"usage": {"prompt_tokens": 1}',
    " ",
]


def realistic(texts: list[str]) -> list[bytes]:
    """Chunks as api.openai.com sends them (usage null on every chunk, obfuscation...)."""
    return list(openai_shapes.chat_stream("gpt-4o", texts, 7, include_usage=True))


def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": choices, **extra}
    return b"data: " + msgspec.json.encode(body) + b"\n\n"


def text(content: Any, **delta: Any) -> dict[str, Any]:
    return {"index": 0, "delta": {"content": content, **delta}, "finish_reason": None}


def run(events: list[bytes], split: int | None = None) -> bytes:
    """Feed ``events`` one per call (the fast path's case) or as one stream cut every ``split`` bytes."""
    stage = HubToMessagesStream()
    if split is None:
        parts = events
    else:
        data = b"".join(events)
        parts = [data[i : i + split] for i in range(0, len(data), split)]
    return b"".join(stage.feed(p) for p in parts) + stage.flush()


def general(events: list[bytes], monkeypatch: pytest.MonkeyPatch) -> bytes:
    with monkeypatch.context() as m:
        m.setattr(messages_stream, "_plain_text", lambda payload: "")
        return run(events)


def texts_of(sse: bytes) -> str:
    out = []
    for block in sse.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                ev = json.loads(line[6:])
                if ev["type"] == "content_block_delta" and ev["delta"]["type"] == "text_delta":
                    out.append(ev["delta"]["text"])
    return "".join(out)


def test_realistic_stream_takes_the_fast_path_and_matches_the_general_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = realistic(TEXTS)
    calls: list[str] = []
    plain = messages_stream._plain_text

    def spy(payload: bytes) -> str:
        calls.append(out := plain(payload))
        return out

    with monkeypatch.context() as m:
        m.setattr(messages_stream, "_plain_text", spy)
        fast = run(events)
    assert sum(1 for c in calls if c) == len(TEXTS) - 1  # the first text opens the block
    assert fast == general(events, monkeypatch)
    assert texts_of(fast) == "".join(TEXTS)
    for split in (1, 7, 64):  # any chunking: the general path gives the same bytes
        assert run(events, split) == fast


ODD = [
    chunk([text("x")], usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}),
    chunk([{"index": 0, "delta": {"content": "x"}, "finish_reason": "length"}]),
    chunk([text("x"), {"index": 1, "delta": {"content": "y"}, "finish_reason": None}]),
    chunk([{"index": 1, "delta": {"content": "y"}, "finish_reason": None}]),
    chunk([text("x", refusal="no")]),
    chunk([text(None, refusal="no")]),
    chunk([text("x", reasoning_content="hmm")]),
    chunk([text("x", reasoning="hmm")]),
    chunk([text("x", reasoning={"text": "hmm"})]),
    chunk([text("", reasoning_content="")]),
    chunk([text(None, tool_calls=[{"index": 0, "id": "t", "function": {"name": "f", "arguments": "{}"}}])]),
    chunk([text("x")], error={"type": "server_error", "message": "boom"}),
    chunk([text(5)]),
    chunk([]),
    chunk([{"index": 0, "finish_reason": None}]),
    b'data:{"choices":[{"index":0,"delta":{"content":"no space"}}]}\n\n',
    b'event: x\ndata: {"choices":[{"index":0,"delta":{"content":"event line"}}]}\n\n',
    b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"two lines"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":"crlf"}}]}\r\n\r\n',
    b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\ndata: {"choices":[{"index":0,"delta":{"content":"b"}}]}\n\n',
    b"data: not json\n\n",
    b": a comment\n\n",
]


@pytest.mark.parametrize("odd", ODD)
def test_anything_unusual_inside_a_text_block_gives_the_general_paths_bytes(
    odd: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = realistic(["a", "b"])
    events[2:2] = [odd, chunk([text("after")])]  # after the first text chunk opened the block
    fast = run(events)
    assert fast == general(events, monkeypatch)
    assert run(events, 5) == fast


def test_no_fast_path_before_a_text_block_or_after_the_end() -> None:
    stage = HubToMessagesStream()
    first = stage.feed(chunk([text("hi")]))
    assert b"message_start" in first and b"content_block_start" in first and b'"text":"hi"' in first
    thinking = stage.feed(chunk([text(None, reasoning_content="hmm")]))
    assert b"content_block_stop" in thinking and b"thinking_delta" in thinking
    back = stage.feed(chunk([text("again")]))  # a new text block, opened by the general path
    assert b'"content_block_start","index":2' in back and b'"index":2,"delta"' in back
    stage.feed(b"data: [DONE]\n\n")
    assert stage.done
    assert stage.feed(chunk([text("late")])) == b""


def test_no_fast_path_after_an_error_event() -> None:
    stage = HubToMessagesStream()
    stage.feed(chunk([text("hi")]))
    err = stage.feed(chunk([], error={"type": "server_error", "message": "boom"}))
    assert b"event: error" in err and stage.done
    assert stage.feed(chunk([text("late")])) == b""


def chain_run(events: list[bytes], fast: bool, split: int | None = None) -> tuple[bytes, StreamChain]:
    """Through the chain as gateway.attempt builds it for /v1/messages → an OpenAI target."""
    chain = StreamChain(None, StreamRelay(strip_usage=False, keep_events=True), HubToMessagesStream(), True)
    if not fast:
        chain._fast = None
    data = b"".join(events)
    parts = events if split is None else [data[i : i + split] for i in range(0, len(data), split)]
    out = b"".join(chain.feed(p) for p in parts) + chain.flush()
    return out, chain


@pytest.mark.parametrize("odd", [b"", *ODD])
def test_chain_hands_plain_text_chunks_to_the_stage_with_the_relays_result(odd: bytes) -> None:
    events = realistic(TEXTS)
    events[3:3] = [odd] if odd else []
    ref, ref_chain = chain_run(events, fast=False)
    for split in (None, 1, 7):
        out, chain = chain_run(events, fast=True, split=split)
        assert out == ref
        assert chain.usage == ref_chain.usage
        assert chain.done and ref_chain.done
        assert b"".join(chain.events) == ref
    assert ref_chain.usage is not None  # read by the relay from the last chunk, as before


def test_chain_does_not_skip_the_relay_while_it_holds_a_tail() -> None:
    events = realistic(["a", "b", "c"])
    chain = StreamChain(None, StreamRelay(strip_usage=False), HubToMessagesStream(), False)
    chain.feed(events[0] + events[1])
    half = len(events[2]) // 2
    assert chain.feed(events[2][:half]) == b""
    assert chain.relay.pending
    out = chain.feed(events[2][half:] + events[3])  # completes the held event, then one more
    assert texts_of(out) == "bc"
