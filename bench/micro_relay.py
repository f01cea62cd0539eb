"""Micro-benchmark of the stream relay: µs per realistic 150-chunk stream (CPU time).

    python -m bench.micro_relay [--chunks 150] [--repeat 200]

One stream is what the gateway relays for a streamed chat answer from api.openai.com when usage
is requested (``bench/openai_shapes.py``: ``"usage": null`` in every chunk, ``obfuscation``, a
final usage chunk), fed one event per upstream read. Rows: the relay as the gateway runs it
(tracing off: no events kept; on: kept for ``tfy.output``). For deterministic figures on a
shared machine, count instructions instead: ``valgrind --tool=callgrind python -m
bench.micro_relay --repeat 50`` and compare the totals of two checkouts.
"""

from __future__ import annotations

import argparse
import statistics
import time

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


if __name__ == "__main__":
    main()
