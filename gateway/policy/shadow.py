"""The shadow policy: a candidate policy evaluated on live traffic and never obeyed.

Every request the live policy decides is also decided by the shadow, with the same inputs
(the same `PolicyRequest`, budget snapshot, catalogue and time objects), and the shadow's
route is recorded beside the live one: decision log, span attributes and an
agreement/disagreement metric. No model is called for it and nothing is reserved.

The shadow is held like the live policy (a `PolicyStore` of its own: compiled, its tests run,
hot-reloaded, last good revision kept), but it can never change a live answer: loading,
evaluating and recording it never raise, and a shadow that is missing, broken or failing only
shows as `error` in what is recorded.

Cost on the request path: `defer` captures the inputs and schedules the evaluation on the
event loop (`call_soon`), so it runs while the request awaits its budget reservation and the
upstream; the result is read when the request is recorded and computed then only if it has
not run yet (a request refused before any await). bench/bench_shadow.py measures both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.policy.compiler import CompiledPolicy, PolicyError
from gateway.policy.deferred import Deferred
from gateway.policy.store import PolicyStore
from gateway.policy.whatif import what_if
from gateway.pricing import Pricing
from gateway.v1 import policy_pb2

log = logging.getLogger("celgate.policy.shadow")

AGREE = "agree"
DISAGREE = "disagree"
ERROR = "error"
# What the agreement metric and span record for a request the policy refuses (no model).
REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """The shadow's route for one request. `error` (the failure's kind, never its text: a
    runtime error may quote request values) is set when there was no shadow decision."""

    model: str | None = None
    rule: str | None = None
    revision: str | None = None
    estimated_cost_usd: float = 0.0
    refused: str | None = None  # ErrorInfo reason when the shadow would refuse the request
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "model": self.model,
            "rule": self.rule,
            "revision": self.revision,
            "estimated_cost_usd": self.estimated_cost_usd,
        }
        if self.refused is not None:
            line["refused"] = self.refused
        if self.error is not None:
            line["error"] = self.error
        return line

    def agreement(self, live_model: str | None) -> str:
        """`agree` when the shadow routes to the live route's model (or both refuse)."""
        if self.error is not None:
            return ERROR
        return AGREE if self.model == live_model else DISAGREE

    @property
    def label(self) -> str:
        """The shadow's model as the metric names it."""
        if self.error is not None:
            return ERROR
        return self.model if self.model is not None else REFUSED


NO_SHADOW_POLICY = ShadowResult(error="no_policy")


# One request's shadow evaluation: scheduled at decide time, read when recording.
PendingShadow = Deferred[ShadowResult]


class ShadowPolicy:
    """Holds the shadow policy (`policy.shadow.dir`) and evaluates it."""

    def __init__(
        self,
        path: Path,
        config: Config,
        pricing: Pricing,
        *,
        run_tests: bool = True,
        debounce_ms: int = 200,
    ) -> None:
        self.config = config
        self.pricing = pricing
        self.store = PolicyStore(
            path, run_tests=run_tests, on_change=self._changed, debounce_ms=debounce_ms
        )

    @property
    def current(self) -> CompiledPolicy | None:
        return self.store.current

    @property
    def last_error(self) -> str | None:
        return self.store.last_error

    def load(self) -> None:
        """Compile and test the shadow; a failure is logged, never raised (the gateway serves
        without a shadow rather than not at all)."""
        try:
            self.store.load()
        except PolicyError as exc:
            log.error("shadow policy not loaded; requests record shadow error:\n%s", exc)

    async def watch(self, stop: asyncio.Event) -> None:
        """Hot-reload the shadow folder until `stop` is set (the live policy's watcher)."""
        try:
            await self.store.watch(stop)
        except Exception as exc:
            # Losing the shadow's reloads must not take anything else down with it.
            log.error("shadow policy watcher stopped: %s", type(exc).__name__)

    def _changed(self, policy: CompiledPolicy | None, error: str | None) -> None:
        if error is None and policy is not None:
            log.info("shadow policy serving: name=%s revision=%s", policy.name, policy.revision)

    def evaluate(
        self,
        request: policy_pb2.PolicyRequest,
        budget: policy_pb2.BudgetState,
        models: Mapping[str, policy_pb2.ModelInfo],
        now: datetime,
    ) -> ShadowResult:
        """The shadow's route for these inputs. Never raises."""
        policy = self.store.current
        if policy is None:
            return NO_SHADOW_POLICY
        try:
            route = what_if(policy, request, budget, models, now, self.config, self.pricing)
        except Exception as exc:
            log.warning("shadow policy %s@%s: %s", policy.name, policy.revision, type(exc).__name__)
            return ShadowResult(revision=policy.revision, error=type(exc).__name__)
        return ShadowResult(
            model=route.model,
            rule=route.rule,
            revision=route.revision,
            estimated_cost_usd=route.estimated_cost_usd,
            refused=route.refused,
        )

    def defer(
        self,
        request: policy_pb2.PolicyRequest,
        budget: policy_pb2.BudgetState,
        models: Mapping[str, policy_pb2.ModelInfo],
        now: datetime,
    ) -> PendingShadow:
        """Schedule the evaluation off the request's own path (see the module docstring)."""
        return Deferred.schedule(lambda: self.evaluate(request, budget, models, now))
