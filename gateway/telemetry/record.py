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

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from gateway.audit import DecisionLog, DecisionRecord
from gateway.config import ModelConfig
from gateway.outcome import ALLOWED, Attempt, Outcome, RequestFacts
from gateway.policy.shadow import REFUSED
from gateway.telemetry.instruments import Instruments
from gateway.telemetry.names import (
    CELGATE_CLASSIFICATION,
    CELGATE_COMPLEXITY,
    CELGATE_COST_CURRENCY,
    CELGATE_COST_TOTAL,
    CELGATE_DECISION_ID,
    CELGATE_DETECTORS,
    CELGATE_ENFORCEMENT,
    CELGATE_ENFORCEMENT_REASON,
    CELGATE_FALLBACK_ATTEMPT,
    CELGATE_LABEL_PREFIX,
    CELGATE_LOCATION,
    CELGATE_MODEL,
    CELGATE_OUTCOME,
    CELGATE_POLICY_NAME,
    CELGATE_POLICY_REVISION,
    CELGATE_POLICY_RULE,
    CELGATE_REDACTED,
    CELGATE_REDACTION_UNRESTORED,
    CELGATE_REQUEST_STOP_SEQUENCES,
    CELGATE_SHADOW_AGREEMENT,
    CELGATE_SHADOW_ESTIMATED_COST,
    CELGATE_SHADOW_MODEL,
    CELGATE_SHADOW_REVISION,
    CELGATE_SHADOW_RULE,
    CELGATE_TASK_TYPE,
    CELGATE_TENANT,
    COST_CURRENCY,
    ERROR_TYPE,
    GEN_AI_OPERATION_NAME,
    GEN_AI_OUTPUT_TYPE,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_REQUEST_TEMPERATURE,
    GEN_AI_REQUEST_TOP_P,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_ID,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
    GEN_AI_TOKEN_TYPE,
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    GEN_AI_USAGE_COST,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    OPERATION_CHAT,
    RPC_GRPC_STATUS_CODE,
    RPC_METHOD,
    RPC_RESPONSE_STATUS_CODE,
    RPC_SERVICE,
    RPC_SYSTEM,
    RPC_SYSTEM_NAME,
    SEMCONV_OPT_IN_VARIABLE,
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
    for key, value in outcome.labels.items():
        attributes[CELGATE_LABEL_PREFIX + key] = value
    return attributes


def _request(facts: RequestFacts | None) -> Attributes:
    """The GenAI request attributes of every CLIENT span of the request."""
    if facts is None:
        return {}
    attributes: Attributes = {
        GEN_AI_OUTPUT_TYPE: facts.output_type,
        CELGATE_REQUEST_STOP_SEQUENCES: facts.stop_sequences,
    }
    if facts.max_tokens is not None:
        attributes[GEN_AI_REQUEST_MAX_TOKENS] = facts.max_tokens
    if facts.temperature is not None:
        attributes[GEN_AI_REQUEST_TEMPERATURE] = facts.temperature
    if facts.top_p is not None:
        attributes[GEN_AI_REQUEST_TOP_P] = facts.top_p
    return attributes


def stable_rpc_only(setting: str | None = None) -> bool:
    """OTEL_SEMCONV_STABILITY_OPT_IN lists `rpc` (and not `rpc/dup`): emit only the stable RPC
    attributes, not the experimental ones they replace."""
    if setting is None:
        setting = os.environ.get(SEMCONV_OPT_IN_VARIABLE, "")
    values = {v.strip() for v in setting.split(",")}
    return "rpc" in values and "rpc/dup" not in values


def _labels(outcome: Outcome) -> Attributes:
    return {CELGATE_LABEL_PREFIX + key: value for key, value in outcome.labels.items()}


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
        self.experimental_rpc = not stable_rpc_only()

    def record(self, outcome: Outcome) -> None:
        call = outcome.call
        method = f"{call.service}/{call.rpc}"
        rpc: Attributes = {RPC_SYSTEM_NAME: call.system, RPC_METHOD: method}
        if self.experimental_rpc:
            rpc[RPC_SYSTEM] = call.system
            rpc[RPC_SERVICE] = call.service
        server = self.tracer.start_span(
            method,
            context=propagate.extract(call.carrier) if call.carrier else None,
            kind=SpanKind.SERVER,
            attributes=rpc,
            start_time=call.started_ns,
        )
        recording = server.is_recording()
        # The CLIENT spans carry the decision as it stood when the calls were made.
        decision = _decision(outcome, outcome.enforced) if recording else {}
        if recording:
            decision.update(_request(outcome.request))
        labels = _labels(outcome)
        parent = trace.set_span_in_context(server)
        number = 0
        for attempt in outcome.attempts:
            if attempt.called:
                number += 1
                self._attempt(outcome, attempt, number, decision, labels, parent, recording)
        point: Attributes = {
            RPC_SYSTEM_NAME: call.system,
            RPC_METHOD: method,
            RPC_RESPONSE_STATUS_CODE: outcome.status,
        }
        if outcome.error is not None:
            point[ERROR_TYPE] = outcome.error
        self.instruments.server_call_duration.record(outcome.duration_s, point)
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
        labels: Attributes,
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
            # Who spent the tokens: the tenant and the promoted labels, beyond the conventions.
            spent: Attributes = {**point, CELGATE_TENANT: outcome.tenant or "", **labels}
            instruments.token_usage.record(
                usage.input_tokens, {**spent, GEN_AI_TOKEN_TYPE: "input"}
            )
            instruments.token_usage.record(
                usage.output_tokens, {**spent, GEN_AI_TOKEN_TYPE: "output"}
            )
        if attempt.time_to_first_chunk_s is not None:
            instruments.time_to_first_chunk.record(attempt.time_to_first_chunk_s, point)
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
                    **labels,
                },
            )
        if not recording:
            return
        attributes: Attributes = {**model.span, **decision, CELGATE_FALLBACK_ATTEMPT: number}
        if attempt.response_model:
            attributes[GEN_AI_RESPONSE_MODEL] = attempt.response_model
        if attempt.finish_reason:
            attributes[GEN_AI_RESPONSE_FINISH_REASONS] = (attempt.finish_reason,)
        if attempt.response_id:
            attributes[GEN_AI_RESPONSE_ID] = attempt.response_id
        if attempt.time_to_first_chunk_s is not None:
            attributes[GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = attempt.time_to_first_chunk_s
        if usage is not None:
            attributes[GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
            attributes[GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
            # Reported only by some providers: absent rather than a misleading 0.
            if usage.cached_input_tokens:
                attributes[GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cached_input_tokens
            if usage.reasoning_tokens:
                attributes[GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_tokens
        if error is None or attempt.cost_usd:
            # The attempt's cost, here and only here (see names.GEN_AI_USAGE_COST); a stream
            # that ended early is charged for what it relayed.
            attributes[GEN_AI_USAGE_COST] = attempt.cost_usd
            attributes[CELGATE_COST_CURRENCY] = COST_CURRENCY
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
        shadow = outcome.shadow
        if shadow is not None:
            live = outcome.route if outcome.route is not None else REFUSED
            instruments.shadow_decisions[(live, shadow.label, shadow.agreement(outcome.route))] += 1
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
                    RPC_METHOD: f"{outcome.call.service}/{outcome.call.rpc}",
                },
            )

    def _end_server(self, server: trace.Span, outcome: Outcome) -> None:
        attributes = _decision(outcome, outcome.enforcement)
        if outcome.routed is not None:  # the dry run's would-be model
            attributes[CELGATE_MODEL] = outcome.routed
            attributes[CELGATE_LOCATION] = self.models[outcome.routed].location
        attributes[CELGATE_DECISION_ID] = outcome.call.decision_id
        attributes[RPC_RESPONSE_STATUS_CODE] = outcome.status
        if self.experimental_rpc and outcome.call.system == "grpc":
            attributes[RPC_GRPC_STATUS_CODE] = outcome.code
        if outcome.model is not None:
            answered_by = self.models[outcome.model]
            attributes[CELGATE_MODEL] = answered_by.alias
            attributes[CELGATE_LOCATION] = answered_by.location
            # The request's total, under a name of its own: gen_ai.usage.cost stays on the
            # CLIENT spans, so summing it over spans never counts a request twice.
            attributes[CELGATE_COST_TOTAL] = outcome.cost_usd
            attributes[CELGATE_COST_CURRENCY] = COST_CURRENCY
        if outcome.attempts:
            attributes[CELGATE_FALLBACK_ATTEMPT] = outcome.calls
        shadow = outcome.shadow
        if shadow is not None:
            attributes[CELGATE_SHADOW_MODEL] = shadow.label
            attributes[CELGATE_SHADOW_AGREEMENT] = shadow.agreement(outcome.route)
            attributes[CELGATE_SHADOW_ESTIMATED_COST] = shadow.estimated_cost_usd
            if shadow.rule is not None:
                attributes[CELGATE_SHADOW_RULE] = shadow.rule
            if shadow.revision is not None:
                attributes[CELGATE_SHADOW_REVISION] = shadow.revision
        if outcome.error is not None:
            attributes[ERROR_TYPE] = outcome.error
            if outcome.fault:
                server.set_status(Status(StatusCode.ERROR, outcome.error))
        server.set_attributes(attributes)
        server.end(end_time=outcome.call.started_ns + int(outcome.duration_s * 1e9))
