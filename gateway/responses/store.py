"""Stored responses: what ``previous_response_id``, retrieve and ``input_items`` read.

One :class:`StoredResponse` per response created with ``store: true`` (the default): the Response
object as the client saw it, this request's input items, and the chain's context (every item
before this response's output), so continuing a chain is one lookup, not one per turn.

    ResponseStore                the interface the handler uses
    ├── MemoryStore              embedded: bounded (entries and bytes), TTL, in process
    └── NatsStore                fleet: NATS JetStream key-value bucket (TTL = bucket max age),
                                 values over the server's payload limit in a JetStream object
                                 store of the same name; a local cache of recent ones

A caller only ever sees its own responses: :meth:`ResponseStore.get` answers None for another
subject's id, exactly as for an unknown one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

import msgspec

from gateway.errors import ServiceUnavailable

log = logging.getLogger("gateway.responses")

# A KV value that stands for an object in the object store.
_OBJECT_MARKER = b"@object"


class StoredResponse(msgspec.Struct, gc=False):
    """A stored response; JSON-valued fields stay bytes until someone reads them."""

    id: str
    subject: str
    conversation_id: str  # the first response id of the previous_response_id chain
    created_at: float  # epoch seconds, for the TTL of the memory store
    response: msgspec.Raw  # the Response object
    input_items: msgspec.Raw  # this request's input items
    context: msgspec.Raw  # the chain's items before this response's output (inputs and outputs)

    @property
    def size(self) -> int:
        return len(self.response) + len(self.input_items) + len(self.context) + 128


_encode = msgspec.json.Encoder().encode
_decode_stored = msgspec.json.Decoder(StoredResponse).decode


class ResponseStore:
    """Where stored responses live; every method may be awaited in the request path."""

    async def start(self) -> None:
        """Connect (fleet) — never blocks start-up for long."""

    async def get(self, resp_id: str, subject: str) -> StoredResponse | None:
        """The response ``resp_id`` if it exists, is not expired and belongs to ``subject``.

        Raises:
            ServiceUnavailable: the shared store cannot be reached (fleet).
        """
        raise NotImplementedError

    async def put(self, stored: StoredResponse) -> None:
        """Keep ``stored`` (replacing any earlier copy)."""
        raise NotImplementedError

    async def delete(self, resp_id: str, subject: str) -> bool:
        """Forget ``resp_id`` if it belongs to ``subject``; whether it did."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close connections."""


class _Lru:
    """Bounded by entries and bytes, with a TTL; the embedded store and the fleet's cache."""

    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.bytes = 0
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()

    def get(self, resp_id: str) -> StoredResponse | None:
        item = self._items.get(resp_id)
        if item is None:
            return None
        if item.created_at + self.ttl_s < time.time():
            self.pop(resp_id)
            return None
        self._items.move_to_end(resp_id)
        return item

    def put(self, item: StoredResponse) -> None:
        if self.max_entries <= 0 or item.size > self.max_bytes:
            return
        self.pop(item.id)
        self._items[item.id] = item
        self.bytes += item.size
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.size

    def pop(self, resp_id: str) -> StoredResponse | None:
        item = self._items.pop(resp_id, None)
        if item is not None:
            self.bytes -= item.size
        return item

    def __len__(self) -> int:
        return len(self._items)


class MemoryStore(ResponseStore):
    """Embedded store: one process's memory, bounded, entries expire after the TTL."""

    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float) -> None:
        self.lru = _Lru(max_entries, max_bytes, ttl_s)

    async def get(self, resp_id: str, subject: str) -> StoredResponse | None:
        item = self.lru.get(resp_id)
        return item if item is not None and item.subject == subject else None

    async def put(self, stored: StoredResponse) -> None:
        self.lru.put(stored)

    async def delete(self, resp_id: str, subject: str) -> bool:
        item = self.lru.get(resp_id)
        if item is None or item.subject != subject:
            return False
        self.lru.pop(resp_id)
        return True


class NatsStore(ResponseStore):
    """Fleet store: NATS JetStream key-value (+ object store for large values), cached locally."""

    def __init__(
        self,
        nats_url: str,
        bucket: str,
        ttl_s: float,
        cache_entries: int,
        cache_bytes: int,
        max_bytes: int = -1,
        timeout_s: float = 2.0,
    ) -> None:
        self.nats_url = nats_url
        self.bucket = bucket
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.cache = _Lru(cache_entries, cache_bytes, ttl_s)
        self._nc: Any = None
        self._kv: Any = None
        self._obj: Any = None
        self._max_value = 0
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect in the background: requests that need the store wait for it, others never."""
        self._task = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        import nats
        from nats.js.api import KeyValueConfig, ObjectStoreConfig

        while True:
            try:
                self._nc = await nats.connect(
                    self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                    connect_timeout=self.timeout_s,
                )  # fmt: skip
                js = self._nc.jetstream(timeout=self.timeout_s)
                cfg = KeyValueConfig(bucket=self.bucket, ttl=self.ttl_s, history=1, max_bytes=self.max_bytes)
                try:
                    self._kv = await js.create_key_value(cfg)
                except Exception:  # exists with another config (an operator changed it): use it
                    self._kv = await js.key_value(self.bucket)
                ocfg = ObjectStoreConfig(ttl=self.ttl_s, max_bytes=self.max_bytes)
                try:
                    self._obj = await js.create_object_store(self.bucket, config=ocfg)
                except Exception:
                    self._obj = await js.object_store(self.bucket)
                # Leave room for the headers of a KV put within the server's payload limit.
                self._max_value = max(1024, self._nc.max_payload - 4096)
                self._ready.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("response store: NATS at %s not ready (%s); retrying", self.nats_url, exc)
                if self._nc is not None:
                    try:
                        await self._nc.close()
                    except Exception:  # noqa: S110 - closing a failed connection
                        pass
                    self._nc = None
                await asyncio.sleep(1.0)

    async def _wait_ready(self, timeout_s: float) -> None:
        if self._ready.is_set():
            return
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            raise ServiceUnavailable(
                "the response store (NATS JetStream) is not reachable", code="store_unavailable"
            ) from None

    async def get(self, resp_id: str, subject: str) -> StoredResponse | None:
        item = self.cache.get(resp_id)
        if item is None:
            item = await self._fetch(resp_id)
            if item is None:
                return None
            self.cache.put(item)
        return item if item.subject == subject else None

    async def _fetch(self, resp_id: str) -> StoredResponse | None:
        from nats.js.errors import NotFoundError

        await self._wait_ready(self.timeout_s)
        try:
            entry = await asyncio.wait_for(self._kv.get(resp_id), self.timeout_s)
            value = entry.value
            if value == _OBJECT_MARKER:
                value = (await asyncio.wait_for(self._obj.get(resp_id), self.timeout_s)).data
        except NotFoundError:
            return None
        except Exception as exc:
            raise ServiceUnavailable(f"the response store failed: {exc}", code="store_unavailable") from None
        if not value:
            return None
        try:
            return _decode_stored(value)
        except msgspec.DecodeError:
            log.warning("response store: unreadable entry %s", resp_id)
            return None

    async def put(self, stored: StoredResponse) -> None:
        self.cache.put(stored)
        # A response is answered whatever happens here: never hold it long for a store that is
        # not there (the local cache still serves this replica).
        await self._wait_ready(min(self.timeout_s, 0.25))
        if not self._nc.is_connected:  # reconnecting: a put would wait for its ack timeout
            raise ServiceUnavailable("the response store (NATS) is reconnecting", code="store_unavailable")
        value = _encode(stored)
        if len(value) > self._max_value:
            from nats.js.api import ObjectMeta, ObjectMetaOptions

            # Chunks must fit the server's payload limit too (the client's default is 128 KiB).
            meta = ObjectMeta(name=stored.id, options=ObjectMetaOptions(max_chunk_size=self._max_value))
            await asyncio.wait_for(self._obj.put(stored.id, value, meta=meta), self.timeout_s * 4)
            value = _OBJECT_MARKER
        await asyncio.wait_for(self._kv.put(stored.id, value), self.timeout_s)

    async def delete(self, resp_id: str, subject: str) -> bool:
        item = await self.get(resp_id, subject)
        if item is None:
            return False
        self.cache.pop(resp_id)
        await asyncio.wait_for(self._kv.purge(resp_id), self.timeout_s)
        try:
            await asyncio.wait_for(self._obj.delete(resp_id), self.timeout_s)
        except Exception:  # noqa: S110 - most responses have no object
            pass
        return True

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._nc is not None:
            try:
                await self._nc.drain()
            except Exception:
                log.exception("closing the response store's NATS connection failed")


def make_store(cfg: Any, nats_url: str | None) -> ResponseStore:
    """The store for a ``responses:`` config: NATS with ``cluster.nats_url``, memory without."""
    if nats_url:
        return NatsStore(
            nats_url, cfg.kv_bucket, cfg.store_ttl_s, cfg.cache_max_entries,
            min(cfg.memory_max_bytes, 64 * 1024 * 1024), cfg.kv_max_bytes,
        )  # fmt: skip
    return MemoryStore(cfg.memory_max_entries, cfg.memory_max_bytes, cfg.store_ttl_s)
