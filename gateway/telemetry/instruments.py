"""The metric instruments of one gateway, created once from its meter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from opentelemetry import metrics

from gateway.telemetry.names import (
    METRIC_BUDGET_UTILIZATION,
    METRIC_COST,
    METRIC_DECISIONS,
    METRIC_ENFORCEMENT_BLOCKED,
    METRIC_OPERATION_DURATION,
    METRIC_POLICY_RELOAD_FAILURES,
    METRIC_SERVER_CALL_DURATION,
    METRIC_SHADOW_DECISIONS,
    METRIC_TELEMETRY_DROPPED,
    METRIC_TIME_TO_FIRST_CHUNK,
    METRIC_TOKEN_USAGE,
    OPERATION_DURATION_BUCKETS,
    SHADOW_AGREEMENT_KEYS,
    TOKEN_USAGE_BUCKETS,
)


class Instruments:
    """Created on the SDK's meter when metrics are exported, else on the API's no-op meter."""

    def __init__(self, meter: metrics.Meter) -> None:
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
        self.time_to_first_chunk = meter.create_histogram(
            METRIC_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time from sending a streamed upstream request to its first chunk",
            explicit_bucket_boundaries_advisory=OPERATION_DURATION_BUCKETS,
        )
        self.server_call_duration = meter.create_histogram(
            METRIC_SERVER_CALL_DURATION,
            unit="s",
            description="Duration of each call to the gateway, as its SERVER span measures it",
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
        # Counted in a plain dict and reported when the reader collects: a synchronous
        # counter's add costs about as much as a policy evaluation (bench/bench_shadow.py), a
        # dict increment a fraction of a microsecond. Keys: (live model, shadow model,
        # agreement), the attribute values of SHADOW_AGREEMENT_KEYS.
        self.shadow_decisions: Counter[tuple[str, str, str]] = Counter()
        meter.create_observable_counter(
            METRIC_SHADOW_DECISIONS,
            callbacks=[self._observe_shadow_decisions],
            unit="{decision}",
            description="Shadow policy decisions, agreeing or not with the live route",
        )
        self.dropped = meter.create_counter(
            METRIC_TELEMETRY_DROPPED,
            unit="{item}",
            description="Spans, metric points and decision-log lines that were lost",
        )

    def _observe_shadow_decisions(
        self, options: metrics.CallbackOptions
    ) -> Iterable[metrics.Observation]:
        # Called on the reader's thread: copy first (one C-level call under the GIL), so the
        # loop's increments cannot change the dict while it is read.
        counts = dict(self.shadow_decisions)
        return [
            metrics.Observation(count, dict(zip(SHADOW_AGREEMENT_KEYS, key, strict=True)))
            for key, count in counts.items()
        ]
