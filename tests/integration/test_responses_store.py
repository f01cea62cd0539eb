"""Stored responses: the bounded memory store, and NATS JetStream KV with a real nats-server.

Ends with two gateway processes sharing one NATS: a chain started on one continues on the other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec
import openai
import pytest

from gateway.responses.store import MemoryStore, NatsStore, StoredResponse
from tests.conftest import Proc, provider

pytestmark = pytest.mark.timeout(90)


def _stored(resp_id: str, subject: str = "user:a", size: int = 10, created: float | None = None) -> StoredResponse:
    blob = msgspec.json.encode({"id": resp_id, "output": [], "pad": "x" * size})
    return StoredResponse(
        resp_id, subject, resp_id, time.time() if created is None else created,
        msgspec.Raw(blob), msgspec.Raw(b"[]"), msgspec.Raw(b"[]"),
    )  # fmt: skip


def test_memory_store_bounds_ttl_and_owner() -> None:
    async def run() -> None:
        store = MemoryStore(max_entries=3, max_bytes=10_000, ttl_s=60)
        for i in range(5):
            await store.put(_stored(f"resp_{i}"))
        assert await store.get("resp_0", "user:a") is None  # evicted: oldest first
        assert (await store.get("resp_4", "user:a")) is not None
        assert await store.get("resp_4", "user:b") is None  # another caller's: not there for it
        assert not await store.delete("resp_4", "user:b")
        assert await store.delete("resp_4", "user:a")
        assert await store.get("resp_4", "user:a") is None
        await store.put(_stored("old", created=time.time() - 61))
        assert await store.get("old", "user:a") is None  # expired
        await store.put(_stored("big", size=20_000))
        assert await store.get("big", "user:a") is None  # larger than the whole budget: not kept
        assert store.lru.bytes <= 10_000

    asyncio.run(run())


def test_nats_store_shared_large_values_and_owner(nats_server_factory: Any) -> None:
    server = nats_server_factory(jetstream=True, max_payload=64 * 1024)
    server.start()

    async def run() -> None:
        a = NatsStore(server.url, "responses-test", ttl_s=3600, cache_entries=16, cache_bytes=1 << 20)
        b = NatsStore(server.url, "responses-test", ttl_s=3600, cache_entries=0, cache_bytes=1 << 20)
        await a.start()
        await b.start()
        await asyncio.wait_for(a._ready.wait(), 10)  # connected (JetStream set up)
        try:
            await a.put(_stored("resp_small"))
            got = await b.get("resp_small", "user:a")  # another replica, no cache: from the KV
            assert got is not None and msgspec.json.decode(got.response)["id"] == "resp_small"
            assert await b.get("resp_small", "user:b") is None

            await a.put(_stored("resp_big", size=300_000))  # over the server's payload limit
            big = await b.get("resp_big", "user:a")
            assert big is not None and len(msgspec.json.decode(big.response)["pad"]) == 300_000

            assert await b.get("resp_missing", "user:a") is None
            assert not await b.delete("resp_big", "user:b")
            assert await b.delete("resp_big", "user:a")
            assert await b.get("resp_big", "user:a") is None
            kv_status = await b._kv.status()
            assert kv_status.ttl == 3600  # the bucket's max age is the configured TTL
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(run())


def test_nats_store_unreachable_is_a_503(nats_server_factory: Any) -> None:
    from gateway.errors import ServiceUnavailable

    server = nats_server_factory(jetstream=True)  # never started: nothing listens on the port

    async def run() -> None:
        store = NatsStore(server.url, "responses-test", 60, 0, 1 << 20, timeout_s=0.5)
        await store.start()
        try:
            with pytest.raises(ServiceUnavailable):
                await store.get("resp_x", "user:a")
        finally:
            await store.aclose()

    asyncio.run(run())


def test_previous_response_id_across_two_gateways(
    nats_server_factory: Any, mock: Proc, gateway_factory: Callable[..., Proc]
) -> None:
    server = nats_server_factory(jetstream=True)
    server.start()
    config = {
        "providers": [provider("chat", mock.url, ["gpt-4o"]), provider("native", mock.url, ["gpt-4o"],
                                                                       responses="native")],  # fmt: skip
        "cluster": {"nats_url": server.url, "config_bucket": None},
        "responses": {"kv_bucket": "fleet-responses"},
    }
    one, two = gateway_factory(config), gateway_factory(config)
    with (
        openai.OpenAI(base_url=one.url + "/v1", api_key="x", max_retries=0, timeout=10) as c1,
        openai.OpenAI(base_url=two.url + "/v1", api_key="x", max_retries=0, timeout=10) as c2,
    ):
        first = c1.responses.create(model="chat/gpt-4o", input="remember 42")
        with c2.responses.stream(model="native/gpt-4o", input="and?", previous_response_id=first.id) as s:
            second = s.get_final_response()
        third = c1.responses.create(model="chat/gpt-4o", input="last", previous_response_id=second.id)
        assert third.previous_response_id == second.id
        assert c2.responses.retrieve(first.id).output_text == first.output_text
        assert c2.responses.retrieve(third.id).id == third.id
        items = c1.responses.input_items.list(third.id)
        assert [i.content[0].text for i in items.data] == ["last"]


def test_nats_store_down_after_start(nats_server_factory: Any) -> None:
    """NATS going away: a put is refused at once (the response is answered anyway), and a
    lookup is a 503 rather than a hang; this replica's cache still serves what it stored."""
    from gateway.errors import ServiceUnavailable

    server = nats_server_factory(jetstream=True)
    server.start()

    async def run() -> None:
        store = NatsStore(server.url, "responses-test", 60, 16, 1 << 20, timeout_s=0.5)
        await store.start()
        await asyncio.wait_for(store._ready.wait(), 10)
        try:
            await store.put(_stored("resp_before"))
            server.stop()
            for _ in range(100):  # bounded: until the client notices the connection is gone
                if not store._nc.is_connected:
                    break
                await asyncio.sleep(0.05)
            with pytest.raises(ServiceUnavailable):
                await store.put(_stored("resp_during"))
            assert await store.get("resp_during", "user:a") is not None  # the local cache
            with pytest.raises(ServiceUnavailable):
                await store.get("resp_elsewhere", "user:a")
        finally:
            await store.aclose()

    asyncio.run(run())


def test_gateway_answers_when_the_fleet_store_is_unreachable(
    nats_server_factory: Any, mock: Proc, gateway_factory: Callable[..., Proc]
) -> None:
    server = nats_server_factory(jetstream=True)  # never started
    gw = gateway_factory(
        {
            "providers": [provider("chat", mock.url, ["gpt-4o"])],
            "cluster": {"nats_url": server.url, "config_bucket": None},
        }
    )
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=10) as client:
        resp = client.responses.create(model="chat/gpt-4o", input="hi")
        assert resp.status == "completed"
        with pytest.raises(openai.APIStatusError) as err:
            client.responses.create(model="chat/gpt-4o", input="more", previous_response_id="resp_other")
        assert err.value.status_code == 503
        assert err.value.body["code"] == "store_unavailable"  # type: ignore[index]
