"""Model prices and request cost: USD per million input / output tokens.

Three layers, later ones win per key: the table shipped in ``gateway/data/prices.yaml``, the
file named by ``metrics.prices_file``, and ``metrics.prices`` in the gateway config. Keys are
either a gateway model id (``<provider>/<model>``, e.g. ``azure-eu/gpt-4o``, for a provider
that bills differently) or a bare upstream model name (``gpt-4o``).

:meth:`PriceTable.cost_usd` is called once per request; lookups are memoised (bounded), so
the prefix search for dated snapshots (``gpt-4o-2024-08-06`` → ``gpt-4o``) runs once per model.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any, Final

import msgspec
import yaml

__all__ = ["Price", "PriceError", "PriceTable", "load_default_prices"]

_MEMO_MAX: Final = 4096  # distinct (model id, upstream model) pairs remembered


class PriceError(ValueError):
    """A price table that cannot be used; ``str()`` names the offending entry."""


class Price(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """USD per million tokens."""

    input: float = 0.0
    output: float = 0.0


def _parse(doc: Any, source: str) -> dict[str, Price]:
    """Validate ``{model: {input: x, output: y}}`` into :class:`Price` entries."""
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise PriceError(f"{source}: expected a mapping of model name to {{input, output}}")
    out: dict[str, Price] = {}
    for model, entry in doc.items():
        try:
            price = msgspec.convert(entry, Price)
        except msgspec.ValidationError as exc:
            raise PriceError(f"{source}: {model}: {exc}") from None
        if price.input < 0 or price.output < 0:
            raise PriceError(f"{source}: {model}: prices must be >= 0")
        out[str(model)] = price
    return out


def load_default_prices() -> dict[str, Price]:
    """The table that ships with the gateway (``gateway/data/prices.yaml``)."""
    text = resources.files("gateway").joinpath("data/prices.yaml").read_text(encoding="utf-8")
    return _parse(yaml.safe_load(text), "gateway/data/prices.yaml")


class PriceTable:
    """Prices by model, with the lookup rules of the module docstring."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices = dict(prices)
        self._memo: dict[tuple[str, str], Price | None] = {}

    @classmethod
    def from_config(
        cls,
        prices_file: str | None = None,
        overrides: Mapping[str, Mapping[str, float]] | None = None,
        *,
        defaults: bool = True,
    ) -> PriceTable:
        """Defaults, then ``prices_file``, then ``overrides`` (``metrics.prices``).

        Raises:
            PriceError: unreadable file, unknown keys (only ``input`` and ``output``), negative prices.
        """
        prices = load_default_prices() if defaults else {}
        if prices_file:
            try:
                with open(prices_file, encoding="utf-8") as f:
                    doc = yaml.safe_load(f)
            except (OSError, yaml.YAMLError) as exc:
                raise PriceError(f"metrics.prices_file: cannot read {prices_file}: {exc}") from None
            prices.update(_parse(doc, "metrics.prices_file"))
        prices.update(_parse(dict(overrides or {}), "metrics.prices"))
        return cls(prices)

    def __len__(self) -> int:
        return len(self._prices)

    def price(self, model_id: str, upstream_model: str) -> Price | None:
        """The price for a request to ``model_id`` served by ``upstream_model``, if known."""
        key = (model_id, upstream_model)
        try:
            return self._memo[key]
        except KeyError:
            pass
        found = self._lookup(model_id, upstream_model)
        if len(self._memo) >= _MEMO_MAX:
            self._memo.clear()  # model names are bounded in practice; this is a safety valve
        self._memo[key] = found
        return found

    def _lookup(self, model_id: str, upstream_model: str) -> Price | None:
        prices = self._prices
        for name in (model_id, upstream_model):
            if name in prices:
                return prices[name]
        # "provider/model" ids: the part after the provider may be the upstream name itself.
        candidates = [upstream_model]
        if "/" in model_id:
            candidates.append(model_id.split("/", 1)[1])
        for name in candidates:
            if name in prices:
                return prices[name]
            # Longest key that is a prefix at a "-" boundary: dated snapshots and "-latest".
            cut = name
            while "-" in cut:
                cut = cut.rsplit("-", 1)[0]
                if cut in prices:
                    return prices[cut]
        return None

    def cost_usd(
        self, model_id: str, upstream_model: str, input_tokens: int | None, output_tokens: int | None
    ) -> float | None:
        """USD for one request, or ``None`` when the model has no price or no usage was reported."""
        if input_tokens is None and output_tokens is None:
            return None
        p = self.price(model_id, upstream_model)
        if p is None:
            return None
        return ((input_tokens or 0) * p.input + (output_tokens or 0) * p.output) / 1_000_000
