"""One request's path, stage by stage (docs/architecture.md, "A request's path"). No API types
here: the pipeline takes a plain `ChatRequest` and returns plain values (`ChatResult`, `Chunk`,
`Route`); the surfaces map their wire formats to and from them.

inspect -> snapshot budget -> decide -> enforce -> (rate limit, reserve) -> dispatch -> settle.
Each stage leaves its result on the request's `Progress`; the surface turns it into the one
immutable `Outcome` when the request is over and hands that to telemetry and the decision log.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from gateway.budget import Ledger
from gateway.budget.charging import Charger, Settlements
from gateway.chat import ChatParams, ChatRequest, ChatResult, Chunk, Route, Usage
from gateway.clock import Clock, utc_now
from gateway.config import Config, TenantConfig
from gateway.enforce import Dropped, Enforced, Verdict, enforce, judge, redaction_floor
from gateway.errors import InternalError, InvalidRequest, NoPolicy, PermissionDenied, Reason
from gateway.inspect import Inspection, Inspector
from gateway.inspect.personal_stage import PersonalStage
from gateway.labels import promoter_for
from gateway.levels import Level
from gateway.offload import Offloader
from gateway.outcome import (
    ALLOWED,
    REDACTED,
    REROUTED,
    Candidate,
    InspectionFacts,
    PolicyFacts,
    Progress,
    RequestFacts,
)
from gateway.policy import PolicyEvaluationError, PolicyStore
from gateway.policy.deferred import Deferred
from gateway.policy.inputs import encode as encode_inputs
from gateway.policy.inputs import label_guard
from gateway.policy.shadow import ShadowPolicy
from gateway.policy.whatif import catalogue
from gateway.pricing import Pricing
from gateway.providers.dispatch import Dispatcher, Variant
from gateway.ratelimit import TenantRateLimiter
from gateway.redaction import AnswerRestorer, Redacted, Refused, redact_candidates
from gateway.v1 import policy_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything decided before a model is called: what `Route` returns."""

    decision_id: str
    request: ChatRequest
    params: ChatParams  # the request's parameters after the policy's caps
    inspection: Inspection
    context: policy_pb2.PolicyRequest
    decision: policy_pb2.RouteDecision
    policy_name: str
    policy_revision: str
    chain: tuple[str, ...]  # cleared candidates, in order
    dropped: tuple[Dropped, ...]
    rerouted_from: str | None
    output_tokens: int  # the output cap the estimates assume (max_tokens, or the default)
    # Candidates that get the request redacted (enforcement.redact), with that request. The
    # value -> placeholder mapping lives only here, in this request's memory.
    redactions: dict[str, Redacted] = field(default_factory=dict)

    @property
    def classification(self) -> Level:
        return self.inspection.classification

    @property
    def estimated_tokens(self) -> int:
        """The request's token estimate, input and output: the one the rate limits charge
        and the budget reserve prices."""
        return self.inspection.estimated_input_tokens + self.output_tokens


class Pipeline:
    def __init__(
        self,
        config: Config,
        dispatcher: Dispatcher,
        policies: PolicyStore,
        limiter: TenantRateLimiter,
        ledger: Ledger,
        pricing: Pricing,
        *,
        clock: Clock = utc_now,
        shadow: ShadowPolicy | None = None,
    ) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.policies = policies
        self.limiter = limiter
        self.ledger = ledger
        self.pricing = pricing
        self.settlements = Settlements()
        self.inspector = Inspector(config.inspection)
        self.personal = PersonalStage(config.inspection, config.models)
        # Large inspections run off the event loop, bounded per tenant (invariant 7).
        self.offloader = Offloader.from_config(config.limits)
        # Which request labels reach telemetry and the decision log, bounded (gateway/labels.py).
        self.labels = promoter_for(config, self.inspector.is_clean)
        self._clock = clock
        # A candidate policy decided beside the live one and never obeyed (policy/shadow.py).
        self.shadow = shadow
        self._withhold = label_guard(self.inspector)
        self._catalogue: tuple[tuple[bool, ...], dict[str, policy_pb2.ModelInfo]] | None = None

    async def aclose(self) -> None:
        """Close the upstream clients, let pending settlements finish, close the stores."""
        await self.dispatcher.aclose()
        self.offloader.close()
        await self.settlements.drain()
        await self.ledger.aclose()
        await self.limiter.aclose()

    def model_infos(self) -> dict[str, policy_pb2.ModelInfo]:
        """The catalogue as the policy and `ListModels` see it, with current health. Rebuilt
        only when a model's health changes: it is on every request's path."""
        health = tuple(self.dispatcher.healthy(alias) for alias in self.config.models)
        if self._catalogue is None or self._catalogue[0] != health:
            healthy = dict(zip(self.config.models, health, strict=True))
            infos = catalogue(self.config, self.pricing, healthy.__getitem__)
            self._catalogue = (health, infos)
        return self._catalogue[1]

    # -- stages --------------------------------------------------------------------------------

    def inspect(self, request: ChatRequest) -> Inspection:
        try:
            return self.inspector.inspect(
                request.params, declared=request.declared, task_hint=request.task_hint
            )
        except Exception as exc:
            # Fail closed (invariant 3); the exception text may quote content, so log its type.
            log.error("inspection failed: %s", type(exc).__name__)
            raise InternalError(
                "inspection failed; the request was not sent", reason=Reason.INSPECTION_FAILED
            ) from None

    async def reinspect(
        self, request: ChatRequest, params: ChatParams, personal: Sequence[str] | None
    ) -> Level:
        """The classification of a redacted request, by the same inspector as the original
        (fail closed like the first inspection); the personal-data tier runs again when it ran
        on the original (`personal`: the candidates it guarded then). Off the event loop for a
        large request, like the first inspection (invariant 7)."""
        redacted = dataclasses.replace(request, params=params)
        inspection = await self.offloader.run(
            request.tenant, request_chars(params), lambda: self.inspect(redacted)
        )
        if personal is not None:
            inspection = await self.personal.inspect(
                params, inspection, personal, request.tenant, reach=inspection.classification
            )
        return inspection.classification

    def redaction_floor(self, inspection: Inspection) -> Level | None:
        """The classification once every redactable finding is replaced (None: redaction is
        off). Which findings are redactable is the operator's choice, never the caller's."""
        config = self.config.enforcement.redact
        if config is None:
            return None
        return redaction_floor(
            inspection.findings, inspection.declared, config.detectors, config.max_level
        )

    def context(
        self, request: ChatRequest, inspection: Inspection, floor: Level | None = None
    ) -> policy_pb2.PolicyRequest:
        params = request.params
        redacted = inspection.classification if floor is None else floor
        return policy_pb2.PolicyRequest(
            tenant=request.tenant,
            task_type=cast(policy_pb2.TaskType, inspection.task_type),
            classification=inspection.classification.proto(),
            declared_classification=(
                request.declared.proto()
                if request.declared
                else policy_pb2.CLASSIFICATION_UNSPECIFIED
            ),
            detectors=[f.detector for f in inspection.findings],
            complexity=inspection.complexity,
            estimated_input_tokens=inspection.estimated_input_tokens,
            max_output_tokens=params.max_tokens or 0,
            requested_model=request.preferred_model,
            labels=request.labels,
            has_tools=bool(params.tools),
            json_output=params.response_format is not None
            and params.response_format.type != "text",
            streaming=request.streaming,
            message_count=len(params.messages),
            airgapped=self.config.airgapped,
            redactable=redacted < inspection.classification,
            redacted_classification=redacted.proto(),
        )

    def decide(
        self,
        context: policy_pb2.PolicyRequest,
        budget: policy_pb2.BudgetState,
        now: datetime,
    ) -> tuple[policy_pb2.RouteDecision, str, str]:
        """The policy's decision, with the serving policy's name and revision; a deny is
        returned too (so it can be recorded) and refused by `check_denied`."""
        policy = self.policies.current
        if policy is None:
            raise NoPolicy("no routing policy is loaded; see the gateway log for why")
        try:
            decision = policy.evaluate(context, budget, self.model_infos(), now)
        except PolicyEvaluationError as exc:
            log.error("policy %s@%s failed to evaluate: %s", policy.name, policy.revision, exc)
            raise InternalError(
                f"policy {policy.name!r} failed to evaluate; the request was not sent",
                reason=Reason.POLICY_EVALUATION_FAILED,
                policy=policy.name,
                revision=policy.revision,
            ) from None
        return decision, policy.name, policy.revision

    @staticmethod
    def check_denied(decision: policy_pb2.RouteDecision, policy_name: str) -> None:
        if decision.deny:
            raise PermissionDenied(
                decision.reason or f"denied by policy {policy_name!r}",
                reason=Reason.POLICY_DENIED,
                rule=decision.rule,
                policy=policy_name,
            )

    async def plan(self, request: ChatRequest, progress: Progress) -> Plan:
        if request.preferred_model and request.preferred_model not in self.config.models:
            known = ", ".join(sorted(self.config.models))
            raise InvalidRequest(
                "preferred_model", f"unknown model {request.preferred_model!r}; known: {known}"
            )
        if request.labels:
            progress.labels = self.labels.promote(request.labels)
        inspection = await self.offloader.run(
            request.tenant, request_chars(request.params), lambda: self.inspect(request)
        )
        progress.inspection = InspectionFacts(
            classification=inspection.classification,
            declared=inspection.declared,
            detectors=tuple(dict.fromkeys(inspection.detectors)),
            task_type=task_type_name(inspection.task_type),
            complexity=inspection.complexity,
        )
        tenant = self.config.tenant_config(request.tenant)
        _check_ceiling(request.tenant, tenant, inspection.classification)
        now = self._clock()
        floor = self.redaction_floor(inspection)
        context = self.context(request, inspection, floor)
        budget = await self.ledger.snapshot(request.tenant, request.labels, now)
        if budget.limited:
            progress.budget_utilization = budget.utilization
        models = self.model_infos()
        # Recorded for replay; encoded off the request's path (policy/deferred.py).
        withhold = self._withhold
        progress.policy_inputs = Deferred.schedule(
            functools.partial(encode_inputs, context, budget, models, now, withhold=withhold)
        )
        if self.shadow is not None:
            progress.shadow = self.shadow.defer(context, budget, models, now)
        decision, policy_name, revision = self.decide(context, budget, now)
        progress.policy = PolicyFacts(policy_name, revision, decision.rule)
        self.check_denied(decision, policy_name)
        candidates = [decision.model, *decision.fallbacks]
        # Egress inspection: personal data in free text, only where a cloud candidate is still
        # cleared (as it is, or once redacted); a raised classification goes back to the policy.
        reach = inspection.classification if floor is None else floor
        personal: Sequence[str] | None = None
        if self.personal.wanted(reach, candidates):
            personal = tuple(candidates)
            raised = await self.personal.inspect(
                request.params, inspection, candidates, request.tenant, reach=reach
            )
            if raised is not inspection:
                inspection = raised
                progress.inspection = dataclasses.replace(
                    progress.inspection,
                    classification=inspection.classification,
                    detectors=tuple(dict.fromkeys(inspection.detectors)),
                )
                _check_ceiling(request.tenant, tenant, inspection.classification)
                floor = self.redaction_floor(inspection)
                context = self.context(request, inspection, floor)
                # Replay and the shadow policy see the inputs of the decision that counts.
                progress.policy_inputs = Deferred.schedule(
                    functools.partial(
                        encode_inputs, context, budget, models, now, withhold=withhold
                    )
                )
                if self.shadow is not None:
                    progress.shadow = self.shadow.defer(context, budget, models, now)
                decision, policy_name, revision = self.decide(context, budget, now)
                progress.policy = PolicyFacts(policy_name, revision, decision.rule)
                self.check_denied(decision, policy_name)
                candidates = [decision.model, *decision.fallbacks]
        verdicts = judge(
            candidates, self.config.models, inspection.classification, tenant.allowed_models
        )
        # Kept before enforcing, so the decision log explains every candidate even when
        # enforcement refuses the request (its exception names only the first refusal).
        _considered(progress, verdicts)
        enforced = enforce(
            candidates,
            self.config.models,
            inspection.classification,
            allowed=tenant.allowed_models,
            on_violation=self.config.enforcement.on_violation,
            reroute_order=self.config.enforcement.reroute_order,
            verdicts=verdicts,
            redaction_floor=floor,
        )
        params = request.params
        if decision.max_output_tokens > 0:
            cap = decision.max_output_tokens
            params = dataclasses.replace(params, max_tokens=min(params.max_tokens or cap, cap))
        if params.max_tokens is None:
            # The cap the budget reserves for is the cap sent upstream (invariant 6).
            params = dataclasses.replace(
                params, max_tokens=self.config.limits.estimate_output_tokens
            )
        redactions: dict[str, Redacted] = {}
        if enforced.redacted:
            redactions, refused = await redact_candidates(
                enforced.chain,
                enforced.redacted,
                self.config.models,
                params,
                inspection.findings,
                lambda redacted: self.reinspect(request, redacted, personal),
            )
            enforced = _refuse(enforced, refused, inspection.classification)
        _enforced(progress, enforced)
        first = redactions.get(enforced.chain[0])
        if first is not None:
            progress.redacted = first.counts
        progress.request = _request_facts(params)
        return Plan(
            decision_id=progress.call.decision_id,
            request=request,
            params=params,
            inspection=inspection,
            context=context,
            decision=decision,
            policy_name=policy_name,
            policy_revision=revision,
            chain=enforced.chain,
            dropped=enforced.dropped,
            rerouted_from=enforced.rerouted_from,
            output_tokens=params.max_tokens or self.config.limits.estimate_output_tokens,
            redactions=redactions,
        )

    def route_of(self, plan: Plan, model: str, *, attempts: int = 0, cost: float = 0.0) -> Route:
        entry = self.config.models[model]
        return Route(
            model=model,
            provider=entry.provider,
            upstream_model=entry.upstream_model,
            location=entry.location,
            rule=plan.decision.rule,
            classification=plan.classification,
            cost_usd=cost,
            policy_name=plan.policy_name,
            policy_revision=plan.policy_revision,
            decision_id=plan.decision_id,
            attempts=attempts,
            rerouted=plan.rerouted_from is not None,
            redacted=redacted.counts if (redacted := plan.redactions.get(model)) else (),
        )

    # -- the requests --------------------------------------------------------------------------

    def _charger(self, plan: Plan) -> Charger:
        return Charger(
            self.ledger,
            self.pricing,
            self.settlements,
            tenant=plan.request.tenant,
            labels=plan.request.labels,
            input_tokens=plan.inspection.estimated_input_tokens,
            max_output_tokens=plan.output_tokens,
            task_type=task_type_name(plan.inspection.task_type),
        )

    async def route(self, request: ChatRequest, progress: Progress) -> tuple[Plan, Route]:
        """The dry run: the decision, and the model a call would go to now (the first
        candidate the dispatcher would not skip) with its estimated cost. Rate limited by
        the tenant's Route bucket, checked before the (possibly large) inspection."""
        await self.limiter.check_route(request.tenant)
        plan = await self.plan(request, progress)
        model = next((m for m in plan.chain if self.dispatcher.healthy(m)), plan.chain[0])
        progress.routed = model
        progress.redacted = redacted.counts if (redacted := plan.redactions.get(model)) else ()
        estimate = self._charger(plan).estimate(model)
        return plan, self.route_of(plan, model, cost=estimate)

    async def _admit(self, plan: Plan) -> None:
        """Charge the tenant's rate limits before any upstream call."""
        await self.limiter.check(plan.request.tenant, plan.estimated_tokens)

    async def _correct(self, plan: Plan, usage: Usage | None) -> None:
        if usage is not None:
            actual = usage.input_tokens + usage.output_tokens
            await self.limiter.correct(plan.request.tenant, actual - plan.estimated_tokens)

    async def chat(
        self, request: ChatRequest, deadline: float, progress: Progress
    ) -> tuple[ChatResult, Route]:
        plan = await self.plan(request, progress)
        await self._admit(plan)
        charger = self._charger(plan)
        answer = await self.dispatcher.chat(
            plan.chain,
            plan.params,
            plan.classification,
            deadline,
            charger,
            progress.attempts,
            variants=_variants(plan),
        )
        progress.model = answer.model
        result = answer.result
        redacted = plan.redactions.get(answer.model)
        progress.redacted = () if redacted is None else redacted.counts
        if redacted is not None:
            restorer = AnswerRestorer(redacted)
            result = restorer.result(result)
            progress.unrestored = restorer.unrestored
        await self._correct(plan, result.usage)
        route = self.route_of(plan, answer.model, attempts=answer.calls, cost=charger.cost_usd)
        return result, route

    async def stream(
        self, request: ChatRequest, deadline: float, progress: Progress
    ) -> AsyncGenerator[tuple[Chunk, Route | None], None]:
        """Yields each chunk; the one that carries the finish reason also carries the route."""
        plan = await self.plan(request, progress)
        await self._admit(plan)
        charger = self._charger(plan)
        pieces = self.dispatcher.stream(
            plan.chain,
            plan.params,
            plan.classification,
            deadline,
            charger,
            progress.attempts,
            variants=_variants(plan),
        )
        # The stream falls back only before its first chunk: every chunk is of one model.
        restorer: AnswerRestorer | None = None
        # aclosing: the dispatcher records the last attempt when its stream is closed, which
        # must happen before the request's outcome is taken, also when the caller goes away.
        async with aclosing(pieces):
            async for piece in pieces:
                chunk = piece.chunk
                redacted = plan.redactions.get(piece.model)
                if redacted is not None:
                    if restorer is None:
                        restorer = AnswerRestorer(redacted)
                        progress.redacted = redacted.counts
                    chunk = restorer.chunk(chunk)
                    progress.unrestored = restorer.unrestored
                else:
                    progress.redacted = ()
                route = None
                if chunk.finish_reason is not None:
                    progress.model = piece.model
                    await self._correct(plan, piece.chunk.usage)
                    route = self.route_of(
                        plan, piece.model, attempts=piece.calls, cost=charger.cost_usd
                    )
                yield chunk, route


def _request_facts(params: ChatParams) -> RequestFacts:
    response_format = params.response_format
    return RequestFacts(
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        stop_sequences=len(params.stop),
        output_type="json"
        if response_format is not None and response_format.type != "text"
        else "text",
    )


def _check_ceiling(name: str, tenant: TenantConfig, classification: Level) -> None:
    """The tenant's content ceiling, checked on every classification the request gets (the
    personal-data tier can raise it after the first check)."""
    ceiling = tenant.max_declared_classification
    if ceiling is not None and classification > ceiling:
        raise PermissionDenied(
            f"tenant {name!r} may send at most {Level(ceiling).name} content; "
            f"this request is {classification.name}",
            reason=Reason.CLASSIFICATION_CEILING,
        )


def _considered(progress: Progress, verdicts: list[Verdict]) -> None:
    """The policy's candidates in order, each with enforcement's refusal when refused."""
    progress.candidates = tuple(
        Candidate(alias, refusal is None, None if refusal is None else refusal[1])
        for alias, refusal in verdicts
    )
    progress.blocked = tuple((alias, refusal[0]) for alias, refusal in verdicts if refusal)


def _variants(plan: Plan) -> dict[str, Variant] | None:
    """The redacted request of each redacted candidate, with its own classification (the
    dispatcher's residency check before the call uses it)."""
    if not plan.redactions:
        return None
    return {a: Variant(r.params, r.classification) for a, r in plan.redactions.items()}


def _refuse(enforced: Enforced, refused: list[Refused], classification: Level) -> Enforced:
    """Drop the redacted candidates whose redacted request is still above their clearance; a
    refused first candidate refuses the request (as residency does without redaction)."""
    if not refused:
        return enforced
    gone = {r.model for r in refused}
    if enforced.chain[0] in gone:
        first = next(r for r in refused if r.model == enforced.chain[0])
        raise PermissionDenied(
            first.reason,
            reason=Reason.DATA_RESIDENCY,
            model=first.model,
            classification=classification.name,
        )
    return enforced._replace(
        chain=tuple(a for a in enforced.chain if a not in gone),
        dropped=enforced.dropped + tuple(Dropped(r.model, r.reason) for r in refused),
        redacted=enforced.redacted - gone,
    )


def _enforced(progress: Progress, enforced: Enforced) -> None:
    if enforced.rerouted_from is not None:
        progress.enforced = REROUTED
    elif enforced.chain[0] in enforced.redacted:
        progress.enforced = REDACTED
    else:
        progress.enforced = ALLOWED
    if enforced.redacted or enforced.dropped:
        dropped = {d.model: d.reason for d in enforced.dropped}
        # Refused for residency but kept redacted: allowed. Refused after the redacted request
        # was inspected again: the reason says so.
        progress.candidates = tuple(
            Candidate(c.model, True, "redacted: findings above its clearance replaced")
            if c.model in enforced.redacted
            else Candidate(c.model, False, dropped[c.model])
            if c.model in dropped
            else c
            for c in progress.candidates
        )
        progress.blocked = tuple(b for b in progress.blocked if b[0] not in enforced.redacted)
    progress.route = enforced.chain[0]
    listed = {c.model for c in progress.candidates}
    substitutes = tuple(
        Candidate(
            alias, True, f"substitute for {enforced.rerouted_from!r} (enforcement.reroute_order)"
        )
        for alias in enforced.chain
        if alias not in listed  # a reroute substitute the policy did not name
    )
    if substitutes:
        progress.candidates += substitutes


def request_chars(params: ChatParams) -> int:
    """The size of a request's text in characters (what inspection reads), cheaply: message
    contents, tool calls and tool descriptions."""
    size = 0
    for message in params.messages:
        size += len(message.content)
        for call in message.tool_calls:
            size += len(call.arguments)
    for tool in params.tools:
        size += len(tool.description)
    return size


def task_type_name(task_type: int) -> str:
    """`TASK_TYPE_CODE_GENERATION` -> `code_generation`, as the ledger and telemetry record it."""
    return (
        policy_pb2.TaskType.Name(cast(policy_pb2.TaskType, task_type))
        .removeprefix("TASK_TYPE_")
        .lower()
    )


def deadline_from(time_remaining: float | None, default_s: float) -> float:
    """An absolute monotonic deadline from the caller's remaining time (None: no deadline)."""
    budget = default_s if time_remaining is None else min(time_remaining, default_s)
    return time.monotonic() + budget
