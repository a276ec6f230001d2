"""OpenTelemetry for celgate: every attribute and metric name (one place, DESIGN.md "Telemetry
names"), the providers built from the standard OTEL_* environment variables, and the per-request
`Observation` that puts the policy decision on the spans, the metrics and the decision log.

Span tree of one RPC: a SERVER span `gateway.v1.GatewayService/<Method>` continuing the caller's
W3C trace context, with one CLIENT span `chat <upstream model>` per upstream attempt under it.

Nothing here ever receives content: the pipeline hands over detector ids, levels, model aliases,
token counts and costs, never prompts, completions or matched values (DESIGN.md invariant 4).
Error messages are not recorded either, only their stable kind (`error.type`), because an
upstream's error text may quote the request.

With no exporter configured the tracer and meter are the API's no-op implementations: the
request path then pays for a few no-op calls, and nothing is exported or created.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import grpc
from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from gateway.audit import AttemptRecord, Candidate, DecisionLog, DecisionRecord
from gateway.budget.charging import Charger
from gateway.chat import Usage
from gateway.config import Config, ConfigError, ModelConfig
from gateway.errors import BudgetExhausted, GatewayError
from gateway.levels import Level
from gateway.providers.base import UpstreamError
from gateway.v1 import gateway_pb2, policy_pb2

log = logging.getLogger(__name__)

# -- names: GenAI semantic conventions -------------------------------------------------------

GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
# No settled convention for cost yet: the name OpenLIT and Langfuse use, in USD.
GEN_AI_USAGE_COST = "gen_ai.usage.cost"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
OPERATION_CHAT = "chat"

# -- names: RPC semantic conventions (the SERVER span) ---------------------------------------

RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code"

# -- names: the policy decision --------------------------------------------------------------

CELGATE_TENANT = "celgate.tenant"
CELGATE_TASK_TYPE = "celgate.task_type"
CELGATE_COMPLEXITY = "celgate.complexity"
CELGATE_CLASSIFICATION = "celgate.classification"
CELGATE_DETECTORS = "celgate.detectors"
CELGATE_POLICY_NAME = "celgate.policy.name"
CELGATE_POLICY_REVISION = "celgate.policy.revision"
CELGATE_POLICY_RULE = "celgate.policy.rule"
CELGATE_LOCATION = "celgate.location"
CELGATE_FALLBACK_ATTEMPT = "celgate.fallback.attempt"  # 1 for the first attempt
CELGATE_ENFORCEMENT = "celgate.enforcement"  # allowed, rerouted or denied
# Additions of ours, beyond DESIGN.md's list:
CELGATE_MODEL = "celgate.model"  # the catalogue alias (RouteInfo.model)
CELGATE_DECISION_ID = "celgate.decision_id"  # joins a trace to its decision-log line
CELGATE_OUTCOME = "celgate.outcome"  # allowed, rerouted, or the refusal's reason in lower case
CELGATE_ENFORCEMENT_REASON = "celgate.enforcement.reason"  # DATA_RESIDENCY, MODEL_NOT_ALLOWED...
CELGATE_TELEMETRY_SIGNAL = "celgate.telemetry.signal"  # traces, metrics or decision_log

ENFORCEMENT_ALLOWED = "allowed"
ENFORCEMENT_REROUTED = "rerouted"
ENFORCEMENT_DENIED = "denied"

# -- metrics ---------------------------------------------------------------------------------

METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"
METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"
METRIC_COST = "celgate.cost"
METRIC_DECISIONS = "celgate.decisions"
METRIC_ENFORCEMENT_BLOCKED = "celgate.enforcement.blocked"
METRIC_POLICY_RELOAD_FAILURES = "celgate.policy.reload.failures"
METRIC_BUDGET_UTILIZATION = "celgate.budget.utilization"
METRIC_TELEMETRY_DROPPED = "celgate.telemetry.dropped"

# The explicit bucket boundaries the GenAI semantic conventions advise.
TOKEN_USAGE_BUCKETS: Sequence[float] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
OPERATION_DURATION_BUCKETS: Sequence[float] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
INSTRUMENTATION_SCOPE = "celgate"
DEFAULT_SERVICE_NAME = "celgate"

# The residency and access refusals raised by enforcement (enforce.py) and the tenant ceiling:
# a request refused for one of these has enforcement outcome `denied`.
ENFORCEMENT_REASONS = frozenset(
    {
        "DATA_RESIDENCY",
        "MODEL_NOT_ALLOWED",
        "NO_CANDIDATE",
        "UNKNOWN_MODEL",
        "CLASSIFICATION_CEILING",
    }
)
# gRPC codes that mean the server failed (semantic conventions for RPC server spans); a refusal
# (PERMISSION_DENIED, RESOURCE_EXHAUSTED...) is the caller's problem and leaves the status unset,
# visible through `error.type` and `rpc.grpc.status_code` instead.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

Signal = Literal["traces", "metrics", "decision_log"]


def error_type(error: BaseException) -> str:
    """A low-cardinality `error.type`: the upstream failure kind, the gateway's ErrorInfo
    reason, or the exception class; never its message (it may quote content)."""
    if isinstance(error, UpstreamError):
        return error.kind
    if isinstance(error, GatewayError):
        return error.reason
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return type(error).__qualname__


# -- export ----------------------------------------------------------------------------------


class DropCounter:
    """Telemetry lost on the way out (a full span queue, a failed export, a failed decision-log
    write). Kept as plain numbers too, so it is visible even when the metric cannot be sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {"traces": 0, "metrics": 0, "decision_log": 0}
        self.instrument: metrics.Counter | None = None

    def add(self, signal: Signal, count: int, reason: str) -> None:
        if count <= 0:
            return
        with self._lock:
            first = self.counts[signal] == 0
            self.counts[signal] += count
        if first:  # once per signal: a dead collector must not flood the log
            log.warning("telemetry lost (%s, %s); further losses are only counted", signal, reason)
        if self.instrument is not None:
            self.instrument.add(count, {CELGATE_TELEMETRY_SIGNAL: signal, ERROR_TYPE: reason})


class _CountingSpanExporter(SpanExporter):
    """Counts spans whose export failed (a dead or refusing collector)."""

    def __init__(self, inner: SpanExporter, processor: CountingBatchSpanProcessor) -> None:
        self._inner = inner
        self._processor = processor
        self._shutdown_takes_timeout = (
            "timeout_millis" in inspect.signature(inner.shutdown).parameters
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._processor.taken(len(spans))
        try:
            result = self._inner.export(spans)
        except Exception:
            self._processor.drops.add("traces", len(spans), "export_failed")
            raise
        if result is not SpanExportResult.SUCCESS:
            self._processor.drops.add("traces", len(spans), "export_failed")
        return result

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._shutdown_takes_timeout:
            self._inner.shutdown(timeout_millis=timeout_millis)  # type: ignore[call-arg]
        else:
            self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batching processor (bounded queue, export on its own thread), counting the
    spans it drops. The SDK drops silently when the queue is full (a slow or dead collector),
    so the spans queued but not yet taken by the exporter are tracked here."""

    def __init__(self, exporter: SpanExporter, drops: DropCounter) -> None:
        self.drops = drops
        self._max_queue = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self._pending = 0
        self._pending_lock = threading.Lock()
        # The SDK refuses a batch larger than the queue; a small queue (tests, tight memory)
        # caps the batch instead of failing start-up.
        batch = min(_env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), self._max_queue)
        super().__init__(
            _CountingSpanExporter(exporter, self),
            max_queue_size=self._max_queue,
            max_export_batch_size=batch,
        )

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            with self._pending_lock:
                full = self._pending >= self._max_queue
                if not full:
                    self._pending += 1
            if full:  # the SDK evicts the oldest queued span to make room for this one
                self.drops.add("traces", 1, "queue_full")
        super().on_end(span)

    def taken(self, count: int) -> None:
        with self._pending_lock:
            self._pending = max(0, self._pending - count)

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        # BatchSpanProcessor.shutdown always allows 30 s; the gateway's stop needs its bound.
        self._batch_processor.shutdown(timeout_millis=timeout_millis)


class CountingMetricExporter(MetricExporter):
    """Counts the data points of metric exports that failed. Cumulative sums recover at the
    next successful export; the count says how much the collector missed meanwhile."""

    def __init__(self, inner: MetricExporter, drops: DropCounter) -> None:
        # The reader asks the exporter for its temporality and aggregation preferences.
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._drops = drops

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis)
        except Exception:
            self._drops.add("metrics", _data_points(metrics_data), "export_failed")
            raise
        if result is not MetricExportResult.SUCCESS:
            self._drops.add("metrics", _data_points(metrics_data), "export_failed")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis)


def _data_points(data: MetricsData) -> int:
    return sum(
        len(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    )


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _exporters(signal: Literal["traces", "metrics"]) -> set[str]:
    """The exporters OTEL_<SIGNAL>_EXPORTER asks for (default `otlp`), minus `otlp` when no
    endpoint is set: DESIGN.md, nothing is exported unless an endpoint is configured."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return set()
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    names = {
        n.strip().lower() for n in (os.environ.get(variable) or "otlp").split(",") if n.strip()
    }
    unknown = names - {"otlp", "console", "none"}
    if unknown:
        raise ConfigError(
            f"{variable}={','.join(sorted(unknown))} is not supported; use otlp, console or none"
        )
    if "none" in names:
        return set()
    endpoint = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint:
        names.discard("otlp")
    return names


def _protocol(signal: Literal["traces", "metrics"]) -> str:
    variable = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    value = os.environ.get(variable) or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    if value not in ("grpc", "http/protobuf"):
        raise ConfigError(
            f"{variable} / OTEL_EXPORTER_OTLP_PROTOCOL={value!r} is not supported;"
            " use grpc or http/protobuf"
        )
    return value


def _span_exporters() -> list[SpanExporter]:
    # The exporters read endpoint, headers, timeout, compression and certificates from the
    # OTEL_EXPORTER_OTLP_* variables themselves.
    exporters: list[SpanExporter] = []
    names = _exporters("traces")
    if "otlp" in names:
        if _protocol("traces") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
        exporters.append(OTLPSpanExporter())
    if "console" in names:
        exporters.append(ConsoleSpanExporter())
    return exporters


def _metric_exporters() -> list[MetricExporter]:
    exporters: list[MetricExporter] = []
    names = _exporters("metrics")
    if "otlp" in names:
        if _protocol("metrics") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
                OTLPMetricExporter,
            )
        exporters.append(OTLPMetricExporter())
    if "console" in names:
        exporters.append(ConsoleMetricExporter())
    return exporters


def resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES as the SDK reads them; service name
    `celgate` when neither names one."""
    detected = Resource.create()
    name = str(detected.attributes.get(SERVICE_NAME, ""))
    if name.startswith("unknown_service"):
        return detected.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return detected


# -- the recorder ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ModelAttributes:
    """What every span and metric point of one catalogue model carries, computed once."""

    alias: str
    span_name: str
    location: str
    span: Mapping[str, AttributeValue]
    metric: Mapping[str, AttributeValue]


def _model_attributes(alias: str, model: ModelConfig) -> _ModelAttributes:
    url = urlsplit(model.base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    common: dict[str, AttributeValue] = {
        GEN_AI_OPERATION_NAME: OPERATION_CHAT,
        GEN_AI_PROVIDER_NAME: model.provider,
        GEN_AI_REQUEST_MODEL: model.upstream_model,
        SERVER_ADDRESS: url.hostname or "",
        SERVER_PORT: port,
    }
    return _ModelAttributes(
        alias=alias,
        span_name=f"{OPERATION_CHAT} {model.upstream_model}",
        location=model.location,
        span={**common, CELGATE_MODEL: alias, CELGATE_LOCATION: model.location},
        metric=common,
    )


class Telemetry:
    """The tracer, the instruments and the decision log of one gateway. Providers are passed in
    (tests use in-memory exporters) or built from the environment by `from_config`; they are not
    installed globally, so several gateways in one process keep their telemetry apart."""

    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        decision_log: DecisionLog | None = None,
        drops: DropCounter | None = None,
        processors: Sequence[CountingBatchSpanProcessor] = (),
        shutdown_timeout_s: float = 5.0,
    ) -> None:
        self.tracer_provider = tracer_provider
        self._processors = tuple(processors)
        self.meter_provider = meter_provider
        self.decision_log = decision_log
        self.drops = drops or DropCounter()
        self.shutdown_timeout_s = shutdown_timeout_s
        self.models = {alias: _model_attributes(alias, m) for alias, m in models.items()}
        self.tracer: trace.Tracer = (
            tracer_provider.get_tracer(INSTRUMENTATION_SCOPE)
            if tracer_provider is not None
            else trace.NoOpTracer()
        )
        meter: metrics.Meter = (
            meter_provider.get_meter(INSTRUMENTATION_SCOPE)
            if meter_provider is not None
            else metrics.NoOpMeter(INSTRUMENTATION_SCOPE)
        )
        self.token_usage = meter.create_histogram(
            METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Input and output tokens of each upstream model call",
            explicit_bucket_boundaries_advisory=TOKEN_USAGE_BUCKETS,
        )
        self.operation_duration = meter.create_histogram(
            METRIC_OPERATION_DURATION,
            unit="s",
            description="Duration of each upstream model call",
            explicit_bucket_boundaries_advisory=OPERATION_DURATION_BUCKETS,
        )
        self.cost = meter.create_counter(
            METRIC_COST, unit="USD", description="Cost charged for model calls, in USD"
        )
        self.decisions = meter.create_counter(
            METRIC_DECISIONS,
            unit="{decision}",
            description="Routing decisions by policy rule and outcome",
        )
        self.enforcement_blocked = meter.create_counter(
            METRIC_ENFORCEMENT_BLOCKED,
            unit="{candidate}",
            description="Candidate models refused by data-residency or tenant enforcement",
        )
        self.policy_reload_failures = meter.create_counter(
            METRIC_POLICY_RELOAD_FAILURES,
            unit="{failure}",
            description="Policy loads that failed (the last good revision keeps serving)",
        )
        self.budget_utilization = meter.create_gauge(
            METRIC_BUDGET_UTILIZATION,
            unit="1",
            description="(spent + reserved) / limit of the tenant's most constrained budget",
        )
        self.drops.instrument = meter.create_counter(
            METRIC_TELEMETRY_DROPPED,
            unit="{item}",
            description="Spans, metric points and decision-log lines that were lost",
        )
        if decision_log is not None:
            decision_log.on_error = lambda: self.drops.add("decision_log", 1, "write_failed")

    @classmethod
    def from_config(cls, config: Config) -> Telemetry:
        """Exporters from the OTEL_* environment (none when no endpoint is set) and the
        decision log from `audit.decision_log`. Raises ConfigError on an unusable setting."""
        drops = DropCounter()
        span_exporters = _span_exporters()
        metric_exporters = _metric_exporters()
        tracer_provider = meter_provider = None
        processors = [CountingBatchSpanProcessor(e, drops) for e in span_exporters]
        if span_exporters or metric_exporters:
            shared = resource()
            if processors:
                tracer_provider = TracerProvider(resource=shared)
                for processor in processors:
                    tracer_provider.add_span_processor(processor)
            if metric_exporters:
                # Interval and timeout from OTEL_METRIC_EXPORT_INTERVAL / _TIMEOUT.
                readers = [
                    PeriodicExportingMetricReader(CountingMetricExporter(exporter, drops))
                    for exporter in metric_exporters
                ]
                meter_provider = MeterProvider(resource=shared, metric_readers=readers)
        try:
            decision_log = DecisionLog.open(config.audit.decision_log, config.base_dir)
        except OSError as exc:
            raise ConfigError(
                f"audit.decision_log: cannot open {config.audit.decision_log!r}: {exc.strerror}"
            ) from None
        return cls(
            config.models,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            decision_log=decision_log,
            drops=drops,
            processors=processors,
            shutdown_timeout_s=config.telemetry.shutdown_timeout_s,
        )

    @property
    def exporting(self) -> bool:
        return self.tracer_provider is not None or self.meter_provider is not None

    def observe(
        self, method: str, metadata: Iterable[tuple[str, str | bytes]] = (), *, audited: bool = True
    ) -> Observation:
        """Start observing one RPC; `metadata` carries the caller's `traceparent`. `audited`:
        whether it ends with a decision-log line (not for ListModels)."""
        return Observation(self, method, metadata, audited)

    def policy_changed(self, policy: object | None, error: str | None) -> None:
        """The PolicyStore's on_change callback: count failed loads."""
        if error is not None:
            self.policy_reload_failures.add(1)

    def shutdown(self) -> None:
        """Flush and stop exporting, bounded by `shutdown_timeout_s` (blocking: run it off the
        event loop). A dead collector costs the bound, then what was queued is dropped."""
        end = time.monotonic() + self.shutdown_timeout_s

        def remaining_ms() -> int:
            return max(0, int((end - time.monotonic()) * 1000))

        if self.tracer_provider is not None:
            # TracerProvider.shutdown takes no timeout: shut our processors down with ours.
            for processor in self._processors:
                processor.shutdown(timeout_millis=remaining_ms())
            if not self._processors:
                self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown(timeout_millis=remaining_ms())
        if self.decision_log is not None:
            self.decision_log.close()


@dataclass(slots=True)
class _OpenAttempt:
    model: _ModelAttributes
    span: trace.Span
    number: int
    started: float
    usage: Usage | None = None
    cost_usd: float = 0.0


class Observation:
    """One RPC as telemetry sees it: the SERVER span, the decision attributes as the pipeline
    learns them, a CLIENT span per attempt (through `hooks`), and at `finish` the metrics and
    the decision-log line. Methods are called on the event loop, in pipeline order."""

    def __init__(
        self,
        telemetry: Telemetry,
        method: str,
        metadata: Iterable[tuple[str, str | bytes]],
        audited: bool,
    ) -> None:
        self._telemetry = telemetry
        self._started = time.perf_counter()
        self._audited = audited
        self.decision_id = uuid.uuid4().hex
        carrier = {key: value for key, value in metadata if isinstance(value, str)}
        self.span = telemetry.tracer.start_span(
            f"{SERVICE}/{method}",
            context=propagate.extract(carrier) if carrier else None,
            kind=SpanKind.SERVER,
            attributes={RPC_SYSTEM: "grpc", RPC_SERVICE: SERVICE, RPC_METHOD: method},
        )
        self._recording = self.span.is_recording()
        self._parent = trace.set_span_in_context(self.span)
        span_context = self.span.get_span_context()
        self.record = DecisionRecord(
            decision_id=self.decision_id,
            time=datetime.now(UTC).isoformat(timespec="milliseconds"),
            rpc=method,
            trace_id=format(span_context.trace_id, "032x") if span_context.is_valid else None,
        )
        # Decision attributes shared by the SERVER span and every CLIENT span.
        self._decision: dict[str, AttributeValue] = {}
        self._attempt: _OpenAttempt | None = None
        self._attempts = 0
        self._cost_usd = 0.0
        self._utilization: float | None = None
        self._blocked: list[tuple[str, str]] = []  # (model, reason code)
        self._finished = False

    # -- what the pipeline learns, stage by stage -----------------------------------------------

    def authenticated(self, tenant: str) -> None:
        self.record.tenant = tenant
        self._decision[CELGATE_TENANT] = tenant

    def inspected(
        self,
        classification: Level,
        declared: Level | None,
        detectors: Sequence[str],
        task_type: str,
        complexity: float,
    ) -> None:
        record = self.record
        record.classification = classification.name
        record.declared_classification = declared.name if declared is not None else None
        record.detectors = list(dict.fromkeys(detectors))
        record.task_type = task_type
        record.complexity = complexity
        self._decision.update(
            {
                CELGATE_CLASSIFICATION: classification.name,
                CELGATE_DETECTORS: tuple(record.detectors),
                CELGATE_TASK_TYPE: task_type,
                CELGATE_COMPLEXITY: complexity,
            }
        )

    def budget(self, state: policy_pb2.BudgetState) -> None:
        if state.limited:
            self._utilization = state.utilization

    def decided(self, policy_name: str, revision: str, rule: str) -> None:
        self.record.policy_name = policy_name
        self.record.policy_revision = revision
        self.record.rule = rule
        self._decision.update(
            {
                CELGATE_POLICY_NAME: policy_name,
                CELGATE_POLICY_REVISION: revision,
                CELGATE_POLICY_RULE: rule,
            }
        )

    def considered(self, candidates: Sequence[tuple[str, tuple[str, str] | None]]) -> None:
        """The policy's candidates in order, each with enforcement's (reason code, message)
        when it is refused."""
        self.record.candidates = [
            Candidate(alias, refusal is None, None if refusal is None else refusal[1])
            for alias, refusal in candidates
        ]
        self._blocked = [(alias, refusal[0]) for alias, refusal in candidates if refusal]

    def enforced(self, chain: Sequence[str], rerouted_from: str | None) -> None:
        outcome = ENFORCEMENT_ALLOWED if rerouted_from is None else ENFORCEMENT_REROUTED
        self.record.enforcement = outcome
        self._decision[CELGATE_ENFORCEMENT] = outcome
        listed = {c.model for c in self.record.candidates}
        for alias in chain:  # a reroute substitute the policy did not name
            if alias not in listed:
                reason = f"substitute for {rerouted_from!r} (enforcement.reroute_order)"
                self.record.candidates.append(Candidate(alias, True, reason))

    def routed(self, model: str) -> None:
        """The dry run's would-be model (Route calls none): on the SERVER span only."""
        self._decision[CELGATE_MODEL] = model
        self._decision[CELGATE_LOCATION] = self._telemetry.models[model].location

    def hooks(self, charger: Charger) -> ObservedHooks:
        return ObservedHooks(charger, self)

    def answered(self, model: str, response_model: str, finish_reason: str) -> None:
        """The answer is complete (for a stream: its last chunk): end the CLIENT span."""
        self.record.model = model
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            self._end_attempt(attempt, None, response_model, finish_reason)

    # -- attempts (via ObservedHooks) -----------------------------------------------------------

    def attempt_started(self, alias: str) -> None:
        if self._attempt is not None:  # defensive: never leave a span open
            self._end_attempt(self._attempt, "abandoned", "", "")
        self._attempts += 1
        model = self._telemetry.models[alias]
        span: trace.Span
        if self._recording:
            span = self._telemetry.tracer.start_span(
                model.span_name,
                context=self._parent,
                kind=SpanKind.CLIENT,
                attributes={
                    **model.span,
                    **self._decision,
                    CELGATE_FALLBACK_ATTEMPT: self._attempts,
                },
            )
        else:
            span = trace.INVALID_SPAN
        self._attempt = _OpenAttempt(model, span, self._attempts, time.perf_counter())

    def attempt_skipped(self, alias: str, reason: str) -> None:
        """A candidate passed over without a call (budget, no key, open circuit breaker)."""
        self.record.attempts.append(AttemptRecord(alias, reason, 0.0))

    def attempt_succeeded(self, alias: str, usage: Usage | None, cost_usd: float) -> None:
        # The span stays open until `answered` brings the response model and finish reason.
        attempt = self._attempt
        if attempt is not None and attempt.model.alias == alias:
            attempt.usage = usage
            attempt.cost_usd = cost_usd
            self._cost_usd += cost_usd

    def attempt_failed(self, alias: str, error: BaseException) -> None:
        attempt = self._attempt
        if attempt is not None and attempt.model.alias == alias:
            self._attempt = None
            self._end_attempt(attempt, error_type(error), "", "")

    def _end_attempt(
        self, attempt: _OpenAttempt, error: str | None, response_model: str, finish_reason: str
    ) -> None:
        telemetry = self._telemetry
        model = attempt.model
        duration = time.perf_counter() - attempt.started
        self.record.attempts.append(AttemptRecord(model.alias, error, round(duration * 1000, 3)))
        point: dict[str, AttributeValue] = dict(model.metric)
        if response_model:
            point[GEN_AI_RESPONSE_MODEL] = response_model
        usage = attempt.usage
        if usage is not None:
            telemetry.token_usage.record(usage.input_tokens, {**point, GEN_AI_TOKEN_TYPE: "input"})
            telemetry.token_usage.record(
                usage.output_tokens, {**point, GEN_AI_TOKEN_TYPE: "output"}
            )
        if error is not None:
            point[ERROR_TYPE] = error
        telemetry.operation_duration.record(duration, point)
        if error is None:
            telemetry.cost.add(
                attempt.cost_usd,
                {
                    CELGATE_TENANT: self.record.tenant or "",
                    CELGATE_TASK_TYPE: self.record.task_type or "",
                    CELGATE_MODEL: model.alias,
                    GEN_AI_REQUEST_MODEL: model.metric[GEN_AI_REQUEST_MODEL],
                    CELGATE_LOCATION: model.location,
                },
            )
        span = attempt.span
        if span.is_recording():
            ended: dict[str, AttributeValue] = {}
            if response_model:
                ended[GEN_AI_RESPONSE_MODEL] = response_model
            if finish_reason:
                ended[GEN_AI_RESPONSE_FINISH_REASONS] = (finish_reason,)
            if usage is not None:
                ended[GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
                ended[GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
            if error is None:
                ended[GEN_AI_USAGE_COST] = attempt.cost_usd
            else:
                ended[ERROR_TYPE] = error
                span.set_status(Status(StatusCode.ERROR, error))
            span.set_attributes(ended)
            span.end()

    # -- the end ----------------------------------------------------------------------------

    def finish(self, code: grpc.StatusCode, error: BaseException | None = None) -> None:
        """The RPC is over with `code`: end the spans, record the metrics, write the
        decision-log line. Idempotent."""
        if self._finished:
            return
        self._finished = True
        telemetry = self._telemetry
        record = self.record
        if self._attempt is not None:  # a stream the caller abandoned, or a failed settle
            attempt, self._attempt = self._attempt, None
            self._end_attempt(attempt, error_type(error) if error else "incomplete", "", "")
        reason = None if error is None else error_type(error)
        record.status = code.name
        record.reason = reason
        record.cost_usd = self._cost_usd
        record.latency_ms = round((time.perf_counter() - self._started) * 1000, 3)
        if reason in ENFORCEMENT_REASONS:
            record.enforcement = ENFORCEMENT_DENIED
            self._decision[CELGATE_ENFORCEMENT] = ENFORCEMENT_DENIED
            if not self._blocked and isinstance(error, GatewayError):
                self._blocked = [(error.metadata.get("model", ""), reason)]
        for model, block_reason in self._blocked:
            telemetry.enforcement_blocked.add(
                1,
                {
                    CELGATE_MODEL: model,
                    CELGATE_ENFORCEMENT_REASON: block_reason,
                    CELGATE_CLASSIFICATION: record.classification or "",
                    CELGATE_ENFORCEMENT: record.enforcement or "",
                },
            )
        if self._utilization is not None and record.tenant is not None:
            telemetry.budget_utilization.set(self._utilization, {CELGATE_TENANT: record.tenant})
        if self._audited and record.tenant is not None:
            if error is None:
                outcome = record.enforcement or ENFORCEMENT_ALLOWED
            else:
                outcome = (reason or "error").lower()
            telemetry.decisions.add(
                1,
                {
                    CELGATE_POLICY_RULE: record.rule or "",
                    CELGATE_OUTCOME: outcome,
                    RPC_METHOD: record.rpc,
                },
            )
        if self._recording:
            attributes = dict(self._decision)
            attributes[CELGATE_DECISION_ID] = self.decision_id
            attributes[RPC_GRPC_STATUS_CODE] = code.value[0]
            if record.model is not None:
                answered_by = telemetry.models[record.model]
                attributes[CELGATE_MODEL] = answered_by.alias
                attributes[CELGATE_LOCATION] = answered_by.location
            if record.attempts:
                attributes[CELGATE_FALLBACK_ATTEMPT] = self._attempts
            if record.model is not None and record.rpc != "Route":
                attributes[GEN_AI_USAGE_COST] = self._cost_usd
            if reason is not None:
                attributes[ERROR_TYPE] = reason
                if code in _SERVER_FAULTS:
                    self.span.set_status(Status(StatusCode.ERROR, reason))
            self.span.set_attributes(attributes)
            self.span.end()
        if self._audited and telemetry.decision_log is not None:
            telemetry.decision_log.write(record)


class ObservedHooks:
    """The dispatcher's attempt hooks: the budget's Charger first (it may refuse the attempt,
    and it knows the cost), then the CLIENT span of the attempt."""

    def __init__(self, charger: Charger, observation: Observation) -> None:
        self._charger = charger
        self._observation = observation

    async def begin(self, alias: str) -> None:
        try:
            await self._charger.begin(alias)
        except BudgetExhausted:
            self._observation.attempt_skipped(alias, "budget")
            raise
        self._observation.attempt_started(alias)

    async def fail(self, alias: str, error: BaseException) -> None:
        try:
            await self._charger.fail(alias, error)
        finally:
            self._observation.attempt_failed(alias, error)

    async def succeed(self, alias: str, usage: Usage | None) -> None:
        try:
            await self._charger.succeed(alias, usage)
        except BaseException as exc:
            self._observation.attempt_failed(alias, exc)
            raise
        self._observation.attempt_succeeded(alias, usage, self._charger.cost_usd)

    def skipped(self, alias: str, reason: str) -> None:
        self._charger.skipped(alias, reason)
        self._observation.attempt_skipped(alias, reason)
