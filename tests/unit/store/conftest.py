"""Both store engines, with the same data: DuckDB on a file, ClickHouse SQL run by chDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.store.backends import ChdbClient, ClickHouseBackend, DuckDBBackend, StoreBackend


@pytest.fixture(scope="module")
def chdb_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbClient]:
    # One chDB session per process at a time: tests share it and use one database each.
    client = ChdbClient(str(tmp_path_factory.mktemp("chdb")))
    yield client
    client.close()


_db_counter = iter(range(10_000))


@pytest.fixture(params=["duckdb", "chdb"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, chdb_client: ChdbClient
) -> Iterator[StoreBackend]:
    b: StoreBackend
    if request.param == "duckdb":
        b = DuckDBBackend(str(tmp_path / "traces.duckdb"))
        yield b
        b.close()
    else:
        db = f"t{next(_db_counter)}"
        b = ClickHouseBackend(chdb_client, db)
        yield b
        chdb_client.command(f"DROP DATABASE IF EXISTS {db}")
