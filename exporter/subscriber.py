"""The exporter's NATS entry: span batches from ``<subject_prefix>.spans`` into the pipeline.

Replicas subscribe in the queue group ``exporters``, so each batch is delivered to exactly one
of them. A message that does not decode (garbage, or a schema version this exporter does not
know) is counted and logged at most once per 10 s; it never stops the subscription. The
connection retries forever, in the background, so the exporter may start before the broker.

Imports nothing from the gateway but :mod:`gateway.telemetry.wire`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from gateway.telemetry.expand import expand_batch
from gateway.telemetry.wire import NatsConfig, SpanBatch, WireVersionError, decode_batch

__all__ = ["QUEUE_GROUP", "SpanSubscriber"]

log = logging.getLogger("exporter.subscriber")

QUEUE_GROUP = "exporters"


class SupportsSubmit(Protocol):
    """The part of ``ExportPipeline`` the subscriber feeds."""

    def submit(self, batch: SpanBatch) -> None: ...


class _RateLimitedLog:
    """At most one warning per ``interval_s``; suppressed calls are counted into the next one."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self._interval = interval_s
        self._last = -interval_s - 1.0
        self._suppressed = 0

    def warning(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last < self._interval:
            self._suppressed += 1
            return
        suppressed, self._suppressed, self._last = self._suppressed, 0, now
        log.warning(msg + " (%d similar suppressed)", *args, suppressed)


class SpanSubscriber:
    """Queue-group subscription feeding decoded batches to ``pipeline.submit``.

    ``pending_msgs_limit``/``pending_bytes_limit`` bound what nats-py buffers for a slow
    pipeline; beyond them the client drops messages (counted as ``slow_consumer``) rather than
    grow without bound.
    """

    def __init__(
        self,
        cfg: NatsConfig,
        pipeline: SupportsSubmit,
        *,
        name: str = "gateway-exporter",
        queue: str = QUEUE_GROUP,
        pending_msgs_limit: int = 8192,
        pending_bytes_limit: int = 256 * 1024 * 1024,
        reconnect_wait_s: float = 1.0,
    ) -> None:
        self._cfg = cfg
        self.subject = cfg.spans_subject
        self._pipeline = pipeline
        self._name = name
        self._queue = queue
        self._pending_msgs = pending_msgs_limit
        self._pending_bytes = pending_bytes_limit
        self._reconnect_wait = reconnect_wait_s
        self._nc = NatsClient()
        self._stopping = False
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._bad_log = _RateLimitedLog()
        self._err_log = _RateLimitedLog()
        self.subscribed = asyncio.Event()
        # counters
        self.batches = 0
        self.spans = 0
        self.bad_messages = 0
        self.submit_errors = 0
        self.slow_consumer = 0

    @property
    def connected(self) -> bool:
        """The broker connection is up."""
        return self._nc.is_connected

    async def start(self) -> None:
        """Connect and subscribe in the background; returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._connect_and_subscribe(), name="exporter-nats")

    async def _connect_and_subscribe(self) -> None:
        try:
            await self._nc.connect(
                servers=[self._cfg.url],
                name=self._name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=self._reconnect_wait,  # type: ignore[arg-type]  # float works
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
            # nats-py re-sends SUB for existing subscriptions after a reconnect.
            self._sub = await self._nc.subscribe(
                self.subject,
                queue=self._queue,
                cb=self._on_msg,
                pending_msgs_limit=self._pending_msgs,
                pending_bytes_limit=self._pending_bytes,
            )
            await self._nc.flush()
            self.subscribed.set()
            log.info("exporter: subscribed to %s (queue %s) at %s", self.subject, self._queue, self._cfg.url)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # background task: log once, the process keeps serving signals
            log.error("exporter: NATS subscription task ended: %r", exc)

    async def _on_msg(self, msg: Msg) -> None:
        self.handle(msg.data)

    def handle(self, data: bytes) -> None:
        """Decode one message and submit it; bad input is counted, never raised."""
        try:
            batch = expand_batch(decode_batch(data))
        except (msgspec.DecodeError, WireVersionError) as exc:
            self.bad_messages += 1
            self._bad_log.warning("exporter: undecodable span batch (%d bytes): %s", len(data), exc)
            return
        try:
            self._pipeline.submit(batch)
        except Exception as exc:  # the pipeline's own bug must not end the subscription
            self.submit_errors += 1
            self._err_log.warning("exporter: pipeline.submit failed: %r", exc)
            return
        self.batches += 1
        self.spans += len(batch.spans)

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            self.slow_consumer += 1
        self._err_log.warning("exporter: NATS error: %r", exc)

    async def _on_disconnected(self) -> None:
        if self._stopping:  # our own close, not an outage
            return
        log.warning("exporter: disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("exporter: reconnected to NATS")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Drain: stop receiving, let buffered messages reach the pipeline, close."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        nc = self._nc
        if nc.is_closed:
            return
        try:
            if nc.is_connected:
                await asyncio.wait_for(nc.drain(), max(timeout_s, 0.05))
            else:
                await nc.close()
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            log.warning("exporter: draining the NATS connection failed: %r", exc)
            await nc.close()
