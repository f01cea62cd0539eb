"""The trace store as the exporter sees it (a destination) and as the API sees it (async queries).

Writes and reads run on their own threads: one writer (inserts and retention, in order) and a
small pool of readers, so neither the event loop nor an OTLP destination ever waits on the store.
The pipeline gives the store its own bounded queue like any destination; a slow store drops and
counts its batches (``queue_full``) and nothing else notices.

Rows are inserted in blocks of ``flush_spans`` spans, or every ``flush_interval_ms`` when traffic
is lighter: DuckDB's insert measured ~45k spans per CPU-second in blocks of 1k spans and ~95k in
blocks of 16k (one insert per pipeline batch of a few hundred spans: ~20k). Spans count as exported once buffered; a block whose insert
fails is logged and counted in ``rows_lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from exporter.destinations import ExportResult, LogLimiter
from exporter.store.backends import StoreBackend, open_backend
from exporter.store.config import StoreConfig
from exporter.store.query import StatsQuery, TraceQuery, encode_cursor
from exporter.store.rows import build_rows
from gateway.telemetry.wire import SPAN_KIND_SERVER, SpanBatch

__all__ = ["STORE_DESTINATION", "TraceStore"]

log = logging.getLogger("exporter.store")

STORE_DESTINATION: Final = "store"
RETENTION_EVERY_S: Final = 600.0


def _iso(ts_us: int) -> str:
    return (
        (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(ts_us)))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def present(row: dict[str, Any]) -> dict[str, Any]:
    """An API row: ``time`` as ISO 8601 UTC, metadata as an object, no NaN."""
    import msgspec

    out = {"time": _iso(row["ts"]), **{k: _clean(v) for k, v in row.items()}}
    meta = out.get("metadata")
    if isinstance(meta, str):
        try:
            out["metadata"] = msgspec.json.decode(meta) if meta else {}
        except msgspec.DecodeError:
            out["metadata"] = {}
    if "teams" in out and out["teams"] is None:
        out["teams"] = []
    return out


class TraceStore:
    """One open store: a pipeline destination (``name``, ``export``, ``close``) plus queries."""

    name = STORE_DESTINATION

    def __init__(self, cfg: StoreConfig, backend: StoreBackend | None = None) -> None:
        self.cfg = cfg
        self.backend = backend or open_backend(cfg)
        self.sql = self.backend.sql
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="store-reader")
        self._logs = LogLimiter()
        self._next_retention = 0.0
        self._pending_requests: list[Any] = []
        self._pending_spans: list[Any] = []
        self._pending_since = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self.rows_written = 0  # spans accepted (buffered or inserted)
        self.rows_lost = 0  # spans whose insert failed

    # --- destination ----------------------------------------------------------------------------

    def _write(self, batch: SpanBatch) -> int:
        """Writer thread: buffer the batch's rows; insert the block when it is big enough."""
        requests, spans = build_rows(batch.spans, self.cfg.exclude_request_data)
        if not self._pending_spans:
            self._pending_since = time.monotonic()
        self._pending_requests.extend(requests)
        self._pending_spans.extend(spans)
        if len(self._pending_spans) >= self.cfg.flush_spans:
            self._flush_pending()
        return len(spans)

    def _flush_pending(self, only_if_due: bool = False) -> None:
        """Writer thread: insert what is buffered (and run retention when it is due)."""
        now = time.monotonic()
        if only_if_due and now - self._pending_since < self.cfg.flush_interval_ms / 1000:
            return
        requests, spans = self._pending_requests, self._pending_spans
        self._pending_requests, self._pending_spans = [], []
        if requests or spans:
            try:
                self.backend.insert(requests, spans)
            except Exception as exc:
                self.rows_lost += len(spans)
                self._logs.warning("store:insert", "store: insert of %d spans failed: %r", len(spans), exc)
        if now >= self._next_retention:
            self._next_retention = now + RETENTION_EVERY_S
            self._retention()

    async def _flush_periodically(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.cfg.flush_interval_ms / 1000
        while True:
            await asyncio.sleep(interval / 2)
            if self._pending_spans:
                await loop.run_in_executor(self._writer, self._flush_pending, True)

    async def flush(self) -> None:
        """Insert whatever is buffered now (tests, shutdown)."""
        await asyncio.get_running_loop().run_in_executor(self._writer, self._flush_pending)

    def _retention(self) -> None:
        try:
            dropped = self.backend.enforce_retention(
                self.cfg.retention_days, self.cfg.max_size_mb * 1024 * 1024
            )
        except Exception as exc:  # retention failing must not stop ingest
            self._logs.warning("store:retention", "store: retention failed: %r", exc)
            return
        if dropped:
            log.info(
                "store: dropped days %s (retention %d days)", ", ".join(dropped), self.cfg.retention_days
            )

    async def export(self, batch: SpanBatch) -> ExportResult:
        """Insert one batch (on the writer thread); never raises."""
        loop = asyncio.get_running_loop()
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush_periodically(), name="store-flush")
        try:
            written = await loop.run_in_executor(self._writer, self._write, batch)
        except Exception as exc:
            self._logs.warning("store:rows", "store: cannot build rows: %r", exc)
            return ExportResult(dropped=len(batch.spans), reason="store_error")
        self.rows_written += written
        return ExportResult(exported=written)

    async def close(self) -> None:
        """Insert what is buffered, then close the engine."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._flush_pending)
        await loop.run_in_executor(self._writer, self.backend.close)
        self._writer.shutdown(wait=False)
        self._readers.shutdown(wait=False, cancel_futures=True)

    # --- queries ----------------------------------------------------------------------------------

    async def _query(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.backend.query, sql, params)

    async def list_traces(self, q: TraceQuery, viewer: str | None) -> dict[str, Any]:
        """``{"data": [rows], "next_cursor": str | None}``, newest first."""
        sql, params = self.sql.list_traces(q, viewer)
        rows = await self._query(sql, params)
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        cursor = encode_cursor(rows[-1]["ts"], rows[-1]["trace_id"]) if more and rows else None
        return {"data": [present(r) for r in rows], "next_cursor": cursor}

    async def export_rows(self, q: TraceQuery, viewer: str | None) -> AsyncIterator[dict[str, Any]]:
        """Every row of a filtered list (bodies included) up to ``q.limit``, page by page."""
        left = q.limit
        page = TraceQuery(filters=q.filters, limit=min(1000, left), cursor=q.cursor)
        while left > 0:
            page.limit = min(1000, left)
            sql, params = self.sql.list_traces(page, viewer, with_bodies=True)
            rows = (await self._query(sql, params))[: page.limit]
            for r in rows:
                yield present(r)
            left -= len(rows)
            if len(rows) < page.limit:
                return
            page.cursor = (rows[-1]["ts"], rows[-1]["trace_id"])

    async def trace(self, trace_id: str, viewer: str | None) -> dict[str, Any] | None:
        """The request row and its spans as a tree (``children`` under each span), or ``None``."""
        sql, params = self.sql.trace_request(trace_id, viewer)
        found = await self._query(sql, params)
        if not found:
            return None
        request = present(found[0])
        sql, params = self.sql.trace_spans(trace_id, found[0]["ts"], found[0]["latency_ms"] or 0.0)
        spans = [present(s) for s in await self._query(sql, params)]
        tree = span_tree(spans)
        # The bodies are stored once, in the request row; the root span shows them as recorded.
        for root in tree:
            if root["kind"] == SPAN_KIND_SERVER:
                for key, column in (("tfy.input", "input"), ("tfy.output", "output")):
                    if request.get(column):
                        root["attributes"][key] = request[column]
        return {"request": request, "spans": tree}

    async def stats(self, q: StatsQuery, viewer: str | None) -> dict[str, Any]:
        """Series per time bucket (and group), plus exact totals per group."""
        sql, params = self.sql.stats(q, viewer, bucketed=True)
        series_sql = self._query(sql, params)
        sql, params = self.sql.stats(q, viewer, bucketed=False)
        totals, series = await asyncio.gather(self._query(sql, params), series_sql)

        def shape(r: dict[str, Any], bucketed: bool) -> dict[str, Any]:
            out = {k: _clean(v) for k, v in r.items() if k not in ("bucket", "grp", "latency_q", "ttft_q")}
            for name in ("latency", "ttft"):
                qs = r.get(f"{name}_q") or (None, None, None)
                for label, value in zip(("p50", "p95", "p99"), qs, strict=False):
                    out[f"{name}_{label}"] = _clean(value)
            if bucketed:
                out["time"] = _iso(r["bucket"])
            if q.group_by:
                out[q.group_by] = r["grp"]
            return out

        return {
            "bucket_s": q.bucket_s,
            "group_by": q.group_by,
            "since": _iso(q.filters.since_us or 0),
            "until": _iso(q.filters.until_us) if q.filters.until_us else None,
            "series": [shape(r, True) for r in series],
            "totals": [shape(r, False) for r in totals],
        }


def span_tree(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spans nested under their parents (``children``), roots first, each level by start time."""
    import msgspec

    by_id: dict[str, dict[str, Any]] = {}
    for s in spans:
        attrs = s.get("attributes")
        with contextlib.suppress(msgspec.DecodeError, TypeError):
            s["attributes"] = msgspec.json.decode(attrs) if isinstance(attrs, str) else attrs or {}
        s["children"] = []
        by_id[s["span_id"]] = s
    roots: list[dict[str, Any]] = []
    for s in spans:
        parent = by_id.get(s["parent_span_id"])
        (parent["children"] if parent is not None and parent is not s else roots).append(s)
    return roots
