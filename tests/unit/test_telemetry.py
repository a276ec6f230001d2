"""Telemetry set-up from the OTEL_* environment, drop counting, policy reload failures and the
recording of one request's outcome, without a gateway."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway import telemetry as t
from gateway.config import Config, ConfigError, parse_config
from gateway.errors import PermissionDenied
from gateway.levels import Level
from gateway.outcome import Attempt, Call, Ending, InspectionFacts, Outcome, Progress
from gateway.policy import PolicyError, PolicyStore
from gateway.providers.base import UpstreamError
from gateway.telemetry import CountingBatchSpanProcessor, DropCounter, Telemetry, export

MODELS = {
    "local": {
        "provider": "ollama",
        "upstream_model": "llama3.1:8b",
        "base_url": "http://10.0.0.5:11434",
        "location": "on_prem",
        "clearance": "RESTRICTED",
    },
    "cloud": {
        "provider": "openai",
        "upstream_model": "gpt-5-mini",
        "base_url": "https://api.openai.com/v1",
        "location": "cloud",
        "clearance": "INTERNAL",
    },
}


def config(tmp_path: Path, **top: Any) -> Config:
    data = {
        "models": MODELS,
        "default_model": "local",
        "audit": {"decision_log": "off"},
        "telemetry": {"shutdown_timeout_s": 1},
        **top,
    }
    return parse_config(data, base_dir=tmp_path)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own OTEL_* settings must not change what these tests see."""
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def recorded() -> Iterator[tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    data = parse_config({"models": MODELS, "default_model": "local"})
    telemetry = Telemetry(
        data.models, tracer_provider=provider, meter_provider=MeterProvider(metric_readers=[reader])
    )
    yield telemetry, spans, reader
    telemetry.shutdown()


def started(rpc: str = "Chat", carrier: dict[str, str] | None = None) -> Progress:
    return Progress(
        Call.start(rpc, service="gateway.v1.GatewayService", system="grpc", carrier=carrier or {})
    )


def ended(progress: Progress, code: grpc.StatusCode, error: BaseException | None = None) -> Outcome:
    faults = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
    return progress.outcome(Ending(code.name, code.value[0], code in faults, error))


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


# -- set-up from the environment -----------------------------------------------------------


def test_nothing_configured_exports_nothing(tmp_path: Path) -> None:
    telemetry = Telemetry.from_config(config(tmp_path))
    assert telemetry.tracer_provider is None and telemetry.meter_provider is None
    assert not telemetry.exporting
    assert isinstance(telemetry.tracer, trace.NoOpTracer)
    # A request still gets a decision id and is recorded without error.
    progress = started()
    progress.tenant = "acme"
    telemetry.record(ended(progress, grpc.StatusCode.OK))
    assert len(progress.call.decision_id) == 32
    telemetry.shutdown()


def test_no_exporter_still_continues_the_callers_trace_id(tmp_path: Path) -> None:
    telemetry = Telemetry.from_config(config(tmp_path, audit={"decision_log": "d.jsonl"}))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    progress = started(carrier={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    telemetry.record(ended(progress, grpc.StatusCode.OK))
    telemetry.shutdown()
    (line,) = (tmp_path / "d.jsonl").read_text().splitlines()
    assert json.loads(line)["trace_id"] == trace_id


def test_endpoint_enables_both_signals_with_the_sdk_resource(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=ml")
    telemetry = Telemetry.from_config(config(tmp_path))
    try:
        assert telemetry.tracer_provider is not None and telemetry.meter_provider is not None
        attributes = telemetry.tracer_provider.resource.attributes
        assert attributes["service.name"] == "celgate"
        assert attributes["deployment.environment"] == "prod" and attributes["team"] == "ml"
    finally:
        telemetry.shutdown()


def test_service_name_from_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-eu")
    assert t.resource().attributes["service.name"] == "gateway-eu"
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=gateway-us")
    assert t.resource().attributes["service.name"] == "gateway-us"


@pytest.mark.parametrize(
    ("variables", "traces", "metrics"),
    [
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"}, True, False),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:4317"}, False, True),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                "OTEL_TRACES_EXPORTER": "none",
            },
            False,
            True,
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_SDK_DISABLED": "true"},
            False,
            False,
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, False, False),  # no endpoint: still nothing
    ],
)
def test_which_signals_are_exported(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str],
    traces: bool,
    metrics: bool,
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    telemetry = Telemetry.from_config(config(tmp_path))
    try:
        assert (telemetry.tracer_provider is not None) is traces
        assert (telemetry.meter_provider is not None) is metrics
    finally:
        telemetry.shutdown()


def test_http_protobuf_protocol_uses_the_http_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    (exporter,) = export.span_exporters()
    assert isinstance(exporter, HttpSpanExporter)
    exporter.shutdown()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "use grpc or http/protobuf"),
        ("OTEL_TRACES_EXPORTER", "zipkin", "use otlp, console or none"),
    ],
)
def test_unsupported_settings_stop_start_up_with_the_variable_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message) as info:
        Telemetry.from_config(config(tmp_path))
    assert "OTEL_" in str(info.value)


def test_unwritable_decision_log_stops_start_up(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"audit\.decision_log"):
        Telemetry.from_config(config(tmp_path, audit={"decision_log": str(blocker / "x.log")}))


# -- dropped telemetry ---------------------------------------------------------------------


class BlockingExporter(SpanExporter):
    """Holds the export thread, as a collector that does not answer does."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(10)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


class FailingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        return None


def test_full_queue_drops_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # export only when a batch is full
    drops = DropCounter()
    exporter = BlockingExporter()
    processor = CountingBatchSpanProcessor(exporter, drops)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for _ in range(4):  # one full batch: the worker takes it and blocks in export
        tracer.start_span("s").end()
    assert exporter.entered.wait(10)
    for _ in range(4 + 3):  # refill the queue, then three more than it holds
        tracer.start_span("s").end()
    assert drops.counts["traces"] == 3
    exporter.release.set()
    processor.shutdown(timeout_millis=5000)
    assert exporter.exported == 8  # the first batch and the queue that was kept


def test_failed_span_exports_are_counted_and_metered() -> None:
    reader = InMemoryMetricReader()
    drops = DropCounter()
    telemetry = Telemetry({}, meter_provider=MeterProvider(metric_readers=[reader]), drops=drops)
    processor = CountingBatchSpanProcessor(FailingExporter(), drops)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for _ in range(3):
        provider.get_tracer("test").start_span("s").end()
    processor.force_flush()
    assert drops.counts["traces"] == 3
    (point,) = points(reader, t.METRIC_TELEMETRY_DROPPED)
    assert point.value == 3
    assert point.attributes == {t.CELGATE_TELEMETRY_SIGNAL: "traces", t.ERROR_TYPE: "export_failed"}
    processor.shutdown(timeout_millis=1000)
    telemetry.shutdown()


class RefusingMetricExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.calls += 1
        return MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def test_failed_metric_exports_are_counted() -> None:
    drops = DropCounter()
    inner = RefusingMetricExporter()
    reader = PeriodicExportingMetricReader(
        t.CountingMetricExporter(inner, drops), export_interval_millis=3_600_000
    )
    provider = MeterProvider(metric_readers=[reader])
    telemetry = Telemetry({}, meter_provider=provider, drops=drops)
    telemetry.instruments.cost.add(0.5, {t.CELGATE_TENANT: "acme"})
    provider.force_flush()
    assert inner.calls >= 1 and drops.counts["metrics"] >= 1
    provider.shutdown(timeout_millis=1000)


# -- policy reload failures ----------------------------------------------------------------


def test_policy_load_failures_are_counted(
    tmp_path: Path, recorded: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    telemetry, _, reader = recorded
    (tmp_path / "policy.yaml").write_text("name: p\nrule:\n  match:\n    - output: 'nope{'\n")
    store = PolicyStore(tmp_path, on_change=telemetry.policy_changed)
    with pytest.raises(PolicyError):
        store.load()
    (tmp_path / "policy.yaml").write_text("name: p\nrule:\n  match:\n    - output: 'x{'\n")
    assert store.reload() is False
    (point,) = points(reader, t.METRIC_POLICY_RELOAD_FAILURES)
    assert point.value == 2


# -- recording an outcome --------------------------------------------------------------------


def test_a_cancelled_attempt_ends_its_client_span_with_the_error(
    recorded: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    telemetry, spans, _ = recorded
    progress = started("ChatStream")
    progress.tenant = "acme"
    progress.attempts.append(Attempt("local", "cancelled", time.time_ns(), 0.25))
    telemetry.record(ended(progress, grpc.StatusCode.CANCELLED, GeneratorExit()))
    client, server = sorted(spans.get_finished_spans(), key=lambda s: s.kind != SpanKind.CLIENT)
    assert client.kind == SpanKind.CLIENT
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    assert (client.attributes or {})[t.ERROR_TYPE] == "cancelled"
    assert client.status.status_code == trace.StatusCode.ERROR
    assert client.end_time is not None and client.start_time is not None
    assert client.end_time - client.start_time == 250_000_000  # the attempt's own duration
    assert (server.attributes or {})[t.RPC_GRPC_STATUS_CODE] == 1
    assert (server.attributes or {})[t.ERROR_TYPE] == "cancelled"


def test_skipped_candidates_have_no_client_span(
    recorded: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    telemetry, spans, reader = recorded
    progress = started()
    progress.tenant = "acme"
    progress.attempts += [Attempt("cloud", "budget"), Attempt("local", "circuit_open")]
    telemetry.record(ended(progress, grpc.StatusCode.UNAVAILABLE, None))
    (server,) = spans.get_finished_spans()
    assert (server.attributes or {})[t.CELGATE_FALLBACK_ATTEMPT] == 0
    assert points(reader, t.METRIC_OPERATION_DURATION) == []


def test_enforcement_denial_without_candidates_counts_the_refused_model(
    recorded: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    telemetry, spans, reader = recorded
    progress = started()
    progress.tenant = "acme"
    progress.inspection = InspectionFacts(
        Level.RESTRICTED, None, ("fin.payment_card",), "chat", 0.2
    )
    error = PermissionDenied("not cleared", reason="DATA_RESIDENCY", model="cloud")
    outcome = ended(progress, grpc.StatusCode.PERMISSION_DENIED, error)
    assert outcome.enforcement == "denied" and outcome.blocked == (("cloud", "DATA_RESIDENCY"),)
    telemetry.record(outcome)
    (server,) = spans.get_finished_spans()
    attributes = server.attributes or {}
    assert attributes[t.CELGATE_ENFORCEMENT] == "denied"
    assert attributes[t.CELGATE_DETECTORS] == ("fin.payment_card",)
    assert server.status.status_code == trace.StatusCode.UNSET  # the caller's problem
    (blocked,) = points(reader, t.METRIC_ENFORCEMENT_BLOCKED)
    assert blocked.attributes[t.CELGATE_MODEL] == "cloud"
    assert blocked.attributes[t.CELGATE_CLASSIFICATION] == "RESTRICTED"


def test_server_faults_set_the_span_status(
    recorded: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    telemetry, spans, _ = recorded
    progress = started()
    error = UpstreamError("server", "HTTP 503: busy")
    telemetry.record(ended(progress, grpc.StatusCode.UNAVAILABLE, error))
    (server,) = spans.get_finished_spans()
    assert server.status.status_code == trace.StatusCode.ERROR
    assert (server.attributes or {})[t.ERROR_TYPE] == "server"
    assert "busy" not in (server.status.description or "")


def test_client_span_server_address_and_port_come_from_the_base_url(
    recorded: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    telemetry, _, _ = recorded
    assert telemetry.models["local"].metric[t.SERVER_ADDRESS] == "10.0.0.5"
    assert telemetry.models["local"].metric[t.SERVER_PORT] == 11434
    assert telemetry.models["cloud"].metric[t.SERVER_ADDRESS] == "api.openai.com"
    assert telemetry.models["cloud"].metric[t.SERVER_PORT] == 443
    assert telemetry.models["cloud"].span_name == "chat gpt-5-mini"


def test_a_redacted_request_carries_detector_counts_on_its_spans_never_values(
    recorded: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    telemetry, spans, reader = recorded
    progress = started()
    progress.tenant = "acme"
    progress.enforced = "redacted"
    progress.redacted = (("pii.email", 2), ("pii.phone", 1))
    progress.unrestored = 1
    progress.attempts.append(Attempt("cloud", None, time.time_ns(), 0.1))
    telemetry.record(ended(progress, grpc.StatusCode.OK))
    for span in spans.get_finished_spans():
        attributes = span.attributes or {}
        assert attributes[t.CELGATE_REDACTED] == ("pii.email=2", "pii.phone=1")
        assert attributes[t.CELGATE_REDACTION_UNRESTORED] == 1
        assert attributes[t.CELGATE_ENFORCEMENT] == t.ENFORCEMENT_REDACTED
    (decision,) = points(reader, t.METRIC_DECISIONS)
    assert decision.attributes[t.CELGATE_OUTCOME] == "redacted"
