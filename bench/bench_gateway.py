"""The gateway's added latency: the same chat sent straight to an OpenAI-compatible upstream
(with the openai SDK, as a service would without celgate) and through the gateway (gRPC), in
one run, at concurrency 1 and 32. The upstream is the loopback fake with no injected latency,
each party in its own process.

    .venv/bin/python bench/bench_gateway.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
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

from gateway.v1 import gateway_pb2 as pb  # noqa: E402
from gateway.v1 import gateway_pb2_grpc  # noqa: E402
from tests.harness import GatewayProcess, config_data, free_port, openai_model  # noqa: E402

PROMPT = "Give me one sentence about latency."


async def measure(
    call: Callable[[], Awaitable[object]], total: int, concurrency: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    per_worker = total // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    for _ in range(min(50, total)):  # warm-up: connections, caches
        await call()
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

    print(f"{'path':<10}{'conc':>6}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}")
    for concurrency in (1, 32):
        results = {}
        for name, call in (("direct", via_direct), ("gateway", via_gateway)):
            latencies, throughput = await measure(call, total, concurrency)
            results[name] = latencies
            print(
                f"{name:<10}{concurrency:>6}{pct(latencies, 50):>10.3f}{pct(latencies, 99):>10.3f}{throughput:>10.0f}"
            )
        added = pct(results["gateway"], 50) - pct(results["direct"], 50)
        print(f"added p50 at concurrency {concurrency}: {added:.3f} ms")
    await channel.close()
    await direct.close()


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
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = config_data({"mini": openai_model(url)}, "mini")
            data["server"]["listen"] = "127.0.0.1:0"
            with GatewayProcess(data, Path(tmp), env={"CELGATE_LOG_LEVEL": "WARNING"}) as gateway:
                asyncio.run(run(args.requests, url, gateway.address))
    finally:
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    main()
