"""An OpenAI-compatible mock provider for `make run`, the tests and the benchmarks.

Served by granian (RSGI) so that it is never the bottleneck of a benchmark. Zero latency by
default; options come from the command line (or ``MOCK_*`` env vars, which is how granian's
worker process receives them):

    python -m bench.mock_upstream --port 8099 [--latency-ms 0] [--chunks 8] [--chunk-delay-ms 0]
                                  [--fail-status 503] [--tls-cert /tmp/mock.pem]

Chat answers (plain and streamed) have the shape api.openai.com gives them (see
``bench/openai_shapes.py``: ``usage: null`` on every chunk when usage is requested,
``obfuscation``, ``service_tier``, ``system_fingerprint``), one token per chunk. ``--tls-cert``
serves HTTPS with a certificate made at start by a throwaway CA written to that path (the
gateway trusts it with the provider's ``ca_file``).

Behaviour can also be programmed per request through the model name, so tests can use any
gateway config to reach a failing upstream:

    error-<status>      answer <status> with an OpenAI error body
    slow-<ms>           wait <ms> before sending headers
    stall-<n>           stream n events (the role chunk counts), then go silent for 60 s
    (tools + "weather") two parallel tool calls, streamed as argument fragments (mock_tool_calls)
    cut-<n>             stream n events, then drop the connection without [DONE]
    <anything else>     a normal answer echoing the model

``GET /_mock/requests`` returns the last requests seen (headers and body) for assertions;
``DELETE /_mock/requests`` clears them; ``POST /_mock/fail?status=503`` makes every model
request fail with that status until ``POST /_mock/fail?status=0``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import deque
from typing import Any

import msgspec

from bench import mock_tool_calls, openai_shapes

_json = msgspec.json.Encoder()
_decode_any = msgspec.json.Decoder()


class _StreamOptions(msgspec.Struct):
    include_usage: bool = False


class _ChatView(msgspec.Struct):
    model: str = "mock"
    stream: bool = False
    stream_options: _StreamOptions | None = None
    input: Any = None  # embeddings
    messages: list[Any] = []
    tools: Any = None


_decode_view = msgspec.json.Decoder(_ChatView)

LATENCY_S = float(os.environ.get("MOCK_LATENCY_MS", "0")) / 1000
CHUNKS = int(os.environ.get("MOCK_CHUNKS", "8"))
CHUNK_DELAY_S = float(os.environ.get("MOCK_CHUNK_DELAY_MS", "0")) / 1000
FAIL_STATUS = int(os.environ.get("MOCK_FAIL_STATUS", "0"))
RECORD = os.environ.get("MOCK_RECORD", "1") == "1"

PROMPT_TOKENS = 12
WORDS = [f"tok{i} " for i in range(64)]
_recent: deque[dict[str, Any]] = deque(maxlen=200)
_state = {"fail": FAIL_STATUS}
JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


def _words(n: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(n)]


def _chat_body(model: str, completion: bool = False) -> bytes:
    text = "".join(_words(CHUNKS))
    if not completion:  # as api.openai.com answers (bench/openai_shapes.py)
        return openai_shapes.chat_body(model, text, PROMPT_TOKENS, CHUNKS)
    usage = {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": CHUNKS,
        "total_tokens": PROMPT_TOKENS + CHUNKS,
    }
    if completion:
        choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        obj = "text_completion"
    else:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        obj = "chat.completion"
    return _json.encode(
        {
            "id": "chatcmpl-mock",
            "object": obj,
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
    )


def _embedding_body(model: str, inputs: Any) -> bytes:
    n = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
    data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4]} for i in range(n)]
    return _json.encode(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": 4 * n, "total_tokens": 4 * n},
        }
    )


def _chunk(model: str, delta: dict[str, Any], finish: str | None, completion: bool) -> bytes:
    if completion:
        choice: dict[str, Any] = {"index": 0, "text": delta.get("content", ""), "finish_reason": finish}
        obj = "text_completion"
    else:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        obj = "chat.completion.chunk"
    payload = {"id": "chatcmpl-mock", "object": obj, "created": 0, "model": model, "choices": [choice]}
    return b"data: " + _json.encode(payload) + b"\n\n"


def _usage_chunk(model: str) -> bytes:
    payload = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": CHUNKS,
            "total_tokens": PROMPT_TOKENS + CHUNKS,
        },
    }
    return b"data: " + _json.encode(payload) + b"\n\n"


def _error(status: int, message: str) -> bytes:
    return _json.encode(
        {"error": {"message": message, "type": "mock_error", "param": None, "code": str(status)}}
    )


def _behaviour(model: str) -> tuple[str, int]:
    for prefix in ("error-", "slow-", "stall-", "cut-"):
        if model.startswith(prefix):
            try:
                return prefix[:-1], int(model[len(prefix) :])
            except ValueError:
                return "", 0
    return "", 0


_event_cache: dict[tuple[str, bool, bool], list[bytes]] = {}


def _events(model: str, completion: bool, usage: bool) -> list[bytes]:
    """A stream's events, encoded once per (model, kind): the mock must not be what is measured."""
    key = (model, completion, usage)
    events = _event_cache.get(key)
    if events is None:
        if completion:
            events = [_chunk(model, {"content": w}, None, completion) for w in _words(CHUNKS)]
            events.append(_chunk(model, {}, "stop", completion))
            if usage:
                events.append(_usage_chunk(model))
            events.append(b"data: [DONE]\n\n")
        else:  # chat: as api.openai.com streams it (bench/openai_shapes.py)
            events = list(openai_shapes.chat_stream(model, _words(CHUNKS), PROMPT_TOKENS, usage))
        if len(_event_cache) < 256:
            _event_cache[key] = events
    return events


async def _stream(proto: Any, view: _ChatView, completion: bool, stall_after: int, cut_after: int) -> None:
    """Stream the events; ``stall_after``/``cut_after`` count events already sent (role chunk included)."""
    transport = proto.response_stream(200, SSE)
    events = _events(
        view.model, completion, view.stream_options is not None and view.stream_options.include_usage
    )
    for sent, event in enumerate(events):
        if sent == stall_after:
            await asyncio.sleep(60)
        if sent == cut_after:
            raise ConnectionAbortedError("mock: cut the stream")  # granian drops the connection
        if CHUNK_DELAY_S and sent:
            await asyncio.sleep(CHUNK_DELAY_S)
        await transport.send_bytes(event)


async def _tool_calls(proto: Any, view: _ChatView) -> None:
    if not view.stream:
        proto.response_bytes(200, JSON, mock_tool_calls.body(view.model, view.tools))
        return
    transport = proto.response_stream(200, SSE)
    usage = view.stream_options is not None and view.stream_options.include_usage
    for event in mock_tool_calls.events(view.model, view.tools, usage):
        await transport.send_bytes(event)


class MockApp:
    """RSGI application; see the module docstring for the routes."""

    def __rsgi_init__(self, loop: Any) -> None:
        self.anthropic = None
        try:  # the Anthropic-compatible endpoint lives beside this file when present
            from bench import mock_anthropic

            self.anthropic = mock_anthropic
        except ImportError:
            pass
        self.responses = None
        try:  # /v1/responses and tool-calling chat live beside this file when present
            from bench import mock_responses

            self.responses = mock_responses
        except ImportError:
            pass

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        path, method = scope.path, scope.method
        if path == "/_mock/fail" and method == "POST":  # switch failure on/off at run time
            _state["fail"] = int(scope.query_string.partition("status=")[2] or 0)
            proto.response_bytes(200, JSON, _json.encode(_state))
            return
        if path == "/_mock/requests":
            if method == "DELETE":
                _recent.clear()
            proto.response_bytes(200, JSON, _json.encode(list(_recent)))
            return
        if method == "GET" and path in ("/v1/models", "/models"):
            proto.response_bytes(200, JSON, b'{"object":"list","data":[{"id":"mock","object":"model"}]}')
            return
        if method != "POST":
            proto.response_bytes(405, JSON, _error(405, "method not allowed"))
            return
        body = await proto()
        if RECORD:
            _recent.append(
                {
                    "path": path,
                    "headers": dict(scope.headers.items()),
                    "body": body.decode("utf-8", "replace"),
                }
            )
        if path.endswith("/messages/count_tokens") and getattr(self, "anthropic", None) is not None:
            self.anthropic.count_tokens(scope, proto, body)  # type: ignore[union-attr]
            return
        if path.endswith("/messages") and getattr(self, "anthropic", None) is not None:
            await self.anthropic.handle(scope, proto, body)  # type: ignore[union-attr]
            return
        responses = getattr(self, "responses", None)
        if responses is not None and responses.handles(path, body):
            await responses.handle(scope, proto, path, body)
            return
        try:
            view = _decode_view.decode(body)
        except msgspec.DecodeError:
            proto.response_bytes(400, JSON, _error(400, "mock: invalid JSON"))
            return
        kind, arg = _behaviour(view.model)
        if _state["fail"]:
            status = _state["fail"]
            proto.response_bytes(status, JSON, _error(status, "mock: programmed failure"))
            return
        if kind == "error":  # with the request id header real providers send
            proto.response_bytes(
                arg, [*JSON, ("x-request-id", "req_mock")], _error(arg, f"mock: programmed {arg}")
            )
            return
        delay = LATENCY_S + (arg / 1000 if kind == "slow" else 0)
        if delay:
            await asyncio.sleep(delay)
        completion = path.endswith("/completions") and not path.endswith("/chat/completions")
        if not completion and mock_tool_calls.wants_tool_calls(view.messages, view.tools):
            await _tool_calls(proto, view)
        elif path.endswith("/embeddings"):
            proto.response_bytes(200, JSON, _embedding_body(view.model, view.input))
        elif path.endswith("/completions"):
            if view.stream:
                await _stream(
                    proto,
                    view,
                    completion,
                    arg if kind == "stall" else -1,
                    arg if kind == "cut" else -1,
                )
            else:
                proto.response_bytes(200, JSON, _chat_body(view.model, completion))
        else:
            proto.response_bytes(404, JSON, _error(404, f"mock: no route {path}"))


app = MockApp()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--latency-ms", type=float, default=float(os.environ.get("MOCK_LATENCY_MS", "0")))
    parser.add_argument("--chunks", type=int, default=int(os.environ.get("MOCK_CHUNKS", "8")))
    parser.add_argument(
        "--chunk-delay-ms", type=float, default=float(os.environ.get("MOCK_CHUNK_DELAY_MS", "0"))
    )
    parser.add_argument("--fail-status", type=int, default=int(os.environ.get("MOCK_FAIL_STATUS", "0")))
    parser.add_argument("--no-record", action="store_true", help="do not keep recent requests (benchmarks)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--tls-cert",
        metavar="PATH",
        help="serve HTTPS with a certificate made at start by a throwaway CA written to PATH (PEM): "
        "the file a client trusts it with (providers[].ca_file)",
    )
    args = parser.parse_args(argv)
    os.environ.update(
        MOCK_LATENCY_MS=str(args.latency_ms),
        MOCK_CHUNKS=str(args.chunks),
        MOCK_CHUNK_DELAY_MS=str(args.chunk_delay_ms),
        MOCK_FAIL_STATUS=str(args.fail_status),
        MOCK_RECORD="0" if args.no_record else "1",
    )
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    tls: dict[str, Any] = {}
    if args.tls_cert:
        from bench.selfsigned import write_certificates

        cert, key = write_certificates(args.tls_cert)
        tls = {"ssl_cert": cert, "ssl_key": key}
    Granian(
        "bench.mock_upstream:app",
        address=args.host,
        port=args.port,
        interface=Interfaces.RSGI,
        loop=Loops.uvloop,
        workers=args.workers,
        log_level=LogLevels.warning,
        **tls,
    ).serve()


if __name__ == "__main__":
    main()
