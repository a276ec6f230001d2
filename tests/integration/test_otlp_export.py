"""End to end: `celgate serve` as a child process, configured only by the standard OTEL_*
environment variables, exporting over OTLP/gRPC to an in-process receiver built from the
collector service stubs of opentelemetry-proto on loopback."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from gateway import telemetry as t
from gateway.service import DECISION_TRAILER
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.fakes._server import Reply, refused_url
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import GatewayProcess, config_data, ollama_model, openai_model

pytestmark = pytest.mark.integration

KEYS = {"alpha": "ck-alpha-0123456789", "beta": "ck-beta-9876543210"}
CLOUD_PRICE = {"input_per_mtok": 2.0, "output_per_mtok": 8.0}
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
T = TypeVar("T")


def value(any_value: common_pb2.AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(value(v) for v in any_value.array_value.values)
    return getattr(any_value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in pairs}


class Collector:
    """An OTLP/gRPC receiver: keeps every span, every metrics export and the metadata."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        collector = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(
                self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
            ) -> trace_service_pb2.ExportTraceServiceResponse:
                with collector._lock:
                    collector.trace_requests.append(request)
                    collector.metadata.append(dict(context.invocation_metadata()))
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(
                self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: Any
            ) -> metrics_service_pb2.ExportMetricsServiceResponse:
                with collector._lock:
                    collector.metric_requests.append(request)
                    collector.metadata.append(dict(context.invocation_metadata()))
                return metrics_service_pb2.ExportMetricsServiceResponse()

        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.server)  # type: ignore[no-untyped-call]
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)  # type: ignore[no-untyped-call]
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[tuple[dict[str, Any], trace_pb2.Span]]:
        """(resource attributes, span) of every span received."""
        with self._lock:
            requests = list(self.trace_requests)
        return [
            (attributes(rs.resource.attributes), span)
            for request in requests
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def latest_points(self, name: str) -> list[Any]:
        """The data points of `name` in the newest export that has it (cumulative sums: the
        newest export holds the totals)."""
        with self._lock:
            requests = list(self.metric_requests)
        for request in reversed(requests):
            found = [
                point
                for rm in request.resource_metrics
                for sm in rm.scope_metrics
                for metric in sm.metrics
                if metric.name == name
                for point in getattr(metric, metric.WhichOneof("data") or "sum").data_points
            ]
            if found:
                return found
        return []

    def stop(self) -> None:
        self.server.stop(0)


def eventually(check: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        result = check()
        if result is not None:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def collector() -> Iterator[Collector]:
    receiver = Collector()
    yield receiver
    receiver.stop()


def gateway_data(ollama: FakeOllama, cloud: FakeOpenAI, log: Path) -> dict[str, Any]:
    api_keys = [
        {"tenant": tenant, "sha256": hashlib.sha256(key.encode()).hexdigest()}
        for tenant, key in KEYS.items()
    ]
    return config_data(
        {"local": ollama_model(ollama.url), "cloud": openai_model(cloud.url, price=CLOUD_PRICE)},
        "local",
        auth={"mode": "api_key", "api_keys": api_keys},
        audit={"decision_log": str(log)},
        telemetry={"labels": {"promote": ["project"]}},
    )


def otel_free_environment(**settings: str) -> dict[str, str]:
    """The child's OTEL_* settings are exactly these (the harness merges os.environ)."""
    import os

    cleared = {name: "" for name in os.environ if name.startswith("OTEL_")}
    return {**cleared, **settings}


def test_spans_and_cost_metrics_reach_an_otlp_collector(
    tmp_path: Path, collector: Collector, ollama: FakeOllama, cloud: FakeOpenAI
) -> None:
    ollama.reset()
    cloud.reset()
    log = tmp_path / "decisions.jsonl"
    env = otel_free_environment(
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
        OTEL_EXPORTER_OTLP_HEADERS="x-collector-token=tok-123",
        OTEL_SERVICE_NAME="celgate-e2e",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test",
        OTEL_METRIC_EXPORT_INTERVAL="200",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    cloud.enqueue(
        Reply(content="a", prompt_tokens=100, completion_tokens=20),
        Reply(content="b", prompt_tokens=50, completion_tokens=10),
        Reply(content="c", prompt_tokens=10, completion_tokens=10),
    )
    plan = [("alpha", "cloud"), ("alpha", "cloud"), ("beta", "cloud"), ("beta", "local")]
    spent: dict[str, float] = {"alpha": 0.0, "beta": 0.0}
    decision_ids: list[str] = []
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    with GatewayProcess(gateway_data(ollama, cloud, log), tmp_path, env) as gateway:
        with grpc.insecure_channel(gateway.address) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            for index, (tenant, model) in enumerate(plan):
                metadata = [("authorization", f"Bearer {KEYS[tenant]}")]
                if index == 0:
                    metadata.append(("traceparent", traceparent))
                reply, call = stub.Chat.with_call(
                    pb.ChatRequest(
                        messages=[pb.Message(role=pb.ROLE_USER, content="hi")],
                        preferred_model=model,
                        max_tokens=50,
                        labels={"project": f"p-{tenant}", "team": "core"},
                    ),
                    metadata=metadata,
                    timeout=10,
                )
                spent[tenant] += reply.route.cost_usd
                trailers = dict(call.trailing_metadata() or ())
                assert trailers[DECISION_TRAILER] == reply.route.decision_id
                decision_ids.append(reply.route.decision_id)
        assert spent["alpha"] > 0 and spent["beta"] > 0

        def cost_totals() -> dict[str, float] | None:
            totals: dict[str, float] = {}
            for point in collector.latest_points(t.METRIC_COST):
                tenant = attributes(point.attributes)[t.CELGATE_TENANT]
                totals[tenant] = totals.get(tenant, 0.0) + point.as_double
            ok = set(totals) == set(spent) and all(
                totals[k] == pytest.approx(v) for k, v in spent.items()
            )
            return totals if ok else None

        eventually(cost_totals, "celgate.cost summed per tenant")

        def server_calls() -> list[Any] | None:
            points = collector.latest_points(t.METRIC_SERVER_CALL_DURATION)
            total = sum(point.count for point in points)
            return points if total == len(plan) else None

        for point in eventually(server_calls, "rpc.server.call.duration for every call"):
            assert attributes(point.attributes) == {
                t.RPC_SYSTEM_NAME: "grpc",
                t.RPC_METHOD: "gateway.v1.GatewayService/Chat",
                t.RPC_RESPONSE_STATUS_CODE: "OK",
            }

        def client_spans() -> list[tuple[dict[str, Any], trace_pb2.Span]] | None:
            found = [
                (r, s) for r, s in collector.spans() if s.kind == trace_pb2.Span.SPAN_KIND_CLIENT
            ]
            return found if len(found) == len(plan) else None

        clients = eventually(client_spans, "a CLIENT span per request")

    cloud_spans = [
        (r, attributes(s.attributes))
        for r, s in clients
        if attributes(s.attributes)[t.GEN_AI_REQUEST_MODEL] == "gpt-5-mini"
    ]
    assert len(cloud_spans) == 3
    for resource, span in cloud_spans:
        assert span[t.GEN_AI_USAGE_COST] > 0
        assert span[t.CELGATE_COST_CURRENCY] == "USD"
        assert span[t.GEN_AI_RESPONSE_ID].startswith("chatcmpl-")
        assert span[t.GEN_AI_REQUEST_MAX_TOKENS] == 50
        assert span[t.GEN_AI_OUTPUT_TYPE] == "text"
        assert span["celgate.label.project"] == f"p-{span[t.CELGATE_TENANT]}"
        assert "celgate.label.team" not in span
        assert span[t.CELGATE_MODEL] == "cloud" and span[t.CELGATE_LOCATION] == "cloud"
        assert resource["service.name"] == "celgate-e2e"
        assert resource["deployment.environment"] == "test"
    assert sum(s[t.GEN_AI_USAGE_COST] for _, s in cloud_spans) == pytest.approx(sum(spent.values()))

    # The caller's trace continues through the gateway.
    traced = [s for _, s in collector.spans() if s.trace_id.hex() == CALLER_TRACE]
    (server,) = [s for s in traced if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    assert server.parent_span_id.hex() == CALLER_SPAN
    assert server.name == "gateway.v1.GatewayService/Chat"
    server_attributes = attributes(server.attributes)
    assert server_attributes[t.CELGATE_TENANT] == "alpha"
    assert server_attributes[t.RPC_SYSTEM_NAME] == "grpc"
    assert server_attributes[t.RPC_METHOD] == "gateway.v1.GatewayService/Chat"
    assert server_attributes[t.RPC_RESPONSE_STATUS_CODE] == "OK"
    assert server_attributes["celgate.label.project"] == "p-alpha"
    # Cost summed over every exported span counts each request once (CLIENT spans only).
    every_cost = [
        attributes(s.attributes).get(t.GEN_AI_USAGE_COST, 0.0) for _, s in collector.spans()
    ]
    assert sum(every_cost) == pytest.approx(sum(spent.values()))
    assert any(s.kind == trace_pb2.Span.SPAN_KIND_CLIENT for s in traced)

    # OTEL_EXPORTER_OTLP_HEADERS reached the collector.
    assert all(m.get("x-collector-token") == "tok-123" for m in collector.metadata)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["decision_id"] for line in lines] == decision_ids
    assert [line["tenant"] for line in lines] == [tenant for tenant, _ in plan]
    assert lines[0]["trace_id"] == CALLER_TRACE


def test_dead_trace_collector_costs_only_counted_spans(
    tmp_path: Path, collector: Collector, ollama: FakeOllama, cloud: FakeOpenAI
) -> None:
    ollama.reset()
    requests = 20
    with refused_url() as dead:
        env = otel_free_environment(
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=dead,
            OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="1",
            OTEL_BSP_MAX_QUEUE_SIZE="4",
            OTEL_BSP_SCHEDULE_DELAY="50",
            OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=collector.endpoint,
            OTEL_METRIC_EXPORT_INTERVAL="200",
        )
        data = gateway_data(ollama, cloud, tmp_path / "decisions.jsonl")
        with GatewayProcess(data, tmp_path, env) as gateway:
            with grpc.insecure_channel(gateway.address) as channel:
                stub = gateway_pb2_grpc.GatewayServiceStub(channel)
                metadata = [("authorization", f"Bearer {KEYS['alpha']}")]
                for _ in range(requests):
                    reply = stub.Chat(
                        pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content="hi")]),
                        metadata=metadata,
                        timeout=10,
                    )
                    assert reply.route.model == "local"

            def dropped_spans() -> float | None:
                total = sum(
                    point.as_int
                    for point in collector.latest_points(t.METRIC_TELEMETRY_DROPPED)
                    if attributes(point.attributes)[t.CELGATE_TELEMETRY_SIGNAL] == "traces"
                )
                return total if total > 0 else None

            dropped = eventually(dropped_spans, "celgate.telemetry.dropped for traces")
            assert dropped <= 2 * requests  # a SERVER and a CLIENT span per request at most
            # Every request still reached the decision log and the cost metric.
            (cost,) = collector.latest_points(t.METRIC_COST)
            assert attributes(cost.attributes)[t.CELGATE_TENANT] == "alpha"
            gateway.terminate()
            assert gateway.wait(30) == 0
    lines = (tmp_path / "decisions.jsonl").read_text().splitlines()
    assert len(lines) == requests
