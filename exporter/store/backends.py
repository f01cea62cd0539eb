"""The two engines behind the store: DuckDB (a local file) and ClickHouse (clickhouse-connect, or
chDB in-process for ``chdb://`` URLs and the test suite). Synchronous: the store runs them in
its own threads, never on the event loop.

```
StoreBackend (insert, query, enforce_retention, close)
├── DuckDBBackend        one file, one writer process; reads through cursors
└── ClickHouseBackend    the same SQL through either client
    ├── ConnectClient    clickhouse-connect over HTTP (the fleet)
    └── ChdbClient       chDB, the ClickHouse engine in-process
```
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from typing import Any, Protocol
from urllib.parse import urlsplit

import msgspec

from exporter.store.config import StoreConfig
from exporter.store.rows import RequestRow, SpanRow, encode_rows
from exporter.store.sql import DUCKDB, ClickHouseDialect, Sql

__all__ = ["ClickHouseBackend", "DuckDBBackend", "QueryTimeout", "StoreBackend", "open_backend"]

log = logging.getLogger("exporter.store")


class QueryTimeout(Exception):
    """A query ran past ``store.query_timeout_s`` and was cancelled."""


class StoreBackend(Protocol):
    sql: Sql

    def insert(self, requests: list[RequestRow], spans: list[SpanRow]) -> None: ...

    def query(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]: ...

    def enforce_retention(self, retention_days: int, max_bytes: int) -> list[str]: ...

    def size_bytes(self) -> int: ...

    def close(self) -> None: ...


def _cutoff(retention_days: int) -> str:
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=retention_days)).isoformat()


class DuckDBBackend:
    """One DuckDB file. Inserts load JSON lines through ``read_json`` (one statement per batch)."""

    def __init__(
        self, path: str, timeout_s: float = 10.0, memory_limit_mb: int = 256, threads: int = 2
    ) -> None:
        import duckdb

        self.path = path
        self.sql = Sql(DUCKDB, timeout_s)
        self.timeout_s = timeout_s
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        # DuckDB's defaults (80 % of the machine's memory, one thread per core) suit a database
        # server, not a store living beside a gateway worker in a 1 GiB pod: cap both.
        self._con = duckdb.connect(path, config={"memory_limit": f"{memory_limit_mb}MB", "threads": threads})
        self._write_lock = threading.Lock()
        # Ours alone: DuckDB's file lock, taken by connect() above, admits one owning process.
        self._scratch = os.path.abspath(path) + ".ingest"
        os.makedirs(self._scratch, exist_ok=True)
        for stmt in self.sql.ddl():
            self._con.execute(stmt)
        self._insert = {
            table: f"INSERT INTO {table} BY NAME SELECT * FROM read_json($path, "
            f"format = 'newline_delimited', columns = {self.sql.duckdb_json_columns(table)})"
            for table in ("requests", "spans")
        }

    def insert(self, requests: list[RequestRow], spans: list[SpanRow]) -> None:
        with self._write_lock:
            cur = self._con.cursor()
            try:
                cur.execute("BEGIN")
                for table, rows in (("requests", requests), ("spans", spans)):
                    if not rows:
                        continue
                    file = os.path.join(self._scratch, f"{table}.jsonl")
                    with open(file, "wb") as f:
                        f.write(encode_rows(rows))
                    cur.execute(self._insert[table], {"path": file})
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
            finally:
                cur.close()

    def query(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        cur = self._con.cursor()
        timer = threading.Timer(self.timeout_s, cur.interrupt)
        timer.start()
        try:
            cur.execute(sql, params)
            names = [c[0] for c in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        except Exception as exc:
            if not timer.is_alive() and "INTERRUPT" in repr(exc).upper():
                raise QueryTimeout(f"query cancelled after {self.timeout_s:g}s") from None
            raise
        finally:
            timer.cancel()
            cur.close()

    def size_bytes(self) -> int:
        row = self._con.cursor().execute("PRAGMA database_size").fetchone()
        # (database_name, database_size, block_size, total_blocks, used_blocks, ...)
        return int(row[2]) * int(row[4]) if row else 0

    def enforce_retention(self, retention_days: int, max_bytes: int) -> list[str]:
        """Delete whole days older than the retention, then the oldest days while over the cap.

        DuckDB has no partitions: rows are deleted by day (a zone-map scan, since days arrive
        in order) and a checkpoint returns their blocks to the file's free list."""
        dropped: list[str] = []
        with self._write_lock:
            cur = self._con.cursor()
            try:
                cutoff = _cutoff(retention_days)
                old = cur.execute(
                    "SELECT DISTINCT CAST(day AS VARCHAR) FROM requests WHERE day < CAST($d AS DATE)",
                    {"d": cutoff},
                ).fetchall()
                if old:
                    for table in ("requests", "spans"):
                        cur.execute(f"DELETE FROM {table} WHERE day < CAST($d AS DATE)", {"d": cutoff})
                    dropped.extend(r[0] for r in old)
                    cur.execute("CHECKPOINT")
                if max_bytes:
                    cur.execute("CHECKPOINT")  # measure blocks in use, not what sits in the WAL
                while max_bytes and self.size_bytes() > max_bytes:
                    days = cur.execute(
                        "SELECT CAST(day AS VARCHAR) FROM requests GROUP BY day ORDER BY day LIMIT 2"
                    ).fetchall()
                    if len(days) < 2:
                        break  # never drop today's data to satisfy the cap
                    for table in ("requests", "spans"):
                        cur.execute(f"DELETE FROM {table} WHERE day <= CAST($d AS DATE)", {"d": days[0][0]})
                    cur.execute("CHECKPOINT")
                    dropped.append(days[0][0])
            finally:
                cur.close()
        return dropped

    def close(self) -> None:
        with self._write_lock:
            self._con.close()
        for name in os.listdir(self._scratch):
            os.unlink(os.path.join(self._scratch, name))
        os.rmdir(self._scratch)


class ChClient(Protocol):
    def command(self, sql: str, params: dict[str, Any] | None = None) -> None: ...

    def query(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]: ...

    def insert(self, table: str, columns: tuple[str, ...], data: bytes) -> None: ...

    def close(self) -> None: ...


class ConnectClient:
    """clickhouse-connect over HTTP; parameters are bound server-side (``{name:Type}``)."""

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        self._client = clickhouse_connect.get_client(dsn=url, autogenerate_session_id=False)

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._client.command(sql, parameters=params or None)

    def query(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        result = self._client.query(sql, parameters=params)
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def insert(self, table: str, columns: tuple[str, ...], data: bytes) -> None:
        self._client.raw_insert(table, column_names=list(columns), insert_block=data, fmt="JSONEachRow")

    def close(self) -> None:
        self._client.close()


class ChdbClient:
    """chDB (the ClickHouse engine in-process) on a directory; the same SQL as the server."""

    def __init__(self, path: str) -> None:
        from chdb import session

        os.makedirs(path, exist_ok=True)
        self._session = session.Session(path)
        self._lock = threading.Lock()  # one chDB session is not safe across threads
        self._decoder = msgspec.json.Decoder()

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._session.query(sql, "CSV", params=params or None)

    def query(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self._lock:
            out = self._session.query(sql, "JSONEachRow", params=params or None).bytes()
        return [self._decoder.decode(line) for line in out.splitlines() if line]

    def insert(self, table: str, columns: tuple[str, ...], data: bytes) -> None:
        # The statement clickhouse-connect's raw_insert sends, with the rows inline.
        sql = f"INSERT INTO {table} ({', '.join(columns)}) FORMAT JSONEachRow\n"
        with self._lock:
            self._session.query(sql + data.decode(), "CSV")

    def close(self) -> None:
        with self._lock:
            self._session.close()


class ClickHouseBackend:
    """The fleet store: every exporter replica writes the same ClickHouse database."""

    def __init__(self, client: ChClient, database: str, timeout_s: float = 10.0) -> None:
        self.client = client
        self.database = database
        self.sql = Sql(ClickHouseDialect(database), timeout_s)
        for stmt in self.sql.ddl():
            client.command(stmt)

    def insert(self, requests: list[RequestRow], spans: list[SpanRow]) -> None:
        if requests:
            self.client.insert(self.sql.requests, tuple(RequestRow.__struct_fields__), encode_rows(requests))
        if spans:
            self.client.insert(self.sql.spans, tuple(SpanRow.__struct_fields__), encode_rows(spans))

    def query(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            return self.client.query(sql, params)
        except Exception as exc:
            if "TIMEOUT_EXCEEDED" in str(exc) or "Timeout exceeded" in str(exc):
                raise QueryTimeout(str(exc)[:200]) from None
            raise

    def _partitions(self) -> list[dict[str, Any]]:
        return self.client.query(
            "SELECT partition, sum(bytes_on_disk) AS bytes FROM system.parts "
            "WHERE database = {db:String} AND table IN ('requests', 'spans') AND active "
            "GROUP BY partition ORDER BY partition",
            {"db": self.database},
        )

    def size_bytes(self) -> int:
        return sum(int(p["bytes"]) for p in self._partitions())

    def _drop(self, partition: str) -> None:
        dt.date.fromisoformat(partition)  # a Date partition id; anything else is not ours to drop
        for table in (self.sql.requests, self.sql.spans):
            self.client.command(f"ALTER TABLE {table} DROP PARTITION '{partition}'")

    def enforce_retention(self, retention_days: int, max_bytes: int) -> list[str]:
        """Drop day partitions older than the retention, then the oldest while over the cap."""
        cutoff = _cutoff(retention_days)
        parts = self._partitions()
        dropped: list[str] = []
        for p in parts:
            if p["partition"] < cutoff:
                self._drop(p["partition"])
                dropped.append(p["partition"])
        kept = [p for p in parts if p["partition"] >= cutoff]
        total = sum(int(p["bytes"]) for p in kept)
        while max_bytes and total > max_bytes and len(kept) > 1:
            oldest = kept.pop(0)
            self._drop(oldest["partition"])
            dropped.append(oldest["partition"])
            total -= int(oldest["bytes"])
        return dropped

    def close(self) -> None:
        self.client.close()


def open_backend(cfg: StoreConfig) -> StoreBackend:
    """The backend ``cfg`` names (``chdb:///dir`` runs the ClickHouse engine in-process)."""
    if cfg.engine == "duckdb":
        return DuckDBBackend(cfg.path, cfg.query_timeout_s, cfg.memory_limit_mb, cfg.threads)
    if cfg.url.startswith("chdb://"):
        client: ChClient = ChdbClient(urlsplit(cfg.url).path or "data/chdb")
    else:
        client = ConnectClient(cfg.url)
    return ClickHouseBackend(client, cfg.database, cfg.query_timeout_s)
