"""In-process token buckets, driven by a fake clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config, parse_config
from gateway.errors import RateLimited
from gateway.ratelimit import (
    Limits,
    RateLimiter,
    RedisRateLimiter,
    limits_from_config,
    open_rate_limiter,
)

MODELS = {
    "m": {
        "provider": "ollama",
        "upstream_model": "x",
        "base_url": "http://127.0.0.1:11434",
        "location": "on_prem",
        "clearance": "RESTRICTED",
    }
}


def make_config(tenants: dict[str, Any], **extra: Any) -> Config:
    data = {"models": MODELS, "default_model": "m", "tenants": tenants, **extra}
    return parse_config(data, source="test.yaml", base_dir=Path("."))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(rpm: int = 0, tpm: int = 0) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter({"t": Limits(rpm, tpm)}, clock), clock


async def refused(rl: RateLimiter, tokens: int = 0) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        await rl.check("t", tokens)
    return caught.value


async def test_requests_bucket_allows_a_minute_then_refuses() -> None:
    rl, _ = limiter(rpm=60)
    for _ in range(60):
        await rl.check("t", 0)
    error = await refused(rl)
    assert error.retry_after_s == pytest.approx(1.0)
    assert error.metadata == {"tenant": "t", "limit": "requests_per_minute"}
    assert "requests_per_minute limit of 60" in error.message


async def test_requests_refill_continuously() -> None:
    rl, clock = limiter(rpm=60)
    for _ in range(60):
        await rl.check("t", 0)
    clock.now += 0.5
    assert (await refused(rl)).retry_after_s == pytest.approx(0.5)
    clock.now += 0.5
    await rl.check("t", 0)
    await refused(rl)


async def test_refill_never_exceeds_one_minute() -> None:
    rl, clock = limiter(rpm=10)
    clock.now += 3600
    for _ in range(10):
        await rl.check("t", 0)
    await refused(rl)


async def test_tokens_bucket_and_retry_after() -> None:
    rl, clock = limiter(tpm=6000)  # 100 tokens per second
    await rl.check("t", 5000)
    error = await refused(rl, 2000)  # 1000 left, 1000 short -> 10 s
    assert error.retry_after_s == pytest.approx(10.0)
    assert error.metadata["limit"] == "tokens_per_minute"
    clock.now += 10
    await rl.check("t", 2000)


async def test_refused_check_charges_nothing() -> None:
    rl, _ = limiter(rpm=2, tpm=1000)
    await rl.check("t", 900)
    await refused(rl, 200)  # tokens short: the request must not be charged either
    await rl.check("t", 100)
    await refused(rl, 0)  # now the requests bucket is empty


async def test_longest_wait_wins_when_both_are_short() -> None:
    rl, _ = limiter(rpm=1, tpm=60)
    await rl.check("t", 60)
    error = await refused(rl, 60)
    assert error.retry_after_s == pytest.approx(60.0)


async def test_call_larger_than_a_minute_passes_on_a_full_bucket() -> None:
    rl, clock = limiter(tpm=1000)
    await rl.check("t", 50_000)
    error = await refused(rl, 50_000)
    assert error.retry_after_s == pytest.approx(60.0)
    clock.now += 60
    await rl.check("t", 50_000)


async def test_correct_charges_overrun_and_refunds_overestimate() -> None:
    rl, clock = limiter(tpm=600)  # 10 tokens per second
    await rl.check("t", 100)
    await rl.correct("t", 400)  # used 500: bucket at 100
    assert (await refused(rl, 200)).retry_after_s == pytest.approx(10.0)
    await rl.correct("t", -300)  # refund: bucket at 400
    await rl.check("t", 400)
    await rl.correct("t", 1000)  # deep debt: -1000 -> 100 s until 0, 110 s until 100
    assert (await refused(rl, 100)).retry_after_s == pytest.approx(110.0)
    clock.now += 110
    await rl.check("t", 100)


async def test_refund_never_overfills() -> None:
    rl, _ = limiter(tpm=100)
    await rl.correct("t", -10_000)
    await rl.check("t", 100)
    await refused(rl, 1)


async def test_clock_stepping_back_does_not_drain_or_refill() -> None:
    rl, clock = limiter(rpm=2)
    await rl.check("t", 0)
    clock.now -= 100
    await rl.check("t", 0)
    await refused(rl)


async def test_tenants_are_independent_and_unlisted_ones_unlimited() -> None:
    clock = FakeClock()
    rl = RateLimiter({"a": Limits(1, 0), "b": Limits(1, 0)}, clock)
    await rl.check("a", 0)
    await rl.check("b", 0)
    for _ in range(1000):
        await rl.check("other", 10**9)
    with pytest.raises(RateLimited):
        await rl.check("a", 0)


async def test_explicit_now_overrides_the_clock() -> None:
    rl, _ = limiter(rpm=60)
    for _ in range(60):
        await rl.check("t", 0, now=5.0)
    with pytest.raises(RateLimited):
        await rl.check("t", 0, now=5.0)
    await rl.check("t", 0, now=6.0)


async def test_reload_changes_limits_and_keeps_levels() -> None:
    clock = FakeClock()
    rl = RateLimiter.from_config(
        make_config({"t": {"rate_limit": {"requests_per_minute": 10}}}), clock
    )
    for _ in range(10):
        await rl.check("t", 0)
    rl.reload(make_config({"t": {"rate_limit": {"requests_per_minute": 600}}}))
    # Levels carry over (empty), then refill at the new rate: 10 per second.
    with pytest.raises(RateLimited) as caught:
        await rl.check("t", 0)
    assert caught.value.retry_after_s == pytest.approx(0.1)
    clock.now += 1
    for _ in range(10):
        await rl.check("t", 0)
    rl.reload(make_config({}))
    await rl.check("t", 0)  # limit removed


def test_limits_from_config_only_lists_limited_tenants() -> None:
    config = make_config(
        {
            "a": {"rate_limit": {"requests_per_minute": 5}},
            "b": {"rate_limit": {"tokens_per_minute": 7}},
            "c": {"allowed_models": ["m"]},
        }
    )
    assert limits_from_config(config) == {"a": Limits(5, 0, 5), "b": Limits(0, 7)}


async def test_open_rate_limiter_picks_backend_from_the_ledger() -> None:
    local = open_rate_limiter(make_config({}))
    assert isinstance(local, RateLimiter)
    shared = open_rate_limiter(
        make_config({}, ledger={"backend": "redis", "url": "redis://127.0.0.1:1/0"})
    )
    assert isinstance(shared, RedisRateLimiter)
    await shared.aclose()
