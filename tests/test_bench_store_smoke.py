"""``python -m bench.store`` runs for both engines and prints every figure (no timing asserted)."""

from __future__ import annotations

import pytest

from bench import store


def test_bench_store_small_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert store.main(["--n", "400", "--queries", "3", "--batch", "50"]) == 0
    out = capsys.readouterr().out
    for engine in ("duckdb", "chdb"):
        assert f"== {engine}: 400 traces, 1,600 spans" in out
    for figure in ("ingest", "list 2 filters", "trace detail", "7-day stats", "per million traces"):
        assert out.count(figure) == 2, figure
