"""Calling the chosen models: the provider per alias, the fallback chain, circuit breakers,
the attempt cap, the deadline, and the per-attempt hooks that reserve and settle budget.

The residency check runs here again, right before each call, against the dispatcher's own
catalogue, so that no code path between the policy and the wire (primary, fallback, stream)
can send content to a model not cleared for it (docs/architecture.md, invariant 1).

For each candidate, in order: residency (refuse, never skip), configured (its key variable is
set), deadline, breaker (skip while open), budget (skip when it cannot be covered), then the
call. Only real upstream calls count against `dispatch.max_attempts`: a skipped candidate costs
nothing, so it must not crowd out a fallback that could answer.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import NamedTuple, Protocol

from gateway.chat import ChatParams, ChatResult, Chunk, Usage
from gateway.clock import Seconds
from gateway.config import Config, ConfigError, ModelConfig
from gateway.enforce import violation
from gateway.errors import (
    BudgetExhausted,
    DeadlineExceeded,
    PermissionDenied,
    Reason,
    Unavailable,
    UpstreamRejected,
)
from gateway.levels import Level
from gateway.outcome import (
    BUDGET,
    CIRCUIT_OPEN,
    NOT_CONFIGURED,
    SKIPPED,
    Attempt,
    error_type,
    upstream_calls,
)
from gateway.providers.base import Provider, UpstreamError
from gateway.providers.breaker import Breaker, Breakers, Permit

log = logging.getLogger(__name__)

__all__ = [
    "BUDGET",
    "CIRCUIT_OPEN",
    "NOT_CONFIGURED",
    "SKIPPED",
    "Answer",
    "Attempt",
    "AttemptHooks",
    "Dispatcher",
    "StreamPiece",
    "Variant",
    "build_provider",
]


def build_provider(alias: str, model: ModelConfig, output_cap: int | None = None) -> Provider:
    """Create the adapter for one catalogue entry. Raises `LookupError` when the model cannot be
    used (its API key variable is unset); the message names the variable, never a value.
    `output_cap` is the output limit sent when a request sets none (what the budget reserves)."""
    if model.provider == "ollama":
        from gateway.providers.ollama import OllamaProvider

        return OllamaProvider(model, output_cap=output_cap)
    from gateway.providers.openai import OpenAIProvider

    if model.api_key_env is None:
        # OpenAI-compatible servers without auth (vLLM, llama.cpp) still need a non-empty key.
        return OpenAIProvider(model, api_key="unused", output_cap=output_cap)
    key = os.environ.get(model.api_key_env, "")
    if not key:
        raise LookupError(f"environment variable {model.api_key_env} is not set")
    return OpenAIProvider(model, api_key=key, output_cap=output_cap)


class AttemptHooks(Protocol):
    """Called around each upstream attempt (the budget's reserve and settle stages)."""

    async def begin(self, alias: str) -> None: ...

    async def fail(self, alias: str, error: BaseException) -> None: ...

    async def succeed(self, alias: str, usage: Usage | None) -> float:
        """Settle the attempt; returns what it cost (USD)."""

    async def interrupted(self, alias: str, usage: Usage | None, relayed_chars: int) -> float:
        """A stream that ended early after `relayed_chars` characters of output reached the
        caller: charge it (the provider bills what it generated); returns the cost."""

    def skipped(self, alias: str, reason: str) -> None:
        """A candidate passed over without a call (`not_configured`, `circuit_open`)."""


class _NoHooks:
    async def begin(self, alias: str) -> None:
        return None

    async def fail(self, alias: str, error: BaseException) -> None:
        return None

    async def succeed(self, alias: str, usage: Usage | None) -> float:
        return 0.0

    async def interrupted(self, alias: str, usage: Usage | None, relayed_chars: int) -> float:
        return 0.0

    def skipped(self, alias: str, reason: str) -> None:
        return None


NO_HOOKS: AttemptHooks = _NoHooks()


# Built per request (and per streamed chunk): NamedTuples, cheaper than frozen dataclasses.
class Answer(NamedTuple):
    result: ChatResult
    model: str
    attempts: tuple[Attempt, ...]  # every candidate considered, skipped ones included

    @property
    def calls(self) -> int:
        """Upstream calls made (RouteInfo.attempts): skipped candidates excluded."""
        return upstream_calls(self.attempts)


class StreamPiece(NamedTuple):
    chunk: Chunk
    model: str
    calls: int  # upstream calls made so far, this one included


class _Entry:
    """A candidate cleared for a call: its provider, breaker, permit and time allowance.
    (A plain slotted class: built once per attempt on the request path.)"""

    __slots__ = ("breaker", "capped", "permit", "provider", "started_ns", "started_perf", "timeout")

    def __init__(
        self, provider: Provider, breaker: Breaker, permit: Permit, timeout: float, capped: bool
    ) -> None:
        self.provider = provider
        self.breaker = breaker
        self.permit = permit
        self.timeout = timeout
        self.started_ns = time.time_ns()
        self.started_perf = time.perf_counter()
        # The caller's deadline, not the model's own timeout, bounds this call: a timeout
        # then says nothing about the model's health.
        self.capped = capped


def _output_chars(chunk: Chunk) -> int:
    """Characters of model output in a chunk (content and complete tool calls)."""
    calls = sum(len(c.name) + len(c.arguments) for c in chunk.tool_calls)
    return len(chunk.content_delta) + calls


class _Chain:
    """Bookkeeping of one request's walk down its candidates."""

    __slots__ = ("attempts", "budget", "calls", "classification", "deadline", "dispatcher", "last")

    def __init__(
        self,
        dispatcher: Dispatcher,
        classification: Level,
        deadline: float,
        attempts: list[Attempt] | None,
    ) -> None:
        self.dispatcher = dispatcher
        self.classification = classification
        self.deadline = deadline
        # The caller's list when it keeps the request's history (the pipeline does).
        self.attempts: list[Attempt] = [] if attempts is None else attempts
        self.calls = 0
        self.last: UpstreamError | None = None
        self.budget: BudgetExhausted | None = None

    def may_call(self) -> bool:
        return self.calls < self.dispatcher.max_attempts

    async def enter(
        self, alias: str, hooks: AttemptHooks, classification: Level | None = None
    ) -> _Entry | None:
        """The candidate's provider with its breaker permit taken and its budget reserved;
        None (recorded as an attempt) to skip it. Raises when it must not be used at all.
        `classification`: of the request this candidate gets (a redacted one), when it is not
        the request's own."""
        dispatcher = self.dispatcher
        dispatcher.check(alias, self.classification if classification is None else classification)
        provider = dispatcher.providers.get(alias)
        if provider is None:
            self.attempts.append(Attempt(alias, NOT_CONFIGURED))
            hooks.skipped(alias, NOT_CONFIGURED)
            return None
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded("the deadline expired before a model answered")
        own = dispatcher.models[alias].timeout_s
        breaker = dispatcher.breakers.by_alias[alias]
        permit = breaker.acquire()
        if permit is None:
            self.attempts.append(Attempt(alias, CIRCUIT_OPEN))
            hooks.skipped(alias, CIRCUIT_OPEN)
            return None
        try:
            await hooks.begin(alias)
        except BudgetExhausted as exc:
            # A cheaper (or free) fallback may still fit the budget.
            breaker.neutral(permit)
            self.attempts.append(Attempt(alias, BUDGET))
            self.budget = exc
            return None
        except BaseException:
            breaker.neutral(permit)
            raise
        self.calls += 1
        return _Entry(provider, breaker, permit, min(own, remaining), remaining < own)

    def answered(
        self,
        alias: str,
        entry: _Entry,
        usage: Usage | None,
        cost: float,
        model: str,
        finish: str,
        response_id: str = "",
        first_chunk_s: float | None = None,
    ) -> None:
        self.attempts.append(
            Attempt(
                alias,
                None,
                entry.started_ns,
                time.perf_counter() - entry.started_perf,
                usage,
                cost,
                model,
                finish,
                response_id=response_id,
                time_to_first_chunk_s=first_chunk_s,
            )
        )

    def ended(
        self,
        alias: str,
        entry: _Entry,
        error: str,
        *,
        usage: Usage | None = None,
        cost: float = 0.0,
        cost_estimated: bool = False,
    ) -> None:
        """Record an attempt that made a call and did not answer (a stream that ended early
        carries what it was charged)."""
        self.attempts.append(
            Attempt(
                alias,
                error,
                entry.started_ns,
                time.perf_counter() - entry.started_perf,
                usage,
                cost,
                cost_estimated=cost_estimated,
            )
        )

    def failed(self, alias: str, entry: _Entry, exc: UpstreamError) -> None:
        """Record a failed attempt; raise when the failure must not fall back."""
        self.ended(alias, entry, exc.kind)
        breaker = entry.breaker
        if exc.kind == "timeout" and (entry.capped or time.monotonic() >= self.deadline):
            breaker.neutral(entry.permit)
            raise DeadlineExceeded(f"the deadline expired while model {alias!r} was answering")
        if not exc.retryable:
            # The model answered; the request is what is wrong, and another model would
            # reject it too.
            breaker.neutral(entry.permit)
            raise UpstreamRejected(
                f"model {alias!r} rejected the request: {exc.message}",
                status=exc.status or 400,
                model=alias,
            )
        breaker.failure(entry.permit)
        log.warning("model %s failed (%s); trying the next candidate", alias, exc.kind)
        self.last = exc

    def give_up(self) -> Exception:
        if self.budget is not None and self.last is None:
            return self.budget
        tried = ", ".join(f"{a.model}: {a.error}" for a in self.attempts) or "no candidate"
        capped = (
            f"; stopped after {self.calls} calls (dispatch.max_attempts)"
            if not self.may_call()
            else ""
        )
        # The kind and status only: an upstream's error text may quote the prompt back.
        detail = ""
        if self.last is not None:
            status = f" (HTTP {self.last.status})" if self.last.status else ""
            detail = f"; last error: {self.last.kind}{status}"
        return Unavailable(
            f"no model could answer ({tried}){capped}{detail}",
            models=",".join(a.model for a in self.attempts),
        )


class Variant(NamedTuple):
    """The request one candidate gets instead of the original (a redacted one), with the
    classification its own inspection gave it: the residency check before the call uses it."""

    params: ChatParams
    classification: Level


class Dispatcher:
    def __init__(
        self,
        config: Config,
        *,
        clock: Seconds = time.monotonic,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        """`providers` replaces building adapters from the catalogue (benchmarks, in-memory
        tests); it still passes the air-gap filter below."""
        self.models: Mapping[str, ModelConfig] = config.models
        self.max_attempts = config.dispatch.max_attempts
        self.breakers = Breakers(
            config.models,
            failures=config.dispatch.breaker_failures,
            cooldown_s=config.dispatch.breaker_cooldown_s,
            clock=clock,
        )
        self.providers: dict[str, Provider] = {}
        self.unavailable: dict[str, str] = {}
        for alias, model in config.models.items():
            if config.airgapped and model.location == "cloud":
                # The config refuses this at load; a config built another way must still never
                # get a client that could open a connection out of the cluster.
                self.unavailable[alias] = "cloud model in air-gapped mode"
                log.error("model %s is a cloud model in air-gapped mode; not created", alias)
                continue
            if providers is not None:
                if alias in providers:
                    self.providers[alias] = providers[alias]
                continue
            try:
                self.providers[alias] = build_provider(
                    alias, model, config.limits.estimate_output_tokens
                )
            except LookupError as exc:
                self.unavailable[alias] = str(exc)
                log.warning("model %s is unavailable: %s", alias, exc)
            except ValueError as exc:
                # A provider-specific parameter the adapter cannot use: a config error.
                raise ConfigError(f"models.{alias}.params: {exc}") from None

    def healthy(self, alias: str) -> bool:
        """Configured and its breaker lets a call through (closed, or cooled down for a probe)."""
        breaker = self.breakers.by_alias.get(alias)
        return breaker is not None and alias in self.providers and breaker.available()

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()

    def check(self, alias: str, classification: Level) -> None:
        """Raise unless `alias` is in the catalogue and cleared for `classification`.

        Unreachable when the pipeline enforced first; kept as the last line of defence, so it
        refuses (fails the request) rather than skipping to the next candidate."""
        model = self.models.get(alias)
        if model is None:
            raise PermissionDenied(
                f"model {alias!r} is not in the catalogue", reason=Reason.UNKNOWN_MODEL, model=alias
            )
        reason = violation(alias, model, classification)
        if reason is not None:
            log.error("dispatch refused model %s for %s content", alias, classification.name)
            raise PermissionDenied(
                reason,
                reason=Reason.DATA_RESIDENCY,
                model=alias,
                classification=classification.name,
            )

    def provider(self, alias: str, classification: Level) -> Provider | None:
        """The cleared provider of `alias` (None when it is not configured)."""
        self.check(alias, classification)
        return self.providers.get(alias)

    async def chat(
        self,
        chain: Sequence[str],
        params: ChatParams,
        classification: Level,
        deadline: float,
        hooks: AttemptHooks = NO_HOOKS,
        attempts: list[Attempt] | None = None,
        variants: Mapping[str, Variant] | None = None,
    ) -> Answer:
        """`attempts`, when given, receives every attempt as it ends (failures included).
        `variants`: the candidates that get another request than `params` (redacted), each
        checked against that request's own classification."""
        walk = _Chain(self, classification, deadline, attempts)
        for alias in chain:
            if not walk.may_call():
                break
            variant = variants.get(alias) if variants else None
            entry = await walk.enter(
                alias, hooks, None if variant is None else variant.classification
            )
            if entry is None:
                continue
            sent = params if variant is None else variant.params
            try:
                result = await entry.provider.chat(sent, timeout=entry.timeout)
            except UpstreamError as exc:
                await hooks.fail(alias, exc)
                walk.failed(alias, entry, exc)
                continue
            except BaseException as exc:
                entry.breaker.neutral(entry.permit)
                walk.ended(alias, entry, error_type(exc))
                await hooks.fail(alias, exc)
                raise
            entry.breaker.success(entry.permit)
            try:
                cost = await hooks.succeed(alias, result.usage)
            except BaseException as exc:
                walk.ended(alias, entry, error_type(exc))
                raise
            walk.answered(
                alias,
                entry,
                result.usage,
                cost,
                result.response_model,
                result.finish_reason,
                result.response_id,
            )
            return Answer(result, alias, tuple(walk.attempts))
        raise walk.give_up()

    async def stream(
        self,
        chain: Sequence[str],
        params: ChatParams,
        classification: Level,
        deadline: float,
        hooks: AttemptHooks = NO_HOOKS,
        attempts: list[Attempt] | None = None,
        variants: Mapping[str, Variant] | None = None,
    ) -> AsyncGenerator[StreamPiece, None]:
        """Falls back only until the first chunk has been handed to the caller; after that a
        failure ends the stream with `Unavailable` (or `DeadlineExceeded`). An attempt is
        recorded when it ends: at the chunk with the finish reason, or when it fails."""
        walk = _Chain(self, classification, deadline, attempts)
        for alias in chain:
            if not walk.may_call():
                break
            variant = variants.get(alias) if variants else None
            entry = await walk.enter(
                alias, hooks, None if variant is None else variant.classification
            )
            if entry is None:
                continue
            sent = params if variant is None else variant.params
            breaker = entry.breaker
            settled = False  # answered: recorded, and the budget hook has settled
            recorded = False  # recorded as failed by `walk.failed`
            judged = False  # the breaker has heard how this attempt went
            error: BaseException | None = None
            relayed = -1  # output characters handed to the caller; -1: nothing handed yet
            usage_seen: Usage | None = None
            try:
                # aclosing: an abandoned stream closes its upstream connection at once.
                async with aclosing(entry.provider.stream(sent, timeout=entry.timeout)) as chunks:
                    try:
                        first = await anext(chunks)
                    except StopAsyncIteration:
                        first = None
                    except UpstreamError as exc:
                        error = exc
                        judged = recorded = True
                        walk.failed(alias, entry, exc)
                        continue
                    if first is None:
                        error = UpstreamError("protocol", "the stream ended before any chunk")
                        judged = recorded = True
                        walk.failed(alias, entry, error)
                        continue
                    first_chunk_s = time.perf_counter() - entry.started_perf
                    # A first chunk means the model serves, whatever happens later.
                    breaker.success(entry.permit)
                    judged = True
                    calls = walk.calls
                    chunk = first
                    try:
                        while True:
                            relayed += _output_chars(chunk)
                            usage_seen = chunk.usage or usage_seen
                            if chunk.finish_reason is not None and not settled:
                                cost = await hooks.succeed(alias, chunk.usage)
                                settled = True
                                walk.answered(
                                    alias,
                                    entry,
                                    chunk.usage,
                                    cost,
                                    chunk.response_model,
                                    chunk.finish_reason,
                                    chunk.response_id,
                                    first_chunk_s,
                                )
                            yield StreamPiece(chunk, alias, calls)
                            chunk = await anext(chunks)
                    except StopAsyncIteration:
                        return
                    except UpstreamError as exc:
                        error = exc
                        if exc.kind == "timeout" and (entry.capped or time.monotonic() >= deadline):
                            raise DeadlineExceeded(
                                f"the deadline expired while model {alias!r} was streaming"
                            ) from None
                        breaker.failure(Permit(alias, probe=False))
                        raise Unavailable(
                            f"model {alias!r} failed after the stream started ({exc.kind})",
                            models=alias,
                        ) from None
            except BaseException as exc:
                error = error or exc
                if not judged:
                    breaker.neutral(entry.permit)
                raise
            finally:
                if not settled:
                    error = error or Unavailable("the stream ended early")
                    if relayed >= 0:
                        # Output reached the caller, so the model generated it and the
                        # provider bills it: charge it, to the usage or to the estimate.
                        cost = await hooks.interrupted(alias, usage_seen, relayed)
                        walk.ended(
                            alias,
                            entry,
                            error_type(error),
                            usage=usage_seen,
                            cost=cost,
                            cost_estimated=usage_seen is None,
                        )
                    else:
                        if not recorded:
                            walk.ended(alias, entry, error_type(error))
                        await hooks.fail(alias, error)
        raise walk.give_up()
