"""Where a policy other than the serving one would send a request, and what it would reserve.

Shared by the shadow policy (live traffic) and replay (recorded traffic), so both answer the
question the same way the pipeline does: evaluate, refuse a deny, enforce residency and the
tenant's model list (the same `enforce` the pipeline runs), then estimate the reservation of
the model a call would go to first (the same `Pricing.estimate_max` and output allowance the
budget stage reserves with). Nothing here calls a model or touches a ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.config import Config
from gateway.enforce import enforce
from gateway.errors import PermissionDenied, Reason
from gateway.levels import Level
from gateway.policy.compiler import CompiledPolicy, PolicyEvaluationError
from gateway.pricing import Pricing
from gateway.v1 import policy_pb2

# The ErrorInfo reasons a policy decision can end in without any model being called.
POLICY_DENIED = Reason.POLICY_DENIED
POLICY_EVALUATION_FAILED = Reason.POLICY_EVALUATION_FAILED

_LOCATIONS = {"on_prem": policy_pb2.LOCATION_ON_PREM, "cloud": policy_pb2.LOCATION_CLOUD}


@dataclass(frozen=True, slots=True)
class WhatIf:
    """One policy's route for one request. `model` is the model a call would go to first
    (after enforcement), None when the request would be refused with `refused` (an ErrorInfo
    reason: POLICY_DENIED, DATA_RESIDENCY, MODEL_NOT_ALLOWED, POLICY_EVALUATION_FAILED...)."""

    policy_name: str
    revision: str
    rule: str | None
    model: str | None
    refused: str | None
    output_tokens: int  # the output allowance a reservation would assume
    estimated_cost_usd: float


def catalogue(
    config: Config, pricing: Pricing, healthy: Callable[[str], bool]
) -> dict[str, policy_pb2.ModelInfo]:
    """The `models` variable the policy sees, with health from `healthy`: the pipeline and
    replay both build it here."""
    infos: dict[str, policy_pb2.ModelInfo] = {}
    for alias, model in config.models.items():
        rates = pricing.rates(alias)
        infos[alias] = policy_pb2.ModelInfo(
            alias=alias,
            provider=model.provider,
            upstream_model=model.upstream_model,
            location=_LOCATIONS[model.location],
            clearance=model.clearance.proto(),
            input_price_per_mtok=rates.input_per_mtok,
            output_price_per_mtok=rates.output_per_mtok,
            healthy=healthy(alias),
        )
    return infos


def output_allowance(config: Config, request: policy_pb2.PolicyRequest, cap: int) -> int:
    """The output tokens the budget stage reserves for: the caller's max_tokens under the
    policy's cap, or the configured estimate when neither sets one."""
    asked = request.max_output_tokens
    if cap > 0:
        asked = min(asked or cap, cap)
    return asked or config.limits.estimate_output_tokens


def what_if(
    policy: CompiledPolicy,
    request: policy_pb2.PolicyRequest,
    budget: policy_pb2.BudgetState,
    models: Mapping[str, policy_pb2.ModelInfo],
    now: datetime,
    config: Config,
    pricing: Pricing,
) -> WhatIf:
    """Route `request` with `policy`. Raises only for bugs: a policy that fails to evaluate
    is a refusal (the gateway fails closed), like a deny or an enforcement refusal."""
    try:
        decision = policy.evaluate(request, budget, models, now)
    except PolicyEvaluationError:
        return WhatIf(policy.name, policy.revision, None, None, POLICY_EVALUATION_FAILED, 0, 0.0)
    allowance = output_allowance(config, request, decision.max_output_tokens)
    if decision.deny:
        return WhatIf(policy.name, policy.revision, decision.rule, None, POLICY_DENIED, 0, 0.0)
    classification = Level(max(int(request.classification), int(Level.PUBLIC)))
    tenant = config.tenant_config(request.tenant)
    try:
        enforced = enforce(
            [decision.model, *decision.fallbacks],
            config.models,
            classification,
            allowed=tenant.allowed_models,
            on_violation=config.enforcement.on_violation,
            reroute_order=config.enforcement.reroute_order,
        )
    except PermissionDenied as exc:
        return WhatIf(policy.name, policy.revision, decision.rule, None, exc.reason, 0, 0.0)
    model = enforced.chain[0]
    cost = pricing.estimate_max(model, int(request.estimated_input_tokens), allowance)
    return WhatIf(policy.name, policy.revision, decision.rule, model, None, allowance, cost)
