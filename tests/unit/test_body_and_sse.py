"""The request view and the SSE relay: pure functions, no sockets."""

from __future__ import annotations

import msgspec
import pytest

from gateway import sse
from gateway.body import parse_request
from gateway.errors import InvalidRequest
from gateway.sse import StreamRelay


def test_upstream_body_rewrites_model_and_keeps_the_rest_bytewise() -> None:
    body = (
        b'{"model":"p/gpt-4o","messages":[{"role":"user","content":"h\\u00e9 \\"q\\""}],"temperature":0.50}'
    )
    req = parse_request(body, "chat")
    out = req.upstream_body("gpt-4o")
    assert out == body.replace(b"p/gpt-4o", b"gpt-4o")  # 0.50 and the escapes survive untouched


def test_stream_gets_include_usage_merged() -> None:
    req = parse_request(b'{"model":"m","messages":[],"stream":true,"stream_options":{"x":1}}', "chat")
    assert not req.client_wants_usage
    out = msgspec.json.decode(req.upstream_body("u"))
    assert out["stream_options"] == {"x": 1, "include_usage": True}
    req = parse_request(
        b'{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}', "chat"
    )
    assert req.client_wants_usage


def test_overrides_applied() -> None:
    req = parse_request(b'{"model":"m","messages":[],"temperature":1}', "chat")
    assert msgspec.json.decode(req.upstream_body("u", {"temperature": 0.2}))["temperature"] == 0.2


def test_embeddings_cannot_stream() -> None:
    with pytest.raises(InvalidRequest):
        parse_request(b'{"model":"m","input":"x","stream":true}', "embeddings")


EVENTS = (
    b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
    b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("strip", [True, False])
def test_relay_at_every_split_point(strip: bool) -> None:
    for cut in range(1, len(EVENTS)):
        relay = StreamRelay(strip_usage=strip)
        out = relay.feed(EVENTS[:cut]) + relay.feed(EVENTS[cut:]) + relay.flush()
        assert relay.usage is not None and relay.usage.total_tokens == 5
        assert relay.done
        if strip:
            assert b'"usage"' not in out and out.endswith(b"data: [DONE]\n\n") and b'"content":"a"' in out
        else:
            assert out == EVENTS


def test_relay_forwards_complete_events_only() -> None:
    relay = StreamRelay(strip_usage=False)
    assert relay.feed(b'data: {"choices":[]') == b""
    assert relay.feed(b"}\n\ndata: {") == b'data: {"choices":[]}\n\n'


def test_relay_handles_crlf_and_keeps_events() -> None:
    relay = StreamRelay(strip_usage=True, keep_events=True)
    relay.feed(EVENTS.replace(b"\n", b"\r\n"))
    assert relay.usage is not None
    kept = b"".join(relay.events)
    assert kept.count(b"data: ") == 3 and kept.startswith(b'data: {"choices"')  # usage event stripped


def _openai_chunk(content: str, usage: str = "null", sep: str = "") -> bytes:
    """A chunk as OpenAI streams it once usage is requested: ``usage`` present on every chunk."""
    return (
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
        b'"service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":'
        b'{"content":"' + content.encode() + b'"},"logprobs":null,"finish_reason":null}],'
        b'"usage":' + sep.encode() + usage.encode() + b',"obfuscation":"x"}\n\n'
    )


_FINAL_USAGE = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    b'"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6},"obfuscation":"y"}\n\n'
)


@pytest.mark.parametrize("sep", ["", " "])
def test_relay_passes_null_usage_chunks_and_reads_the_final_one(sep: str) -> None:
    relay = StreamRelay(strip_usage=True)
    chunks = [_openai_chunk(w, sep=sep) for w in ("usage", "a", "b")]  # a token spelled "usage" too
    out = b"".join(relay.feed(c) for c in chunks)
    assert relay.usage is None
    out += relay.feed(_FINAL_USAGE + b"data: [DONE]\n\n")
    assert out == b"".join(chunks) + b"data: [DONE]\n\n"  # null-usage chunks pass untouched
    assert relay.usage == sse.Usage(4, 2, 6) and relay.done


@pytest.mark.parametrize("sep", ["", " "])
def test_only_blocks_with_a_usage_object_are_decoded(sep: str) -> None:
    assert not sse._carries_usage(_openai_chunk("a", sep=sep))
    assert not sse._carries_usage(_openai_chunk("a", sep=sep) * 3)
    assert not sse._carries_usage(b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n')
    assert sse._carries_usage(_FINAL_USAGE)
    assert sse._carries_usage(_openai_chunk("a", sep=sep) + _FINAL_USAGE)
    assert sse._carries_usage(_openai_chunk("usage", sep=sep))  # decoded, finds nothing: safe


def test_relay_reads_usage_among_null_usage_events_in_one_chunk() -> None:
    relay = StreamRelay(strip_usage=False, keep_events=True)
    block = _openai_chunk("a") + _FINAL_USAGE + b"data: [DONE]\n\n"
    assert relay.feed(block[:50]) == b""  # an incomplete event waits for its end
    assert relay.feed(block[50:]) == block
    assert relay.usage == sse.Usage(4, 2, 6) and relay.events == [block]


def test_relay_without_keep_events_holds_none() -> None:
    relay = StreamRelay(strip_usage=True)
    relay.feed(_openai_chunk("a") + _FINAL_USAGE)
    assert relay.events == [] and relay.usage is not None


def test_a_token_spelled_done_does_not_end_the_stream() -> None:
    relay = StreamRelay(strip_usage=True)
    relay.feed(_openai_chunk("[DONE]") + _openai_chunk("[DONE]\\n"))  # JSON escapes a newline
    assert not relay.done
    relay.feed(b"data: [DONE]\n\n")
    assert relay.done


def _realistic_stream() -> list[bytes]:
    from bench import openai_shapes

    words = [f"tok{i} " for i in range(40)]
    return list(openai_shapes.chat_stream("gpt-4o-2024-08-06", words, 12, include_usage=True))


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("strip", [True, False])
def test_relay_output_is_the_stream_whatever_the_chunking(strip: bool, crlf: bool) -> None:
    """The whole-event fast path and the split path give the same bytes, usage and end."""
    import random

    events = _realistic_stream()
    whole = b"".join(events)
    usage_event = next(e for e in events if b'"usage":{' in e)
    expected = whole.replace(usage_event, b"") if strip else whole
    if crlf:
        whole = whole.replace(b"\n", b"\r\n")
    rng = random.Random(7)
    for _ in range(60):
        cuts = sorted(rng.sample(range(1, len(whole)), rng.randint(0, 80)))
        pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
        relay = StreamRelay(strip_usage=strip, keep_events=True)
        out = b"".join(relay.feed(p) for p in pieces) + relay.flush()
        assert out == expected and b"".join(relay.events) == expected
        assert relay.done and relay.usage == sse.Usage(12, 40, 52)
