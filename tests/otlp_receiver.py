"""A test OTLP receiver: OTLP/HTTP (protobuf and JSON, gzip) and OTLP/gRPC on 127.0.0.1.

Built on the ``opentelemetry-proto`` messages and the official gRPC servicers. It records every
request it answers successfully (headers or metadata, the decoded message, the raw JSON) and
every attempt (with the status it answered), and can be told to fail::

    receiver.fail("http", Fault(status=503, headers={"Retry-After": "1"}))   # next HTTP request
    receiver.fail("grpc", Fault(grpc_code=grpc.StatusCode.UNAVAILABLE), times=2)
    receiver.fail("http", Fault(hang=True), times=100)                       # never answers

JSON bodies are decoded strictly: hex ids are checked and turned into the proto3 JSON form
(base64) as the OTLP/JSON spec prescribes, then ``google.protobuf.json_format.Parse`` runs
without ``ignore_unknown_fields``. A body that fails is answered 400 and kept in ``errors``.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

Transport = Literal["http", "grpc"]
Signal = Literal["traces", "metrics"]

_REQUEST: dict[str, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
}
_RESPONSE: dict[str, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceResponse,
    "metrics": metrics_service_pb2.ExportMetricsServiceResponse,
}
_ID_LENGTHS = {"traceId": 16, "spanId": 8, "parentSpanId": 8}


@dataclass
class Fault:
    """How to answer one request instead of accepting it."""

    status: int = 503  # HTTP status
    headers: dict[str, str] = field(default_factory=dict)  # HTTP response headers (Retry-After)
    grpc_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    retry_delay_s: float | None = None  # gRPC RetryInfo
    hang: bool = False  # never answer (until the receiver stops)
    rejected: int = 0  # with status 200 / gRPC OK: a partial success rejecting this many


@dataclass
class Received:
    """One accepted request."""

    transport: Transport
    signal: Signal
    headers: dict[str, str]  # lowercased names; gRPC: invocation metadata
    message: Any  # ExportTraceServiceRequest | ExportMetricsServiceRequest
    content_type: str = ""
    content_encoding: str = ""
    raw_json: Any = None  # the JSON document as sent (hex ids, string int64), for JSON bodies
    at: float = 0.0  # time.monotonic() when it arrived


@dataclass
class Attempt:
    """One request as it arrived, accepted or not."""

    transport: Transport
    signal: Signal
    status: int | str  # HTTP status or gRPC code name
    at: float


def _json_ids_to_proto3(obj: Any, path: str = "") -> Any:
    """Hex trace/span ids → base64 (proto3 JSON); raises ValueError on a malformed id."""
    if isinstance(obj, list):
        return [_json_ids_to_proto3(v, path) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for key, value in obj.items():
        if key in _ID_LENGTHS and isinstance(value, str) and path.endswith(("spans", "links", "exemplars")):
            raw = bytes.fromhex(value)  # ValueError when not hex
            if len(raw) != _ID_LENGTHS[key]:
                raise ValueError(f"{key} {value!r}: expected {_ID_LENGTHS[key]} bytes")
            out[key] = base64.b64encode(raw).decode()
        else:
            out[key] = _json_ids_to_proto3(value, key)
    return out


def decode_json_strict(signal: Signal, body: bytes) -> tuple[Message, Any]:
    """Decode an OTLP/JSON body strictly; returns the message and the raw JSON document."""
    raw = json.loads(body)
    message = _REQUEST[signal]()
    json_format.Parse(json.dumps(_json_ids_to_proto3(raw)), message)
    return message, raw


class OtlpReceiver:
    """Both servers; start with :meth:`start`, stop with :meth:`stop`."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.attempts: list[Attempt] = []
        self.errors: list[str] = []
        self._faults: dict[Transport, deque[Fault]] = {"http": deque(), "grpc": deque()}
        self._release = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None
        self.http_port = 0
        self.grpc_port = 0

    # -- programming ---------------------------------------------------------------------

    def fail(self, transport: Transport, fault: Fault, times: int = 1) -> None:
        """Answer the next ``times`` requests on ``transport`` with ``fault``."""
        self._faults[transport].extend([fault] * times)

    def clear_faults(self) -> None:
        """Accept everything from now on (hanging requests stay hung until :meth:`stop`)."""
        for q in self._faults.values():
            q.clear()

    def release(self) -> None:
        """Accept everything from now on and answer the requests hanging now (503, retryable),
        as a stalled backend that recovers."""
        self.clear_faults()
        self._release.set()
        self._release = asyncio.Event()

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def traces_url(self) -> str:
        return f"{self.http_base}/v1/traces"

    @property
    def metrics_url(self) -> str:
        return f"{self.http_base}/v1/metrics"

    @property
    def grpc_url(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    # -- queries ---------------------------------------------------------------------------

    def spans(self, transport: Transport | None = None) -> list[Any]:
        """Every span received (in arrival order), optionally from one transport only."""
        return [
            span
            for r in self.received
            if r.signal == "traces" and (transport is None or r.transport == transport)
            for rs in r.message.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    async def wait_for(
        self, count: int, timeout_s: float = 5.0, transport: Transport | None = None
    ) -> list[Received]:
        """Wait until ``count`` requests were accepted (on ``transport``); raise TimeoutError."""

        def matching() -> list[Received]:
            return [r for r in self.received if transport is None or r.transport == transport]

        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(matching()) >= count)
        return matching()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind both servers to free ports on 127.0.0.1."""
        app = web.Application(client_max_size=128 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._http_traces)
        app.router.add_post("/v1/metrics", self._http_metrics)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.http_port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

        self._grpc = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceServicer(self), self._grpc)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsServicer(self), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        await self._grpc.start()

    async def stop(self) -> None:
        """Release hanging requests and stop both servers."""
        self._release.set()
        if self._grpc is not None:
            await self._grpc.stop(grace=0.2)
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, item: Received) -> None:
        async with self._arrived:
            self.received.append(item)
            self._arrived.notify_all()

    async def _hang(self) -> None:
        await self._release.wait()

    # -- HTTP ------------------------------------------------------------------------------

    async def _http_traces(self, request: web.Request) -> web.StreamResponse:
        return await self._http(request, "traces")

    async def _http_metrics(self, request: web.Request) -> web.StreamResponse:
        return await self._http(request, "metrics")

    async def _http(self, request: web.Request, signal: Signal) -> web.StreamResponse:
        now = time.monotonic()
        body = await request.read()
        fault = self._faults["http"].popleft() if self._faults["http"] else None
        if fault is not None and fault.hang:
            self.attempts.append(Attempt("http", signal, "hang", now))
            await self._hang()
            return web.Response(status=503)
        if fault is not None and fault.status != 200:
            self.attempts.append(Attempt("http", signal, fault.status, now))
            return web.Response(status=fault.status, headers=fault.headers, text="injected fault")
        encoding = request.headers.get("Content-Encoding", "")
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            if encoding == "gzip":
                # aiohttp already inflates gzip request bodies (and fails on a body that is not
                # gzip); inflate here only if it did not.
                if body[:2] == b"\x1f\x8b":
                    body = gzip.decompress(body)
            elif encoding:
                raise ValueError(f"unsupported Content-Encoding {encoding!r}")
            raw = None
            if ctype == "application/x-protobuf":
                message = _REQUEST[signal].FromString(body)
            elif ctype == "application/json":
                message, raw = decode_json_strict(signal, body)
            else:
                self.attempts.append(Attempt("http", signal, 415, now))
                return web.Response(status=415, text=f"unsupported content type {ctype!r}")
        except (ValueError, DecodeError, json_format.ParseError, OSError) as exc:
            self.errors.append(f"{signal} {ctype}: {exc}")
            self.attempts.append(Attempt("http", signal, 400, now))
            return web.Response(status=400, text=str(exc))
        self.attempts.append(Attempt("http", signal, 200, now))
        headers = {k.lower(): v for k, v in request.headers.items()}
        await self._record(Received("http", signal, headers, message, ctype, encoding, raw, now))
        response = _RESPONSE[signal]()
        if fault is not None and fault.rejected:
            _set_partial(response, signal, fault.rejected)
        if ctype == "application/json":
            return web.Response(
                body=json_format.MessageToJson(response).encode(), content_type="application/json"
            )
        return web.Response(body=response.SerializeToString(), content_type="application/x-protobuf")

    # -- gRPC ------------------------------------------------------------------------------

    async def grpc_export(
        self, signal: Signal, request: Message, context: grpc.aio.ServicerContext
    ) -> Message:
        now = time.monotonic()
        fault = self._faults["grpc"].popleft() if self._faults["grpc"] else None
        if fault is not None and fault.hang:
            self.attempts.append(Attempt("grpc", signal, "hang", now))
            await self._hang()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "receiver stopped")
        if fault is not None and fault.grpc_code != grpc.StatusCode.OK:
            self.attempts.append(Attempt("grpc", signal, fault.grpc_code.name, now))
            trailing: tuple[tuple[str, bytes], ...] = ()
            if fault.retry_delay_s is not None:
                trailing = (("grpc-status-details-bin", _retry_info_status(fault).SerializeToString()),)
            await context.abort(fault.grpc_code, "injected fault", trailing_metadata=trailing)
        self.attempts.append(Attempt("grpc", signal, "OK", now))
        md = context.invocation_metadata() or ()
        headers = {k.lower(): v for k, v in md if isinstance(v, str)}
        await self._record(Received("grpc", signal, headers, request, "application/grpc", "", None, now))
        response = _RESPONSE[signal]()
        if fault is not None and fault.rejected:
            _set_partial(response, signal, fault.rejected)
        return response


def _set_partial(response: Any, signal: Signal, rejected: int) -> None:
    if signal == "traces":
        response.partial_success.rejected_spans = rejected
    else:
        response.partial_success.rejected_data_points = rejected
    response.partial_success.error_message = "injected partial success"


def _retry_info_status(fault: Fault) -> status_pb2.Status:
    info = error_details_pb2.RetryInfo()
    delay = fault.retry_delay_s or 0.0
    info.retry_delay.seconds = int(delay)
    info.retry_delay.nanos = int((delay - int(delay)) * 1e9)
    status = status_pb2.Status(code=fault.grpc_code.value[0], message="injected fault")
    status.details.add().Pack(info)
    return status


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    async def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        return await self.receiver.grpc_export("traces", request, context)


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    async def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        return await self.receiver.grpc_export("metrics", request, context)
