"""Micro-benchmark of the stream relay: µs per realistic 150-chunk stream (CPU time).

    python -m bench.micro_relay [--chunks 150] [--repeat 200]

One stream is what the gateway relays for a streamed chat answer from api.openai.com when usage
is requested (``bench/openai_shapes.py``: ``"usage": null`` in every chunk, ``obfuscation``, a
final usage chunk), fed one event per upstream read. Rows: the relay as the gateway runs it
(tracing off: no events kept; on: kept for ``tfy.output``), and the whole relay loop
(``gateway.proxy._relay_stream``: pyreqwest's reader, the relay, granian's ``send_bytes``) over
an in-memory reader and transport that never wait, so only the gateway's Python per chunk is
measured. For deterministic figures on a shared machine, count instructions instead:
``valgrind --tool=callgrind python -m bench.micro_relay --repeat 50`` and compare the totals of
two checkouts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from bench import openai_shapes
from gateway.sse import StreamRelay


def events(chunks: int) -> list[bytes]:
    """One realistic streamed answer, one event per upstream read."""
    words = [f"tok{i} " for i in range(chunks)]
    return list(openai_shapes.chat_stream("gpt-4o-2024-08-06", words, 412, include_usage=True))


def relay_once(stream: list[bytes], keep_events: bool) -> StreamRelay:
    """Feed one stream through a fresh relay, as the gateway does per request."""
    relay = StreamRelay(strip_usage=True, keep_events=keep_events)
    for chunk in stream:
        relay.feed(chunk)
    relay.flush()
    return relay


class _Chunk:  # pyreqwest's Buffer, as read_chunk() returns it
    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def to_bytes(self) -> bytes:
        return self._data


class _Reader:  # pyreqwest's body_reader, every chunk already there
    def __init__(self, chunks: list[_Chunk]) -> None:
        self._it = iter(chunks)

    async def read_chunk(self) -> _Chunk | None:
        return next(self._it, None)


class _Upstream:  # what pyreqwest's streamed response exposes to gateway.upstream
    status = 200
    headers = {"content-type": "text/event-stream"}  # noqa: RUF012 - read-only

    def __init__(self, chunks: list[_Chunk]) -> None:
        self.body_reader = _Reader(chunks)


class _Proto:  # granian's RSGI protocol: a transport that never waits, a client that stays
    def __init__(self, never: asyncio.Future[Any]) -> None:
        self._never = never
        self.sent = 0

    def client_disconnect(self) -> asyncio.Future[Any]:
        return self._never

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Any:
        return self

    async def send_bytes(self, data: bytes) -> None:
        self.sent += len(data)


async def loop_once(chunks: list[_Chunk], keep_events: bool) -> int:
    """One stream through ``proxy._relay_stream`` as a native chat attempt; returns bytes sent."""
    from gateway import proxy
    from gateway.attempt import Attempt
    from gateway.body import parse_request
    from gateway.surfaces.chat import CHAT
    from gateway.upstream.pyreqwest_client import _Response

    resp = _Response(_Upstream(chunks), None, "http://127.0.0.1")
    attempt = Attempt()
    attempt.resp = resp
    req = parse_request(b'{"model":"m","messages":[],"stream":true}', "chat")
    attempt.relay = CHAT.native_stream(req, keep_events)
    attempt.feed = attempt.relay.feed
    first = await resp.next_chunk()
    attempt.first_out = attempt.feed(first or b"")
    proto = _Proto(asyncio.get_running_loop().create_future())
    await proxy._relay_stream(proto, attempt, [], CHAT)
    return proto.sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    stream = events(args.chunks)
    assert relay_once(stream, False).usage is not None  # noqa: S101 - the bench measures the real path
    for keep in (False, True):
        runs = []
        for _ in range(5):
            t0 = time.process_time()
            for _ in range(args.repeat):
                relay_once(stream, keep)
            runs.append((time.process_time() - t0) / args.repeat * 1e6)
        label = "events kept (tracing on)" if keep else "no events kept (tracing off)"
        print(f"relay {args.chunks} chunks, {label:30} median {statistics.median(runs):8.1f} us/stream")
    chunks = [_Chunk(e) for e in stream]

    async def loops(keep: bool) -> float:
        t0 = time.process_time()
        for _ in range(args.repeat):
            await loop_once(chunks, keep)
        return (time.process_time() - t0) / args.repeat * 1e6

    for keep in (False, True):
        runs = [asyncio.run(loops(keep)) for _ in range(5)]
        label = "events kept (tracing on)" if keep else "no events kept (tracing off)"
        print(f"loop  {args.chunks} chunks, {label:30} median {statistics.median(runs):8.1f} us/stream")


if __name__ == "__main__":
    main()
