"""One request's outcome: the immutable record the pipeline hands, once, at the end, to the
telemetry recorder and the decision log (docs/architecture.md, "One record per request").

While a request runs, its stages leave their (immutable) results on a `Progress`: the
inspection, the policy's decision, enforcement's verdicts, the dispatcher's attempts. Nothing
reads it until the request is over; then `Progress.outcome` freezes it, with how the request
ended, into an `Outcome`. Neither ever holds content: detector ids, levels, model aliases,
token counts and costs only (invariant 4).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.chat import Usage
from gateway.clock import utc_now
from gateway.errors import ENFORCEMENT_REASONS, GatewayError
from gateway.levels import Level
from gateway.providers.base import UpstreamError

if TYPE_CHECKING:  # the policy package is above this module; only its types are needed
    from gateway.policy.deferred import Deferred
    from gateway.policy.shadow import PendingShadow, ShadowResult

# Enforcement outcomes, as the decision log and the `celgate.enforcement` attribute name them.
ALLOWED = "allowed"
REROUTED = "rerouted"
REDACTED = "redacted"  # the chosen model gets the request with some values replaced
DENIED = "denied"

# Attempt reasons for candidates the dispatcher passed over without an upstream call.
NOT_CONFIGURED = "not_configured"
CIRCUIT_OPEN = "circuit_open"
BUDGET = "budget"
SKIPPED = frozenset({NOT_CONFIGURED, CIRCUIT_OPEN, BUDGET})


def error_type(error: BaseException) -> str:
    """A low-cardinality name for a failure: the upstream failure kind, the gateway's ErrorInfo
    reason, or the exception class; never its message (it may quote content)."""
    if isinstance(error, UpstreamError):
        return error.kind
    if isinstance(error, GatewayError):
        return error.reason
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return type(error).__qualname__


def new_decision_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Attempt:
    """One candidate the dispatcher reached, in order: called (answered or failed) or skipped.
    The one history of a request's attempts: RouteInfo, spans, metrics and the decision log all
    read it."""

    model: str
    # Why it did not answer: an upstream failure kind (`timeout`, `server`...), a skip reason
    # (`not_configured`, `circuit_open`, `budget`), `cancelled`; None when it answered.
    error: str | None
    started_ns: int = 0  # wall clock (the CLIENT span's start); 0 when skipped
    duration_s: float = 0.0
    usage: Usage | None = None
    cost_usd: float = 0.0
    response_model: str = ""
    finish_reason: str = ""
    # The cost is an estimate of what was relayed (a stream that ended early without usage).
    cost_estimated: bool = False
    response_id: str = ""  # the provider's completion id, when it sends one
    # Streams: seconds from sending the request to the first chunk; None for a unary call.
    time_to_first_chunk_s: float | None = None

    @property
    def called(self) -> bool:
        """An upstream call was made (skipped candidates cost nothing and count for nothing)."""
        return self.error not in SKIPPED


def upstream_calls(attempts: tuple[Attempt, ...] | list[Attempt]) -> int:
    return sum(1 for a in attempts if a.called)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A model the policy named: kept in the chain, or dropped by enforcement with the reason
    (a sentence naming the model and the levels, never content)."""

    model: str
    allowed: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """The request as its surface received it, before anything is known about it."""

    rpc: str  # the surface's method: Chat, ChatStream, Route, ListModels
    service: str  # the surface's service name (gateway.v1.GatewayService)
    system: str  # the surface's protocol, as `rpc.system` names it (grpc)
    decision_id: str
    started: datetime  # wall clock, UTC
    started_ns: int  # the same instant in ns since the epoch (span start)
    started_perf: float  # perf_counter at the start (latency)
    carrier: Mapping[str, str]  # the caller's trace-context headers (traceparent, tracestate)
    audited: bool  # ends with a decision-log line (every request but ListModels)

    @classmethod
    def start(
        cls,
        rpc: str,
        *,
        service: str,
        system: str,
        carrier: Mapping[str, str],
        audited: bool = True,
        decision_id: str | None = None,
    ) -> Call:
        return cls(
            rpc=rpc,
            service=service,
            system=system,
            decision_id=decision_id or new_decision_id(),
            started=utc_now(),
            started_ns=time.time_ns(),
            started_perf=time.perf_counter(),
            carrier=carrier,
            audited=audited,
        )


@dataclass(frozen=True, slots=True)
class Ending:
    """How the surface ended the request: its status (the gRPC code name and number) and
    whether that status means the server failed (not a refusal)."""

    status: str
    code: int
    fault: bool
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class InspectionFacts:
    classification: Level
    declared: Level | None
    detectors: tuple[str, ...]  # distinct, in order of first finding
    task_type: str
    complexity: float


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    name: str
    revision: str
    rule: str


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the request asked of the model, as sent upstream (after the policy's output cap).
    Never content: stop sequences are counted, not kept."""

    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    stop_sequences: int
    output_type: str  # text, or json when a JSON response format is asked for


@dataclass(frozen=True, slots=True)
class Outcome:
    """Everything the gateway may say about one finished request; None where the request never
    reached that stage (an unauthenticated call has no tenant, a policy deny has no model)."""

    call: Call
    status: str
    code: int
    fault: bool
    error: str | None  # error_type of the failure, None on success
    duration_s: float
    tenant: str | None
    inspection: InspectionFacts | None
    budget_utilization: float | None  # of a limited budget, when the snapshot was taken
    policy: PolicyFacts | None
    candidates: tuple[Candidate, ...]
    blocked: tuple[tuple[str, str], ...]  # (model, reason) refused by enforcement
    enforced: str | None  # what enforcement decided: allowed, rerouted or redacted
    enforcement: str | None  # the final word: allowed, rerouted, redacted or denied
    routed: str | None  # the dry run's would-be model
    model: str | None  # the model that answered
    attempts: tuple[Attempt, ...]
    cost_usd: float
    # Part of the cost is an estimate (a stream ended early and no usage arrived).
    cost_estimated: bool = False
    # (detector id, values replaced) of the request the answering (or, for the dry run, the
    # would-be) model got; empty when it got the original. Never the values or the mapping.
    redacted: tuple[tuple[str, int], ...] = ()
    # Placeholder-shaped tokens in the answer that no redacted value stood for (invented or
    # mangled by the model), left as they were.
    unrestored: int = 0
    # The request's promoted labels (telemetry.labels), values already bounded (gateway/labels.py).
    labels: Mapping[str, str] = field(default_factory=dict)
    request: RequestFacts | None = None
    # What the policy saw, as the decision log records it for replay (policy/inputs.py).
    policy_inputs: Mapping[str, Any] | None = None
    route: str | None = None  # the first model of the enforced chain (None: refused)
    shadow: ShadowResult | None = None  # the shadow policy's decision (policy/shadow.py)

    @property
    def calls(self) -> int:
        return upstream_calls(self.attempts)


@dataclass(slots=True)
class Progress:
    """How far one request got: each stage's result once it has one. Written by the surface
    (tenant) and the pipeline (the rest), read once by `outcome`."""

    call: Call
    tenant: str | None = None
    inspection: InspectionFacts | None = None
    budget_utilization: float | None = None
    policy: PolicyFacts | None = None
    candidates: tuple[Candidate, ...] = ()
    blocked: tuple[tuple[str, str], ...] = ()
    enforced: str | None = None
    routed: str | None = None
    model: str | None = None
    redacted: tuple[tuple[str, int], ...] = ()
    unrestored: int = 0
    # The dispatcher appends to this list as it walks the chain (the one attempt history).
    attempts: list[Attempt] = field(default_factory=list)
    labels: Mapping[str, str] = field(default_factory=dict)
    request: RequestFacts | None = None
    policy_inputs: Deferred[Mapping[str, Any]] | None = None
    route: str | None = None
    shadow: PendingShadow | None = None

    def outcome(self, ending: Ending) -> Outcome:
        error = ending.error
        reason = None if error is None else error_type(error)
        enforcement = self.enforced
        blocked = self.blocked
        if reason in ENFORCEMENT_REASONS:
            enforcement = DENIED
            if not blocked and isinstance(error, GatewayError):
                # Refused before the verdicts were kept (the tenant's ceiling, dispatch's own
                # residency check): the error names the model, when there is one.
                blocked = ((error.metadata.get("model", ""), reason),)
        attempts = tuple(self.attempts)
        return Outcome(
            call=self.call,
            status=ending.status,
            code=ending.code,
            fault=ending.fault,
            error=reason,
            duration_s=time.perf_counter() - self.call.started_perf,
            tenant=self.tenant,
            inspection=self.inspection,
            budget_utilization=self.budget_utilization,
            policy=self.policy,
            candidates=self.candidates,
            blocked=blocked,
            enforced=self.enforced,
            enforcement=enforcement,
            routed=self.routed,
            model=self.model,
            attempts=attempts,
            # Answered attempts, and streams charged for what they relayed before ending.
            cost_usd=sum((a.cost_usd for a in attempts), 0.0),
            cost_estimated=any(a.cost_estimated for a in attempts),
            redacted=self.redacted,
            unrestored=self.unrestored,
            labels=self.labels,
            request=self.request,
            policy_inputs=None if self.policy_inputs is None else self.policy_inputs.result(),
            route=self.route,
            # Scheduled when the policy decided; computed now only if it has not run yet.
            shadow=None if self.shadow is None else self.shadow.result(),
        )
