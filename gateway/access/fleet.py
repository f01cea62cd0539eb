"""Fleet-wide rate limits: workers exchange counter deltas over NATS.

Each worker publishes the charges it made since the last publish on ``<prefix>.ratelimit`` (one
msgpack message per batch) every ``interval_s`` (≤ 100 ms), and adds every other worker's deltas to
its own counters. A limit therefore holds for the whole fleet; the overshoot is bounded by the
traffic the other workers admit before their deltas arrive. To keep that small where it matters,
the limiter asks for an immediate publish when a key's unpublished charges reach 10 % of what is
left of its limit (:data:`~gateway.access.ratelimit.HOT_SHARE`), rate-limited to one per
``min_gap_s``.

A worker that joins mid-window (scale-out, rolling restart) first asks its peers for their view of
the counters on ``<prefix>.ratelimit.snapshot`` and starts from the largest, so a new pod does not
grant a full limit again.

NATS is never in the request path: admit/charge only touch memory. NATS unreachable at start-up or
later → the worker serves on its local counts and reconnects in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from typing import Any

import msgspec
import nats
from nats.aio.client import Client

from gateway.access.ratelimit import Delta, RateLimiter, Snapshot

__all__ = ["FleetSync", "RateDeltas", "RateSnapshot", "process_worker_id"]

log = logging.getLogger("gateway.access.fleet")

_worker_id: tuple[int, str] | None = None  # (pid, id)


def process_worker_id() -> str:
    """This process's id on the sync subject; a limiter rebuilt after a reload keeps it.

    Made on first use in each process, never at import: granian forks its workers from a
    supervisor that may have imported this module, and siblings sharing one id would drop each
    other's deltas as their own echo (a 2-worker gateway admitted twice its limit).
    """
    global _worker_id
    pid = os.getpid()
    if _worker_id is None or _worker_id[0] != pid:
        _worker_id = (pid, uuid.uuid4().hex[:16])
    return _worker_id[1]


MAX_DELTAS_PER_MESSAGE = 4096  # well under NATS's 1 MiB default max payload
WIRE_VERSION = 1


class RateDeltas(msgspec.Struct, array_like=True, frozen=True):
    """One batch of counter deltas from one worker."""

    v: int
    worker: str
    deltas: list[tuple[str, int, int]]


class RateSnapshot(msgspec.Struct, array_like=True, frozen=True):
    """One worker's view of (part of) the counters, in answer to a joining worker."""

    v: int
    worker: str
    rows: list[tuple[str, int, int, int]]


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(RateDeltas).decode
_decode_snapshot = msgspec.msgpack.Decoder(RateSnapshot).decode
SNAPSHOT_WAIT_S = 0.25  # how long a joining worker collects its peers' snapshots


class FleetSync:
    """Background task keeping a :class:`RateLimiter` in step with the rest of the fleet."""

    def __init__(
        self,
        limiter: RateLimiter,
        nats_url: str,
        subject_prefix: str = "llm-gateway",
        *,
        interval_s: float = 0.05,
        min_gap_s: float = 0.002,
        worker_id: str | None = None,
    ) -> None:
        if not 0 < interval_s <= 0.1:
            raise ValueError("interval_s must be in (0, 0.1]")
        self.limiter = limiter
        self.nats_url = nats_url
        self.subject = f"{subject_prefix}.ratelimit"
        self.interval_s = interval_s
        self.min_gap_s = min_gap_s
        self.worker_id = worker_id or process_worker_id()
        self._nc: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()  # set once subscribed: from then on others' deltas arrive
        self.published = 0
        self.applied = 0
        self.bad_messages = 0

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def start(self) -> None:
        """Start syncing in the background; returns at once even when NATS is unreachable."""
        self.start_soon(asyncio.get_running_loop())

    def start_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """:meth:`start` from synchronous code: the task runs once ``loop`` does."""
        self.limiter.track_deltas = True
        self.limiter.on_hot = self._wake.set
        self._task = loop.create_task(self._run(), name="ratelimit-fleet-sync")

    async def stop(self) -> None:
        """Publish what is left, then close the connection."""
        self.limiter.on_hot = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                if nc.is_connected:
                    await self._publish(nc)
                    await nc.flush(timeout=1)
            with contextlib.suppress(Exception):
                await nc.close()

    async def _run(self) -> None:
        self._nc = await self._connect()
        await self._nc.subscribe(self.subject, cb=self._on_message)
        await self._nc.subscribe(self.subject + ".snapshot", cb=self._on_snapshot_request)
        with contextlib.suppress(Exception):
            await self._nc.flush(timeout=2)  # the server has our SUBs once this returns
        try:
            await self._join(self._nc)
        except Exception as exc:  # no peer state: we start from zero, as without NATS
            log.warning("rate-limit snapshot from peers failed: %s", type(exc).__name__)
        self.ready.set()
        while True:
            eager = False
            with contextlib.suppress(TimeoutError):
                # asyncio.timeout, not wait_for: see JwksCache.run (cancellation on 3.11).
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
                    eager = True
            self._wake.clear()
            if self._nc.is_connected:
                try:
                    await self._publish(self._nc)
                except Exception as exc:  # the connection dropped mid-publish: next tick retries
                    log.warning("rate-limit delta publish failed: %s", type(exc).__name__)
            if eager:
                await asyncio.sleep(self.min_gap_s)

    async def _connect(self) -> Client:
        delay, warned = 0.2, False
        while True:
            try:
                return await nats.connect(
                    servers=[self.nats_url],
                    name=f"gateway-ratelimit-{self.worker_id}",
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=2,
                    no_echo=True,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not warned:
                    log.warning(
                        "NATS unreachable for rate-limit sync (%s); limits are per process until it is back",
                        type(exc).__name__,
                    )
                    warned = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _publish(self, nc: Client) -> None:
        deltas = self.limiter.take_deltas()
        for i in range(0, len(deltas), MAX_DELTAS_PER_MESSAGE):
            chunk: list[Delta] = deltas[i : i + MAX_DELTAS_PER_MESSAGE]
            await nc.publish(self.subject, _encode(RateDeltas(WIRE_VERSION, self.worker_id, chunk)))
            self.published += 1

    async def _join(self, nc: Client) -> None:
        """Ask peers for their counters and start from the largest view of each."""
        rows: list[Snapshot] = []

        async def collect(msg: Any) -> None:
            try:
                snap = _decode_snapshot(msg.data)
            except msgspec.DecodeError:
                self.bad_messages += 1
                return
            if snap.worker != self.worker_id and snap.v == WIRE_VERSION:
                rows.extend(snap.rows)

        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=collect)
        try:
            await nc.publish(self.subject + ".snapshot", self.worker_id.encode(), reply=inbox)
            await asyncio.sleep(SNAPSHOT_WAIT_S)
        finally:
            await sub.unsubscribe()
        self.limiter.merge_snapshot(rows)

    async def _on_snapshot_request(self, msg: Any) -> None:
        if not msg.reply or msg.data == self.worker_id.encode():
            return
        rows = self.limiter.snapshot()
        for i in range(0, max(len(rows), 1), MAX_DELTAS_PER_MESSAGE):
            chunk = rows[i : i + MAX_DELTAS_PER_MESSAGE]
            await self._nc.publish(msg.reply, _encode(RateSnapshot(WIRE_VERSION, self.worker_id, chunk)))  # type: ignore[union-attr]

    async def _on_message(self, msg: Any) -> None:
        try:
            batch = _decode(msg.data)
        except msgspec.DecodeError:
            self.bad_messages += 1
            return
        if batch.worker == self.worker_id or batch.v != WIRE_VERSION:
            return
        self.limiter.apply_remote(batch.deltas)
        self.applied += 1

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS error in rate-limit sync: %s", type(exc).__name__)

    async def _on_disconnected(self) -> None:
        log.warning("NATS disconnected; rate limits continue on local counts")

    async def _on_reconnected(self) -> None:
        log.info("NATS reconnected; rate-limit sync resumed")
