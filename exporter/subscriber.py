"""The exporter's NATS entry: span batches from the JetStream stream into the pipeline.

Every exporter replica pulls from one durable consumer (``tracing.nats.consumer.durable``), so
each batch goes to one replica at a time, and one that dies (crash, SIGKILL, scale-down) loses
nothing: what it had not acked is redelivered to another after ``ack_wait_s``.

Ack semantics: a message is acked once every destination is finished with its batch: exported,
or dropped for a reason retrying cannot fix (a 400, an encoding error, a span over the
backend's size limit), which the pipeline counts. A transient failure (timeout, connection
refused, 429/5xx after the destination's own retries, a full queue, shutdown) is not a drop:
the message is nak'ed with a delay (``retry_backoff_s`` doubling per delivery, up to
``retry_backoff_max_s``) and redelivered, so a backend outage is ridden out for as long as the
stream keeps the batch (``stream.max_age_s``, ``stream.max_bytes``). Delivery is therefore at
least once: a destination that took a batch may see it again if the exporter died before acking,
or if another destination of the same batch failed and the redelivery went to another replica
(a replica remembers which destinations already have a message it nak'ed, and skips them).

Flow control instead of drops: the consumer pulls only while the batches it holds stay under
``max_in_flight_bytes``, so a stalled backend leaves the backlog in the stream, not in memory.
While a batch is being exported, ``in_progress`` acks keep the server from redelivering it.

A message that does not decode (garbage, or a schema version this exporter does not know) is
counted, logged at most once per 10 s, and terminated (never redelivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, DeliverPolicy
from nats.js.api import ConsumerConfig as JsConsumerConfig

from gateway.telemetry.expand import expand_batch
from gateway.telemetry.stream import ensure_stream
from gateway.telemetry.wire import SCHEMA_VERSION, NatsConfig, SpanBatch, WireVersionError, decode_batch

__all__ = ["SpanSubscriber"]

log = logging.getLogger("exporter.subscriber")

_REMEMBERED = 4096  # nak'ed messages whose finished destinations we remember (skipped on redelivery)


class SupportsSubmit(Protocol):
    """The part of ``ExportPipeline`` the consumer feeds."""

    def submit(self, batch: SpanBatch, **kwargs: Any) -> None: ...


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
    """Durable pull consumer feeding decoded batches to ``pipeline.submit`` (see module doc)."""

    def __init__(
        self,
        cfg: NatsConfig,
        pipeline: SupportsSubmit,
        *,
        name: str = "gateway-exporter",
        destinations: list[str] | None = None,
        reconnect_wait_s: float = 1.0,
        info_interval_s: float = 5.0,
    ) -> None:
        self._cfg = cfg
        self.subject = cfg.spans_subject
        self.stream = cfg.stream_name
        self.durable = cfg.consumer.durable
        self._pipeline = pipeline
        self._name = name
        self._destinations = frozenset(destinations or ())
        self._reconnect_wait = reconnect_wait_s
        self._info_interval = info_interval_s
        self._nc = NatsClient()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._psub: Any = None
        self._js: Any = None
        self._rebind = False  # set when the consumer vanished: create and bind it again
        self._replies: set[asyncio.Future[Any]] = set()  # acks/naks being sent
        self._bad_log = _RateLimitedLog()
        self._err_log = _RateLimitedLog()
        self._capacity = asyncio.Event()
        self._in_flight: dict[int, Msg] = {}  # stream sequence -> message, until acked or nak'ed
        self._done: OrderedDict[int, frozenset[str]] = OrderedDict()
        # Moving average of message sizes, for the pull size; starts at NATS's default max_payload
        # so the first pulls cannot overshoot the byte budget before sizes are known.
        self._avg_size = 1024 * 1024
        self.subscribed = asyncio.Event()
        # counters (monotonic) and gauges, read by exporter.prom
        self.batches = 0  # messages received and handed to the pipeline
        self.spans = 0
        self.bad_messages = 0
        self.newer_version = 0  # batches of a newer wire schema, nak'ed for an upgraded replica
        self.submit_errors = 0
        self.acked = 0
        self.nacked = 0
        self.redelivered = 0  # messages received with num_delivered > 1
        self.in_flight_bytes = 0
        self.lag: int | None = None  # the consumer's num_pending (batches not yet delivered)
        self.ack_pending: int | None = None

    @property
    def connected(self) -> bool:
        """The broker connection is up."""
        return self._nc.is_connected

    @property
    def in_flight(self) -> int:
        """Messages received and not yet acked or nak'ed."""
        return len(self._in_flight)

    async def start(self) -> None:
        """Connect, create stream and consumer, and pull, in the background; returns at once."""
        if not self._tasks:
            self._tasks.append(asyncio.create_task(self._run(), name="exporter-jetstream"))

    def _consumer_config(self) -> JsConsumerConfig:
        c = self._cfg.consumer
        return JsConsumerConfig(
            durable_name=c.durable,
            name=c.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=c.ack_wait_s,
            max_ack_pending=c.max_ack_pending,
            max_deliver=-1,  # redelivered until acked; the stream's max_age bounds it
            filter_subject=self.subject,
        )

    async def _run(self) -> None:
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
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # background task: log once, the process keeps serving signals
            log.error("exporter: NATS connection task ended: %r", exc)
            return
        self._js = self._nc.jetstream(timeout=5.0)
        await self._bind()
        if self._stopping:
            return
        self.subscribed.set()
        log.info(
            "exporter: subscribed to %s: stream %s, durable consumer %s, at %s",
            self.subject,
            self.stream,
            self.durable,
            self._cfg.url,
        )
        self._tasks.append(asyncio.create_task(self._keepalive(), name="exporter-jetstream-progress"))
        self._tasks.append(asyncio.create_task(self._watch_consumer(), name="exporter-jetstream-info"))
        await self._pull()

    async def _bind(self) -> None:
        """Create (or update) stream and consumer and bind the pull subscription; retries until
        JetStream answers (a cluster may still be electing a leader)."""
        js = self._js
        while not self._stopping:
            try:
                await ensure_stream(js, self._cfg)
                await js.add_consumer(self.stream, self._consumer_config())  # create or update
                if self._psub is not None:
                    with contextlib.suppress(nats.errors.Error, OSError):
                        await self._psub.unsubscribe()
                self._psub = await js.pull_subscribe_bind(
                    durable=self.durable, stream=self.stream, pending_msgs_limit=-1, pending_bytes_limit=-1
                )
                return
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                self._err_log.warning("exporter: JetStream stream/consumer not available yet: %r", exc)
                await asyncio.sleep(self._reconnect_wait)

    async def _pull(self) -> None:
        c = self._cfg.consumer
        # Never hold more batches than the smallest destination queue takes: the rest would be
        # refused (queue full) and nak'ed, churning through redeliveries.
        max_msgs = min(c.max_ack_pending, getattr(self._pipeline, "capacity_batches", c.max_ack_pending))
        while not self._stopping:
            if self._rebind:
                # The consumer (or the whole stream) is gone, e.g. NATS came back with an empty store.
                self._rebind = False
                await self._bind()
                continue
            if self.in_flight_bytes >= c.max_in_flight_bytes or len(self._in_flight) >= max_msgs:
                # Flow control: the backlog stays in the stream until the destinations catch up.
                self._capacity.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._capacity.wait(), 1.0)
                continue
            # Ask for no more messages than the byte budget has room for, at their average size,
            # so the budget holds to about one message.
            room = (c.max_in_flight_bytes - self.in_flight_bytes) // max(self._avg_size, 1)
            want = max(1, min(c.fetch_batch, room, max_msgs - len(self._in_flight)))
            try:
                msgs = await self._psub.fetch(batch=want, timeout=1.0)
            except TimeoutError:
                continue  # nothing to pull right now
            except (nats.errors.Error, OSError) as exc:
                if self._stopping:
                    return
                self._err_log.warning("exporter: pulling from JetStream failed: %r", exc)
                await asyncio.sleep(self._reconnect_wait)
                continue
            for msg in msgs:
                self.handle(msg)

    def handle(self, msg: Msg) -> None:
        """Decode one message and submit it; bad input is counted and terminated, never raised."""
        data = msg.data
        try:
            batch = expand_batch(decode_batch(data))
        except WireVersionError as exc:
            if exc.version > SCHEMA_VERSION:
                # Written by a newer gateway during a rolling upgrade: an upgraded exporter
                # replica can read it, so hand it back (with the usual backoff) instead of losing it.
                self.newer_version += 1
                self._bad_log.warning(
                    "exporter: span batch of a newer schema (%s): left for an upgraded exporter", exc
                )
                delay = self._cfg.consumer.retry_backoff_max_s
                self._reply(msg.nak(delay=delay) if not self._stopping else msg.nak())
                return
            self.bad_messages += 1
            self._bad_log.warning("exporter: undecodable span batch (%d bytes): %s", len(data), exc)
            self._reply(msg.term())
            return
        except msgspec.DecodeError as exc:
            self.bad_messages += 1
            self._bad_log.warning("exporter: undecodable span batch (%d bytes): %s", len(data), exc)
            self._reply(msg.term())
            return
        meta = msg.metadata
        seq = meta.sequence.stream
        if meta.num_delivered > 1:
            self.redelivered += 1
        skip = self._done.pop(seq, frozenset())
        size = len(data)
        self._avg_size += (size - self._avg_size) // 8
        msg.data = b""  # the decoded batch holds what we need; the message is kept only to ack it
        self._in_flight[seq] = msg
        self.in_flight_bytes += size
        self.batches += 1
        self.spans += len(batch.spans)

        def done(retry: frozenset[str]) -> None:
            self._finished(seq, size, meta.num_delivered, retry, skip)

        try:
            self._pipeline.submit(batch, size=size, on_done=done, skip=skip)
        except Exception as exc:  # the pipeline's own bug must not end the consumer
            self.submit_errors += 1
            self._err_log.warning("exporter: pipeline.submit failed: %r", exc)
            if seq in self._in_flight:
                self._finished(seq, size, meta.num_delivered, frozenset({"submit"}), skip)

    def _finished(
        self, seq: int, size: int, delivered: int, retry: frozenset[str], skip: frozenset[str]
    ) -> None:
        msg = self._in_flight.pop(seq, None)
        if msg is None:
            return
        self.in_flight_bytes -= size
        self._capacity.set()
        if not retry:
            self.acked += 1
            self._reply(msg.ack())
            return
        # Remember who has it already, in case the redelivery comes back to this replica.
        have = (self._destinations | skip) - retry
        if have:
            self._done[seq] = have
            while len(self._done) > _REMEMBERED:
                self._done.popitem(last=False)
        c = self._cfg.consumer
        delay = min(c.retry_backoff_s * 2 ** max(delivered - 1, 0), c.retry_backoff_max_s)
        self.nacked += 1
        self._reply(msg.nak(delay=delay) if not self._stopping else msg.nak())

    def _reply(self, coro: Any) -> None:
        # Acks are small publishes nats-py buffers (also across a reconnect); not awaited inline
        # because the pipeline calls back from its worker tasks.
        task = asyncio.ensure_future(coro)
        self._replies.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._reply_done)

    def _reply_done(self, task: asyncio.Future[Any]) -> None:
        self._replies.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A lost ack means a redelivery (a duplicate at worst), never a loss.
            self._err_log.warning("exporter: acknowledging a message failed: %r", task.exception())

    async def _keepalive(self) -> None:
        """``in_progress`` for every message still being exported, so it is not redelivered."""
        interval = max(self._cfg.consumer.ack_wait_s / 3, 0.5)
        while True:
            await asyncio.sleep(interval)
            for msg in list(self._in_flight.values()):
                with contextlib.suppress(nats.errors.Error, OSError):
                    await msg.in_progress()

    async def _watch_consumer(self) -> None:
        """Refresh the lag gauges (``num_pending``, ``num_ack_pending``) every few seconds."""
        while True:
            try:
                info = await self._psub.consumer_info()
                self.lag, self.ack_pending = info.num_pending, info.num_ack_pending
            except nats.js.errors.NotFoundError:
                self._err_log.warning("exporter: consumer %s not found; creating it again", self.durable)
                self._rebind = True
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                self._err_log.warning("exporter: reading the consumer's state failed: %r", exc)
            await asyncio.sleep(self._info_interval)

    async def _on_error(self, exc: Exception) -> None:
        self._err_log.warning("exporter: NATS error: %r", exc)

    async def _on_disconnected(self) -> None:
        if self._stopping:  # our own close, not an outage
            return
        log.warning("exporter: disconnected from NATS; reconnecting (unacked batches will be redelivered)")

    async def _on_reconnected(self) -> None:
        log.info("exporter: reconnected to NATS")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop pulling, let the batches in flight finish within ``timeout_s``, nak the rest
        (redelivered to another replica at once, nothing is lost) and drain the connection."""
        self._stopping = True
        deadline = time.monotonic() + timeout_s
        nc = self._nc
        puller = self._tasks[:1]  # no new messages from here on
        for task in puller:
            task.cancel()
        if puller:
            await asyncio.wait(puller, timeout=0.5)
            if not puller[0].done():
                # nats-py's first connect() may swallow the cancellation while it retries.
                with contextlib.suppress(TimeoutError, nats.errors.Error, OSError):
                    await asyncio.wait_for(nc.close(), 1.0)
        while self._in_flight and time.monotonic() < deadline - 0.5:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        self._tasks.clear()
        if nc.is_closed:
            return
        if nc.is_connected:
            for msg in list(self._in_flight.values()):
                with contextlib.suppress(nats.errors.Error, OSError):
                    await msg.nak()
                    self.nacked += 1
            self._in_flight.clear()
        try:
            if nc.is_connected:
                # Acks and naks are publishes: flush them, then close. Not drain(): the pull
                # subscription's queue may still hold replies nobody will process now (their
                # messages are redelivered after ack_wait), so drain() would wait for them until
                # its deadline and then have its task cancelled, a traceback at every such stop.
                await nc.flush(timeout=max(deadline - time.monotonic(), 0.5))  # type: ignore[arg-type]
            await asyncio.wait_for(nc.close(), 1.0)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            log.warning("exporter: draining the NATS connection failed: %r", exc)
            with contextlib.suppress(TimeoutError, nats.errors.Error, OSError):
                await asyncio.wait_for(nc.close(), 1.0)
