"""Cost per request of authentication plus the rate limit, in-process (target: under 20 µs).

    .venv/bin/python bench/bench_auth.py [--iterations N]

Measures `Authenticator.authenticate` (API key, and mTLS mapping), `RateLimiter.check` +
`correct`, and the whole per-request path (authenticate, check, correct), for key tables of
10 and 10,000 keys. Prints microseconds per request (best of 5 runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.auth import Authenticator, hash_key
from gateway.config import Config, parse_config
from gateway.errors import Unauthenticated
from gateway.keys import new_key
from gateway.ratelimit import RateLimiter

MODELS = {
    "m": {
        "provider": "ollama",
        "upstream_model": "x",
        "base_url": "http://127.0.0.1:11434",
        "location": "on_prem",
        "clearance": "RESTRICTED",
    }
}


def config(auth: dict[str, Any]) -> Config:
    data = {
        "server": {"listen": "0.0.0.0:50051"},
        "auth": auth,
        "models": MODELS,
        "default_model": "m",
        # Limits far above the loop's rate, so every check takes the charging path.
        "tenants": {
            "tenant-0": {"rate_limit": {"requests_per_minute": 10**12, "tokens_per_minute": 10**15}}
        },
    }
    return parse_config(data, source="bench", base_dir=Path("."))


def api_key_setup(count: int) -> tuple[Authenticator, RateLimiter, str]:
    keys = [new_key() for _ in range(count)]
    entries = [{"tenant": f"tenant-{i}", "sha256": hash_key(k)} for i, k in enumerate(keys)]
    cfg = config({"mode": "api_key", "api_keys": entries})
    return Authenticator.from_config(cfg), RateLimiter.from_config(cfg), keys[0]


async def best_of(runs: int, iterations: int, body: Callable[[], Awaitable[None]]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter_ns()
        for _ in range(iterations):
            await body()
        best = min(best, (time.perf_counter_ns() - start) / iterations / 1000)
    return best


METADATA: list[tuple[str, str | bytes]] = [
    ("user-agent", "grpc-python-asyncio/1.85"),
    ("grpc-accept-encoding", "identity,deflate,gzip"),
]


async def api_key_cases(count: int, iterations: int) -> None:
    authenticator, limiter, key = api_key_setup(count)
    metadata = [*METADATA, ("authorization", f"Bearer {key}")]
    wrong = [*METADATA, ("authorization", "Bearer cg_x")]

    async def auth_only() -> None:
        authenticator.authenticate(metadata, {})

    async def wrong_key() -> None:
        with contextlib.suppress(Unauthenticated):
            authenticator.authenticate(wrong, {})

    async def limit_only() -> None:
        await limiter.check("tenant-0", 500)
        await limiter.correct("tenant-0", 120)

    async def whole() -> None:
        tenant = authenticator.authenticate(metadata, {})
        await limiter.check(tenant, 500)
        await limiter.correct(tenant, 120)

    for name, body in (
        ("api key: authenticate", auth_only),
        ("api key: authenticate (wrong key, refused)", wrong_key),
        ("rate limit: check + correct", limit_only),
        ("api key: authenticate + check + correct", whole),
    ):
        micros = await best_of(5, iterations, body)
        print(f"{name + f' [{count} keys]':<56} {micros:>10.2f}")


async def main(iterations: int) -> None:
    print(f"{'case':<56} {'µs/request':>10}")
    for count in (10, 10_000):
        await api_key_cases(count, iterations)

    mtls = Authenticator.from_config(_mtls_config())
    context = {
        "x509_common_name": [b"app"],
        "x509_subject_alternative_name": [b"app.local", b"spiffe://c/ns/a/sa/app"],
    }

    async def mtls_only() -> None:
        mtls.authenticate(METADATA, context)

    print(
        f"{'mtls: authenticate (SAN mapping)':<56} {await best_of(5, iterations, mtls_only):>10.2f}"
    )


def _mtls_config() -> Config:
    # Validation wants TLS with a client CA for mtls; the files are not read by Authenticator.
    data = {
        "server": {
            "listen": "0.0.0.0:50051",
            "tls": {"cert_file": "tls.crt", "key_file": "tls.key", "client_ca_file": "ca.crt"},
        },
        "auth": {"mode": "mtls", "client_tenants": {"spiffe://c/ns/a/sa/app": "tenant-0"}},
        "models": MODELS,
        "default_model": "m",
    }
    return parse_config(data, source="bench", base_dir=Path("."))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50_000)
    asyncio.run(main(parser.parse_args().iterations))
