"""Where the drain task sends trace batches: NATS (scale-out) or the in-process exporter.

A sink's ``send`` never raises and never blocks on a dead broker: a batch that cannot be
delivered is dropped and counted, with one rate-limited log line. :func:`encode_parts` (pure)
keeps every NATS message under the server's ``max_payload`` by halving oversized batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import nats.errors
from nats.aio.client import Client as NatsClient

from gateway.telemetry.expand import expand_batch
from gateway.telemetry.ring import TelemetryCounters
from gateway.telemetry.wire import NatsConfig, SpanBatch, TraceBatch, encode_batch

__all__ = ["EmbeddedSink", "NatsSink", "RateLimitedLog", "Sink", "encode_parts"]

log = logging.getLogger("gateway.telemetry")


class Sink(Protocol):
    """What the drain task needs from a destination."""

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def send(self, batch: TraceBatch) -> None: ...

    async def stop(self, timeout_s: float) -> None: ...


class RateLimitedLog:
    """At most one warning per ``interval_s``; suppressed calls are counted into the next one."""

    __slots__ = ("_interval", "_last", "_logger", "_suppressed")

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval_s
        self._last = -interval_s - 1.0
        self._suppressed = 0

    def warning(self, msg: str, *args: Any) -> None:
        """Log now, or count the call if the last line was less than ``interval_s`` ago."""
        now = time.monotonic()
        if now - self._last < self._interval:
            self._suppressed += 1
            return
        suppressed, self._suppressed, self._last = self._suppressed, 0, now
        self._logger.warning(msg + " (%d similar suppressed)", *args, suppressed)


def encode_parts(batch: TraceBatch, max_payload: int) -> tuple[list[bytes], int]:
    """Encode ``batch`` as messages no larger than ``max_payload`` bytes.

    Halves the trace list recursively until each half fits. Returns ``(messages,
    oversize_spans)``: a single trace that alone exceeds the limit cannot be sent, and its spans
    are counted.
    """
    data = encode_batch(batch)
    if len(data) <= max_payload:
        return [data], 0
    traces = batch.traces
    if len(traces) <= 1:
        return [], batch.span_count
    mid = len(traces) // 2
    left, lost_l = encode_parts(TraceBatch(batch.version, batch.resource, traces[:mid]), max_payload)
    right, lost_r = encode_parts(TraceBatch(batch.version, batch.resource, traces[mid:]), max_payload)
    return left + right, lost_l + lost_r


class NatsSink:
    """Publishes one message per batch on ``<subject_prefix>.spans``.

    The connection is made in a background task that retries forever, so a missing broker
    neither blocks nor fails gateway start-up; until it is up (and whenever it is down), batches
    are dropped and counted as ``nats_unavailable``. Each batch is flushed (PING/PONG) with a
    short timeout, which bounds what one batch can cost the drain task; the client's pending
    buffer is capped at ``pending_bytes``.
    """

    def __init__(
        self,
        cfg: NatsConfig,
        counters: TelemetryCounters,
        *,
        name: str = "llm-gateway",
        flush_timeout_s: float = 1.0,
        pending_bytes: int = 8 * 1024 * 1024,
        reconnect_wait_s: float = 1.0,
        connect_timeout_s: float = 2.0,
    ) -> None:
        self._cfg = cfg
        self.subject = cfg.spans_subject
        self._counters = counters
        self._name = name
        self._flush_timeout = flush_timeout_s
        self._pending_bytes = pending_bytes
        self._reconnect_wait = reconnect_wait_s
        self._connect_timeout = connect_timeout_s
        self._nc: NatsClient = NatsClient()
        self._stopping = False
        self._connect_task: asyncio.Task[None] | None = None
        self._down_log = RateLimitedLog(log)
        self._error_log = RateLimitedLog(log)
        self.messages_published = 0

    @property
    def connected(self) -> bool:
        """The broker connection is up (for the metrics work and readiness)."""
        return self._nc.is_connected

    async def start(self) -> None:
        """Start connecting in the background; returns at once."""
        if self._connect_task is None:
            self._connect_task = asyncio.create_task(self._connect(), name="telemetry-nats-connect")

    async def _connect(self) -> None:
        try:
            await self._nc.connect(
                servers=[self._cfg.url],
                name=self._name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,  # never give up: the broker may come up after us
                reconnect_time_wait=self._reconnect_wait,  # type: ignore[arg-type]  # float works
                connect_timeout=self._connect_timeout,  # type: ignore[arg-type]
                pending_size=self._pending_bytes,
                # Bounds the forced flush nats-py does when the pending buffer fills up.
                flush_timeout=self._flush_timeout,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
            log.info("telemetry: connected to NATS at %s, publishing on %s", self._cfg.url, self.subject)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a background task logs once and goes on
            log.error("telemetry: NATS connection task ended: %r", exc)

    async def _on_error(self, exc: Exception) -> None:
        self._error_log.warning("telemetry: NATS error: %r", exc)

    async def _on_disconnected(self) -> None:
        if self._stopping:  # our own close, not an outage
            return
        log.warning("telemetry: disconnected from NATS; spans are dropped until it reconnects")

    async def _on_reconnected(self) -> None:
        log.info("telemetry: reconnected to NATS; publishing resumes")

    async def send(self, batch: TraceBatch) -> None:
        """Publish ``batch`` (split to fit ``max_payload``) and flush; drop and count on failure."""
        n = batch.span_count
        nc = self._nc
        if not nc.is_connected:
            self._counters.drop("nats_unavailable", n)
            self._down_log.warning(
                "telemetry: NATS unavailable at %s; dropped %d spans so far",
                self._cfg.url,
                self._dropped_down(),
            )
            return
        parts, oversize = encode_parts(batch, nc.max_payload)
        if oversize:
            self._counters.drop("oversize", oversize)
        sent = 0
        try:
            for data in parts:
                await nc.publish(self.subject, data)
            await nc.flush(timeout=self._flush_timeout)  # type: ignore[arg-type]  # float works
            sent = n - oversize
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            # Whatever was written before the failure may or may not have reached the broker;
            # count the whole batch as lost rather than guess.
            self._counters.drop("nats_unavailable", n - oversize)
            self._error_log.warning("telemetry: publishing %d spans to NATS failed: %r", n - oversize, exc)
            return
        self._counters.published += sent
        self.messages_published += len(parts)

    def _dropped_down(self) -> int:
        return self._counters.dropped.get("nats_unavailable", 0)

    async def stop(self, timeout_s: float) -> None:
        """Drain the connection (flushes what is buffered) or, if never connected, stop trying."""
        self._stopping = True
        task, self._connect_task = self._connect_task, None
        nc = self._nc
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if nc.is_closed:
            return
        try:
            if nc.is_connected:
                await asyncio.wait_for(nc.drain(), max(timeout_s, 0.05))
            else:
                await nc.close()
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            log.warning("telemetry: draining the NATS connection failed: %r", exc)
            await nc.close()


class SupportsSubmit(Protocol):
    """The part of ``exporter.pipeline.ExportPipeline`` the embedded sink uses."""

    async def start(self) -> None: ...

    def submit(self, batch: SpanBatch) -> None: ...

    async def stop(self, timeout_s: float) -> None: ...


class EmbeddedSink:
    """Hands batches to the exporter pipeline in the same process (no broker, no encoding).

    Records become spans here, as the exporter process does on receipt."""

    connected = True

    def __init__(self, pipeline: SupportsSubmit, counters: TelemetryCounters) -> None:
        self._pipeline = pipeline
        self._counters = counters
        self._error_log = RateLimitedLog(log)

    async def start(self) -> None:
        """Start the pipeline's destination workers."""
        await self._pipeline.start()

    async def send(self, batch: TraceBatch) -> None:
        """``submit`` is non-blocking: the pipeline queues or drops (and counts) on its side."""
        n = batch.span_count
        try:
            self._pipeline.submit(expand_batch(batch))
        except Exception as exc:  # a broken pipeline must not kill the drain task
            self._counters.drop("exporter_error", n)
            self._error_log.warning("telemetry: embedded exporter rejected a batch: %r", exc)
            return
        self._counters.published += n

    async def stop(self, timeout_s: float) -> None:
        """Let the pipeline flush its queues within ``timeout_s``."""
        try:
            await self._pipeline.stop(timeout_s)
        except Exception as exc:
            log.warning("telemetry: stopping the embedded exporter failed: %r", exc)
