"""Microbenchmark of the surfaces' own work per request: µs of CPU, no sockets.

    python -m bench.micro_surfaces [--number 20000]

What the gateway does in Python around one call, per inbound API and path:

    chat            /v1/chat/completions → OpenAI target (parse, model rewrite, usage read)
    messages        /v1/messages → Anthropic target (native: the same work, Messages shapes)
    messages-hub    /v1/messages → OpenAI target (request, response through the hub)
    *-stream        the stream of the bench mock relayed (chat: ChatRelay; messages: MessagesRelay;
                    messages-hub: OpenAI chunks → hub relay → Messages events)
    *-stream-150    a realistic 150-chunk api.openai.com stream (``bench/openai_shapes.py``:
                    ``"usage": null`` on every chunk, ``obfuscation``, ``service_tier``), one
                    event per upstream read, as the gateway runs it (chat: the hub relay alone)

The issue's budget: Messages pass-through within 10 % of chat, translated streams within 25 %.
Timed in process CPU time, best of 5 runs (a shared machine's other load does not count).
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections.abc import Callable

import msgspec

from bench import openai_shapes
from gateway.providers import ADAPTERS
from gateway.sse import StreamRelay, usage_of
from gateway.surfaces import StreamChain
from gateway.surfaces.chat import CHAT
from gateway.surfaces.messages import MESSAGES

_json = msgspec.json.Encoder().encode
HEADERS = {"anthropic-version": "2023-06-01"}
PROMPT = [{"role": "user", "content": "Say hello in one word."}]
CHAT_REQ = _json({"model": "mock/gpt-4o", "messages": PROMPT})
MSG_REQ = _json({"model": "anth/claude", "max_tokens": 64, "messages": PROMPT})
WORDS = [f"tok{i} " for i in range(8)]
CHAT_RESP = _json(
    {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-4o",
     "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)}, "finish_reason": "stop"}],
     "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}}
)  # fmt: skip
MSG_RESP = _json(
    {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "end_turn",
     "stop_sequence": None, "content": [{"type": "text", "text": "".join(WORDS)}],
     "usage": {"input_tokens": 12, "output_tokens": 8}}
)  # fmt: skip


def _chat_chunks() -> list[bytes]:
    def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
        body = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
        return b"data: " + _json(body) + b"\n\n"

    usage = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o", "choices": [],
             "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}}  # fmt: skip
    return [chunk({"role": "assistant", "content": ""}), *(chunk({"content": w}) for w in WORDS),
            chunk({}, "stop"), b"data: " + _json(usage) + b"\n\n", b"data: [DONE]\n\n"]  # fmt: skip


def _messages_events() -> list[bytes]:
    def ev(kind: str, data: dict[str, object]) -> bytes:
        return b"event: " + kind.encode() + b"\ndata: " + _json({"type": kind, **data}) + b"\n\n"

    start = {"id": "m", "type": "message", "role": "assistant", "model": "claude", "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1}}  # fmt: skip
    return [
        ev("message_start", {"message": start}),
        ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ev("ping", {}),
        *(ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}}) for w in WORDS),
        ev("content_block_stop", {"index": 0}),
        ev("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 8}}),
        ev("message_stop", {}),
    ]  # fmt: skip


CHUNKS, EVENTS = _chat_chunks(), _messages_events()
REALISTIC = list(
    openai_shapes.chat_stream("gpt-4o-2024-08-06", [f"tok{i} " for i in range(150)], 412, include_usage=True)
)
OPENAI = ADAPTERS["openai"]


def chat() -> None:
    req = CHAT.parse(CHAT_REQ, HEADERS)
    CHAT.native_body(req, "gpt-4o", None)
    usage_of(CHAT_RESP)


def messages() -> None:
    req = MESSAGES.parse(MSG_REQ, HEADERS)
    MESSAGES.native_body(req, "claude", None)
    MESSAGES.native_headers(req)
    MESSAGES.native_usage(MSG_RESP)


def messages_hub() -> None:
    req = MESSAGES.parse(MSG_REQ, HEADERS)
    OPENAI.from_hub(MESSAGES.hub_request(req), "gpt-4o", None, False)
    hub = OPENAI.to_hub(CHAT_RESP)
    usage_of(hub)
    MESSAGES.from_hub(hub)


def chat_stream() -> None:
    relay = CHAT.native_stream(CHAT.parse(CHAT_REQ, HEADERS), False)
    for c in CHUNKS:
        relay.feed(c)


def messages_stream() -> None:
    relay = MESSAGES.native_stream(MESSAGES.parse(MSG_REQ, HEADERS), False)
    for e in EVENTS:
        relay.feed(e)


def messages_hub_stream() -> None:
    req = MESSAGES.parse(MSG_REQ, HEADERS)
    chain = StreamChain(None, StreamRelay(strip_usage=False), MESSAGES.hub_stream(req), False)
    for c in CHUNKS:
        chain.feed(c)


def chat_stream_150() -> None:
    relay = CHAT.native_stream(CHAT.parse(CHAT_REQ, HEADERS), False)
    for c in REALISTIC:
        relay.feed(c)
    relay.flush()


def messages_hub_stream_150() -> None:
    req = MESSAGES.parse(MSG_REQ, HEADERS)
    # As gateway.attempt builds it (a Messages request keeps the usage chunk: it ends the stream).
    chain = StreamChain(
        None, StreamRelay(strip_usage=not req.client_wants_usage), MESSAGES.hub_stream(req), False
    )
    for c in REALISTIC:
        chain.feed(c)
    chain.flush()


CASES: dict[str, Callable[[], None]] = {
    "chat": chat,
    "messages": messages,
    "messages-hub": messages_hub,
    "chat-stream": chat_stream,
    "messages-stream": messages_stream,
    "messages-hub-stream": messages_hub_stream,
    "chat-stream-150": chat_stream_150,
    "messages-hub-stream-150": messages_hub_stream_150,
}


_BASES = {"150": "chat-stream-150", "eam": "chat-stream"}  # a case's baseline, by its name's end


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--only", help="run the cases whose name contains this")
    args = parser.parse_args(argv)
    results = {}
    for name, fn in CASES.items():
        if args.only and args.only not in name and not name.startswith("chat"):
            continue
        timer = timeit.Timer(fn, timer=time.process_time)
        results[name] = min(timer.repeat(5, args.number)) / args.number * 1e6
    print(f"{'case':<22}{'us/request':>12}{'x chat':>10}")
    for name, us in results.items():
        base = results[_BASES.get(name[-3:], "chat")]
        print(f"{name:<22}{us:>12.2f}{us / base:>10.2f}")


if __name__ == "__main__":
    main()
