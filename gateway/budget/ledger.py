"""The budget ledger's interface and the logic every backend shares.

Budgets come from `Config.budgets`. A request is charged against every budget that applies to
it (one "bucket" per budget, tenant, label value and window period); a tenant-specific budget
replaces the `"*"` budget with the same label and window, so an operator can give one tenant
more or less than everybody else. A budget with a `label` tracks each value of that request
label separately; requests without the label share the bucket of the empty value, so leaving
the label out never escapes the budget.

Amounts are stored as integer nano-dollars: sums stay exact (50 reservations of $0.01 fill a
$0.50 budget exactly) in SQLite and in Redis' Lua, whose numbers are doubles (exact to 2**53
nano-dollars, about $9 million per bucket).

Backends implement five primitives (`_load`, `_hold`, `_charge`, `_unhold`, `charges`); each
must be atomic on its own, which is all the budget invariant needs: `_hold` checks and reserves
in one step.
"""

from __future__ import annotations

import abc
import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from urllib.parse import quote

from gateway.clock import Clock as Clock  # re-exported: the ledgers take it
from gateway.clock import utc_now as utc_now
from gateway.config import BudgetConfig, Config
from gateway.errors import BudgetExhausted
from gateway.v1.policy_pb2 import BudgetState

Window = Literal["day", "month"]

NANOS_PER_USD = 1_000_000_000
_ADJECTIVE: dict[str, str] = {"day": "daily", "month": "monthly"}


def to_nanos(usd: float) -> int:
    return round(usd * NANOS_PER_USD)


def to_usd(nanos: int) -> float:
    return nanos / NANOS_PER_USD


def _utc(now: datetime) -> datetime:
    # A naive datetime is taken as UTC rather than local time: windows have UTC boundaries.
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def window_bounds(window: Window, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the UTC day or month holding `now`."""
    now = _utc(now)
    if window == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


@dataclass(frozen=True, slots=True)
class Bucket:
    """One budget applied to one tenant (and label value) for one window period."""

    key: str
    tenant: str
    label: str | None
    label_value: str
    window: Window
    start: datetime
    end: datetime
    limit_nanos: int
    hard: bool

    @property
    def subject(self) -> str:
        """QuotaFailure subject: who is over budget (no request content)."""
        base = f"tenant:{self.tenant}"
        return f"{base}/label:{self.label}={self.label_value}" if self.label else base


@dataclass(frozen=True, slots=True)
class Totals:
    spent_nanos: int
    reserved_nanos: int


@dataclass(frozen=True, slots=True)
class HoldResult:
    """What `_hold` saw before adding: the totals of each bucket, and the index of the first
    hard bucket that could not cover the amount (None when the hold was placed)."""

    totals: tuple[Totals, ...]
    blocked: int | None


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    tenant: str
    labels: Mapping[str, str]
    amount_usd: float
    buckets: tuple[Bucket, ...]
    expires_at: datetime
    # A soft budget is exceeded by this reservation: allowed, to be flagged in telemetry.
    over_soft_limit: bool = False

    @property
    def amount_nanos(self) -> int:
        return to_nanos(self.amount_usd)


@dataclass(frozen=True, slots=True)
class Charge:
    """One settled call, for `celgate costs`."""

    at: datetime
    tenant: str
    model: str
    task_type: str
    cost_usd: float
    labels: Mapping[str, str] = field(default_factory=dict)


def _key_part(value: str) -> str:
    return quote(value, safe="")


def _select(budgets: Sequence[BudgetConfig], tenant: str) -> list[BudgetConfig]:
    specific = {(b.label, b.window) for b in budgets if b.tenant == tenant}
    return [
        b
        for b in budgets
        if b.tenant == tenant or (b.tenant == "*" and (b.label, b.window) not in specific)
    ]


class Ledger(abc.ABC):
    """Spend and reservations per budget bucket. All methods are safe under concurrency,
    within one process and across processes sharing the backend."""

    def __init__(self, config: Config, *, clock: Clock = utc_now) -> None:
        self._budgets = list(config.budgets)
        self._ttl = timedelta(seconds=config.ledger.reservation_ttl_s)
        self._clock = clock
        self._labels = sorted({b.label for b in self._budgets if b.label})
        self._bucket_cache: dict[tuple[str, tuple[str, ...], date], tuple[Bucket, ...]] = {}

    # Backend primitives, each atomic.

    @abc.abstractmethod
    async def _load(self, buckets: Sequence[Bucket], now: datetime) -> list[Totals]:
        """Spent and live reserved amounts of each bucket; expired holds do not count."""

    @abc.abstractmethod
    async def _hold(
        self,
        reservation_id: str,
        buckets: Sequence[Bucket],
        amount: int,
        now: datetime,
        expires_at: datetime,
    ) -> HoldResult:
        """Reserve `amount` in every bucket unless a hard bucket cannot cover it."""

    @abc.abstractmethod
    async def _charge(self, reservation: Reservation, cost: int, charge: Charge) -> bool:
        """Drop the reservation's holds, add `cost` to its buckets and record the charge.
        Returns False (and changes nothing) when the reservation was already settled."""

    @abc.abstractmethod
    async def _unhold(self, reservation: Reservation) -> None:
        """Drop the reservation's holds without charging."""

    @abc.abstractmethod
    async def charges(self, since: datetime | None = None) -> list[Charge]:
        """Every recorded charge at or after `since`, oldest first."""

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    # The public API.

    def buckets(self, tenant: str, labels: Mapping[str, str], now: datetime) -> list[Bucket]:
        """The budget buckets a request of `tenant` with `labels` is charged against."""
        now = _utc(now)
        # Buckets change only with the tenant, the budgeted labels' values and the UTC day;
        # caching them keeps date arithmetic and key quoting off the per-request path.
        cache_key = (tenant, tuple(labels.get(k, "") for k in self._labels), now.date())
        cached = self._bucket_cache.get(cache_key)
        if cached is None:
            if len(self._bucket_cache) >= 10_000:
                self._bucket_cache.clear()
            cached = self._bucket_cache[cache_key] = self._make_buckets(tenant, labels, now)
        return list(cached)

    def _make_buckets(
        self, tenant: str, labels: Mapping[str, str], now: datetime
    ) -> tuple[Bucket, ...]:
        out: list[Bucket] = []
        for budget in _select(self._budgets, tenant):
            value = labels.get(budget.label, "") if budget.label else ""
            start, end = window_bounds(budget.window, now)
            period = start.strftime("%Y-%m-%d" if budget.window == "day" else "%Y-%m")
            parts = [tenant, budget.window, period, budget.label or "", value]
            out.append(
                Bucket(
                    key="|".join(_key_part(p) for p in parts),
                    tenant=tenant,
                    label=budget.label,
                    label_value=value,
                    window=budget.window,
                    start=start,
                    end=end,
                    limit_nanos=to_nanos(budget.limit_usd),
                    hard=budget.mode == "hard",
                )
            )
        return tuple(out)

    async def snapshot(
        self, tenant: str, labels: Mapping[str, str], now: datetime | None = None
    ) -> BudgetState:
        """The most constrained budget of the request (highest utilization, hard first on a
        tie); `limited` is false when no budget applies."""
        now = _utc(now or self._clock())
        buckets = self.buckets(tenant, labels, now)
        if not buckets:
            return BudgetState(limited=False)
        totals = await self._load(buckets, now)
        states = [_state(b, t) for b, t in zip(buckets, totals, strict=True)]
        return max(states, key=lambda s: (s.utilization, s.hard))

    async def reserve(
        self,
        tenant: str,
        labels: Mapping[str, str],
        amount_usd: float,
        now: datetime | None = None,
    ) -> Reservation:
        """Hold `amount_usd` against every budget of the request, atomically.

        Raises BudgetExhausted when a hard budget cannot cover it. A zero amount (a model that
        costs nothing) is always allowed, even when the budget is spent.
        """
        now = _utc(now or self._clock())
        buckets = tuple(self.buckets(tenant, labels, now))
        amount = max(0, to_nanos(amount_usd))
        expires_at = now + self._ttl
        reservation = Reservation(
            id=uuid.uuid4().hex,
            tenant=tenant,
            labels=dict(labels),
            amount_usd=to_usd(amount),
            buckets=buckets,
            expires_at=expires_at,
        )
        if not buckets or amount == 0:
            return reservation
        result = await self._hold(reservation.id, buckets, amount, now, expires_at)
        if result.blocked is not None:
            bucket, totals = buckets[result.blocked], result.totals[result.blocked]
            raise _exhausted(bucket, totals, amount)
        over_soft = any(
            not b.hard and t.spent_nanos + t.reserved_nanos + amount > b.limit_nanos
            for b, t in zip(buckets, result.totals, strict=True)
        )
        if over_soft:
            return dataclasses.replace(reservation, over_soft_limit=True)
        return reservation

    async def settle(
        self,
        reservation: Reservation,
        actual_cost_usd: float,
        model: str,
        task_type: str,
        now: datetime | None = None,
    ) -> bool:
        """Replace the reservation by the actual cost. The charge goes to the window the
        reservation was made in. Settling twice charges once (returns False the second time)."""
        now = _utc(now or self._clock())
        charge = Charge(
            at=now,
            tenant=reservation.tenant,
            model=model,
            task_type=task_type,
            cost_usd=actual_cost_usd,
            labels=reservation.labels,
        )
        return await self._charge(reservation, max(0, to_nanos(actual_cost_usd)), charge)

    async def release(self, reservation: Reservation) -> None:
        """Give the reservation back (the call failed before costing anything)."""
        if reservation.buckets and reservation.amount_nanos:
            await self._unhold(reservation)


def _state(bucket: Bucket, totals: Totals) -> BudgetState:
    limit = to_usd(bucket.limit_nanos)
    spent = to_usd(totals.spent_nanos)
    reserved = to_usd(totals.reserved_nanos)
    used = totals.spent_nanos + totals.reserved_nanos
    return BudgetState(
        limited=True,
        limit_usd=limit,
        spent_usd=spent,
        reserved_usd=reserved,
        remaining_usd=to_usd(max(0, bucket.limit_nanos - used)),
        utilization=used / bucket.limit_nanos,
        window=bucket.window,
        hard=bucket.hard,
    )


def _exhausted(bucket: Bucket, totals: Totals, amount: int) -> BudgetExhausted:
    used = totals.spent_nanos + totals.reserved_nanos
    remaining = max(0, bucket.limit_nanos - used)
    scope = bucket.subject.replace("tenant:", "tenant ", 1).replace("/label:", ", label ")
    return BudgetExhausted(
        f"{_ADJECTIVE[bucket.window]} budget exhausted for {scope}:"
        f" limit ${to_usd(bucket.limit_nanos):.6f}, spent ${to_usd(totals.spent_nanos):.6f},"
        f" reserved ${to_usd(totals.reserved_nanos):.6f};"
        f" this request may cost up to ${to_usd(amount):.6f}. Wait for the window to reset"
        f" ({bucket.end.isoformat()}), lower max_tokens, route to a cheaper model, or raise the"
        " budget's limit_usd",
        subject=bucket.subject,
        window=bucket.window,
        limit_usd=f"{to_usd(bucket.limit_nanos):.9f}",
        remaining_usd=f"{to_usd(remaining):.9f}",
        resets_at=bucket.end.isoformat(),
    )
