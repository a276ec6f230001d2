"""One caller must not stall the others: the latency of small Route calls while other callers
send 1.9 MB requests, with inspection on the event loop ("before": everything inline) and
with large inspections on worker threads ("after", the default), side by side in one run.

Each column is a real `celgate serve` process; the load comes from this process over gRPC.
Rounds alternate between the two modes so machine noise hits both alike. Large requests come
from two callers in a loop (each waits for its answer); small requests from four callers.

    .venv/bin/python bench/bench_stall.py [--seconds 6] [--rounds 2] [--mode both|inline|offload]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.fakes._server import refused_url
from tests.harness import GatewayProcess, config_data, ollama_model

LARGE_CALLERS = 2
SMALL_CALLERS = 4
# Two 950,000-character messages: 1.9 MB, inside the default limits (1 M per message, 2 M in
# all). Text as callers send it: prose with numbers, addresses and identifiers sprinkled in.
_LINE = (
    "Quarterly report line: revenue grew 4.2% to 1,234,567 units; contact ops-team at "
    "host-17.internal port 8443, ticket REF-2231-88, see section 12.4 for the breakdown. "
)
LARGE_TEXT = (_LINE * (950_000 // len(_LINE) + 1))[:950_000]


def _config(url: str, inline: bool) -> dict[str, object]:
    limits: dict[str, object] = {"max_message_chars": 1_000_000, "max_total_chars": 2_000_000}
    if inline:
        # The "before" column: no request is large enough to leave the event loop.
        limits["offload_min_chars"] = 10**9
    return config_data(
        {"local": ollama_model(url)},
        "local",
        limits=limits,
        audit={"decision_log": "off"},
        server={"listen": "127.0.0.1:0", "max_message_bytes": 8 * 1024 * 1024},
    )


async def _load(address: str, seconds: float) -> tuple[list[float], int, int]:
    """Small-call latencies (s), large calls completed, large calls refused for in-flight
    bytes, over `seconds`."""
    small_latencies: list[float] = []
    large_done = large_refused = 0
    large = pb.RouteRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content=LARGE_TEXT)] * 2, preferred_model="local"
    )
    small = pb.RouteRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content="Summarize this sentence, please.")],
        preferred_model="local",
    )
    options = [("grpc.max_send_message_length", 8 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        await stub.Route(small, timeout=30)  # warm up the channel and the gateway
        end = time.monotonic() + seconds

        async def large_caller() -> None:
            nonlocal large_done, large_refused
            while time.monotonic() < end:
                try:
                    await stub.Route(large, timeout=120)
                    large_done += 1
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    large_refused += 1
                    await asyncio.sleep(0.1)

        async def small_caller() -> None:
            await asyncio.sleep(0.2)  # let the large ones get going
            while time.monotonic() < end:
                start = time.perf_counter()
                await stub.Route(small, timeout=120)
                small_latencies.append(time.perf_counter() - start)
                await asyncio.sleep(0.005)

        await asyncio.gather(
            *(large_caller() for _ in range(LARGE_CALLERS)),
            *(small_caller() for _ in range(SMALL_CALLERS)),
        )
    return small_latencies, large_done, large_refused


def _pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] * 1000 if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="per round and mode")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mode", choices=("both", "inline", "offload"), default="both")
    args = parser.parse_args()
    modes = ["inline", "offload"] if args.mode == "both" else [args.mode]
    results: dict[str, tuple[list[float], int, int]] = {m: ([], 0, 0) for m in modes}
    with refused_url() as url, tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            for mode in modes if round_no % 2 == 0 else list(reversed(modes)):
                folder = Path(tmp) / f"{mode}-{round_no}"
                folder.mkdir()
                with GatewayProcess(_config(url, mode == "inline"), folder) as gateway:
                    lat, done, refused = asyncio.run(_load(gateway.address, args.seconds))
                prev = results[mode]
                results[mode] = (prev[0] + lat, prev[1] + done, prev[2] + refused)
    print(
        f"small Route calls during 1.9 MB Route calls ({LARGE_CALLERS} large callers,"
        f" {SMALL_CALLERS} small callers, {args.rounds} x {args.seconds:g} s per column)"
    )
    header = f"{'':28}" + "".join(f"{m:>16}" for m in modes)
    print(header)
    rows = [
        ("small calls", lambda r: f"{len(r[0])}"),
        ("small p50 (ms)", lambda r: f"{_pct(r[0], 50):.1f}"),
        ("small p99 (ms)", lambda r: f"{_pct(r[0], 99):.1f}"),
        ("small max (ms)", lambda r: f"{max(r[0]) * 1000:.1f}" if r[0] else "nan"),
        ("large calls done", lambda r: f"{r[1]}"),
        ("large refused (in-flight)", lambda r: f"{r[2]}"),
    ]
    for name, cell in rows:
        print(f"{name:28}" + "".join(f"{cell(results[m]):>16}" for m in modes))
    if len(modes) == 2 and results["offload"][0] and results["inline"][0]:
        ratio = _pct(results["inline"][0], 99) / _pct(results["offload"][0], 99)
        print(f"p99 of small calls, inline / offloaded: {ratio:.1f}x")


if __name__ == "__main__":
    main()
