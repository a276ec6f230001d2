"""Rate limits shared through a real Redis: the same bucket math, one limit across processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from gateway.errors import RateLimited, Unavailable
from gateway.ratelimit import Limits, RedisRateLimiter
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0


@pytest.fixture
async def limiter(redis_server: RedisServer) -> AsyncIterator[RedisRateLimiter]:
    rl = RedisRateLimiter.from_url(
        redis_server.url,
        {
            "t": Limits(60, 6000),
            "r": Limits(10, 0),
            "k": Limits(0, 100),
            "b": Limits(2, 100),
        },
    )
    yield rl
    await rl.aclose()


async def refused(rl: RedisRateLimiter, tenant: str, tokens: int, now: float) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        await rl.check(tenant, tokens, now=now)
    return caught.value


async def test_requests_bucket_in_redis(limiter: RedisRateLimiter) -> None:
    for _ in range(10):
        await limiter.check("r", 0, now=T0)
    error = await refused(limiter, "r", 0, T0)
    assert error.retry_after_s == pytest.approx(6.0)
    assert error.metadata == {"tenant": "r", "limit": "requests_per_minute"}
    await refused(limiter, "r", 0, T0 + 5.9)
    await limiter.check("r", 0, now=T0 + 6.0)


async def test_tokens_charge_both_or_neither_and_correct(limiter: RedisRateLimiter) -> None:
    await limiter.check("t", 5000, now=T0)
    error = await refused(limiter, "t", 2000, T0)  # 1000 left at 100 per second
    assert error.retry_after_s == pytest.approx(10.0)
    assert error.metadata["limit"] == "tokens_per_minute"
    await limiter.correct("t", -1500, now=T0)  # overestimated: refund
    await limiter.check("t", 2000, now=T0)
    await limiter.correct("t", 2000, now=T0)  # underestimated: 1500 in debt
    assert (await refused(limiter, "t", 100, T0)).retry_after_s == pytest.approx(16.0)
    await limiter.check("t", 100, now=T0 + 16)


async def test_refused_check_charges_no_request(limiter: RedisRateLimiter) -> None:
    await limiter.check("b", 90, now=T0)
    assert (await refused(limiter, "b", 20, T0)).metadata["limit"] == "tokens_per_minute"
    await limiter.check("b", 10, now=T0)  # the second of two requests
    assert (await refused(limiter, "b", 0, T0)).metadata["limit"] == "requests_per_minute"


async def test_lagging_replica_clock_does_not_drain(limiter: RedisRateLimiter) -> None:
    await limiter.check("k", 100, now=T0 + 30)
    # Another replica's clock is 30 s behind: no negative refill, still just empty.
    assert (await refused(limiter, "k", 10, T0)).retry_after_s == pytest.approx(6.0)


async def test_bucket_key_expires_once_full_again(
    limiter: RedisRateLimiter, redis_server: RedisServer
) -> None:
    await limiter.check("r", 0, now=T0)
    client = redis.Redis.from_url(redis_server.url)
    try:
        keys = client.keys("celgate:ratelimit:*")
        assert keys == [b"celgate:ratelimit:{r}"]
        assert 1000 < client.pttl(keys[0]) <= 7000  # one request refills in 6 s (+1 s)
    finally:
        client.close()


async def test_concurrent_checks_in_one_process_hold_the_limit(limiter: RedisRateLimiter) -> None:
    async def one() -> bool:
        try:
            await limiter.check("r", 0, now=T0)
        except RateLimited:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(50)))
    assert sum(results) == 10


async def test_unreachable_redis_fails_closed_without_the_url() -> None:
    rl = RedisRateLimiter.from_url("redis://:hunter2@127.0.0.1:1/0", {"t": Limits(1, 0)})
    try:
        with pytest.raises(Unavailable) as caught:
            await rl.check("t", 0)
        assert "hunter2" not in caught.value.message
        assert "127.0.0.1" not in caught.value.message
        await rl.check("unlimited", 0)  # tenants without limits never touch Redis
    finally:
        await rl.aclose()


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from gateway.errors import RateLimited
    from gateway.ratelimit import Limits, RedisRateLimiter

    async def main(url: str) -> None:
        rl = RedisRateLimiter.from_url(url, {"shared": Limits(150, 0)})
        print("ready", flush=True)
        sys.stdin.readline()  # both start together, so their calls interleave
        allowed = 0
        for _ in range(200):
            try:
                await rl.check("shared", 0, now=1700000000.0)
                allowed += 1
            except RateLimited:
                pass
        await rl.aclose()
        print(json.dumps({"allowed": allowed}))

    asyncio.run(main(sys.argv[1]))
    """
)


def test_two_processes_sharing_redis_hold_one_limit(redis_server: RedisServer) -> None:
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_server.url],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
    allowed = []
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        allowed.append(json.loads(out)["allowed"])
    assert sum(allowed) == 150
    assert all(count > 0 for count in allowed)
