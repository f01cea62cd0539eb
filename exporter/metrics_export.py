"""The OTLP metrics exporter: one periodic export loop per ``exporter.metrics`` destination.

```
MetricsExporter      observe(batch) → SpanMetrics (pure, exporter/metrics.py)
└── _MetricsLane     every interval_s: collect (cumulative | delta) → encode → send with retries
    ├── HTTP         POST proto or JSON to the endpoint as given (…/v1/metrics), optional gzip
    └── gRPC         MetricsService/Export through the official stub, headers as metadata
```

The retry policy is the trace exporter's (:mod:`exporter.retry`): retryable HTTP statuses and
gRPC codes, ``Retry-After`` / ``RetryInfo`` honoured, jittered backoff, everything within the
destination's ``timeout_ms``. A failed delta export is not lost: the next one covers both
intervals (see :class:`exporter.metrics.DeltaTracker`). Failures are logged at most once per
destination per interval of :class:`exporter.destinations.LogLimiter`, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import grpc
import httpx
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub

from exporter.config import MetricsDestination
from exporter.destinations import LogLimiter
from exporter.metrics import DeltaTracker, SpanMetrics, to_json, to_proto
from exporter.retry import RETRYABLE_HTTP, backoff_delay, grpc_retry_delay, grpc_retryable, parse_retry_after
from gateway.telemetry.wire import SpanBatch

__all__ = ["MetricsExporter", "MetricsLaneCounters", "SpanFanout"]

log = logging.getLogger("exporter.metrics")

_USER_AGENT: Final = "llm-gateway-exporter/0.1"


def _grpc_target(endpoint: str) -> tuple[str, bool]:
    """``host:port`` and whether to use TLS (``https://``), as the trace destinations do."""
    parts = urlsplit(endpoint)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port or (443 if secure else 80)}", secure


def _metadata_items(metadata: Any) -> list[tuple[str, Any]]:
    return [(item[0], item[1]) for item in metadata or ()]


class MetricsLaneCounters:
    """What happened to one destination's exports (for logs and tests)."""

    __slots__ = ("exports", "failures", "last_error", "retries")

    def __init__(self) -> None:
        self.exports = 0
        self.failures = 0
        self.retries = 0
        self.last_error = ""


class _MetricsLane:
    """One destination: its temporality state, transport and export loop."""

    def __init__(
        self,
        cfg: MetricsDestination,
        logs: LogLimiter,
        initial_backoff_s: float,
        max_backoff_s: float,
    ) -> None:
        self.cfg = cfg
        self.logs = logs
        self.counters = MetricsLaneCounters()
        self.delta: DeltaTracker | None = None
        self.task: asyncio.Task[None] | None = None
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self._json = cfg.protocol == "http" and cfg.encoding == "json"
        self._http: httpx.AsyncClient | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: MetricsServiceStub | None = None

    # -- transports ---------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            headers = {"user-agent": _USER_AGENT, **self.cfg.headers}
            # Protocol headers last: a user header cannot make the body lie about itself.
            headers["content-type"] = "application/json" if self._json else "application/x-protobuf"
            if self.cfg.compression == "gzip":
                headers["content-encoding"] = "gzip"
            self._http = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.cfg.timeout_ms / 1000),
                follow_redirects=False,
            )
        return self._http

    def _grpc_stub(self) -> MetricsServiceStub:
        if self._stub is None:
            target, secure = _grpc_target(self.cfg.endpoint)
            options = [("grpc.primary_user_agent", _USER_AGENT)]
            if secure:
                self._channel = grpc.aio.secure_channel(
                    target, grpc.ssl_channel_credentials(), options=options
                )
            else:
                self._channel = grpc.aio.insecure_channel(target, options=options)
            self._stub = MetricsServiceStub(self._channel)
        return self._stub

    async def _send_http(self, body: bytes, timeout_s: float) -> tuple[bool, bool, str, float | None]:
        """(ok, retryable, reason, server-requested delay)."""
        try:
            response = await self._client().post(self.cfg.endpoint, content=body, timeout=timeout_s)
        except httpx.TimeoutException:
            return False, True, "timeout", None
        except httpx.TransportError as exc:
            return False, True, f"connection: {exc!r}", None
        except httpx.HTTPError as exc:
            return False, False, f"http_error: {exc!r}", None
        status = response.status_code
        if 200 <= status < 300:
            return True, False, "", None
        reason = f"http_{status}: {response.text[:200]}"
        if status in RETRYABLE_HTTP:
            return False, True, reason, parse_retry_after(response.headers.get("retry-after"), time.time())
        return False, False, reason, None

    async def _send_grpc(
        self, request: ExportMetricsServiceRequest, timeout_s: float
    ) -> tuple[bool, bool, str, float | None]:
        metadata = tuple((k.lower(), v) for k, v in self.cfg.headers.items())
        compression = (
            grpc.Compression.Gzip if self.cfg.compression == "gzip" else grpc.Compression.NoCompression
        )
        try:
            await self._grpc_stub().Export(
                request, timeout=timeout_s, metadata=metadata, compression=compression
            )
        except grpc.aio.AioRpcError as exc:
            delay = grpc_retry_delay(_metadata_items(exc.trailing_metadata()))
            reason = f"grpc_{exc.code().name.lower()}: {(exc.details() or '')[:200]}"
            return False, grpc_retryable(exc.code(), delay), reason, delay
        return True, False, "", None

    # -- one export ---------------------------------------------------------------------------

    async def export(self, request: ExportMetricsServiceRequest) -> bool:
        """Send one request, retrying within ``timeout_ms``; ``True`` when delivered."""
        deadline = time.monotonic() + self.cfg.timeout_ms / 1000
        body = b""
        if self.cfg.protocol == "http":
            body = to_json(request) if self._json else request.SerializeToString()
            if self.cfg.compression == "gzip":
                body = gzip.compress(body, 5, mtime=0)
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._failed("timeout: no time left")
            try:
                async with asyncio.timeout(remaining):
                    if self.cfg.protocol == "grpc":
                        ok, retryable, reason, delay = await self._send_grpc(request, remaining)
                    else:
                        ok, retryable, reason, delay = await self._send_http(body, remaining)
            except TimeoutError:
                ok, retryable, reason, delay = False, True, "timeout", None
            if ok:
                self.counters.exports += 1
                return True
            if not retryable or attempt >= self.cfg.max_retries:
                return self._failed(reason)
            wait = (
                delay
                if delay is not None
                else backoff_delay(attempt, self.initial_backoff_s, self.max_backoff_s)
            )
            if time.monotonic() + wait >= deadline:
                return self._failed(reason)
            await asyncio.sleep(wait)
            attempt += 1
            self.counters.retries += 1

    def _failed(self, reason: str) -> bool:
        self.counters.failures += 1
        self.counters.last_error = reason
        name = self.cfg.name
        self.logs.warning(f"metrics:{name}", "metrics exporter %s: export failed: %s", name, reason)
        return False

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._channel is not None:
            await self._channel.close(grace=1.0)


class MetricsExporter:
    """Span batches in, OTLP metrics out to every ``exporter.metrics`` destination.

    Hook it where batches arrive (``ExportPipeline.submit`` or the NATS subscriber): call
    :meth:`observe` with every batch; it folds the spans in synchronously (microseconds per
    span, no I/O, never raises). :meth:`start` launches one loop per destination exporting
    every ``interval_s``; :meth:`stop` exports a last time and closes the connections.
    """

    def __init__(
        self,
        destinations: Sequence[MetricsDestination],
        *,
        metadata_label_keys: Sequence[str] = (),
        resource_attributes: Mapping[str, Any] | None = None,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
    ) -> None:
        """Args:
        destinations: the ``exporter.metrics`` list.
        metadata_label_keys: the gateway's ``metrics.metadata_label_keys`` (same labels as ``/metrics``).
        resource_attributes: added to every destination's resource (before its own ones).
        """
        self.aggregator = SpanMetrics(metadata_label_keys)
        self.logs = LogLimiter()
        self.lanes = [_MetricsLane(d, self.logs, initial_backoff_s, max_backoff_s) for d in destinations]
        self.resource_attributes = dict(resource_attributes or {})
        # Several exporters may consume one NATS queue group, each seeing part of the spans:
        # each one is its own metrics producer, so its cumulative streams must not collide.
        self.instance_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.observe_errors = 0
        self._running = False

    @property
    def enabled(self) -> bool:
        """Whether any destination is configured (otherwise :meth:`observe` is a no-op)."""
        return bool(self.lanes)

    def observe(self, batch: SpanBatch) -> None:
        """Fold one span batch into the metrics; never raises, never awaits."""
        if not self.lanes:
            return
        try:
            self.aggregator.observe(batch)
        except Exception as exc:  # an odd span must cost its metrics, not the exporter
            self.observe_errors += 1
            self.logs.warning("metrics:observe", "metrics exporter: cannot aggregate a batch: %r", exc)

    def submit(self, batch: SpanBatch, *, on_done: Any = None, skip: Any = (), **_: Any) -> None:
        """The ``ExportPipeline.submit`` shape, for the JetStream consumer: observe, then done."""
        if not skip:
            self.observe(batch)
        if on_done is not None:
            on_done(frozenset())

    def resource(self, cfg: MetricsDestination) -> dict[str, Any]:
        """The resource of one destination's requests."""
        agg = self.aggregator
        return {
            "service.name": agg.service_name or "tfy-llm-gateway",
            **({"service.version": agg.service_version} if agg.service_version else {}),
            "service.instance.id": self.instance_id,
            **self.resource_attributes,
            **cfg.resource_attributes,
        }

    def build_request(
        self, lane: _MetricsLane, now_ns: int | None = None
    ) -> ExportMetricsServiceRequest | None:
        """The next request for ``lane`` (``None`` when there is nothing to report yet)."""
        now_ns = now_ns or time.time_ns()
        agg = self.aggregator
        if lane.cfg.temporality == "delta":
            if lane.delta is None:
                lane.delta = DeltaTracker(agg.start_ns or now_ns)
            points = lane.delta.collect(agg.snapshot(), now_ns)
        else:
            points = agg.collect(now_ns)
        if not points:
            return None
        return to_proto(points, self.resource(lane.cfg))

    async def export_once(self, lane: _MetricsLane) -> bool:
        """Collect and send one request for ``lane`` now (the loop body; also used at stop)."""
        request = self.build_request(lane)
        if request is None:
            return True
        ok = await lane.export(request)
        if ok and lane.delta is not None:
            lane.delta.commit()
        return ok

    async def start(self) -> None:
        """One export loop per destination on the running loop (idempotent)."""
        if self._running:
            return
        self._running = True
        for lane in self.lanes:
            lane.task = asyncio.create_task(self._loop(lane), name=f"metrics:{lane.cfg.name}")

    async def _loop(self, lane: _MetricsLane) -> None:
        while True:
            await asyncio.sleep(lane.cfg.interval_s)
            try:
                await self.export_once(lane)
            except Exception as exc:  # keep exporting next interval whatever happened
                lane._failed(f"unexpected: {exc!r}")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loops, export a final time (within ``timeout_s``), close connections."""
        self._running = False
        for lane in self.lanes:
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
                lane.task = None
        if self.lanes:
            finals = [asyncio.ensure_future(self.export_once(lane)) for lane in self.lanes]
            _, pending = await asyncio.wait(finals, timeout=timeout_s)
            for f in pending:
                f.cancel()
            for f in finals:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await f
        for lane in self.lanes:
            try:
                await lane.close()
            except Exception as exc:  # best effort: the process is going away
                log.warning("metrics exporter %s: close failed: %r", lane.cfg.name, exc)


class SpanFanout:
    """One ``submit`` target feeding the trace pipeline and the metrics exporter.

    Has the shape both span sources expect (``start``, ``submit``, ``stop(timeout_s)``): the
    embedded sink of ``Telemetry.from_config(pipeline=...)`` and ``SpanSubscriber(cfg, pipeline)``.
    The pipeline goes first because it enriches the batch in place (``exporter/enrich.py``:
    ``gen_ai.response.model`` and friends from the bodies) when it has trace destinations;
    metrics then see those attributes too. A full trace queue never affects the metrics.
    """

    def __init__(self, pipeline: Any, metrics: MetricsExporter) -> None:
        self.pipeline = pipeline
        self.metrics = metrics

    async def start(self) -> None:
        """Start both."""
        await self.pipeline.start()
        await self.metrics.start()

    def submit(self, batch: SpanBatch, **kwargs: Any) -> None:
        """Hand one batch to both; never awaits. ``kwargs`` go to ``ExportPipeline.submit``;
        a redelivered batch some destinations already have (``skip``) was observed already."""
        try:
            self.pipeline.submit(batch, **kwargs)
        finally:
            if not kwargs.get("skip"):
                self.metrics.observe(batch)

    async def stop(self, timeout_s: float) -> None:
        """Flush traces, then export metrics a last time, sharing ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        await self.pipeline.stop(timeout_s / 2)
        await self.metrics.stop(max(0.1, deadline - time.monotonic()))

    def __getattr__(self, name: str) -> Any:
        # counters, destinations, queued(): whatever else callers read from the pipeline
        return getattr(self.pipeline, name)
