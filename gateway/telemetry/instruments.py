"""The metric instruments of one gateway, created once from its meter."""

from __future__ import annotations

from opentelemetry import metrics

from gateway.telemetry.names import (
    METRIC_BUDGET_UTILIZATION,
    METRIC_COST,
    METRIC_DECISIONS,
    METRIC_ENFORCEMENT_BLOCKED,
    METRIC_OPERATION_DURATION,
    METRIC_POLICY_RELOAD_FAILURES,
    METRIC_TELEMETRY_DROPPED,
    METRIC_TOKEN_USAGE,
    OPERATION_DURATION_BUCKETS,
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
        self.dropped = meter.create_counter(
            METRIC_TELEMETRY_DROPPED,
            unit="{item}",
            description="Spans, metric points and decision-log lines that were lost",
        )
