"""Recording one finished request: its `Outcome` becomes the SERVER span, one CLIENT span per
upstream attempt, the metric points and the decision-log line, in one call at the end.

Span tree: a SERVER span `<service>/<method>` continuing the caller's W3C trace context, with
one CLIENT span `chat <upstream model>` per upstream call under it. The spans are written after
the fact with the times the request and its attempts took (no span is open while a request
runs), so recording is one pass over an immutable value.

Nothing here ever sees content (invariant 4): the outcome holds detector ids, levels, model
aliases, token counts and costs. Error messages are not recorded either, only their stable kind
(`error.type`), because an upstream's error text may quote the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from gateway.audit import DecisionLog, DecisionRecord
from gateway.config import ModelConfig
from gateway.outcome import ALLOWED, Attempt, Outcome
from gateway.telemetry.instruments import Instruments
from gateway.telemetry.names import (
    CELGATE_CLASSIFICATION,
    CELGATE_COMPLEXITY,
    CELGATE_DECISION_ID,
    CELGATE_DETECTORS,
    CELGATE_ENFORCEMENT,
    CELGATE_ENFORCEMENT_REASON,
    CELGATE_FALLBACK_ATTEMPT,
    CELGATE_LOCATION,
    CELGATE_MODEL,
    CELGATE_OUTCOME,
    CELGATE_POLICY_NAME,
    CELGATE_POLICY_REVISION,
    CELGATE_POLICY_RULE,
    CELGATE_REDACTED,
    CELGATE_REDACTION_UNRESTORED,
    CELGATE_TASK_TYPE,
    CELGATE_TENANT,
    ERROR_TYPE,
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_TOKEN_TYPE,
    GEN_AI_USAGE_COST,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    OPERATION_CHAT,
    RPC_GRPC_STATUS_CODE,
    RPC_METHOD,
    RPC_SERVICE,
    RPC_SYSTEM,
    SERVER_ADDRESS,
    SERVER_PORT,
)

Attributes = dict[str, AttributeValue]


@dataclass(frozen=True, slots=True)
class ModelAttributes:
    """What every span and metric point of one catalogue model carries, computed once."""

    alias: str
    span_name: str
    location: str
    span: Mapping[str, AttributeValue]
    metric: Mapping[str, AttributeValue]


def model_attributes(alias: str, model: ModelConfig) -> ModelAttributes:
    url = urlsplit(model.base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    common: Attributes = {
        GEN_AI_OPERATION_NAME: OPERATION_CHAT,
        GEN_AI_PROVIDER_NAME: model.provider,
        GEN_AI_REQUEST_MODEL: model.upstream_model,
        SERVER_ADDRESS: url.hostname or "",
        SERVER_PORT: port,
    }
    return ModelAttributes(
        alias=alias,
        span_name=f"{OPERATION_CHAT} {model.upstream_model}",
        location=model.location,
        span={**common, CELGATE_MODEL: alias, CELGATE_LOCATION: model.location},
        metric=common,
    )


def _decision(outcome: Outcome, enforcement: str | None) -> Attributes:
    """The decision attributes every span of the request carries."""
    attributes: Attributes = {}
    if outcome.tenant is not None:
        attributes[CELGATE_TENANT] = outcome.tenant
    inspection = outcome.inspection
    if inspection is not None:
        attributes[CELGATE_CLASSIFICATION] = inspection.classification.name
        attributes[CELGATE_DETECTORS] = inspection.detectors
        attributes[CELGATE_TASK_TYPE] = inspection.task_type
        attributes[CELGATE_COMPLEXITY] = inspection.complexity
    policy = outcome.policy
    if policy is not None:
        attributes[CELGATE_POLICY_NAME] = policy.name
        attributes[CELGATE_POLICY_REVISION] = policy.revision
        attributes[CELGATE_POLICY_RULE] = policy.rule
    if enforcement is not None:
        attributes[CELGATE_ENFORCEMENT] = enforcement
    if outcome.redacted:
        attributes[CELGATE_REDACTED] = tuple(f"{d}={n}" for d, n in outcome.redacted)
    if outcome.unrestored:
        attributes[CELGATE_REDACTION_UNRESTORED] = outcome.unrestored
    return attributes


class Recorder:
    """Turns outcomes into spans, metric points and decision-log lines."""

    def __init__(
        self,
        tracer: trace.Tracer,
        instruments: Instruments,
        models: Mapping[str, ModelAttributes],
        decision_log: DecisionLog | None,
    ) -> None:
        self.tracer = tracer
        self.instruments = instruments
        self.models = models
        self.decision_log = decision_log

    def record(self, outcome: Outcome) -> None:
        call = outcome.call
        server = self.tracer.start_span(
            f"{call.service}/{call.rpc}",
            context=propagate.extract(call.carrier) if call.carrier else None,
            kind=SpanKind.SERVER,
            attributes={RPC_SYSTEM: call.system, RPC_SERVICE: call.service, RPC_METHOD: call.rpc},
            start_time=call.started_ns,
        )
        recording = server.is_recording()
        # The CLIENT spans carry the decision as it stood when the calls were made.
        decision = _decision(outcome, outcome.enforced) if recording else {}
        parent = trace.set_span_in_context(server)
        number = 0
        for attempt in outcome.attempts:
            if attempt.called:
                number += 1
                self._attempt(outcome, attempt, number, decision, parent, recording)
        self._request_metrics(outcome)
        if recording:
            self._end_server(server, outcome)
        if call.audited and self.decision_log is not None:
            span_context = server.get_span_context()
            trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else None
            self.decision_log.write(DecisionRecord.of(outcome, trace_id))

    def _attempt(
        self,
        outcome: Outcome,
        attempt: Attempt,
        number: int,
        decision: Attributes,
        parent: Context,
        recording: bool,
    ) -> None:
        model = self.models[attempt.model]
        instruments = self.instruments
        error = attempt.error
        point: Attributes = dict(model.metric)
        if attempt.response_model:
            point[GEN_AI_RESPONSE_MODEL] = attempt.response_model
        usage = attempt.usage
        if usage is not None:
            instruments.token_usage.record(
                usage.input_tokens, {**point, GEN_AI_TOKEN_TYPE: "input"}
            )
            instruments.token_usage.record(
                usage.output_tokens, {**point, GEN_AI_TOKEN_TYPE: "output"}
            )
        if error is not None:
            point[ERROR_TYPE] = error
        instruments.operation_duration.record(attempt.duration_s, point)
        inspection = outcome.inspection
        # Answered attempts, and streams charged for what they relayed before they ended.
        if error is None or attempt.cost_usd:
            instruments.cost.add(
                attempt.cost_usd,
                {
                    CELGATE_TENANT: outcome.tenant or "",
                    CELGATE_TASK_TYPE: inspection.task_type if inspection else "",
                    CELGATE_MODEL: model.alias,
                    GEN_AI_REQUEST_MODEL: model.metric[GEN_AI_REQUEST_MODEL],
                    CELGATE_LOCATION: model.location,
                },
            )
        if not recording:
            return
        attributes: Attributes = {**model.span, **decision, CELGATE_FALLBACK_ATTEMPT: number}
        if attempt.response_model:
            attributes[GEN_AI_RESPONSE_MODEL] = attempt.response_model
        if attempt.finish_reason:
            attributes[GEN_AI_RESPONSE_FINISH_REASONS] = (attempt.finish_reason,)
        if usage is not None:
            attributes[GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
            attributes[GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
        if error is None or attempt.cost_usd:
            attributes[GEN_AI_USAGE_COST] = attempt.cost_usd
        if error is not None:
            attributes[ERROR_TYPE] = error
        span = self.tracer.start_span(
            model.span_name,
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=attempt.started_ns,
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=attempt.started_ns + int(attempt.duration_s * 1e9))

    def _request_metrics(self, outcome: Outcome) -> None:
        instruments = self.instruments
        classification = outcome.inspection.classification.name if outcome.inspection else ""
        for model, reason in outcome.blocked:
            instruments.enforcement_blocked.add(
                1,
                {
                    CELGATE_MODEL: model,
                    CELGATE_ENFORCEMENT_REASON: reason,
                    CELGATE_CLASSIFICATION: classification,
                    CELGATE_ENFORCEMENT: outcome.enforcement or "",
                },
            )
        tenant = outcome.tenant
        if outcome.budget_utilization is not None and tenant is not None:
            instruments.budget_utilization.set(outcome.budget_utilization, {CELGATE_TENANT: tenant})
        if outcome.call.audited and tenant is not None:
            if outcome.error is None:
                result = outcome.enforcement or ALLOWED
            else:
                result = outcome.error.lower()
            instruments.decisions.add(
                1,
                {
                    CELGATE_POLICY_RULE: outcome.policy.rule if outcome.policy else "",
                    CELGATE_OUTCOME: result,
                    RPC_METHOD: outcome.call.rpc,
                },
            )

    def _end_server(self, server: trace.Span, outcome: Outcome) -> None:
        attributes = _decision(outcome, outcome.enforcement)
        if outcome.routed is not None:  # the dry run's would-be model
            attributes[CELGATE_MODEL] = outcome.routed
            attributes[CELGATE_LOCATION] = self.models[outcome.routed].location
        attributes[CELGATE_DECISION_ID] = outcome.call.decision_id
        if outcome.call.system == "grpc":
            attributes[RPC_GRPC_STATUS_CODE] = outcome.code
        if outcome.model is not None:
            answered_by = self.models[outcome.model]
            attributes[CELGATE_MODEL] = answered_by.alias
            attributes[CELGATE_LOCATION] = answered_by.location
            attributes[GEN_AI_USAGE_COST] = outcome.cost_usd
        if outcome.attempts:
            attributes[CELGATE_FALLBACK_ATTEMPT] = outcome.calls
        if outcome.error is not None:
            attributes[ERROR_TYPE] = outcome.error
            if outcome.fault:
                server.set_status(Status(StatusCode.ERROR, outcome.error))
        server.set_attributes(attributes)
        server.end(end_time=outcome.call.started_ns + int(outcome.duration_s * 1e9))
