"""The gateway's added latency: the same chat sent straight to an OpenAI-compatible upstream
(with the openai SDK, as a service would without celgate) and through the gateway (gRPC), in
one run, at concurrency 1 and 32. The upstream is the loopback fake with no injected latency,
each party in its own process.

    .venv/bin/python bench/bench_gateway.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.harness import GatewayProcess, config_data, free_port, openai_model

PROMPT = "Give me one sentence about latency."
ROUNDS = 10


async def measure(
    call: Callable[[], Awaitable[object]], total: int, concurrency: int
) -> tuple[list[float], float]:
    """`total` calls from `concurrency` workers: their latencies and the throughput."""
    latencies: list[float] = []
    per_worker = max(1, total // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return latencies, len(latencies) / elapsed


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


async def run(total: int, upstream_url: str, gateway_address: str) -> None:
    direct = openai.AsyncOpenAI(base_url=upstream_url, api_key="bench", max_retries=0)
    channel = grpc.aio.insecure_channel(gateway_address)
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    request = pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content=PROMPT)])

    async def via_direct() -> object:
        return await direct.chat.completions.create(
            model="gpt-5-mini", messages=[{"role": "user", "content": PROMPT}]
        )

    async def via_gateway() -> object:
        return await stub.Chat(request)

    paths = {"direct": via_direct, "gateway": via_gateway}
    for call in paths.values():  # warm-up: connections, caches
        for _ in range(100):
            await call()
    print(f"{'path':<10}{'conc':>6}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}")
    for concurrency in (1, 32):
        # Alternate short rounds so that both paths see the same (noisy, shared) machine.
        latencies: dict[str, list[float]] = {name: [] for name in paths}
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(ROUNDS):
            for name, call in paths.items():
                samples, throughput = await measure(call, total // ROUNDS, concurrency)
                latencies[name] += samples
                rates[name].append(throughput)
        for name in paths:
            p50, p99 = pct(latencies[name], 50), pct(latencies[name], 99)
            rate = statistics.median(rates[name])
            print(f"{name:<10}{concurrency:>6}{p50:>10.3f}{p99:>10.3f}{rate:>10.0f}")
        added = pct(latencies["gateway"], 50) - pct(latencies["direct"], 50)
        print(f"added p50 at concurrency {concurrency}: {added:.3f} ms")
    await channel.close()
    await direct.close()


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"the fake upstream did not listen on port {port}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(port)],
        cwd=Path(__file__).resolve().parent.parent,
    )
    url = f"http://127.0.0.1:{port}/v1"
    wait_for_port(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # The tests' policy routes to `local`: here an OpenAI-compatible upstream.
            data = config_data({"local": openai_model(url)}, "local")
            data["server"]["listen"] = "127.0.0.1:0"
            with GatewayProcess(data, Path(tmp), env={"CELGATE_LOG_LEVEL": "WARNING"}) as gateway:
                asyncio.run(run(args.requests, url, gateway.address))
    finally:
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    main()
