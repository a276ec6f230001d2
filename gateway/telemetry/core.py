"""`Telemetry`: the tracer, the instruments, the recorder and the decision log of one gateway,
and their bounded shutdown."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from gateway.audit import DecisionLog
from gateway.config import Config, ConfigError, ModelConfig
from gateway.outcome import Outcome
from gateway.telemetry import export
from gateway.telemetry.export import CountingBatchSpanProcessor, DropCounter
from gateway.telemetry.instruments import Instruments
from gateway.telemetry.names import INSTRUMENTATION_SCOPE
from gateway.telemetry.prometheus import MetricsEndpoint
from gateway.telemetry.record import Recorder, model_attributes


class Telemetry:
    """Providers are passed in (tests use in-memory exporters) or built from the environment by
    `from_config`; they are not installed globally, so several gateways in one process keep
    their telemetry apart."""

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
        metrics_endpoint: MetricsEndpoint | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        # GET /metrics, when `telemetry.prometheus.listen` is set: its reader is one of the
        # meter provider's; `start` binds it.
        self.metrics_endpoint = metrics_endpoint
        self._processors = tuple(processors)
        self.meter_provider = meter_provider
        self.decision_log = decision_log
        self.drops = drops or DropCounter()
        self.shutdown_timeout_s = shutdown_timeout_s
        self.models = {alias: model_attributes(alias, m) for alias, m in models.items()}
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
        self.instruments = Instruments(meter)
        self.drops.instrument = self.instruments.dropped
        if decision_log is not None:
            decision_log.on_error = lambda: self.drops.add("decision_log", 1, "write_failed")
        self.recorder = Recorder(self.tracer, self.instruments, self.models, decision_log)

    @classmethod
    def from_config(cls, config: Config) -> Telemetry:
        """Exporters from the OTEL_* environment (none when no endpoint is set) and the
        decision log from `audit.decision_log`. Raises ConfigError on an unusable setting."""
        drops = DropCounter()
        listen = config.telemetry.prometheus.listen
        endpoint = MetricsEndpoint(listen) if listen is not None else None
        exporting = export.from_environment(
            drops, pull=(endpoint.reader,) if endpoint is not None else ()
        )
        try:
            decision_log = DecisionLog.open(config.audit.decision_log, config.base_dir)
        except OSError as exc:
            raise ConfigError(
                f"audit.decision_log: cannot open {config.audit.decision_log!r}: {exc.strerror}"
            ) from None
        return cls(
            config.models,
            tracer_provider=exporting.tracer_provider,
            meter_provider=exporting.meter_provider,
            decision_log=decision_log,
            drops=drops,
            processors=exporting.processors,
            shutdown_timeout_s=config.telemetry.shutdown_timeout_s,
            metrics_endpoint=endpoint,
        )

    def start(self) -> None:
        """Open the Prometheus listener, when there is one. Raises ConfigError naming
        `telemetry.prometheus.listen` when its address cannot be bound."""
        if self.metrics_endpoint is not None and not self.metrics_endpoint.port:
            self.metrics_endpoint.start()

    @property
    def exporting(self) -> bool:
        return self.tracer_provider is not None or self.meter_provider is not None

    def record(self, outcome: Outcome) -> None:
        """The request is over: its spans, metric points and decision-log line."""
        self.recorder.record(outcome)

    def policy_changed(self, policy: object | None, error: str | None) -> None:
        """The PolicyStore's on_change callback: count failed loads."""
        if error is not None:
            self.instruments.policy_reload_failures.add(1)

    def shutdown(self) -> None:
        """Flush and stop exporting, bounded by `shutdown_timeout_s` (blocking: run it off the
        event loop). A dead collector costs the bound, then what was queued is dropped."""
        end = time.monotonic() + self.shutdown_timeout_s
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.stop()

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
