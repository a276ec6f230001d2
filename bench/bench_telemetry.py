"""The per-request cost of telemetry (spans, metrics) and the decision log, against the same
run with them off.

1. recorder: exactly the telemetry work of one successful Chat (its outcome record built and
   recorded: SERVER span continuing a caller's traceparent, one CLIENT span, six metric updates,
   one decision-log line), on vs off, in a tight loop. "On" is the production set-up: the SDK's
   batching processor and periodic metric reader with exporters that accept everything (no
   network), the decision log to a file.
   "Off" is what runs with no OTEL_* endpoint and `audit.decision_log: off`.
2. gateway: the same Chat sent through an in-process gateway over a real gRPC channel to the
   Ollama fake, alternating rounds between a gateway with telemetry on and one with it off.
   This includes everything, but gRPC and HTTP noise is of the same order as the difference.

    .venv/bin/python bench/bench_telemetry.py [--requests 20000] [--chats 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audit import DecisionLog
from gateway.chat import Usage
from gateway.config import Config
from gateway.levels import Level
from gateway.outcome import (
    Attempt,
    Call,
    Candidate,
    Ending,
    InspectionFacts,
    PolicyFacts,
    Progress,
)
from gateway.server import running
from gateway.telemetry import CountingBatchSpanProcessor, DropCounter, Telemetry
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc, policy_pb2
from tests.fakes.ollama_server import FakeOllama
from tests.harness import make_config, ollama_model

TRACEPARENT = (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),)
SERVICE = "gateway.v1.GatewayService"


class AcceptingSpanExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class AcceptingMetricExporter(MetricExporter):
    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def telemetry_on(config: Config, log_dir: Path) -> Telemetry:
    drops = DropCounter()
    processor = CountingBatchSpanProcessor(AcceptingSpanExporter(), drops)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(processor)
    reader = PeriodicExportingMetricReader(AcceptingMetricExporter(), export_interval_millis=1000)
    return Telemetry(
        config.models,
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[reader]),
        decision_log=DecisionLog.open(str(log_dir / "decisions.jsonl")),
        drops=drops,
        processors=[processor],
    )


def telemetry_off(config: Config) -> Telemetry:
    return Telemetry(config.models)


OK = Ending("OK", 0, False)


def one_request(telemetry: Telemetry, budget: policy_pb2.BudgetState, usage: Usage) -> None:
    """What the service and the pipeline do for telemetry in one successful Chat: start the
    call, keep each stage's facts, freeze the outcome and record it."""
    progress = Progress(
        Call.start("Chat", service=SERVICE, system="grpc", carrier=dict(TRACEPARENT))
    )
    progress.tenant = "acme"
    progress.inspection = InspectionFacts(
        Level.CONFIDENTIAL, None, ("pii.email",), "question_answering", 0.3
    )
    if budget.limited:
        progress.budget_utilization = budget.utilization
    progress.policy = PolicyFacts("routing", "c0e448a79751", "routing/3")
    progress.candidates = (Candidate("local", True), Candidate("cloud", False, "not cleared"))
    progress.blocked = (("cloud", "DATA_RESIDENCY"),)
    progress.enforced = "allowed"
    progress.attempts.append(
        Attempt("local", None, time.time_ns(), 0.001, usage, 0.0, "llama3.1:8b", "stop")
    )
    progress.model = "local"
    telemetry.record(progress.outcome(OK))


def bench_primitives(config: Config, log_dir: Path, count: int = 20_000) -> tuple[float, float]:
    """What the SDK itself costs here: one span started and ended through the batching
    processor, one histogram measurement with the 7 GenAI attributes."""
    telemetry = telemetry_on(config, log_dir)
    tracer = telemetry.tracer
    point = dict(telemetry.models["local"].metric, **{"gen_ai.token.type": "input"})
    start = time.perf_counter()
    for _ in range(count):
        tracer.start_span("chat").end()
    span_us = (time.perf_counter() - start) / count * 1e6
    start = time.perf_counter()
    for _ in range(count):
        telemetry.instruments.token_usage.record(10, point)
    record_us = (time.perf_counter() - start) / count * 1e6
    telemetry.shutdown()
    return span_us, record_us


def bench_recorder(config: Config, requests: int, log_dir: Path) -> tuple[float, float]:
    budget = policy_pb2.BudgetState(limited=True, limit_usd=100, utilization=0.25)
    usage = Usage(input_tokens=120, output_tokens=40)
    results = {}
    for name, telemetry in (
        ("off", telemetry_off(config)),
        ("on", telemetry_on(config, log_dir)),
    ):
        for _ in range(1000):  # warm-up
            one_request(telemetry, budget, usage)
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(requests):
                one_request(telemetry, budget, usage)
            runs.append((time.perf_counter() - start) / requests * 1e6)
        results[name] = min(runs)  # the least disturbed run of this shared machine
        telemetry.shutdown()
    return results["on"], results["off"]


async def bench_gateway(config: Config, chats: int, log_dir: Path) -> tuple[float, float]:
    request = pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content="Say hi.")])
    latencies: dict[str, list[float]] = {"on": [], "off": []}
    async with (
        running(config, telemetry_on(config, log_dir)) as on,
        running(config, telemetry_off(config)) as off,
        grpc.aio.insecure_channel(on.address) as on_channel,
        grpc.aio.insecure_channel(off.address) as off_channel,
    ):
        stubs = {
            "on": gateway_pb2_grpc.GatewayServiceStub(on_channel),
            "off": gateway_pb2_grpc.GatewayServiceStub(off_channel),
        }
        for stub in stubs.values():
            for _ in range(100):
                await stub.Chat(request, metadata=TRACEPARENT)
        rounds = 20
        for _ in range(rounds):
            for name, stub in stubs.items():
                for _ in range(chats // rounds):
                    start = time.perf_counter()
                    await stub.Chat(request, metadata=TRACEPARENT)
                    latencies[name].append(time.perf_counter() - start)
    return (
        statistics.median(latencies["on"]) * 1e6,
        statistics.median(latencies["off"]) * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--chats", type=int, default=2_000, help="0: skip the gateway part")
    args = parser.parse_args()
    with FakeOllama() as ollama, tempfile.TemporaryDirectory() as tmp:
        config = make_config(
            {"local": ollama_model(ollama.url), "cloud": ollama_model(ollama.url)},
            "local",
            audit={"decision_log": "off"},
        )
        on, off = bench_recorder(config, args.requests, Path(tmp))
        print(f"recorder, per request ({args.requests} requests, best of 5):")
        print(f"  telemetry + decision log on : {on:7.1f} us")
        print(f"  off                         : {off:7.1f} us")
        print(f"  added                       : {on - off:7.1f} us  (target < 50 us)")
        span_us, record_us = bench_primitives(config, Path(tmp))
        print("OpenTelemetry SDK primitives on this machine (2 spans, 6 measurements per request):")
        print(f"  span start + end            : {span_us:7.1f} us")
        print(f"  histogram record, 7 attrs   : {record_us:7.1f} us")
        if not args.chats:
            return
        on, off = asyncio.run(bench_gateway(config, args.chats, Path(tmp)))
        print(f"gateway Chat over gRPC, median of {args.chats} per side, interleaved:")
        print(f"  telemetry + decision log on : {on:7.1f} us")
        print(f"  off                         : {off:7.1f} us")
        print(f"  difference                  : {on - off:7.1f} us")


if __name__ == "__main__":
    main()
