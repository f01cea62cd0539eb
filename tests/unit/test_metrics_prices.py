"""Price table: shipped defaults, file and config overrides, lookup rules, cost arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.metrics import Price, PriceError, PriceTable, load_default_prices


def test_defaults_cover_common_models() -> None:
    prices = load_default_prices()
    for model in (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "claude-sonnet-4-5",
        "claude-opus-4-1",
        "claude-haiku-4-5",
        "claude-3-5-sonnet",
        "claude-3-5-haiku",
    ):
        assert model in prices, model
        assert prices[model].input > 0
    assert prices["gpt-4o"] == Price(input=2.5, output=10.0)


def test_lookup_order_and_snapshots() -> None:
    t = PriceTable.from_config(overrides={"azure-eu/gpt-4o": {"input": 3.0, "output": 12.0}})
    assert t.price("azure-eu/gpt-4o", "gpt-4o") == Price(3.0, 12.0)  # model id wins
    assert t.price("openai/gpt-4o", "gpt-4o") == Price(2.5, 10.0)  # then the upstream name
    assert t.price("openai/x", "gpt-4o-mini-2024-07-18") == Price(0.15, 0.6)  # dated snapshot
    assert t.price("anthropic/sonnet", "claude-sonnet-4-5-20250929") == Price(3.0, 15.0)
    assert t.price("anthropic/opus", "claude-opus-4-1-20250805") == Price(15.0, 75.0)
    assert t.price("anthropic/c", "claude-3-5-haiku-latest") == Price(0.8, 4.0)
    assert t.price("openai/gpt-4.1-mini", "unknown") == Price(0.4, 1.6)  # the id's model part
    assert t.price("self-hosted/llama", "llama-3-70b") is None


def test_cost_usd() -> None:
    t = PriceTable.from_config()
    assert t.cost_usd("openai/gpt-4o", "gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.5)
    assert t.cost_usd("openai/gpt-4o", "gpt-4o", 1000, None) == pytest.approx(0.0025)
    assert t.cost_usd("openai/gpt-4o", "gpt-4o", None, None) is None  # no usage reported
    assert t.cost_usd("x/y", "y", 10, 10) is None  # no price
    assert t.cost_usd("x/y", "y", 10, 10) is None  # memoised miss


def test_prices_file_then_config_overrides(tmp_path: Path) -> None:
    f = tmp_path / "prices.yaml"
    f.write_text("gpt-4o: {input: 1.0, output: 2.0}\nmy-model: {input: 0.5}\n")
    t = PriceTable.from_config(str(f), {"my-model": {"input": 0.25, "output": 0.75}})
    assert t.price("p/gpt-4o", "gpt-4o") == Price(1.0, 2.0)
    assert t.price("p/my-model", "my-model") == Price(0.25, 0.75)
    assert t.price("p/claude", "claude-haiku-4-5") == Price(1.0, 5.0)  # defaults still there
    assert len(PriceTable.from_config(str(f), defaults=False)) == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"m": {"inptu": 1.0}}, "metrics.prices: m"),
        ({"m": {"input": -1.0}}, ">= 0"),
        ({"m": "cheap"}, "metrics.prices: m"),
    ],
)
def test_bad_prices_are_reported(overrides: dict, message: str) -> None:
    with pytest.raises(PriceError, match=message):
        PriceTable.from_config(overrides=overrides)


def test_unreadable_prices_file(tmp_path: Path) -> None:
    with pytest.raises(PriceError, match="prices_file"):
        PriceTable.from_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(PriceError, match="expected a mapping"):
        PriceTable.from_config(str(bad))
