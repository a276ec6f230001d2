"""Every span attribute, metric name and bucket boundary celgate emits, in one place
(docs/architecture.md, "Telemetry names"). Spans and metrics follow the OpenTelemetry GenAI
semantic conventions of v1.41.0 and the stable RPC conventions of v1.45.0
(docs/observability.md, "Which conventions, which version"); what the conventions do not cover
uses the `celgate.` prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

from gateway.outcome import ALLOWED, DENIED, REDACTED, REROUTED

# -- GenAI semantic conventions --------------------------------------------------------------

GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_OUTPUT_TYPE: Final = "gen_ai.output.type"  # text or json
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
# `gen_ai.request.stop_sequences` is deliberately not emitted: stop sequences are caller
# content (invariant 4); their number is `CELGATE_REQUEST_STOP_SEQUENCES`.
# No settled convention for cost yet: the name OpenLIT and Langfuse use, in USD, on the CLIENT
# spans only (one per upstream attempt), so summing it over spans counts every dollar once.
GEN_AI_USAGE_COST: Final = "gen_ai.usage.cost"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
OPERATION_CHAT: Final = "chat"

# -- RPC semantic conventions (the SERVER span) ----------------------------------------------

# Stable (v1.45.0): the system, the fully qualified method (`package.Service/Method`) and the
# status code's name.
RPC_SYSTEM_NAME: Final = "rpc.system.name"
RPC_METHOD: Final = "rpc.method"
RPC_RESPONSE_STATUS_CODE: Final = "rpc.response.status_code"
# The experimental attributes they replace, still emitted beside them unless
# OTEL_SEMCONV_STABILITY_OPT_IN lists `rpc` (and not `rpc/dup`).
RPC_SYSTEM: Final = "rpc.system"
RPC_SERVICE: Final = "rpc.service"
RPC_GRPC_STATUS_CODE: Final = "rpc.grpc.status_code"
SEMCONV_OPT_IN_VARIABLE: Final = "OTEL_SEMCONV_STABILITY_OPT_IN"

# -- the policy decision ---------------------------------------------------------------------

CELGATE_TENANT: Final = "celgate.tenant"
CELGATE_TASK_TYPE: Final = "celgate.task_type"
CELGATE_COMPLEXITY: Final = "celgate.complexity"
CELGATE_CLASSIFICATION: Final = "celgate.classification"
CELGATE_DETECTORS: Final = "celgate.detectors"
CELGATE_POLICY_NAME: Final = "celgate.policy.name"
CELGATE_POLICY_REVISION: Final = "celgate.policy.revision"
CELGATE_POLICY_RULE: Final = "celgate.policy.rule"
CELGATE_LOCATION: Final = "celgate.location"
CELGATE_FALLBACK_ATTEMPT: Final = "celgate.fallback.attempt"  # 1 for the first attempt
CELGATE_ENFORCEMENT: Final = "celgate.enforcement"  # allowed, rerouted, redacted or denied
CELGATE_MODEL: Final = "celgate.model"  # the catalogue alias (RouteInfo.model)
CELGATE_DECISION_ID: Final = "celgate.decision_id"  # joins a trace to its decision-log line
CELGATE_OUTCOME: Final = "celgate.outcome"  # allowed, rerouted, or the refusal's reason, lower
CELGATE_ENFORCEMENT_REASON: Final = "celgate.enforcement.reason"  # DATA_RESIDENCY, ...
# What redaction replaced in the request the model got: `detector=count` strings
# (`["pii.email=2"]`), never values; set only on redacted requests.
CELGATE_REDACTED: Final = "celgate.redacted"
# Placeholder-shaped tokens in the answer that stood for no redacted value (left as they were).
CELGATE_REDACTION_UNRESTORED: Final = "celgate.redaction.unrestored"
CELGATE_TELEMETRY_SIGNAL: Final = "celgate.telemetry.signal"  # traces, metrics or decision_log
# A promoted request label (telemetry.labels.promote): `celgate.label.<key>`.
CELGATE_LABEL_PREFIX: Final = "celgate.label."
# The currency of every cost celgate reports (gen_ai.usage.cost, celgate.cost.total, the
# celgate.cost metric's unit).
CELGATE_COST_CURRENCY: Final = "celgate.cost.currency"
COST_CURRENCY: Final = "USD"
# The SERVER span's total for the request: a name of its own, so that summing
# gen_ai.usage.cost over spans never adds the total to the attempts it is made of.
CELGATE_COST_TOTAL: Final = "celgate.cost.total"
CELGATE_REQUEST_STOP_SEQUENCES: Final = "celgate.request.stop_sequences.count"
# The shadow policy's decision beside the live one (docs/policies.md, "Shadow policy").
CELGATE_SHADOW_MODEL: Final = "celgate.shadow.model"  # an alias, `refused` or `error`
CELGATE_SHADOW_RULE: Final = "celgate.shadow.rule"
CELGATE_SHADOW_REVISION: Final = "celgate.shadow.revision"
CELGATE_SHADOW_ESTIMATED_COST: Final = "celgate.shadow.estimated_cost"  # USD it would reserve
CELGATE_SHADOW_AGREEMENT: Final = "celgate.shadow.agreement"  # agree, disagree or error

# The values of `celgate.enforcement` (defined with the outcome record).
ENFORCEMENT_ALLOWED: Final = ALLOWED
ENFORCEMENT_REROUTED: Final = REROUTED
ENFORCEMENT_REDACTED: Final = REDACTED
ENFORCEMENT_DENIED: Final = DENIED

# -- metrics ---------------------------------------------------------------------------------

METRIC_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_COST: Final = "celgate.cost"
METRIC_DECISIONS: Final = "celgate.decisions"
METRIC_ENFORCEMENT_BLOCKED: Final = "celgate.enforcement.blocked"
METRIC_POLICY_RELOAD_FAILURES: Final = "celgate.policy.reload.failures"
METRIC_BUDGET_UTILIZATION: Final = "celgate.budget.utilization"
METRIC_TELEMETRY_DROPPED: Final = "celgate.telemetry.dropped"
METRIC_TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
METRIC_SERVER_CALL_DURATION: Final = "rpc.server.call.duration"
METRIC_SHADOW_DECISIONS: Final = "celgate.shadow.decisions"
# Its attributes: the live route's model, the shadow's, and whether they agree.
SHADOW_AGREEMENT_KEYS: Final = (CELGATE_MODEL, CELGATE_SHADOW_MODEL, CELGATE_SHADOW_AGREEMENT)

# The explicit bucket boundaries the GenAI semantic conventions advise.
TOKEN_USAGE_BUCKETS: Sequence[float] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
OPERATION_DURATION_BUCKETS: Sequence[float] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
# rpc.server.call.duration uses them too: the RPC conventions' buckets stop at 10 s, and a call
# through the gateway lasts as long as the model takes to answer.

INSTRUMENTATION_SCOPE: Final = "celgate"
DEFAULT_SERVICE_NAME: Final = "celgate"

# What `celgate.telemetry.dropped` counts, by `celgate.telemetry.signal`.
Signal = Literal["traces", "metrics", "decision_log"]
