"""Export set-up: the span and metric exporters the standard OTEL_* environment asks for, the
resource, and the counting wrappers that make lost telemetry visible (`celgate.telemetry.dropped`).

With no endpoint configured nothing is exported and no SDK provider is built: the gateway then
uses the API's no-op tracer and meter.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricReader,
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

from gateway.config import ConfigError
from gateway.telemetry.names import (
    CELGATE_TELEMETRY_SIGNAL,
    DEFAULT_SERVICE_NAME,
    ERROR_TYPE,
    Signal,
)

log = logging.getLogger(__name__)


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
    endpoint is set: nothing is exported unless an endpoint is configured."""
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


def span_exporters() -> list[SpanExporter]:
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


def metric_exporters() -> list[MetricExporter]:
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


@dataclass(frozen=True, slots=True)
class Exporting:
    """The SDK providers the environment asks for (None: that signal is not exported) and the
    span processors whose shutdown the gateway bounds."""

    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None
    processors: tuple[CountingBatchSpanProcessor, ...]


def from_environment(drops: DropCounter, pull: Sequence[MetricReader] = ()) -> Exporting:
    """Providers from the OTEL_* environment, plus `pull`: readers that are scraped rather than
    pushing (the Prometheus endpoint), which need a meter provider of their own even when no
    OTLP endpoint is set. Raises ConfigError on an unusable setting."""
    span_exporters_ = span_exporters()
    metric_exporters_ = metric_exporters()
    tracer_provider = meter_provider = None
    processors = tuple(CountingBatchSpanProcessor(e, drops) for e in span_exporters_)
    if span_exporters_ or metric_exporters_ or pull:
        shared = resource()
        if processors:
            tracer_provider = TracerProvider(resource=shared)
            for processor in processors:
                tracer_provider.add_span_processor(processor)
        if metric_exporters_ or pull:
            # Interval and timeout from OTEL_METRIC_EXPORT_INTERVAL / _TIMEOUT.
            readers: list[MetricReader] = [
                PeriodicExportingMetricReader(CountingMetricExporter(exporter, drops))
                for exporter in metric_exporters_
            ]
            readers.extend(pull)
            meter_provider = MeterProvider(resource=shared, metric_readers=readers)
    return Exporting(tracer_provider, meter_provider, processors)
