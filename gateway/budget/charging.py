"""The reserve and settle stages of one request: before each upstream attempt the estimated
maximum cost of that model is reserved, after it the reservation is settled to the actual cost,
or released when the attempt failed (docs/architecture.md, invariant 6)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Coroutine, Mapping
from typing import Any

from gateway.budget.ledger import Ledger, Reservation
from gateway.chat import Usage
from gateway.errors import Unavailable
from gateway.inspect.analysis import CHARS_PER_TOKEN
from gateway.pricing import Pricing

log = logging.getLogger(__name__)


class Settlements:
    """Settlements being written. They run after the answer has gone to the caller (the
    reservation keeps holding the estimate until then, so nothing can overspend meanwhile);
    shutdown waits for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, settle: Coroutine[Any, Any, bool]) -> None:
        task = asyncio.get_running_loop().create_task(self._run(settle))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _run(settle: Coroutine[Any, Any, bool]) -> None:
        try:
            await settle
        except Exception as exc:
            # The reservation still expires after ledger.reservation_ttl_s; say so, once each.
            log.error(
                "settling a charge failed (%s); its reservation is released when it expires",
                type(exc).__name__,
            )

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class Charger:
    """One request's charges. Implements the dispatcher's attempt hooks (`AttemptHooks`):
    the dispatcher calls it around each attempt and records what it returns."""

    def __init__(
        self,
        ledger: Ledger,
        pricing: Pricing,
        settlements: Settlements,
        *,
        tenant: str,
        labels: Mapping[str, str],
        input_tokens: int,
        max_output_tokens: int,
        task_type: str,
    ) -> None:
        self._ledger = ledger
        self._pricing = pricing
        self._settlements = settlements
        self._tenant = tenant
        self._labels = labels
        self._input_tokens = input_tokens
        self._max_output_tokens = max_output_tokens
        self._task_type = task_type
        self._held: Reservation | None = None
        self.cost_usd = 0.0
        self.over_soft_limit = False

    def estimate(self, alias: str) -> float:
        return self._pricing.estimate_max(alias, self._input_tokens, self._max_output_tokens)

    async def begin(self, alias: str) -> None:
        """Reserve for `alias`; raises BudgetExhausted when a hard budget cannot cover it."""
        self._held = await self._ledger.reserve(self._tenant, self._labels, self.estimate(alias))
        self.over_soft_limit = self.over_soft_limit or self._held.over_soft_limit

    async def fail(self, alias: str, error: BaseException) -> None:
        held, self._held = self._held, None
        if held is not None:
            try:
                await self._ledger.release(held)
            except Unavailable:
                # The hold lapses after ledger.reservation_ttl_s; the caller hears about the
                # upstream failure, not about the ledger.
                log.warning("releasing a reservation failed: the ledger did not answer")

    async def succeed(self, alias: str, usage: Usage | None) -> float:
        """Settle to the reported usage and return the cost; without usage (a stream that
        reported none) the reserved estimate is charged, never nothing."""
        held, self._held = self._held, None
        if held is None:
            return 0.0
        cost = self._pricing.cost(alias, usage) if usage is not None else held.amount_usd
        self.cost_usd = cost
        self._settlements.start(self._ledger.settle(held, cost, alias, self._task_type))
        return cost

    async def interrupted(self, alias: str, usage: Usage | None, relayed_chars: int) -> float:
        """A stream that ended early (the caller cancelled, the upstream broke off) after
        output was relayed: the provider bills what it generated, so the attempt is charged,
        to the usage it reported or, when none arrived, to the estimate of what was relayed
        (the input estimate plus the relayed output). Returns the cost charged."""
        held, self._held = self._held, None
        if held is None:
            return 0.0
        if usage is None:
            usage = Usage(
                input_tokens=self._input_tokens,
                output_tokens=math.ceil(relayed_chars / CHARS_PER_TOKEN),
            )
        cost = self._pricing.cost(alias, usage)
        self.cost_usd = cost
        self._settlements.start(self._ledger.settle(held, cost, alias, self._task_type))
        return cost

    def skipped(self, alias: str, reason: str) -> None:
        """Nothing was reserved for a candidate skipped before its budget stage."""
