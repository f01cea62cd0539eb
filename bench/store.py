"""Trace store benchmark: fill a store with N synthetic traces, then time the API's queries.

Run: ``python -m bench.store`` (1 M traces, DuckDB then chDB) or ``--n 20000 --engines duckdb``
for a smoke run. Reports, per engine:

- ingest: spans per CPU-second of this process (all threads: DuckDB's JSON reader and chDB's
  inserts use several), which is what one exporter core sustains; wall-clock rate beside it.
  Only the store's own work is timed (rows from spans, insert); the spans are made beforehand;
- list with two filters (model + status class, newest 50), p50/p99 over ``--queries`` runs;
- trace detail (request row + spans) of random traces, p50/p99;
- stats over 7 days grouped by model (series and exact totals), p50/p99;
- bytes on disk per million traces.

Synthetic traffic: 4 spans per trace (chat), 12 models, 200 users, 3 % errors, prompts and
answers of a few hundred bytes, spread evenly over the last 7 days in time order.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from exporter.enrich import enrich_batch
from exporter.store.backends import ChdbClient, ClickHouseBackend, DuckDBBackend, StoreBackend
from exporter.store.config import StoreConfig
from exporter.store.query import parse_stats, parse_traces
from exporter.store.rows import build_rows
from exporter.store.service import TraceStore
from gateway.telemetry.expand import expand_batch
from gateway.telemetry.wire import (
    SCHEMA_VERSION,
    AttemptRecord,
    Resource,
    SpanBatch,
    TargetInfo,
    TraceBatch,
    TraceRecord,
)

MODELS = [f"provider-{i % 3}/model-{i}" for i in range(12)]
TARGETS = [TargetInfo(m, "openai", m.split("/")[1], "10.0.0.1", 443) for m in MODELS]
USERS = [f"user:u{i:03d}" for i in range(200)]
WORDS = "the gateway routes every request to a model and records its trace for later search".split()
RESOURCE = Resource("bench", "0", "bench-1")


def _record(rng: random.Random, i: int, t_ns: int) -> TraceRecord:
    m = rng.randrange(len(MODELS))
    failed = rng.random() < 0.03
    prompt = " ".join(rng.choices(WORDS, k=rng.randint(8, 60)))
    answer = " ".join(rng.choices(WORDS, k=rng.randint(10, 80)))
    body = f'{{"model":"{MODELS[m]}","messages":[{{"role":"user","content":"{prompt}"}}]}}'.encode()
    out = (
        f'{{"id":"c{i}","model":"{TARGETS[m].upstream_model}","choices":[{{"index":0,"message":'
        f'{{"role":"assistant","content":"{answer}"}},"finish_reason":"stop"}}],'
        f'"usage":{{"prompt_tokens":{len(prompt) // 4},"completion_tokens":{len(answer) // 4}}}}}'
    ).encode()
    dur = rng.randint(200_000_000, 3_000_000_000)
    attempt = AttemptRecord(
        rng.getrandbits(64).to_bytes(8, "big"), TARGETS[m], "primary", 300_000, dur - 1000,
        500 if failed else 200, "UpstreamStatus" if failed else "", "boom" if failed else "",
    )  # fmt: skip
    return TraceRecord(
        rng.getrandbits(128).to_bytes(16, "big"), rng.getrandbits(64).to_bytes(8, "big"), b"",
        t_ns, 0, dur, "/v1/chat/completions", "chat", 502 if failed else 200,
        "upstream_error" if failed else "", "upstream failed" if failed else "", 0, MODELS[m], False, body,
        1000, 50_000, 100_000, rng.choice(USERS), {"env": rng.choice(("prod", "dev"))}, (), (),
        (attempt,), dur // 3, 0, 0, len(prompt) // 4, len(answer) // 4, 0.0001 * (m + 1),
        b"" if failed else out, b"", ("team-a",) if m % 2 else ("team-b",),
    )  # fmt: skip


def make_batches(n: int, per_batch: int, seed: int = 7) -> tuple[list[SpanBatch], list[str]]:
    """``n`` traces over the last 7 days, oldest first, as enriched span batches."""
    rng = random.Random(seed)
    start = time.time_ns() - 7 * 86_400 * 10**9
    step = 7 * 86_400 * 10**9 // max(n, 1)
    batches: list[SpanBatch] = []
    sample: list[str] = []
    for b in range(0, n, per_batch):
        records = [_record(rng, i, start + i * step) for i in range(b, min(n, b + per_batch))]
        if len(sample) < 2000 and rng.random() < 0.5:
            sample.append(records[0].trace_id.hex())
        batch = expand_batch(TraceBatch(SCHEMA_VERSION, RESOURCE, records))
        enrich_batch(batch)
        batches.append(batch)
    return batches, sample


def _dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + ".wal"))
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _pcts(samples: list[float]) -> str:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return f"p50 {statistics.median(samples):8.1f} ms   p99 {p99:8.1f} ms"


async def _timed(n: int, make: Any) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await make(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def run_engine(
    engine: str, batches: list[SpanBatch], sample: list[str], n: int, queries: int, work: Path
) -> dict[str, Any]:
    """Fill one engine and time its queries; prints and returns the figures."""
    where = work / engine
    backend: StoreBackend
    if engine == "duckdb":
        where.mkdir(parents=True, exist_ok=True)
        where = where / "traces.duckdb"
        backend = DuckDBBackend(str(where), timeout_s=60)
    else:
        backend = ClickHouseBackend(ChdbClient(str(where)), "bench", timeout_s=60)
    spans = sum(len(b.spans) for b in batches)
    cfg = StoreConfig(query_timeout_s=60)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    # What the store's writer thread does: rows per pipeline batch, one insert per flush_spans block.
    pending_r: list[Any] = []
    pending_s: list[Any] = []
    for batch in batches:
        requests, span_rows = build_rows(batch.spans)
        pending_r.extend(requests)
        pending_s.extend(span_rows)
        if len(pending_s) >= cfg.flush_spans:
            backend.insert(pending_r, pending_s)
            pending_r, pending_s = [], []
    backend.insert(pending_r, pending_s)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    store = TraceStore(cfg, backend)
    rng = random.Random(3)

    async def queries_run() -> dict[str, list[float]]:
        lists = await _timed(
            queries,
            lambda i: store.list_traces(
                parse_traces(
                    {"model": [rng.choice(MODELS)], "status": ["ok" if i % 2 else "5xx"], "since": ["7d"]}
                ),
                None,
            ),
        )
        details = await _timed(queries, lambda i: store.trace(rng.choice(sample), None))
        stats = await _timed(
            max(3, queries // 5),
            lambda i: store.stats(parse_stats({"since": ["7d"], "group_by": ["model"]}), None),
        )
        return {"list": lists, "detail": details, "stats": stats}

    timings = asyncio.run(queries_run())
    if engine == "duckdb":
        backend.query("CHECKPOINT", {})
    size = _dir_bytes(where)
    backend.close()
    result = {
        "engine": engine, "traces": n, "spans": spans,
        "ingest_spans_per_cpu_s": spans / cpu if cpu else 0.0, "ingest_spans_per_s": spans / wall,
        "bytes": size, "bytes_per_million_traces": size * 1_000_000 / max(n, 1),
        **{k: v for k, v in timings.items()},
    }  # fmt: skip
    print(f"\n== {engine}: {n:,} traces, {spans:,} spans")
    print(
        f"ingest        {result['ingest_spans_per_cpu_s']:>12,.0f} spans/CPU-s   ({result['ingest_spans_per_s']:,.0f} spans/s wall)"
    )
    print(f"list 2 filters  {_pcts(timings['list'])}")
    print(f"trace detail    {_pcts(timings['detail'])}")
    print(f"7-day stats     {_pcts(timings['stats'])}")
    print(
        f"on disk       {size / 1e6:>12,.1f} MB   ({result['bytes_per_million_traces'] / 1e6:,.1f} MB per million traces)"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic traces (default 1,000,000)")
    parser.add_argument("--engines", default="duckdb,chdb", help="comma-separated: duckdb, chdb")
    parser.add_argument("--batch", type=int, default=128, help="traces per span batch (the pipeline's unit)")
    parser.add_argument("--queries", type=int, default=50, help="runs of each query kind")
    parser.add_argument("--dir", default=None, help="where to put the stores (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-store-"))
    t0 = time.perf_counter()
    batches, sample = make_batches(args.n, args.batch)
    print(
        f"generated {args.n:,} traces in {time.perf_counter() - t0:.1f}s (not timed below); cpus={os.cpu_count()}"
    )
    try:
        for engine in args.engines.split(","):
            run_engine(engine.strip(), batches, sample, args.n, args.queries, work)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
