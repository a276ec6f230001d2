"""Enforcement and dispatch figures.

1. Bookkeeping per request, in-process: `enforce(...)` on the policy's chain, the health read
   the policy's `models` variable takes (`Dispatcher.healthy` for every alias, which consults
   the breakers), and `Dispatcher.chat` against in-memory providers that answer at once, so what
   is timed is the residency re-check, breaker permits, attempt records and deadline handling.
   Target: under 10 us.
2. Fail-over from a refused connection: `Dispatcher.chat` over real HTTP with a dead model (a
   loopback port that refuses) first and the Ollama fake second, against the fake alone; the
   difference is what the refused attempt costs. Also through the whole gateway over gRPC.

    .venv/bin/python bench/bench_dispatch.py [--rounds 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.chat import ChatMessage, ChatParams, ChatResult, Chunk, Usage
from gateway.config import Config
from gateway.enforce import enforce
from gateway.levels import Level
from gateway.providers.base import UpstreamError
from gateway.providers.dispatch import Dispatcher
from gateway.v1 import gateway_pb2 as pb
from tests.fakes._server import refused_url
from tests.fakes.ollama_server import FakeOllama
from tests.harness import make_config, ollama_model, openai_model, serve

# No decision record per request on stdout, where this script prints its figures.
QUIET: dict[str, Any] = {"audit": {"decision_log": "off"}} if "audit" in Config.model_fields else {}
PARAMS = ChatParams(messages=(ChatMessage("user", "hi"),))
RESULT = ChatResult("ok", (), "stop", Usage(3, 1), "m")


class Instant:
    """An in-memory Provider: answers at once (or fails at once when told to)."""

    def __init__(self, failing: bool = False) -> None:
        self.failing = failing

    async def chat(self, params: ChatParams, *, timeout: float) -> ChatResult:
        if self.failing:
            raise UpstreamError("server", "in-memory failure", status=503)
        return RESULT

    async def stream(self, params: ChatParams, *, timeout: float) -> AsyncGenerator[Chunk, None]:
        yield Chunk(finish_reason="stop", usage=Usage(3, 1))

    async def aclose(self) -> None:
        return None


def catalogue() -> Config:
    url = "http://127.0.0.1:1"
    models: dict[str, dict[str, Any]] = {
        "local": ollama_model(url),
        "local2": ollama_model(url),
        "cloud": openai_model(url),
        "cloud2": openai_model(url),
        "cloud3": openai_model(url),
    }
    # A failure threshold no scenario reaches: each scenario keeps its breakers as set up.
    return make_config(models, "local", dispatch={"breaker_failures": 10**9})


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def per_request(
    dispatcher: Dispatcher,
    config: Config,
    chain: list[str],
    level: Level,
    rounds: int,
) -> tuple[float, float, float]:
    """(mean, p50, p99) in microseconds of one request's enforcement + dispatch bookkeeping."""
    aliases = list(config.models)
    models = config.models
    deadline = time.monotonic() + 3600

    async def one() -> None:
        for alias in aliases:
            dispatcher.healthy(alias)
        enforced = enforce(chain, models, level, on_violation="deny")
        await dispatcher.chat(enforced.chain, PARAMS, level, deadline)

    for _ in range(2000):
        await one()
    samples: list[float] = []
    clock = time.perf_counter
    for _ in range(rounds):
        start = clock()
        await one()
        samples.append(clock() - start)
    batch_start = clock()
    for _ in range(rounds):
        await one()
    mean = (clock() - batch_start) / rounds
    return mean * 1e6, percentile(samples, 0.5) * 1e6, percentile(samples, 0.99) * 1e6


async def bench_bookkeeping(rounds: int) -> None:
    config = catalogue()
    print("enforcement + dispatch bookkeeping per request (in-memory providers; target < 10 us)")
    print(f"  {'scenario':<56} {'mean':>8} {'p50':>8} {'p99':>8}")
    scenarios: list[tuple[str, list[str], Level, dict[str, bool], set[str]]] = [
        ("primary answers", ["local", "local2"], Level.PUBLIC, {}, set()),
        (
            "RESTRICTED: 3 cloud fallbacks dropped, primary answers",
            ["local", "cloud", "cloud2", "cloud3"],
            Level.RESTRICTED,
            {},
            set(),
        ),
        (
            "primary's breaker open: skipped, fallback answers",
            ["local", "local2"],
            Level.PUBLIC,
            {},
            {"local"},
        ),
        (
            "primary fails (503), fallback answers",
            ["local", "local2"],
            Level.PUBLIC,
            {"local": True},
            set(),
        ),
    ]
    for label, chain, level, failing, opened in scenarios:
        providers = {alias: Instant(failing.get(alias, False)) for alias in config.models}
        setup = config
        if opened:
            # One failure opens these breakers, and they stay open for the whole run.
            dispatch = config.dispatch.model_copy(
                update={"breaker_failures": 1, "breaker_cooldown_s": 1e9}
            )
            setup = config.model_copy(update={"dispatch": dispatch})
        dispatcher = Dispatcher(setup, providers=providers)
        for alias in opened:
            permit = dispatcher.breakers[alias].acquire()
            assert permit is not None
            dispatcher.breakers[alias].failure(permit)
        mean, p50, p99 = await per_request(dispatcher, config, chain, level, rounds)
        print(f"  {label:<56} {mean:>6.2f}us {p50:>6.2f}us {p99:>6.2f}us")


async def timed(call: Callable[[], Awaitable[object]], rounds: int) -> list[float]:
    for _ in range(20):
        await call()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return samples


def alone(label: str, samples: list[float]) -> None:
    p50, p99 = statistics.median(samples), percentile(samples, 0.99)
    print(f"  {label:<46} p50 {p50 * 1e3:6.2f} ms  p99 {p99 * 1e3:6.2f} ms")


def report(label: str, samples: list[float], base: list[float]) -> None:
    p50, base50 = statistics.median(samples), statistics.median(base)
    print(
        f"  {label:<46} p50 {p50 * 1e3:6.2f} ms  p99 {percentile(samples, 0.99) * 1e3:6.2f} ms"
        f"  fail-over cost (p50 minus direct) {(p50 - base50) * 1e3:6.2f} ms"
    )


async def bench_failover(rounds: int) -> None:
    print("fail-over from a refused connection to the next model (real HTTP on loopback)")
    with FakeOllama() as fake, refused_url() as dead_ollama, refused_url("/v1") as dead_openai:
        config = make_config(
            {
                "live": ollama_model(fake.url),
                "dead-ollama": ollama_model(dead_ollama),
                "dead-openai": openai_model(dead_openai, clearance="RESTRICTED"),
            },
            "live",
            # Keep the dead models' breakers closed: every round pays the refused connect.
            dispatch={"breaker_failures": 10**9, "max_attempts": 2},
            **QUIET,
        )
        dispatcher = Dispatcher(config)
        deadline = time.monotonic() + 3600
        try:

            def via(chain: list[str]) -> Callable[[], Awaitable[object]]:
                return lambda: dispatcher.chat(chain, PARAMS, Level.RESTRICTED, deadline)

            direct = await timed(via(["live"]), rounds)
            alone("dispatcher: live model alone", direct)
            report(
                "dispatcher: dead Ollama, then live",
                await timed(via(["dead-ollama", "live"]), rounds),
                direct,
            )
            report(
                "dispatcher: dead OpenAI-compatible, then live",
                await timed(via(["dead-openai", "live"]), rounds),
                direct,
            )
        finally:
            await dispatcher.aclose()

        async with serve(config) as (_, stub):

            def rpc(fallbacks: str, preferred: str) -> Callable[[], Awaitable[object]]:
                request = pb.ChatRequest(
                    messages=[pb.Message(role=pb.ROLE_USER, content="hi")],
                    preferred_model=preferred,
                    labels={"fallbacks": fallbacks} if fallbacks else {},
                )
                return lambda: stub.Chat(request)

            direct = await timed(rpc("", "live"), rounds)
            alone("gateway over gRPC: live model alone", direct)
            report(
                "gateway over gRPC: dead Ollama, then live",
                await timed(rpc("live", "dead-ollama"), rounds),
                direct,
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50000, help="in-process requests per case")
    parser.add_argument("--failover-rounds", type=int, default=300)
    args = parser.parse_args()
    # The fail-over rounds would log a warning (and a decision record) per request.
    logging.disable(logging.CRITICAL)
    await bench_bookkeeping(args.rounds)
    await bench_failover(args.failover_rounds)


if __name__ == "__main__":
    asyncio.run(main())
