"""How many spans per second one core turns into OTLP request bodies (protobuf and JSON).

Realistic traces as the gateway records them: a chat request with a 1 KB ``tfy.input`` and a
JSON response, 4 spans each, batches of 128 traces (512 spans) as the drain task ships them.
The figure covers what the exporter does per NATS message: decoding, building the spans from
the records, deriving the body-based attributes, sampling, redaction, encoding and framing; the
``+ gzip`` rows add compression (the network is never included). Rates are per CPU-second of
this process, so other load on the machine does not skew them.

    python -m bench.exporter_throughput [--spans 100000]
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import time

from exporter.enrich import enrich_batch
from exporter.otlp import EncodeOptions, json_requests, proto_requests
from gateway.telemetry.expand import expand_batch
from gateway.telemetry.wire import (
    SCHEMA_VERSION,
    AttemptRecord,
    Resource,
    TargetInfo,
    TraceBatch,
    TraceRecord,
    decode_batch,
    encode_batch,
)

_INPUT = (b'{"model":"chat-default","messages":[{"role":"user","content":"' + b"lorem ipsum " * 80)[
    :1000
] + b'"}]}'


_OUTPUT = (
    b'{"id":"chatcmpl-abc123","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how can I help?"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":412,"completion_tokens":37,"total_tokens":449}}'
)
_TARGET = TargetInfo("openai-main/gpt-4o", "openai", "gpt-4o", "api.openai.com", 443)


def _trace(t0: int, offset: int) -> TraceRecord:
    attempt = AttemptRecord(os.urandom(8), _TARGET, "primary", t0 + 40_000, t0 + 850_000_000, 200)
    return TraceRecord(
        os.urandom(16), os.urandom(8), b"", offset, t0, t0 + 900_000_000, "/v1/chat/completions", "chat",
        200, "", "", 0, "chat-default", False, _INPUT, t0 + 1_000, t0 + 20_000, t0 + 35_000,
        "user:alice@example.com", {}, ("chat-default-split",), ("per-user-rpm",), (attempt,),
        t0 + 850_000_000, 0, 0, 412, 37, 0.0014, _OUTPUT, b"",
    )  # fmt: skip


def make_batches(total_spans: int, batch_traces: int = 128) -> list[bytes]:
    """msgpack-encoded batches as they arrive from NATS."""
    t0 = time.perf_counter_ns()
    offset = time.time_ns() - t0
    resource = Resource("tfy-llm-gateway", "0.1.0", "bench-1", {"deployment.environment": "bench"})
    n_traces = max(1, total_spans // 4)
    traces = [_trace(t0, offset) for _ in range(n_traces)]
    return [
        encode_batch(TraceBatch(SCHEMA_VERSION, resource, traces[i : i + batch_traces]))
        for i in range(0, n_traces, batch_traces)
    ]


def measure(
    batches: list[bytes], encoding: str, opts: EncodeOptions, compress: bool = False
) -> tuple[float, int]:
    """Spans per CPU-second (decode, expand, enrich, encode [+ gzip]) and total bytes produced."""
    encode = proto_requests if encoding == "proto" else json_requests
    spans = out = 0
    start = time.process_time()  # CPU time: the figure is per core, whatever else runs
    for raw in batches:
        batch = expand_batch(decode_batch(raw))
        enrich_batch(batch)
        requests, _ = encode(batch, opts)
        spans += sum(r.spans for r in requests)
        if compress:  # as the destinations do with compression: gzip
            out += sum(len(gzip.compress(r.body, 5, mtime=0)) for r in requests)
        else:
            out += sum(len(r.body) for r in requests)
    return spans / (time.process_time() - start), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs per case; best and median reported")
    args = parser.parse_args()
    batches = make_batches(args.spans)
    measure(batches[:2], "proto", EncodeOptions())  # warm caches
    cases = [
        ("", EncodeOptions(), False),
        (" exclude_request_data", EncodeOptions(exclude_request_data=True), False),
        (" + gzip", EncodeOptions(), True),
    ]
    for encoding in ("proto", "json"):
        for label, opts, compress in cases:
            runs = [measure(batches, encoding, opts, compress) for _ in range(args.repeat)]
            rates = sorted(r for r, _ in runs)
            size = runs[0][1]
            print(
                f"{encoding:5}{label:22} best {rates[-1]:>8,.0f}  median {statistics.median(rates):>8,.0f} spans/s"
                f"  {size / args.spans:>6.0f} B/span"
            )


if __name__ == "__main__":
    main()
