"""Destinations: where a span batch goes. I/O lives here; encoding and retry policy do not.

```
SpanDestination (protocol: name, export(batch) -> ExportResult, close())
└── OtlpDestination          limit → sample → redact → encode → split under the size cap → send with retries
    ├── HttpDestination      OTLP/HTTP (protobuf or JSON) over one keep-alive httpx client
    └── GrpcDestination      OTLP/gRPC through the official TraceService stub
```

A destination never raises from ``export``: every outcome is an :class:`ExportResult`
(spans exported, spans dropped and why), and failures are logged at most once per
destination per :data:`LOG_INTERVAL_S` with the number of lines held back.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from collections.abc import Sequence
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import grpc
import httpx
import msgspec
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from exporter import otlp
from exporter.config import Destination
from exporter.retry import RETRYABLE_HTTP, backoff_delay, grpc_retry_delay, grpc_retryable, parse_retry_after
from exporter.truncate import truncate_spans
from gateway.telemetry.wire import Span, SpanBatch

__all__ = [
    "ExportResult",
    "GrpcDestination",
    "HttpDestination",
    "LogLimiter",
    "OtlpDestination",
    "SpanDestination",
    "build_destination",
]

log = logging.getLogger("exporter")

LOG_INTERVAL_S: Final = 10.0
GRPC_MAX_REQUEST_BYTES: Final = 4 * 1024 * 1024  # the collector's default max_recv_msg_size_mib
_ENCODE_SLICE: Final = 64  # spans encoded between two yields to the event loop (~2 ms of CPU)
_GZIP_OFF_LOOP_BYTES: Final = 64 * 1024  # zlib drops the GIL, so bigger bodies compress in a thread
_USER_AGENT: Final = "llm-gateway-exporter/0.1"


class ExportResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of exporting one batch to one destination."""

    exported: int = 0  # spans the backend accepted (partial-success rejections excluded)
    dropped: int = 0  # spans that will never be delivered
    reason: str | None = None  # why they were dropped (first failure), e.g. "http_400", "timeout"
    sampled_out: int = 0  # spans left out by the destination's sampling ratio (not a failure)
    rejected: int = 0  # spans the backend refused in a partial success
    retries: int = 0
    attributes_truncated: int = 0  # values cut to max_attribute_chars (dropped when nothing fitted)

    @property
    def ok(self) -> bool:
        return self.dropped == 0


class SpanDestination(Protocol):
    """What the pipeline needs from a destination (OTLP backends now, the trace store later)."""

    name: str

    async def export(self, batch: SpanBatch) -> ExportResult:
        """Deliver one batch; never raises (cancellation aside)."""
        ...

    async def close(self) -> None:
        """Release connections; called once, after the last export."""
        ...


class LogLimiter:
    """At most one log line per key per interval; the lines held back are counted into the next."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        """Log ``msg % args`` as a warning unless ``key`` logged within the interval."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return
        self._last[key] = now
        held = self._held.pop(key, 0)
        suffix = f" ({held} similar messages suppressed)" if held else ""
        log.warning(msg + suffix, *args)


class _Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One request's outcome as the retry loop sees it."""

    ok: bool
    retryable: bool = False
    reason: str = ""
    detail: str = ""
    delay_s: float | None = None  # what the server asked us to wait (Retry-After, RetryInfo)
    rejected: int = 0
    partial_message: str = ""


class OtlpDestination:
    """Shared export logic of the OTLP transports; subclasses implement :meth:`_send`."""

    content_type = "application/x-protobuf"
    max_request_bytes = otlp.MAX_REQUEST_BYTES

    def __init__(
        self,
        cfg: Destination,
        *,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_request_bytes: int | None = None,
        logs: LogLimiter | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.timeout_s = cfg.timeout_ms / 1000
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        if max_request_bytes is not None:
            self.max_request_bytes = max_request_bytes
        self._logs = logs or LogLimiter()
        self._json = cfg.protocol == "http" and cfg.encoding == "json"
        self._gzip = cfg.compression == "gzip"
        # A server's Retry-After/RetryInfo holds for the destination, not just for one request:
        # later batches wait (or are dropped) instead of hammering a backend that asked for quiet.
        self._paused_until = 0.0

    # -- encoding (CPU, yielding to the loop so an embedded exporter never stalls requests) --

    async def _encode(self, batch: SpanBatch) -> tuple[list[otlp.EncodedRequest], int, int]:
        """Request bodies, spans sampled out, spans too large to send."""
        spans: list[Span] = otlp.sample(batch.spans, self.cfg.sampling_ratio)
        sampled_out = len(batch.spans) - len(spans)
        encode_span = otlp.span_json if self._json else otlp.span_proto
        exclude = self.cfg.exclude_request_data
        encoded: list[bytes] = []
        for i, chunk in enumerate(otlp.iter_chunks(spans, _ENCODE_SLICE)):
            if i:
                await asyncio.sleep(0)
            encoded.extend([encode_span(s, exclude) for s in chunk])
        if self._json:
            resource = otlp.resource_json(batch.resource, self.cfg.resource_attributes)
            requests, oversize = otlp.pack_json(resource, encoded, self.max_request_bytes)
        else:
            resource = otlp.resource_proto(batch.resource, self.cfg.resource_attributes)
            requests, oversize = otlp.pack_proto(resource, encoded, self.max_request_bytes)
        return requests, sampled_out, oversize

    # -- the retry loop ----------------------------------------------------------------------

    async def export(self, batch: SpanBatch) -> ExportResult:
        """Send one batch, retrying per the OTLP spec within ``timeout_ms``; never raises."""
        deadline = time.monotonic() + self.timeout_s
        truncated = 0
        try:
            if self.cfg.max_attribute_chars:
                batch, truncated = self._limit(batch, self.cfg.max_attribute_chars)
            requests, sampled_out, oversize = await self._encode(batch)
        except Exception as exc:  # a bug or an odd attribute must cost one batch, not the worker
            self._logs.warning(
                f"{self.name}:encode", "exporter %s: cannot encode a batch: %r", self.name, exc
            )
            return ExportResult(dropped=len(batch.spans), reason="encode_error")
        exported = dropped = rejected = retries = 0
        reason: str | None = None
        if oversize:
            dropped, reason = oversize, "too_large"
            self._logs.warning(
                f"{self.name}:size", "exporter %s: dropped %d oversized spans", self.name, oversize
            )
        for request in requests:
            outcome, tries = await self._deliver(request.body, deadline)
            retries += tries
            if outcome.ok:
                exported += request.spans - outcome.rejected
                rejected += outcome.rejected
                if outcome.rejected or outcome.partial_message:
                    self._logs.warning(
                        f"{self.name}:partial",
                        "exporter %s: backend rejected %d of %d spans: %s",
                        self.name,
                        outcome.rejected,
                        request.spans,
                        outcome.partial_message,
                    )
            else:
                dropped += request.spans
                reason = reason or outcome.reason
                self._logs.warning(
                    f"{self.name}:drop",
                    "exporter %s: dropped %d spans after %d retries: %s %s",
                    self.name,
                    request.spans,
                    tries,
                    outcome.reason,
                    outcome.detail,
                )
        return ExportResult(
            exported=exported,
            dropped=dropped,
            reason=reason,
            sampled_out=sampled_out,
            rejected=rejected,
            retries=retries,
            attributes_truncated=truncated,
        )

    def _limit(self, batch: SpanBatch, limit: int) -> tuple[SpanBatch, int]:
        """The batch with attribute values cut to ``limit`` characters (JSON kept valid)."""
        skip = otlp.REQUEST_DATA_ATTRIBUTES if self.cfg.exclude_request_data else frozenset()
        spans, truncated, dropped = truncate_spans(batch.spans, limit, skip)
        return msgspec.structs.replace(batch, spans=spans), truncated + dropped

    async def _deliver(self, body: bytes, deadline: float) -> tuple[_Attempt, int]:
        """One request body, retried while retryable, attempts left and time left."""
        if self._gzip:
            if len(body) > _GZIP_OFF_LOOP_BYTES:
                body = await asyncio.to_thread(gzip.compress, body, 5, mtime=0)
            else:
                body = gzip.compress(body, 5, mtime=0)
        attempt = 0
        while True:
            pause = self._paused_until - time.monotonic()
            if pause > 0:
                if time.monotonic() + pause >= deadline:
                    detail = f"backend asked for {pause:.1f}s of quiet"
                    return _Attempt(ok=False, reason="backoff", detail=detail), attempt
                await asyncio.sleep(pause)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _Attempt(ok=False, reason="timeout", detail="no time left for the request"), attempt
            try:
                async with asyncio.timeout(remaining):
                    outcome = await self._send(body, remaining)
            except TimeoutError:
                outcome = _Attempt(
                    ok=False, retryable=True, reason="timeout", detail=f"after {remaining:.1f}s"
                )
            except Exception as exc:  # a transport bug must cost this request, not raise out of export()
                outcome = _Attempt(ok=False, reason="error", detail=repr(exc))
            if outcome.ok or not outcome.retryable or attempt >= self.cfg.max_retries:
                return outcome, attempt
            delay = outcome.delay_s
            if delay is not None:
                self._paused_until = max(self._paused_until, time.monotonic() + delay)
            else:
                delay = backoff_delay(attempt, self.initial_backoff_s, self.max_backoff_s)
            if time.monotonic() + delay >= deadline:
                # Waiting as asked would overrun the timeout: give up now rather than later.
                return outcome, attempt
            await asyncio.sleep(delay)
            attempt += 1

    async def _send(self, body: bytes, timeout_s: float) -> _Attempt:
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections."""


class HttpDestination(OtlpDestination):
    """OTLP/HTTP: protobuf or JSON bodies POSTed to the endpoint, as given, over keep-alive."""

    def __init__(self, cfg: Destination, **kwargs: Any) -> None:
        super().__init__(cfg, **kwargs)
        if self._json:
            self.content_type = "application/json"
        headers = {"user-agent": _USER_AGENT, **cfg.headers}
        # Protocol headers come last: a user header cannot make the body lie about itself.
        headers["content-type"] = self.content_type
        if self._gzip:
            headers["content-encoding"] = "gzip"
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=2, keepalive_expiry=90),
            follow_redirects=False,  # a redirect would replay the body to somewhere unexpected
        )

    async def _send(self, body: bytes, timeout_s: float) -> _Attempt:
        try:
            response = await self._client.post(self.cfg.endpoint, content=body, timeout=timeout_s)
        except httpx.TimeoutException as exc:
            return _Attempt(ok=False, retryable=True, reason="timeout", detail=type(exc).__name__)
        except httpx.TransportError as exc:
            # Connection refused/reset: the spec asks for retries with backoff.
            return _Attempt(ok=False, retryable=True, reason="connection", detail=repr(exc))
        except httpx.HTTPError as exc:
            return _Attempt(ok=False, reason="http_error", detail=repr(exc))
        status = response.status_code
        if 200 <= status < 300:
            rejected, message = _http_partial_success(response)
            return _Attempt(ok=True, rejected=rejected, partial_message=message)
        detail = response.text[:200]
        if status in RETRYABLE_HTTP:
            delay = parse_retry_after(response.headers.get("retry-after"), time.time())
            return _Attempt(ok=False, retryable=True, reason=f"http_{status}", detail=detail, delay_s=delay)
        return _Attempt(ok=False, reason=f"http_{status}", detail=detail)

    async def close(self) -> None:
        """Close the keep-alive connections."""
        await self._client.aclose()


def _http_partial_success(response: httpx.Response) -> tuple[int, str]:
    """``partialSuccess`` of a 2xx answer; malformed or empty bodies count as full success."""
    body = response.content
    if not body:
        return 0, ""
    try:
        if response.headers.get("content-type", "").startswith("application/json"):
            partial = msgspec.json.decode(body).get("partialSuccess") or {}
            return int(partial.get("rejectedSpans") or 0), str(partial.get("errorMessage") or "")
        parsed = ExportTraceServiceResponse.FromString(body)
        return parsed.partial_success.rejected_spans, parsed.partial_success.error_message
    except Exception:  # the spans were accepted; an odd answer body is not worth a failure
        return 0, ""


def _grpc_target(endpoint: str) -> tuple[str, bool]:
    """``host:port`` and whether to use TLS, from an OTLP/gRPC endpoint URL (scheme decides)."""
    parts = urlsplit(endpoint)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port or (443 if secure else 80)}", secure


class GrpcDestination(OtlpDestination):
    """OTLP/gRPC through the official ``TraceServiceStub``; ``http://`` is plaintext, ``https://`` TLS."""

    max_request_bytes = GRPC_MAX_REQUEST_BYTES

    def __init__(self, cfg: Destination, **kwargs: Any) -> None:
        super().__init__(cfg, **kwargs)
        self._target, self._secure = _grpc_target(cfg.endpoint)
        self._metadata = tuple((k.lower(), v) for k, v in cfg.headers.items())
        self._compression = grpc.Compression.Gzip if self._gzip else grpc.Compression.NoCompression
        # gzip is applied by gRPC itself (per message), not by the shared retry loop.
        self._gzip = False
        self._channel: grpc.aio.Channel | None = None
        self._stub: TraceServiceStub | None = None

    def _connect(self) -> TraceServiceStub:
        # Created lazily: a grpc.aio channel belongs to the event loop that first uses it.
        options = [("grpc.keepalive_time_ms", 60_000), ("grpc.primary_user_agent", _USER_AGENT)]
        if self._secure:
            self._channel = grpc.aio.secure_channel(
                self._target, grpc.ssl_channel_credentials(), options=options
            )
        else:
            self._channel = grpc.aio.insecure_channel(self._target, options=options)
        self._stub = TraceServiceStub(self._channel)
        return self._stub

    async def _send(self, body: bytes, timeout_s: float) -> _Attempt:
        stub = self._stub or self._connect()
        try:
            response = await stub.Export(
                ExportTraceServiceRequest.FromString(body),
                timeout=timeout_s,
                metadata=self._metadata,
                compression=self._compression,
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            delay = grpc_retry_delay(_metadata_items(exc.trailing_metadata()))
            return _Attempt(
                ok=False,
                retryable=grpc_retryable(code, delay),
                reason=f"grpc_{code.name.lower()}",
                detail=(exc.details() or "")[:200],
                delay_s=delay,
            )
        partial = response.partial_success
        return _Attempt(ok=True, rejected=partial.rejected_spans, partial_message=partial.error_message)

    async def close(self) -> None:
        """Close the channel, letting in-flight calls finish for a moment."""
        if self._channel is not None:
            await self._channel.close(grace=1.0)


def _metadata_items(metadata: Any) -> Sequence[tuple[str, Any]]:
    if not metadata:
        return ()
    return [(item[0], item[1]) for item in metadata]


def build_destination(cfg: Destination, **kwargs: Any) -> OtlpDestination:
    """The destination for one ``exporter.traces`` entry (keyword arguments tune retries)."""
    if cfg.protocol == "grpc":
        return GrpcDestination(cfg, **kwargs)
    return HttpDestination(cfg, **kwargs)
