"""The ``store:`` and ``ui:`` sections: the built-in trace store and who sees what in ``/ui``.

```yaml
store:
  enabled: true                  # default: on, even with no store section at all
  engine: duckdb                 # duckdb (embedded file) | clickhouse (fleet)
  path: data/traces.duckdb       # duckdb: relative to the working directory
  url: http://clickhouse:8123    # clickhouse: clickhouse-connect URL (user:password@ allowed)
  database: gateway              # clickhouse
  retention_days: 30             # whole days older than this are dropped
  max_size_mb: 10240             # beyond it the oldest days are dropped (0: no cap)
  exclude_request_data: false    # store no bodies, messages or error text
  queue_size: 64                 # span batches waiting for the store; beyond it they are dropped
  flush_spans: 16384            # rows are inserted in blocks of this many spans...
  flush_interval_ms: 500         # ...or at least this often (what /ui lags behind, at most)
  listen: 127.0.0.1:8001         # gateway-exporter only: where it serves /api/v1 and /ui
ui:
  admins: [user:alice, team:platform]   # see every trace; everyone else sees their own
```
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import msgspec

__all__ = ["StoreConfig", "UiConfig", "check_store"]


class StoreConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The built-in trace store (one more exporter destination)."""

    enabled: bool = True
    engine: Literal["duckdb", "clickhouse"] = "duckdb"
    path: str = "data/traces.duckdb"
    url: str = "http://127.0.0.1:8123"
    database: str = "gateway"
    retention_days: int = 30
    max_size_mb: int = 0
    exclude_request_data: bool = False
    queue_size: int = 64
    # Rows are written in blocks: one insert per this many spans, or per interval when quieter.
    flush_spans: int = 16384
    flush_interval_ms: int = 500
    query_timeout_s: float = 10.0  # every API query is cancelled after this long
    listen: str = "127.0.0.1:8001"  # gateway-exporter (NATS mode) serves /api/v1 and /ui here
    memory_limit_mb: int = 256  # DuckDB's memory cap (buffer pool, query working memory)
    threads: int = 2  # DuckDB's worker threads (inserts and queries)


class UiConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Who sees what in ``/ui`` and ``/api/v1``."""

    admins: list[str] = []  # subjects (user:alice) or teams (team:platform) that see every trace
    session_ttl_s: int = 8 * 3600


def check_store(cfg: Any) -> Iterator[str]:
    """Semantic checks of ``store:`` / ``ui:`` (``cfg`` has ``store`` and ``ui`` attributes)."""
    s: StoreConfig = cfg.store
    if s.memory_limit_mb < 64:
        yield "store.memory_limit_mb: must be >= 64"
    if s.threads < 1:
        yield "store.threads: must be >= 1"
    if s.retention_days < 1:
        yield "store.retention_days: must be >= 1"
    if s.max_size_mb < 0:
        yield "store.max_size_mb: must be >= 0 (0: no cap)"
    if s.queue_size < 1:
        yield "store.queue_size: must be >= 1"
    if s.flush_spans < 1:
        yield "store.flush_spans: must be >= 1"
    if s.flush_interval_ms < 10:
        yield "store.flush_interval_ms: must be >= 10"
    if s.query_timeout_s <= 0:
        yield "store.query_timeout_s: must be > 0"
    if s.engine == "duckdb" and not s.path:
        yield "store.path: must be non-empty"
    if s.engine == "clickhouse" and not s.url.startswith(("http://", "https://", "chdb://")):
        yield "store.url: expected an http://, https:// or chdb:// URL"
    host, _, port = s.listen.rpartition(":")
    if not host or not port.isdigit():
        yield "store.listen: expected host:port"
    for i, a in enumerate(cfg.ui.admins):
        if not a or ":" not in a:
            yield f"ui.admins[{i}]: expected user:<name>, virtualaccount:<name> or team:<name>"
