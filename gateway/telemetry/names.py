"""Every span attribute, metric name and bucket boundary celgate emits, in one place
(docs/architecture.md, "Telemetry names"). Spans and metrics follow the OpenTelemetry GenAI and
RPC semantic conventions; what the conventions do not cover uses the `celgate.` prefix.
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
# No settled convention for cost yet: the name OpenLIT and Langfuse use, in USD.
GEN_AI_USAGE_COST: Final = "gen_ai.usage.cost"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
OPERATION_CHAT: Final = "chat"

# -- RPC semantic conventions (the SERVER span) ----------------------------------------------

RPC_SYSTEM: Final = "rpc.system"
RPC_SERVICE: Final = "rpc.service"
RPC_METHOD: Final = "rpc.method"
RPC_GRPC_STATUS_CODE: Final = "rpc.grpc.status_code"

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

# The explicit bucket boundaries the GenAI semantic conventions advise.
TOKEN_USAGE_BUCKETS: Sequence[float] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
OPERATION_DURATION_BUCKETS: Sequence[float] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip

INSTRUMENTATION_SCOPE: Final = "celgate"
DEFAULT_SERVICE_NAME: Final = "celgate"

# What `celgate.telemetry.dropped` counts, by `celgate.telemetry.signal`.
Signal = Literal["traces", "metrics", "decision_log"]
