"""Gateway CPU per request on the two surfaces, in one run: the same chat through gRPC
(grpc.aio stub) and through the OpenAI-compatible HTTP API (the openai SDK), unary and
streamed. The gateway runs in its own process and its CPU time (user + system, all threads,
from /proc) is read around each round; rounds alternate between the surfaces so both see the
same noisy machine. The target: HTTP costs at most 25% more gateway CPU per request than gRPC.

    .venv/bin/python bench/bench_http.py [--requests 1500] [--concurrency 16] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_gateway import wait_for_port
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.harness import GatewayProcess, config_data, free_port, openai_model

PROMPT = "Give me one sentence about latency."
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (every thread), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def load(call: Callable[[], Awaitable[None]], total: int, concurrency: int) -> None:
    per_worker = max(1, total // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            await call()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def run(pid: int, grpc_address: str, http_port: int, args: argparse.Namespace) -> None:
    channel = grpc.aio.insecure_channel(grpc_address)
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    sdk = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{http_port}/v1", api_key="bench", max_retries=0
    )
    unary = pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content=PROMPT)])
    streamed = pb.ChatStreamRequest(messages=[pb.Message(role=pb.ROLE_USER, content=PROMPT)])
    messages: list[dict[str, str]] = [{"role": "user", "content": PROMPT}]

    async def grpc_chat() -> None:
        await stub.Chat(unary)

    async def http_chat() -> None:
        await sdk.chat.completions.create(model="auto", messages=messages)  # type: ignore[arg-type]

    async def grpc_stream() -> None:
        async for _ in stub.ChatStream(streamed):
            pass

    async def http_stream() -> None:
        stream = await sdk.chat.completions.create(
            model="auto",
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        async for _ in stream:
            pass

    cases = {
        "unary": {"grpc": grpc_chat, "http": http_chat},
        "stream": {"grpc": grpc_stream, "http": http_stream},
    }
    print(
        f"requests per round {args.requests}, concurrency {args.concurrency}, "
        f"rounds {args.rounds}; gateway CPU per request (median of rounds)"
    )
    print(f"{'case':<8}{'grpc us':>10}{'http us':>10}{'http/grpc':>11}")
    for case, calls in cases.items():
        for call in calls.values():  # warm-up: connections, caches
            await load(call, 200, args.concurrency)
        per_request: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                before = cpu_seconds(pid)
                await load(call, args.requests, args.concurrency)
                spent = cpu_seconds(pid) - before
                per_request[name].append(spent / args.requests * 1e6)
        g = statistics.median(per_request["grpc"])
        h = statistics.median(per_request["http"])
        print(f"{case:<8}{g:>10.0f}{h:>10.0f}{h / g:>11.2f}")
    await channel.close()
    await sdk.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    upstream_port = free_port()
    root = Path(__file__).resolve().parent.parent
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(upstream_port)],
        cwd=root,
    )
    url = f"http://127.0.0.1:{upstream_port}/v1"
    wait_for_port(upstream_port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = config_data(
                {"local": openai_model(url)},
                "local",
                http={"listen": f"127.0.0.1:{free_port()}"},
                audit={"decision_log": "off"},
            )
            gw = GatewayProcess(data, Path(tmp), env={"CELGATE_LOG_LEVEL": "WARNING"})
            try:
                gw.start(timeout=120)  # a loaded machine starts slowly
                assert gw.proc is not None
                http_port = int(data["http"]["listen"].rpartition(":")[2])
                asyncio.run(run(gw.proc.pid, gw.address, http_port, args))
            finally:
                gw.__exit__()
    finally:
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    main()
