"""The same query tests against DuckDB and chDB (every ClickHouse statement runs for real)."""

from __future__ import annotations

import asyncio
from time import perf_counter_ns, time_ns
from typing import Any

import pytest

from exporter.enrich import enrich_batch
from exporter.store.backends import StoreBackend
from exporter.store.config import StoreConfig
from exporter.store.query import BadParam, parse_stats, parse_traces
from exporter.store.service import TraceStore
from gateway.telemetry.expand import expand_batch
from gateway.telemetry.wire import SCHEMA_VERSION, Resource, TraceBatch, TraceRecord
from tests.records import chat_record

RESOURCE = Resource("gw", "0", "host-1")
BASE_NS = time_ns()


def record(i: int, *, ago_s: float = 0.0, **fields: Any) -> TraceRecord:
    t0 = perf_counter_ns()
    # record i starts i ms before record 0 (and ago_s earlier still): a fixed order
    offset = BASE_NS - t0 - int(ago_s * 1e9) - i * 1_000_000
    body = f'{{"model":"m","messages":[{{"role":"user","content":"question {i} about llamas"}}]}}'
    answer = f'{{"id":"c{i}","choices":[{{"message":{{"role":"assistant","content":"answer {i}"}}}}]}}'
    base: dict[str, Any] = {
        "epoch_offset": offset,
        "start_pc": t0,
        "end_pc": t0 + (i + 1) * 1_000_000,
        "request_body": body.encode(),
        "response_body": answer.encode(),
        "input_tokens": 10 + i,
        "output_tokens": 20 + i,
        "cost_usd": 0.001 * i,
    }
    base.update(fields)
    return chat_record(**base)


def store_of(backend: StoreBackend) -> TraceStore:
    return TraceStore(StoreConfig(), backend)


async def fill(store: TraceStore, records: list[TraceRecord]) -> None:
    batch = expand_batch(TraceBatch(SCHEMA_VERSION, RESOURCE, records))
    enrich_batch(batch)
    result = await store.export(batch)
    assert result.ok, result
    await store.flush()


def traces(store: TraceStore, viewer: str | None = None, **params: str) -> dict[str, Any]:
    q = parse_traces({k.replace("__", "."): [v] for k, v in params.items()})
    return asyncio.run(store.list_traces(q, viewer))


@pytest.fixture
def filled(backend: StoreBackend) -> TraceStore:
    store = store_of(backend)
    records = [
        record(0, model="openai-main/gpt-4o", subject="user:alice", teams=("ml",), metadata={"env": "prod"}),
        record(1, model="openai-main/gpt-4o", subject="user:bob", teams=("ops",), metadata={"env": "dev"}),
        record(2, model="anthropic/claude", subject="user:alice", status=429, error_type="rate_limited",
               error_message="slow down", attempts=(), input_tokens=-1, cost_usd=None),
        record(3, model="openai-main/gpt-4o", subject="user:carol", ago_s=3 * 86400),
    ]  # fmt: skip
    asyncio.run(fill(store, records))
    return store


def test_list_newest_first_with_fields(filled: TraceStore) -> None:
    out = traces(filled)
    rows = out["data"]
    assert [r["subject"] for r in rows] == ["user:alice", "user:bob", "user:alice", "user:carol"]
    assert out["next_cursor"] is None
    first = rows[0]
    for key in ("trace_id", "time", "span_type", "model", "target", "subject", "status", "error_code",
                "latency_ms", "ttft_ms", "input_tokens", "output_tokens", "cost_usd"):  # fmt: skip
        assert key in first
    assert first["span_type"] == "ChatCompletion"
    assert first["target"] == "openai-main/gpt-4o"
    assert first["input_tokens"] == 10 and first["output_tokens"] == 20
    assert first["teams"] == ["ml"] and first["metadata"] == {"env": "prod"}
    assert first["preview"] == "question 0 about llamas"
    assert rows[2]["status"] == 429 and rows[2]["error_code"] == "rate_limited"


def test_filters(filled: TraceStore) -> None:
    assert {r["subject"] for r in traces(filled, model="openai-main/gpt-4o")["data"]} == {
        "user:alice", "user:bob", "user:carol"
    }  # fmt: skip
    assert [r["subject"] for r in traces(filled, model="openai-main/gpt-4o", since="1d")["data"]] == [
        "user:alice", "user:bob"
    ]  # fmt: skip
    assert [r["model"] for r in traces(filled, status="4xx")["data"]] == ["anthropic/claude"]
    assert [r["model"] for r in traces(filled, status="error")["data"]] == ["anthropic/claude"]
    assert len(traces(filled, status="200")["data"]) == 3
    assert [r["subject"] for r in traces(filled, team="ops")["data"]] == ["user:bob"]
    assert [r["subject"] for r in traces(filled, metadata__env="dev")["data"]] == ["user:bob"]
    assert [r["subject"] for r in traces(filled, q="QUESTION 1 about")["data"]] == ["user:bob"]
    assert [r["subject"] for r in traces(filled, q="answer 3")["data"]] == ["user:carol"]
    assert [r["error_code"] for r in traces(filled, error_code="rate_limited")["data"]] == ["rate_limited"]
    assert len(traces(filled, min_latency_ms="3.5")["data"]) == 1  # record 3 took 4 ms
    assert len(traces(filled, span_type="ChatCompletion")["data"]) == 4
    assert traces(filled, span_type="Embedding")["data"] == []
    assert len(traces(filled, target="openai-main/gpt-4o")["data"]) == 3


def test_viewer_sees_only_own(filled: TraceStore) -> None:
    assert {r["subject"] for r in traces(filled, viewer="user:alice")["data"]} == {"user:alice"}
    # a subject filter cannot widen what a non-admin sees
    assert traces(filled, viewer="user:alice", subject="user:bob")["data"] == []
    rows = traces(filled)["data"]
    bob = next(r for r in rows if r["subject"] == "user:bob")
    assert asyncio.run(filled.trace(bob["trace_id"], "user:alice")) is None
    assert asyncio.run(filled.trace(bob["trace_id"], "user:bob")) is not None


def test_cursor_pages(filled: TraceStore) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"limit": ["1"]} | ({"cursor": [cursor]} if cursor else {})
        page = asyncio.run(filled.list_traces(parse_traces(params), None))
        seen.extend(r["trace_id"] for r in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [r["trace_id"] for r in traces(filled)["data"]]
    assert len(seen) == 4


def test_trace_detail_is_a_tree(filled: TraceStore) -> None:
    tid = traces(filled)["data"][0]["trace_id"]
    detail = asyncio.run(filled.trace(tid, None))
    assert detail is not None
    assert detail["request"]["trace_id"] == tid
    assert '"question 0 about llamas"' in detail["request"]["input"]
    (root,) = detail["spans"]
    assert root["name"] == "POST /v1/chat/completions" and root["parent_span_id"] == ""
    assert [c["name"] for c in root["children"]] == ["auth", "model resolution", "chat gpt-4o"]
    assert root["attributes"]["tfy.request.created_by_subject"] == "user:alice"
    assert asyncio.run(filled.trace("0" * 32, None)) is None


def test_stats_totals_and_groups(filled: TraceStore) -> None:
    q = parse_stats({"since": ["7d"], "group_by": ["model"]})
    out = asyncio.run(filled.stats(q, None))
    totals = {t["model"]: t for t in out["totals"]}
    assert totals["openai-main/gpt-4o"]["requests"] == 3
    assert totals["openai-main/gpt-4o"]["input_tokens"] == 10 + 11 + 13
    assert totals["anthropic/claude"]["errors"] == 1
    assert totals["openai-main/gpt-4o"]["latency_p50"] == pytest.approx(2.0, rel=0.01)
    assert sum(s["requests"] for s in out["series"]) == 4
    assert out["series"][0]["time"].endswith("Z")
    by_team = asyncio.run(filled.stats(parse_stats({"since": ["1d"], "group_by": ["team"]}), None))
    assert {t["team"]: t["requests"] for t in by_team["totals"]} == {"ml": 1, "ops": 1, "": 1}
    mine = asyncio.run(filled.stats(parse_stats({"since": ["7d"]}), "user:alice"))
    assert mine["totals"][0]["requests"] == 2
    status = asyncio.run(filled.stats(parse_stats({"since": ["7d"], "group_by": ["status"]}), None))
    assert {t["status"]: t["requests"] for t in status["totals"]} == {"200": 3, "429": 1}


def test_export_all_rows_with_bodies(filled: TraceStore) -> None:
    async def collect() -> list[dict[str, Any]]:
        return [r async for r in filled.export_rows(parse_traces({}, export=True), None)]

    rows = asyncio.run(collect())
    assert len(rows) == 4 and all("input" in r and "output" in r for r in rows)


def test_retention_drops_old_days(filled: TraceStore) -> None:
    dropped = filled.backend.enforce_retention(2, 0)
    assert len(dropped) == 1
    assert [r["subject"] for r in traces(filled)["data"]] == ["user:alice", "user:bob", "user:alice"]
    tid = traces(filled)["data"][0]["trace_id"]
    assert asyncio.run(filled.trace(tid, None)) is not None


def test_size_cap_drops_oldest_day(filled: TraceStore) -> None:
    dropped = filled.backend.enforce_retention(30, 1)  # 1 byte: everything but the newest day goes
    assert len(dropped) == 1
    assert len(traces(filled)["data"]) == 3


def test_exclude_request_data(backend: StoreBackend) -> None:
    store = TraceStore(StoreConfig(exclude_request_data=True), backend)
    asyncio.run(fill(store, [record(0, error_type="x", error_message="secret echo")]))
    row = traces(store)["data"][0]
    assert row["preview"] == "" and row["error_message"] == ""
    detail = asyncio.run(store.trace(row["trace_id"], None))
    assert detail is not None
    assert detail["request"]["input"] == "" and detail["request"]["output"] == ""
    attrs = detail["spans"][0]["attributes"]
    assert "tfy.input" not in attrs and "tfy.output" not in attrs and "tfy.input_short_hand" not in attrs
    assert attrs["tfy.usage.input_tokens"] == 10  # token counts stay


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"bogus": ["1"]}, "bogus"),
        ({"limit": ["0"]}, "limit"),
        ({"limit": ["100000"]}, "limit"),
        ({"since": ["yesterday"]}, "since"),
        ({"status": ["abc"]}, "status"),
        ({"min_latency_ms": ["fast"]}, "min_latency_ms"),
        ({"cursor": ["garbage!"]}, "cursor"),
        ({"metadata.a b": ["x"]}, "metadata.a b"),
        ({"model": ["a", "b"]}, "model"),
        ({"since": ["1d"], "until": ["2d"]}, "since"),
    ],
)
def test_bad_params_name_the_parameter(params: dict[str, list[str]], name: str) -> None:
    with pytest.raises(BadParam) as exc:
        parse_traces(params)
    assert exc.value.param == name


def test_bad_stats_params() -> None:
    with pytest.raises(BadParam) as exc:
        parse_stats({"group_by": ["color"]})
    assert exc.value.param == "group_by"
    with pytest.raises(BadParam) as exc:
        parse_stats({"since": ["30d"], "bucket": ["1m"]})
    assert exc.value.param == "bucket"
    with pytest.raises(BadParam) as exc:
        parse_stats({"limit": ["5"]})
    assert exc.value.param == "limit"


def test_injection_attempts_are_values(filled: TraceStore) -> None:
    assert traces(filled, model="x' OR '1'='1")["data"] == []
    assert traces(filled, metadata__env="') OR 1=1 --")["data"] == []
    assert traces(filled, q="%")["data"] == []
