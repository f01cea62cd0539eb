"""Where the drain task sends trace batches: a JetStream stream (scale-out) or the in-process
exporter.

A sink's ``send`` never raises and never blocks longer than its publish timeout. It returns how
many of the batch's traces (a prefix, in order) are finished with: published and acked by the
stream, or dropped and counted. The drain task puts the rest back in the ring and tries again
later, so a NATS outage costs ring space, not traces. :func:`plan_messages` (pure) splits a
batch into messages under the broker's ``max_payload`` and cuts the bodies of a trace too
large on its own (:mod:`gateway.telemetry.truncate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient

from gateway.telemetry.expand import expand_batch
from gateway.telemetry.ring import TelemetryCounters, record_bytes
from gateway.telemetry.stream import MSG_ID_HEADER, ensure_stream
from gateway.telemetry.truncate import fit_trace
from gateway.telemetry.wire import NatsConfig, SpanBatch, TraceBatch, TraceRecord, encode_batch

__all__ = ["EmbeddedSink", "NatsSink", "RateLimitedLog", "Sink", "plan_messages"]

log = logging.getLogger("gateway.telemetry")


class Sink(Protocol):
    """What the drain task needs from a destination."""

    @property
    def connected(self) -> bool: ...

    @property
    def max_batch_bytes(self) -> int: ...

    async def start(self) -> None: ...

    async def send(self, batch: TraceBatch, spans: int) -> int: ...

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


def plan_messages(
    batch: TraceBatch, max_payload: int
) -> tuple[list[bytes | TraceRecord], list[list[TraceRecord]], int]:
    """Split ``batch`` into messages of at most ``max_payload`` bytes, in trace order.

    Halves the trace list recursively until each half fits; a trace that alone exceeds the
    limit has its bodies cut (:func:`~gateway.telemetry.truncate.fit_trace`). Returns
    ``(items, groups, truncated)``: ``items[i]`` is a message's bytes, or a trace that cannot
    fit even without bodies (to drop and count); ``groups[i]`` the traces ``items[i]`` stands
    for; ``truncated`` how many traces were cut.
    """
    data = encode_batch(batch)
    if len(data) <= max_payload:
        return [data], [batch.traces], 0
    traces = batch.traces
    if len(traces) == 1:
        fitted = fit_trace(traces[0], batch.resource, max_payload)
        if fitted is None:
            return [traces[0]], [traces], 0
        return [encode_batch(TraceBatch(batch.version, batch.resource, [fitted]))], [traces], 1
    mid = len(traces) // 2
    items, groups, truncated = plan_messages(
        TraceBatch(batch.version, batch.resource, traces[:mid]), max_payload
    )
    items_r, groups_r, truncated_r = plan_messages(
        TraceBatch(batch.version, batch.resource, traces[mid:]), max_payload
    )
    return items + items_r, groups + groups_r, truncated + truncated_r


class NatsSink:
    """Publishes one message per batch on ``<subject_prefix>.spans``, into a JetStream stream.

    The connection is made in a background task that retries forever, so a missing broker
    neither blocks nor fails gateway start-up. The stream is created or updated
    (:func:`~gateway.telemetry.stream.ensure_stream`) on connect. Each message waits for the
    stream's ack (``publish_timeout_s``): spans count as ``published`` only once acked. A
    message that is not acked (no connection, timeout, a full stream) is not lost: ``send``
    reports the traces before it as done and the drainer keeps the rest. A re-sent message
    carries the same ``Nats-Msg-Id``, so the stream stores it once even if the first ack was
    lost on the way back.
    """

    def __init__(
        self,
        cfg: NatsConfig,
        counters: TelemetryCounters,
        *,
        name: str = "llm-gateway",
        reconnect_wait_s: float = 1.0,
        connect_timeout_s: float = 2.0,
        pending_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self._cfg = cfg
        self.subject = cfg.spans_subject
        self._counters = counters
        self._name = name
        self._reconnect_wait = reconnect_wait_s
        self._connect_timeout = connect_timeout_s
        self._pending_bytes = pending_bytes
        self._nc: NatsClient = NatsClient()
        self._js: Any = None
        self._stream_ready = False
        self._stopping = False
        self._connect_task: asyncio.Task[None] | None = None
        self._down_log = RateLimitedLog(log)
        self._error_log = RateLimitedLog(log)
        self._size_log = RateLimitedLog(log)
        self.messages_published = 0

    @property
    def connected(self) -> bool:
        """The broker connection is up (for the metrics work and readiness)."""
        return self._nc.is_connected

    @property
    def max_batch_bytes(self) -> int:
        """Record bytes the drainer takes per batch: about one message."""
        return self._nc.max_payload if self._nc.is_connected else 1024 * 1024

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
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
            self._js = self._nc.jetstream(timeout=self._cfg.publish_timeout_s)
            log.info("telemetry: connected to NATS at %s, publishing on %s", self._cfg.url, self.subject)
            await self._ensure_stream()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a background task logs once and goes on
            log.error("telemetry: NATS connection task ended: %r", exc)

    async def _ensure_stream(self) -> bool:
        try:
            await ensure_stream(self._js, self._cfg)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            self._error_log.warning(
                "telemetry: JetStream stream %s not available (is JetStream enabled?): %r",
                self._cfg.stream_name,
                exc,
            )
            return False
        self._stream_ready = True
        return True

    async def _on_error(self, exc: Exception) -> None:
        self._error_log.warning("telemetry: NATS error: %r", exc)

    async def _on_disconnected(self) -> None:
        if self._stopping:  # our own close, not an outage
            return
        log.warning("telemetry: disconnected from NATS; traces stay in the ring until it reconnects")

    async def _on_reconnected(self) -> None:
        log.info("telemetry: reconnected to NATS; publishing resumes")

    async def send(self, batch: TraceBatch, spans: int) -> int:
        """Publish ``batch`` (split to fit ``max_payload``), each message acked by the stream.

        ``spans`` is ``batch.span_count``, which the ring already knows. Returns how many leading
        traces are done (acked, or dropped and counted)."""
        nc = self._nc
        if (
            not nc.is_connected
            or self._js is None
            or (not self._stream_ready and not await self._ensure_stream())
        ):
            self._down_log.warning(
                "telemetry: NATS unavailable at %s; %d spans held in the ring",
                self._cfg.url,
                spans,
            )
            return 0
        items, groups, truncated = plan_messages(batch, nc.max_payload)
        if truncated:
            self._counters.truncated += truncated
            self._size_log.warning(
                "telemetry: %d traces over the NATS message limit (%d bytes): bodies truncated, spans kept",
                truncated,
                nc.max_payload,
            )
        done = 0
        whole = len(items) == 1  # the usual case: one message, whose span count is ``spans``
        for item, traces in zip(items, groups, strict=True):
            group_spans = spans if whole else sum(t.span_count for t in traces)
            if not isinstance(item, bytes):
                self._counters.drop("oversize", group_spans)
                self._size_log.warning(
                    "telemetry: a trace of %d spans does not fit a NATS message even without bodies; dropped",
                    group_spans,
                )
                done += len(traces)
                continue
            msg_id = f"{traces[0].trace_id.hex()}-{traces[-1].trace_id.hex()}-{len(traces)}"
            try:
                await self._js.publish(
                    self.subject, item, stream=self._cfg.stream_name, headers={MSG_ID_HEADER: msg_id}
                )
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                # Not acked: the stream may or may not have it. The drainer re-sends it later
                # with the same message id, which the stream de-duplicates.
                self._error_log.warning(
                    "telemetry: publishing %d spans to JetStream failed (kept, will retry): %r",
                    group_spans,
                    exc,
                )
                if isinstance(exc, nats.js.errors.NotFoundError | nats.js.errors.NoStreamResponseError):
                    self._stream_ready = False  # someone deleted the stream: create it again
                return done
            self._counters.published += group_spans
            self.messages_published += 1
            done += len(traces)
        return done

    async def stop(self, timeout_s: float) -> None:
        """Drain the connection (flushes what is buffered) or, if never connected, stop trying."""
        self._stopping = True
        task, self._connect_task = self._connect_task, None
        nc = self._nc
        if task is not None and not task.done():
            task.cancel()
            # nats-py's first connect() may swallow the cancellation while it retries: closing
            # the client ends its retry loop.
            await asyncio.wait([task], timeout=0.5)
            if not task.done():
                with contextlib.suppress(TimeoutError, nats.errors.Error, OSError):
                    await asyncio.wait_for(nc.close(), 1.0)
                await asyncio.wait([task], timeout=1.0)
        if nc.is_closed:
            return
        try:
            if nc.is_connected:
                await asyncio.wait_for(nc.drain(), max(timeout_s, 0.05))
            else:
                # Never connected: close() of a client still in its first connect can wait forever.
                await asyncio.wait_for(nc.close(), 1.0)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            log.warning("telemetry: draining the NATS connection failed: %r", exc)
            with contextlib.suppress(TimeoutError, nats.errors.Error, OSError):
                await asyncio.wait_for(nc.close(), 1.0)


class SupportsSubmit(Protocol):
    """The part of ``exporter.pipeline.ExportPipeline`` the embedded sink uses."""

    async def start(self) -> None: ...

    def submit(self, batch: SpanBatch, *, size: int = 0) -> None: ...

    async def stop(self, timeout_s: float) -> None: ...


class EmbeddedSink:
    """Hands batches to the exporter pipeline in the same process (no broker, no encoding).

    Records become spans here, as the exporter process does on receipt."""

    connected = True
    max_batch_bytes = 4 * 1024 * 1024  # bounds the in-flight copy an export makes (OTLP encoding)

    def __init__(self, pipeline: SupportsSubmit, counters: TelemetryCounters) -> None:
        self._pipeline = pipeline
        self._counters = counters
        self._error_log = RateLimitedLog(log)

    async def start(self) -> None:
        """Start the pipeline's destination workers."""
        await self._pipeline.start()

    async def send(self, batch: TraceBatch, spans: int) -> int:
        """``submit`` is non-blocking: the pipeline queues or drops (and counts) on its side."""
        n = spans
        size = sum(record_bytes(t) for t in batch.traces)
        try:
            self._pipeline.submit(expand_batch(batch), size=size)
        except Exception as exc:  # a broken pipeline must not kill the drain task
            self._counters.drop("exporter_error", n)
            self._error_log.warning("telemetry: embedded exporter rejected a batch: %r", exc)
            return len(batch.traces)
        self._counters.published += n
        return len(batch.traces)

    async def stop(self, timeout_s: float) -> None:
        """Let the pipeline flush its queues within ``timeout_s``."""
        try:
            await self._pipeline.stop(timeout_s)
        except Exception as exc:
            log.warning("telemetry: stopping the embedded exporter failed: %r", exc)
