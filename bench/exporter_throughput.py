"""How many spans per second one core turns into OTLP request bodies (protobuf and JSON).

Realistic traces as the gateway records them: a chat request with a 1 KB ``tfy.input`` and a
JSON response, 4 spans each, batches of 128 traces (512 spans) as the drain task ships them.
The figure covers what the exporter does per NATS message: decoding, building the spans from
the records, deriving the body-based attributes, sampling, redaction, encoding and framing; the
``+ gzip`` rows add compression (the network is never included). Rates are per CPU-second of
this process, so other load on the machine does not skew them.

The ``tools-stream`` shape is the other common request: a streamed chat with a system prompt,
two tool definitions, an earlier turn with two tool calls and their results, answered by 40
SSE events (5 spans per trace); its GenAI content is the most the exporter derives per call.

    python -m bench.exporter_throughput [--spans 100000] [--shape chat|tools-stream] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gzip
import json
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

_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}  # fmt: skip
_TOOLS_INPUT = json.dumps(
    {
        "model": "chat-default",
        "stream": True,
        "temperature": 0.2,
        "tools": [_TOOL, {**_TOOL, "function": {**_TOOL["function"], "name": "get_time"}}],
        "messages": [
            {"role": "system", "content": "You are a helpful travel assistant. " * 8},
            {"role": "user", "content": "What's the weather and time in Paris and Rome? " * 4},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": '{"city":"Rome"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"sky":"rain","temp_c":12}'},
            {"role": "tool", "tool_call_id": "call_2", "content": '{"time":"14:05"}'},
        ],
    }
).encode()  # fmt: skip
_TOOLS_SSE = b"".join(
    b"data: " + json.dumps({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                            "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]}).encode() + b"\n\n"
    for i in range(40)
) + b'data: {"id":"chatcmpl-s","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'  # fmt: skip


def _trace(t0: int, offset: int, shape: str = "chat") -> TraceRecord:
    attempt = AttemptRecord(os.urandom(8), _TARGET, "primary", t0 + 40_000, t0 + 850_000_000, 200)
    if shape == "tools-stream":
        return TraceRecord(
            os.urandom(16), os.urandom(8), b"", offset, t0, t0 + 900_000_000, "/v1/chat/completions", "chat",
            200, "", "", 0, "chat-default", True, _TOOLS_INPUT, t0 + 1_000, t0 + 20_000, t0 + 35_000,
            "user:alice@example.com", {}, ("chat-default-split",), ("per-user-rpm",), (attempt,),
            t0 + 300_000_000, t0 + 300_000_000, t0 + 850_000_000, 412, 41, 0.0014, b"", _TOOLS_SSE,
        )  # fmt: skip
    return TraceRecord(
        os.urandom(16), os.urandom(8), b"", offset, t0, t0 + 900_000_000, "/v1/chat/completions", "chat",
        200, "", "", 0, "chat-default", False, _INPUT, t0 + 1_000, t0 + 20_000, t0 + 35_000,
        "user:alice@example.com", {}, ("chat-default-split",), ("per-user-rpm",), (attempt,),
        t0 + 850_000_000, 0, 0, 412, 37, 0.0014, _OUTPUT, b"",
    )  # fmt: skip


def make_batches(total_spans: int, batch_traces: int = 128, shape: str = "chat") -> list[bytes]:
    """msgpack-encoded batches as they arrive from NATS."""
    t0 = time.perf_counter_ns()
    offset = time.time_ns() - t0
    resource = Resource("tfy-llm-gateway", "0.1.0", "bench-1", {"deployment.environment": "bench"})
    n_traces = max(1, total_spans // (5 if shape == "tools-stream" else 4))
    traces = [_trace(t0, offset, shape) for _ in range(n_traces)]
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
        enrich_batch(batch, content=not opts.exclude_request_data)  # as the pipeline does
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
    parser.add_argument("--shape", choices=("chat", "tools-stream"), default="chat")
    args = parser.parse_args()
    batches = make_batches(args.spans, shape=args.shape)
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
