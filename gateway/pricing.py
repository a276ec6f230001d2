"""The cost of a call: genai-prices' bundled data, or the per-model override from the config.

Prices are resolved once at start-up so that a cloud model without a known price stops the
process (a silent zero would let it spend without limit). genai-prices is only ever asked for
its bundled snapshot: `UpdatePrices` (the one part that fetches) is never started.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from genai_prices import Usage as PriceUsage
from genai_prices.data_snapshot import get_snapshot

from gateway.chat import Usage
from gateway.config import Config, ConfigError, ModelConfig, PriceOverride
from gateway.scrub import scrub_url

PriceSource = Literal["genai-prices", "override", "local"]

_PER_MTOK = 1_000_000


@dataclass(frozen=True, slots=True)
class Rates:
    """Headline USD prices per million tokens (the base tier when prices are tiered)."""

    input_per_mtok: float
    output_per_mtok: float
    source: PriceSource


class _Priced(abc.ABC):
    """Prices one model; subclasses hold where the numbers come from."""

    rates: Rates

    @abc.abstractmethod
    def cost(self, usage: Usage) -> float: ...


class _Flat(_Priced):
    """Flat per-token prices: an override or local model from the config, or a catalogued
    model whose prices have no tiers (then the same arithmetic as genai-prices, in floats:
    its Decimal calculation costs ~150 us, too much for every request)."""

    def __init__(self, price: PriceOverride | None, source: PriceSource) -> None:
        self._input = price.input_per_mtok if price else 0.0
        self._output = price.output_per_mtok if price else 0.0
        # Cached input is billed like fresh input unless the operator says otherwise.
        cached = price.cached_input_per_mtok if price else None
        self._cached = self._input if cached is None else cached
        self.rates = Rates(self._input, self._output, source)

    def cost(self, usage: Usage) -> float:
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        fresh = usage.input_tokens - cached
        total = fresh * self._input + cached * self._cached + usage.output_tokens * self._output
        return total / _PER_MTOK


class _Catalogued(_Priced):
    """A model genai-prices knows with tiered prices: its own calculation handles them."""

    def __init__(self, provider: Any, model: Any, prices: Any) -> None:
        self._provider = provider
        self._model = model
        self.rates = Rates(
            _headline(getattr(prices, "input_mtok", None)),
            _headline(getattr(prices, "output_mtok", None)),
            "genai-prices",
        )

    def cost(self, usage: Usage) -> float:
        counts: dict[str, int] = {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
        }
        # Both are parts of the totals above; genai-prices prices them at their own rate
        # when the model has one, and at the plain rate otherwise.
        if usage.cached_input_tokens:
            counts["cache_read_tokens"] = min(usage.cached_input_tokens, usage.input_tokens)
        if usage.reasoning_tokens:
            counts["output_reasoning_tokens"] = min(usage.reasoning_tokens, usage.output_tokens)
        calc = self._model.calc_price(PriceUsage(**counts), self._provider)
        return float(calc.total_price)


def _catalogued(provider: Any, model: Any) -> _Priced:
    prices = model.get_prices(datetime.now(UTC))
    fields = (prices.input_mtok, prices.output_mtok, prices.cache_read_mtok)
    if all(value is None or isinstance(value, Decimal) for value in fields):
        flat = PriceOverride(
            input_per_mtok=float(prices.input_mtok or 0),
            output_per_mtok=float(prices.output_mtok or 0),
            cached_input_per_mtok=(
                None if prices.cache_read_mtok is None else float(prices.cache_read_mtok)
            ),
        )
        return _Flat(flat, "genai-prices")
    return _Catalogued(provider, model, prices)


def _headline(price: Any) -> float:
    if price is None:
        return 0.0
    if isinstance(price, Decimal):
        return float(price)
    return float(price.base)  # TieredPrices: the price below the first threshold


def _lookup(alias: str, model: ModelConfig) -> _Priced:
    snapshot = get_snapshot()
    # The base URL names the provider even though every endpoint here speaks the OpenAI
    # protocol (api.anthropic.com -> anthropic); a URL genai-prices does not know (a proxy,
    # a test server) falls back to matching the model id alone.
    for api_url in (model.base_url, None):
        try:
            provider, info = snapshot.find_provider_model(model.upstream_model, None, None, api_url)
        except LookupError:
            continue
        return _catalogued(provider, info)
    raise ConfigError(
        f"models.{alias}: no price is known for upstream model {model.upstream_model!r}"
        f" at {scrub_url(model.base_url)};"
        " add `price: {input_per_mtok: ..., output_per_mtok: ...}`"
        " (USD per million tokens) to this model"
    )


class Pricing:
    """Cost of calls to each model of the catalogue, by alias."""

    def __init__(self, priced: dict[str, _Priced]) -> None:
        self._priced = priced

    @classmethod
    def from_config(cls, config: Config) -> Pricing:
        """Prices every catalogue model. Raises ConfigError naming a cloud model whose price
        is unknown and not overridden."""
        priced: dict[str, _Priced] = {}
        for alias, model in config.models.items():
            if model.price is not None:
                priced[alias] = _Flat(model.price, "override")
            elif model.location == "on_prem":
                priced[alias] = _Flat(None, "local")
            else:
                priced[alias] = _lookup(alias, model)
        return cls(priced)

    def _get(self, alias: str) -> _Priced:
        try:
            return self._priced[alias]
        except KeyError:
            raise KeyError(f"model {alias!r} is not in the catalogue") from None

    def rates(self, alias: str) -> Rates:
        """Per-million-token prices, for ModelInfo."""
        return self._get(alias).rates

    def is_free(self, alias: str) -> bool:
        rates = self._get(alias).rates
        return rates.input_per_mtok == 0 and rates.output_per_mtok == 0

    def estimate_max(self, alias: str, input_tokens: int, max_output_tokens: int) -> float:
        """USD upper estimate before the call: every input token fresh (no cache discount) and
        the full output allowance used."""
        usage = Usage(input_tokens=max(0, input_tokens), output_tokens=max(0, max_output_tokens))
        return self._get(alias).cost(usage)

    def cost(self, alias: str, usage: Usage) -> float:
        """USD for the usage the upstream reported."""
        return self._get(alias).cost(usage)
