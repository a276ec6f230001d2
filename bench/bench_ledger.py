"""Budget ledger latency and throughput, SQLite and Redis.

Prints reserve+settle latency per request (one after another: p50, p99) and the throughput of
concurrent reserve+settle pairs. Targets: p50 under 200 us (SQLite) and 500 us (Redis).
Run: .venv/bin/python bench/bench_ledger.py [--requests N] [--concurrency C]
Starts its own redis-server on a free loopback port (persistence off).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.budget import Ledger, open_ledger
from gateway.config import Config, parse_config
from tests.support.redis_server import running_redis


def _config(ledger: dict[str, object]) -> Config:
    return parse_config(
        {
            "models": {
                "m": {
                    "provider": "ollama",
                    "upstream_model": "llama3.1:8b",
                    "base_url": "http://127.0.0.1:11434",
                    "location": "on_prem",
                    "clearance": "RESTRICTED",
                }
            },
            "default_model": "m",
            # Two budgets apply to every request, as with a daily and a monthly cap.
            "budgets": [
                {"tenant": "*", "window": "day", "limit_usd": 1e6},
                {"tenant": "*", "window": "month", "limit_usd": 1e6},
            ],
            "ledger": ledger,
        }
    )


async def _pair(ledger: Ledger, tenant: str) -> None:
    reservation = await ledger.reserve(tenant, {}, 0.02)
    await ledger.settle(reservation, 0.01, "m", "chat")


async def _measure(name: str, ledger: Ledger, requests: int, concurrency: int) -> None:
    for _ in range(200):  # warm up connections, caches, script loading
        await _pair(ledger, "warm")
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        await _pair(ledger, "acme")
        samples.append(time.perf_counter() - start)
    samples.sort()
    p50 = statistics.median(samples) * 1e6
    p99 = samples[int(len(samples) * 0.99) - 1] * 1e6

    semaphore = asyncio.Semaphore(concurrency)

    async def limited(i: int) -> None:
        async with semaphore:
            await _pair(ledger, f"t{i % 8}")

    start = time.perf_counter()
    await asyncio.gather(*(limited(i) for i in range(requests)))
    rate = requests / (time.perf_counter() - start)
    print(
        f"{name:<7} reserve+settle  p50 {p50:7.0f} us  p99 {p99:7.0f} us  "
        f"| concurrency {concurrency}: {rate:7.0f} pairs/s"
    )


async def _ping_baseline(url: str, requests: int) -> None:
    # The floor for any Redis ledger: reserve+settle is two round trips of this client.
    client = aioredis.Redis.from_url(url)
    try:
        samples = []
        for _ in range(requests):
            start = time.perf_counter()
            await client.ping()
            samples.append(time.perf_counter() - start)
    finally:
        await client.aclose()
    print(f"redis   PING round trip (baseline) p50 {statistics.median(samples) * 1e6:7.0f} us")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = await open_ledger(_config({"backend": "sqlite", "path": f"{tmp}/l.sqlite3"}))
        try:
            await _measure("sqlite", ledger, args.requests, args.concurrency)
        finally:
            await ledger.aclose()
    with running_redis() as server:
        ledger = await open_ledger(_config({"backend": "redis", "url": server.url}))
        try:
            await _ping_baseline(server.url, args.requests)
            await _measure("redis", ledger, args.requests, args.concurrency)
        finally:
            await ledger.aclose()


if __name__ == "__main__":
    asyncio.run(main())
