"""Pricing: genai-prices' bundled data, overrides, local models, and no network at any time."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from gateway.chat import Usage
from gateway.config import Config, ConfigError, load_config, parse_config
from gateway.pricing import Pricing

REPO = Path(__file__).resolve().parents[2]


def _model(**fields: Any) -> dict[str, Any]:
    base = {
        "provider": "openai",
        "upstream_model": "gpt-5-mini",
        "base_url": "https://api.openai.com/v1",
        "location": "cloud",
        "clearance": "INTERNAL",
    }
    return {**base, **fields}


def _config(models: dict[str, dict[str, Any]]) -> Config:
    return parse_config({"models": models, "default_model": next(iter(models))})


def _reference(model: str, url: str, **usage: int) -> float:
    return float(calc_price(PriceUsage(**usage), model, provider_api_url=url).total_price)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Any outbound connection attempt fails the test (and is recorded)."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise AssertionError(f"outbound connection attempted to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: refuse(None, a))  # type: ignore[arg-type]
    return attempts


def test_bundled_config_is_priced_offline(no_network: list[Any]) -> None:
    with pytest.raises(AssertionError):  # the guard is live
        socket.create_connection(("127.0.0.1", 9))
    no_network.clear()
    pricing = Pricing.from_config(load_config(REPO / "config" / "celgate.yaml"))
    usage = Usage(input_tokens=12_000, output_tokens=3_000)
    for alias in ("claude-opus", "gpt-5.5", "deepseek-chat", "gpt-5-mini"):
        assert pricing.cost(alias, usage) > 0
        assert pricing.rates(alias).source == "genai-prices"
    assert pricing.cost("llama-local", usage) == 0
    assert pricing.is_free("llama-local")
    assert no_network == []


@pytest.mark.parametrize(
    ("upstream", "url"),
    [
        ("gpt-5.5", "https://api.openai.com/v1"),
        ("claude-opus-4-7", "https://api.anthropic.com/v1"),
        ("deepseek-chat", "https://api.deepseek.com/v1"),
    ],
)
def test_prices_match_genai_prices(upstream: str, url: str) -> None:
    pricing = Pricing.from_config(_config({"m": _model(upstream_model=upstream, base_url=url)}))
    got = pricing.cost("m", Usage(input_tokens=10_000, output_tokens=2_000))
    assert got == pytest.approx(_reference(upstream, url, input_tokens=10_000, output_tokens=2_000))
    rates = pricing.rates("m")
    assert rates.input_per_mtok > 0 and rates.output_per_mtok > rates.input_per_mtok


def test_base_url_selects_the_provider() -> None:
    # claude-opus-4-7 behind Anthropic's OpenAI-compatible endpoint is priced as Anthropic's.
    pricing = Pricing.from_config(
        _config(
            {"m": _model(upstream_model="claude-opus-4-7", base_url="https://api.anthropic.com/v1")}
        )
    )
    assert pricing.rates("m").input_per_mtok == 5.0
    assert pricing.rates("m").output_per_mtok == 25.0


def test_unknown_base_url_falls_back_to_the_model_id() -> None:
    local_proxy = "http://127.0.0.1:8080/v1"
    pricing = Pricing.from_config(
        _config({"m": _model(upstream_model="gpt-5.5", base_url=local_proxy)})
    )
    assert pricing.rates("m").input_per_mtok == 5.0


def test_cached_tokens_are_cheaper() -> None:
    pricing = Pricing.from_config(_config({"m": _model(upstream_model="gpt-5.5")}))
    fresh = pricing.cost("m", Usage(input_tokens=100_000, output_tokens=0))
    cached = pricing.cost(
        "m", Usage(input_tokens=100_000, output_tokens=0, cached_input_tokens=80_000)
    )
    # 20k fresh at $5 + 80k cached at $0.50 per million tokens.
    assert fresh == pytest.approx(0.5)
    assert cached == pytest.approx(20_000 * 5e-6 + 80_000 * 0.5e-6)


def test_reasoning_tokens_are_part_of_output() -> None:
    pricing = Pricing.from_config(_config({"m": _model(upstream_model="gpt-5.5")}))
    plain = pricing.cost("m", Usage(input_tokens=0, output_tokens=1_000))
    with_reasoning = pricing.cost(
        "m", Usage(input_tokens=0, output_tokens=1_000, reasoning_tokens=700)
    )
    assert plain == pytest.approx(0.03)
    assert with_reasoning == pytest.approx(plain)  # billed at the output rate, not twice


def test_tiered_prices_apply_to_long_prompts() -> None:
    pricing = Pricing.from_config(_config({"m": _model(upstream_model="gpt-5.5")}))
    long_prompt = pricing.estimate_max("m", 300_000, 0)
    assert long_prompt == pytest.approx(
        _reference("gpt-5.5", "https://api.openai.com/v1", input_tokens=300_000, output_tokens=0)
    )
    assert long_prompt > 300_000 * 5e-6  # above the 272k threshold the price doubles


def test_estimate_max_is_input_plus_full_output() -> None:
    pricing = Pricing.from_config(
        _config({"m": _model(price={"input_per_mtok": 2.0, "output_per_mtok": 8.0})})
    )
    assert pricing.estimate_max("m", 1_000, 500) == pytest.approx(1_000 * 2e-6 + 500 * 8e-6)
    assert pricing.estimate_max("m", -5, -1) == 0


def test_override_replaces_genai_prices() -> None:
    pricing = Pricing.from_config(
        _config(
            {
                "m": _model(
                    upstream_model="gpt-5.5",
                    price={
                        "input_per_mtok": 1.0,
                        "output_per_mtok": 4.0,
                        "cached_input_per_mtok": 0.1,
                    },
                )
            }
        )
    )
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cached_input_tokens=500_000)
    assert pricing.cost("m", usage) == pytest.approx(0.5 + 0.05 + 4.0)
    assert pricing.rates("m").source == "override"


def test_override_without_cached_price_bills_cached_as_input() -> None:
    pricing = Pricing.from_config(
        _config({"m": _model(price={"input_per_mtok": 1.0, "output_per_mtok": 4.0})})
    )
    usage = Usage(input_tokens=1_000_000, output_tokens=0, cached_input_tokens=400_000)
    assert pricing.cost("m", usage) == pytest.approx(1.0)


def test_local_models_are_free_unless_amortized() -> None:
    local = {"provider": "ollama", "base_url": "http://127.0.0.1:11434", "location": "on_prem"}
    pricing = Pricing.from_config(
        _config(
            {
                "free": _model(upstream_model="llama3.1:8b", **local),
                "amortized": _model(
                    upstream_model="llama3.1:70b",
                    price={"input_per_mtok": 0.05, "output_per_mtok": 0.2},
                    **local,
                ),
            }
        )
    )
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert pricing.cost("free", usage) == 0
    assert pricing.rates("free").source == "local"
    assert pricing.cost("amortized", usage) == pytest.approx(0.25)
    assert not pricing.is_free("amortized")


def test_unknown_cloud_model_is_a_startup_error() -> None:
    config = _config(
        {
            "acme-ft": _model(
                upstream_model="acme-finetune-7", base_url="https://llm.acme.example/v1"
            )
        }
    )
    with pytest.raises(ConfigError) as exc:
        Pricing.from_config(config)
    message = str(exc.value)
    assert "models.acme-ft" in message
    assert "acme-finetune-7" in message
    assert "price:" in message and "input_per_mtok" in message


def test_unknown_cloud_model_with_override_is_fine() -> None:
    config = _config(
        {
            "acme-ft": _model(
                upstream_model="acme-finetune-7",
                base_url="https://llm.acme.example/v1",
                price={"input_per_mtok": 3, "output_per_mtok": 9},
            )
        }
    )
    assert Pricing.from_config(config).rates("acme-ft").output_per_mtok == 9


def test_unknown_alias_is_a_key_error() -> None:
    pricing = Pricing.from_config(_config({"m": _model()}))
    with pytest.raises(KeyError, match="nope"):
        pricing.cost("nope", Usage())


@pytest.mark.parametrize(
    ("upstream", "url"),
    [
        ("gpt-5.5", "https://api.openai.com/v1"),  # tiered: genai-prices computes it
        ("gpt-5-mini", "https://api.openai.com/v1"),  # flat: the float fast path
        ("claude-opus-4-7", "https://api.anthropic.com/v1"),
        ("deepseek-chat", "https://api.deepseek.com/v1"),
    ],
)
@pytest.mark.parametrize(
    "usage",
    [
        Usage(input_tokens=1, output_tokens=1),
        Usage(input_tokens=123_456, output_tokens=7_890, cached_input_tokens=100_000),
        Usage(input_tokens=5_000, output_tokens=4_000, reasoning_tokens=3_000),
    ],
)
def test_every_path_agrees_with_genai_prices(upstream: str, url: str, usage: Usage) -> None:
    pricing = Pricing.from_config(_config({"m": _model(upstream_model=upstream, base_url=url)}))
    counts = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
    if usage.cached_input_tokens:
        counts["cache_read_tokens"] = usage.cached_input_tokens
    if usage.reasoning_tokens:
        counts["output_reasoning_tokens"] = usage.reasoning_tokens
    expected = calc_price(PriceUsage(**counts), model_ref=upstream, provider_api_url=url)
    assert pricing.cost("m", usage) == pytest.approx(float(expected.total_price), rel=1e-9)
