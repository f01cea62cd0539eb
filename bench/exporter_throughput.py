"""How many spans per second one core turns into OTLP request bodies (protobuf and JSON).

Realistic spans: ~15 attributes each, the CLIENT span with a 1 KB ``tfy.input`` and a
``tfy.output``, batches of 512 spans as the gateway's drain task ships them. The figure covers
what the exporter does per batch after decoding the NATS message: sampling, redaction, encoding
and framing; the ``+ gzip`` rows add compression (the network is never included). Rates are
per CPU-second of this process, so other load on the machine does not skew them.

    python -m bench.exporter_throughput [--spans 100000]
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import time

from exporter.otlp import EncodeOptions, json_requests, proto_requests
from gateway.telemetry.wire import (
    SCHEMA_VERSION,
    SPAN_KIND_CLIENT,
    SPAN_KIND_INTERNAL,
    SPAN_KIND_SERVER,
    Resource,
    Span,
    SpanBatch,
    decode_batch,
    encode_batch,
)

_INPUT = (b'{"model":"chat-default","messages":[{"role":"user","content":"' + b"lorem ipsum " * 80)[
    :1000
] + b'"}]}'


def _trace(now: int) -> list[Span]:
    trace_id = os.urandom(16)
    root = os.urandom(8)
    common = {
        "tfy.span_type": "ChatCompletion",
        "tfy.request.created_by_subject": "user:alice@example.com",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
    }
    client_attrs = {
        **common,
        "tfy.input": _INPUT,
        "tfy.output": b'{"role":"assistant","content":"Hello there, how can I help?"}',
        "tfy.input_short_hand": '{"messages":1,"has_image":false,"has_file":false,"has_audio":false}',
        "tfy.data_routing.destination": "openai-main/gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.response.id": "chatcmpl-abc123",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 412,
        "gen_ai.usage.output_tokens": 37,
        "gen_ai.request.temperature": 0.7,
        "gen_ai.request.stream": False,
        "server.address": "api.openai.com",
        "server.port": 443,
        "http.response.status_code": 200,
        "tfy.model.metric.latency_in_ms": 812.5,
    }
    return [
        Span(trace_id, root, b"", "POST /v1/chat/completions", SPAN_KIND_SERVER, now, now + 900_000_000, 0, "",
             {**common, "http.response.status_code": 200, "applied_ratelimit_rule_ids": ["per-user-rpm"]}),
        Span(trace_id, os.urandom(8), root, "auth", SPAN_KIND_INTERNAL, now, now + 20_000, 0, "", dict(common)),
        Span(trace_id, os.urandom(8), root, "model resolution", SPAN_KIND_INTERNAL, now, now + 15_000, 0, "",
             {**common, "applied_loadbalance_rule_ids": ["chat-default-split"]}),
        Span(trace_id, os.urandom(8), root, "chat gpt-4o", SPAN_KIND_CLIENT, now, now + 850_000_000, 0, "", client_attrs),
    ]  # fmt: skip


def make_batches(total_spans: int, batch_spans: int = 512) -> list[bytes]:
    """msgpack-encoded batches as they arrive from NATS."""
    now = time.time_ns()
    resource = Resource("tfy-llm-gateway", "0.1.0", "bench-1", {"deployment.environment": "bench"})
    batches: list[bytes] = []
    spans: list[Span] = []
    made = 0
    while made < total_spans:
        trace = _trace(now)
        spans.extend(trace)
        made += len(trace)
        if len(spans) >= batch_spans:
            batches.append(encode_batch(SpanBatch(SCHEMA_VERSION, resource, spans)))
            spans = []
    if spans:
        batches.append(encode_batch(SpanBatch(SCHEMA_VERSION, resource, spans)))
    return batches


def measure(
    batches: list[bytes], encoding: str, opts: EncodeOptions, compress: bool = False
) -> tuple[float, int]:
    """Spans per CPU-second (decode + encode [+ gzip]) and total bytes produced."""
    encode = proto_requests if encoding == "proto" else json_requests
    spans = out = 0
    start = time.process_time()  # CPU time: the figure is per core, whatever else runs
    for raw in batches:
        batch = decode_batch(raw)
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
