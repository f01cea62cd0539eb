"""SQL for both engines, built from typed queries (pure): DuckDB and ClickHouse differ only in a
few expressions, which :class:`Dialect` holds. Values always travel as bound parameters
(DuckDB ``$name``, ClickHouse ``{name:Type}``), never spliced into the text.

Schema, designed from the queries (SigNoz/Langfuse style): ``requests`` holds one wide row per
trace for the log, filters and aggregates; ``spans`` holds the spans for the trace page. Both are
keyed by ``day`` (ClickHouse partitions; DuckDB deletes whole days) so retention drops days.
"""

from __future__ import annotations

import re
from typing import Any, Final

from exporter.store.query import Filters, StatsQuery, TraceQuery

__all__ = ["CLICKHOUSE", "DUCKDB", "Dialect", "Sql"]

# name, DuckDB type, ClickHouse type
REQUEST_SCHEMA: Final = (
    ("day", "DATE", "Date"),
    ("ts", "BIGINT", "Int64"),
    ("trace_id", "VARCHAR", "String"),
    ("span_type", "VARCHAR", "LowCardinality(String)"),
    ("model", "VARCHAR", "LowCardinality(String)"),
    ("target", "VARCHAR", "LowCardinality(String)"),
    ("provider", "VARCHAR", "LowCardinality(String)"),
    ("subject", "VARCHAR", "LowCardinality(String)"),
    ("teams", "VARCHAR[]", "Array(LowCardinality(String))"),
    ("metadata", "VARCHAR", "String"),
    ("status", "INTEGER", "UInt16"),
    ("error_code", "VARCHAR", "LowCardinality(String)"),
    ("error_message", "VARCHAR", "String"),
    ("latency_ms", "DOUBLE", "Float64"),
    ("ttft_ms", "DOUBLE", "Nullable(Float64)"),
    ("input_tokens", "BIGINT", "Int64"),
    ("output_tokens", "BIGINT", "Int64"),
    ("cached_tokens", "BIGINT", "Int64"),
    ("reasoning_tokens", "BIGINT", "Int64"),
    ("cost_usd", "DOUBLE", "Float64"),
    ("tool_calls", "INTEGER", "UInt32"),
    ("span_count", "INTEGER", "UInt32"),
    ("preview", "VARCHAR", "String"),
    ("input", "VARCHAR USING COMPRESSION zstd", "String CODEC(ZSTD(3))"),
    ("output", "VARCHAR USING COMPRESSION zstd", "String CODEC(ZSTD(3))"),
)
SPAN_SCHEMA: Final = (
    ("day", "DATE", "Date"),
    ("ts", "BIGINT", "Int64"),
    ("trace_id", "VARCHAR", "String"),
    ("span_id", "VARCHAR", "String"),
    ("parent_span_id", "VARCHAR", "String"),
    ("name", "VARCHAR", "LowCardinality(String)"),
    ("kind", "TINYINT", "UInt8"),
    ("duration_us", "BIGINT", "Int64"),
    ("status_code", "TINYINT", "UInt8"),
    ("status_message", "VARCHAR", "String"),
    ("attributes", "VARCHAR USING COMPRESSION zstd", "String CODEC(ZSTD(3))"),
)

# What the request log shows (no bodies); the trace page adds input and output.
LIST_COLUMNS: Final = (
    "trace_id", "ts", "span_type", "model", "target", "provider", "subject", "teams", "metadata",
    "status", "error_code", "error_message", "latency_ms", "ttft_ms", "input_tokens",
    "output_tokens", "cached_tokens", "reasoning_tokens", "cost_usd", "tool_calls", "span_count",
    "preview",
)  # fmt: skip
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_ERROR = "(status >= 400 OR error_code != '')"


class Dialect:
    """The expressions that differ between engines, and how parameters are written."""

    name = "duckdb"
    table_prefix = ""

    def param(self, params: dict[str, Any], value: Any, ch_type: str) -> str:
        name = f"p{len(params)}"
        params[name] = value
        return self._placeholder(name, ch_type)

    def _placeholder(self, name: str, ch_type: str) -> str:
        if ch_type == "Date":
            return f"CAST(${name} AS DATE)"
        return f"${name}"

    def has_team(self, p: str) -> str:
        return f"list_contains(teams, {p})"

    def contains(self, column: str, p: str) -> str:
        return f"contains(lower({column}), lower({p}))"

    def metadata_value(self, p_key: str) -> str:
        return f"json_extract_string(metadata, {p_key})"

    def metadata_key(self, key: str) -> str:
        return '$."' + key + '"'

    def bucket(self, p_step: str) -> str:
        return f"(ts // {p_step}) * {p_step}"

    def quantiles(self, column: str) -> str:
        # One aggregate for the three (one sort per group): measured ~2x faster than three calls.
        return f"quantile_cont({column}, [0.5, 0.95, 0.99])"

    def teams_unnested(self) -> str:
        return "unnest(CASE WHEN len(teams) = 0 THEN [''] ELSE teams END)"

    def status_text(self) -> str:
        return "CAST(status AS VARCHAR)"

    def settings(self, timeout_s: float) -> str:
        return ""  # DuckDB queries are interrupted from another thread instead


class ClickHouseDialect(Dialect):
    name = "clickhouse"

    def __init__(self, database: str = "") -> None:
        if database and not _IDENT.match(database):
            raise ValueError(f"invalid ClickHouse database name {database!r}")
        self.table_prefix = f"{database}." if database else ""

    def _placeholder(self, name: str, ch_type: str) -> str:
        return "{" + name + ":" + ch_type + "}"

    def has_team(self, p: str) -> str:
        return f"has(teams, {p})"

    def contains(self, column: str, p: str) -> str:
        return f"positionCaseInsensitiveUTF8({column}, {p}) > 0"

    def metadata_value(self, p_key: str) -> str:
        return f"JSONExtractString(metadata, {p_key})"

    def metadata_key(self, key: str) -> str:
        return key

    def bucket(self, p_step: str) -> str:
        return f"intDiv(ts, {p_step}) * {p_step}"

    def quantiles(self, column: str) -> str:
        return f"quantiles(0.5, 0.95, 0.99)({column})"

    def teams_unnested(self) -> str:
        return "arrayJoin(if(empty(teams), [''], teams))"

    def status_text(self) -> str:
        return "toString(status)"

    def settings(self, timeout_s: float) -> str:
        return f" SETTINGS max_execution_time = {max(1, int(timeout_s))}, timeout_overflow_mode = 'throw'"


DUCKDB: Final = Dialect()
CLICKHOUSE: Final = ClickHouseDialect()


def _day(ts_us: int) -> str:
    import datetime as dt

    return (dt.date(1970, 1, 1) + dt.timedelta(microseconds=ts_us)).isoformat()


class Sql:
    """Statements for one dialect (and, for ClickHouse, one database)."""

    def __init__(self, dialect: Dialect, timeout_s: float = 10.0) -> None:
        self.d = dialect
        self.requests = f"{dialect.table_prefix}requests"
        self.spans = f"{dialect.table_prefix}spans"
        self.timeout_s = timeout_s

    # --- DDL ----------------------------------------------------------------------------------

    def ddl(self) -> list[str]:
        """CREATE statements (idempotent)."""
        if self.d.name == "duckdb":
            return [
                f"CREATE TABLE IF NOT EXISTS requests ({', '.join(f'{n} {t}' for n, t, _ in REQUEST_SCHEMA)})",
                f"CREATE TABLE IF NOT EXISTS spans ({', '.join(f'{n} {t}' for n, t, _ in SPAN_SCHEMA)})",
                # One index entry per trace (not per span): the trace page's lookup by id.
                "CREATE INDEX IF NOT EXISTS requests_trace_id ON requests (trace_id)",
            ]
        db = self.d.table_prefix.rstrip(".")
        out = [f"CREATE DATABASE IF NOT EXISTS {db}"] if db else []
        req_cols = ", ".join(f"{n} {t}" for n, _, t in REQUEST_SCHEMA)
        span_cols = ", ".join(f"{n} {t}" for n, _, t in SPAN_SCHEMA)
        out.append(
            f"CREATE TABLE IF NOT EXISTS {self.requests} ({req_cols}, "
            "INDEX idx_trace trace_id TYPE bloom_filter GRANULARITY 4) "
            "ENGINE = MergeTree PARTITION BY day ORDER BY (ts, trace_id)"
        )
        out.append(
            f"CREATE TABLE IF NOT EXISTS {self.spans} ({span_cols}) "
            "ENGINE = MergeTree PARTITION BY day ORDER BY (trace_id, ts)"
        )
        return out

    def duckdb_json_columns(self, table: str) -> str:
        """The ``columns`` struct of DuckDB's ``read_json`` for ``table``."""
        schema = REQUEST_SCHEMA if table == "requests" else SPAN_SCHEMA
        # attributes arrive as a JSON object and are kept as its text (the VARCHAR column)
        types = {n: ("JSON" if n == "attributes" else t.split(" USING ")[0]) for n, t, _ in schema}
        return "{" + ", ".join(f"'{n}': '{t}'" for n, t in types.items()) + "}"

    # --- filters ------------------------------------------------------------------------------

    def where(self, f: Filters, params: dict[str, Any], viewer: str | None) -> list[str]:
        """Conditions for ``f`` (and, for a non-admin ``viewer``, their own subject only)."""
        d, p = self.d, self.d.param
        conds: list[str] = []
        if viewer is not None:
            conds.append(f"subject = {p(params, viewer, 'String')}")
        if f.since_us is not None:
            conds.append(f"day >= {p(params, _day(f.since_us), 'Date')}")
            conds.append(f"ts >= {p(params, f.since_us, 'Int64')}")
        if f.until_us is not None:
            conds.append(f"day <= {p(params, _day(f.until_us), 'Date')}")
            conds.append(f"ts < {p(params, f.until_us, 'Int64')}")
        for column in ("model", "target", "subject", "error_code", "span_type"):
            value = getattr(f, column)
            if value is not None:
                conds.append(f"{column} = {p(params, value, 'String')}")
        if f.team is not None:
            conds.append(d.has_team(p(params, f.team, "String")))
        if f.status is not None:
            s = f.status
            if s == "error":
                conds.append(_ERROR)
            elif s == "ok":
                conds.append("(status < 400 AND error_code = '')")
            elif s.endswith("xx"):
                lo = int(s[0]) * 100
                conds.append(f"(status >= {lo} AND status < {lo + 100})")
            else:
                conds.append(f"status = {p(params, int(s), 'UInt16')}")
        if f.min_latency_ms is not None:
            conds.append(f"latency_ms >= {p(params, f.min_latency_ms, 'Float64')}")
        if f.q is not None:
            q = p(params, f.q, "String")
            conds.append(f"({d.contains('input', q)} OR {d.contains('output', q)})")
        for key, value in f.metadata.items():
            k = p(params, d.metadata_key(key), "String")
            conds.append(f"{d.metadata_value(k)} = {p(params, value, 'String')}")
        return conds

    @staticmethod
    def _where_sql(conds: list[str]) -> str:
        return f" WHERE {' AND '.join(conds)}" if conds else ""

    # --- queries ------------------------------------------------------------------------------

    def list_traces(
        self, q: TraceQuery, viewer: str | None, *, with_bodies: bool = False
    ) -> tuple[str, dict[str, Any]]:
        """Newest first, one more row than the limit (to know whether there is a next page)."""
        params: dict[str, Any] = {}
        conds = self.where(q.filters, params, viewer)
        if q.cursor is not None:
            ts = self.d.param(params, q.cursor[0], "Int64")
            tid = self.d.param(params, q.cursor[1], "String")
            conds.append(f"(ts < {ts} OR (ts = {ts} AND trace_id < {tid}))")
        cols = ", ".join(LIST_COLUMNS + (("input", "output") if with_bodies else ()))
        sql = (
            f"SELECT {cols} FROM {self.requests}{self._where_sql(conds)} "
            f"ORDER BY ts DESC, trace_id DESC LIMIT {int(q.limit) + 1}"
        )
        return sql + self.d.settings(self.timeout_s), params

    def trace_request(self, trace_id: str, viewer: str | None) -> tuple[str, dict[str, Any]]:
        """The request row of one trace (bodies included)."""
        params: dict[str, Any] = {}
        conds = [f"trace_id = {self.d.param(params, trace_id, 'String')}"]
        if viewer is not None:
            conds.append(f"subject = {self.d.param(params, viewer, 'String')}")
        cols = ", ".join((*LIST_COLUMNS, "input", "output"))
        sql = f"SELECT {cols} FROM {self.requests}{self._where_sql(conds)} LIMIT 1"
        return sql + self.d.settings(self.timeout_s), params

    def trace_spans(self, trace_id: str, ts_us: int, latency_ms: float) -> tuple[str, dict[str, Any]]:
        """Every span of one trace. Its spans start within the root's lifetime (``ts_us`` plus
        ``latency_ms``), which narrows the days and, with rows arriving in time order, the row
        groups scanned."""
        params: dict[str, Any] = {}
        p = self.d.param
        end = ts_us + int(latency_ms * 1000) + 1_000_000
        cols = ", ".join(n for n, _, _ in SPAN_SCHEMA if n != "day")
        sql = (
            f"SELECT {cols} FROM {self.spans} WHERE trace_id = {p(params, trace_id, 'String')} "
            f"AND day >= {p(params, _day(ts_us), 'Date')} AND day <= {p(params, _day(end), 'Date')} "
            f"AND ts >= {p(params, ts_us, 'Int64')} AND ts <= {p(params, end, 'Int64')} "
            "ORDER BY ts LIMIT 10000"
        )
        return sql + self.d.settings(self.timeout_s), params

    def stats(self, q: StatsQuery, viewer: str | None, *, bucketed: bool) -> tuple[str, dict[str, Any]]:
        """Aggregates per (bucket, group), or per group only (``bucketed=False``: exact totals)."""
        d = self.d
        params: dict[str, Any] = {}
        conds = self.where(q.filters, params, viewer)
        group = {
            None: "''",
            "team": d.teams_unnested(),
            "status": d.status_text(),
        }.get(q.group_by, q.group_by or "''")
        bucket = d.bucket(d.param(params, q.bucket_s * 1_000_000, "Int64")) if bucketed else "0"
        inner = (
            f"SELECT {bucket} AS bucket, {group} AS grp, status, error_code, latency_ms, ttft_ms, "
            f"input_tokens, output_tokens, cached_tokens, reasoning_tokens, cost_usd "
            f"FROM {self.requests}{self._where_sql(conds)}"
        )
        aggs = (
            f"count(*) AS requests, sum(CASE WHEN {_ERROR} THEN 1 ELSE 0 END) AS errors, "
            "sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, "
            "sum(cached_tokens) AS cached_tokens, sum(reasoning_tokens) AS reasoning_tokens, "
            "sum(cost_usd) AS cost_usd, "
            f"{d.quantiles('latency_ms')} AS latency_q, {d.quantiles('ttft_ms')} AS ttft_q"
        )
        sql = f"SELECT bucket, grp, {aggs} FROM ({inner}) AS r GROUP BY bucket, grp ORDER BY bucket, grp LIMIT 50000"
        return sql + d.settings(self.timeout_s), params
