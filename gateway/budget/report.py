"""`celgate costs`: spend from the ledger, grouped into a plain-text table."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal, TextIO, get_args

from gateway.budget import open_ledger
from gateway.budget.ledger import Charge
from gateway.config import Config, ConfigError
from gateway.errors import GatewayError
from gateway.labels import LabelPromoter, promoter_for

GroupBy = Literal["tenant", "model", "task_type"]
GROUP_BY: tuple[str, ...] = get_args(GroupBy)
# `--by label:KEY` groups by a request label the operator promoted (telemetry.labels.promote),
# with the values the metrics carry: the same cap and `other` bucket.
LABEL_PREFIX = "label:"


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    requests: int
    cost_usd: float


def parse_since(text: str) -> datetime:
    """`2025-01-31` (midnight UTC) or an ISO timestamp; ValueError says what is expected."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since: expected a date such as 2025-01-31 or 2025-01-31T12:00:00Z, got {text!r}"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def summarize(
    charges: Sequence[Charge], by: GroupBy | str, promoter: LabelPromoter | None = None
) -> list[Row]:
    """Requests and cost per group, most expensive first. `by` is a field of the charge, or
    `label:KEY` with the promoter that decides the label's reported values."""
    group = _grouping(by, promoter)
    totals: dict[str, tuple[int, float]] = {}
    for charge in sorted(charges, key=lambda c: c.at):  # the cap keeps the first values seen
        key = group(charge) or "(none)"
        count, cost = totals.get(key, (0, 0.0))
        totals[key] = (count + 1, cost + charge.cost_usd)
    rows = [Row(key, count, cost) for key, (count, cost) in totals.items()]
    return sorted(rows, key=lambda r: (-r.cost_usd, r.key))


def _grouping(by: str, promoter: LabelPromoter | None) -> Callable[[Charge], str]:
    if not by.startswith(LABEL_PREFIX):
        return lambda charge: str(getattr(charge, by))
    key = by.removeprefix(LABEL_PREFIX)
    if promoter is None or key not in promoter.keys:
        raise ValueError(f"--by {by}: {key!r} is not in telemetry.labels.promote")

    def label_value(charge: Charge) -> str:
        value = charge.labels.get(key)
        return "" if value is None else promoter.promote({key: value})[key]

    return label_value


def format_table(rows: Sequence[Row], by: GroupBy | str) -> str:
    total = Row("TOTAL", sum(r.requests for r in rows), sum(r.cost_usd for r in rows))
    cells = [(by.upper(), "REQUESTS", "COST_USD")]
    cells += [(r.key, str(r.requests), f"{r.cost_usd:.6f}") for r in [*rows, total]]
    widths = [max(len(row[i]) for row in cells) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}" for a, b, c in cells]
    lines.insert(-1, "-" * len(lines[0]))
    return "\n".join(lines) + "\n"


async def _read(config: Config, since: datetime | None) -> list[Charge]:
    ledger = await open_ledger(config)
    try:
        return await ledger.charges(since)
    finally:
        await ledger.aclose()


def run_costs(
    config: Config,
    since: str | datetime | None,
    by: str,
    out: TextIO,
    err: TextIO = sys.stderr,
) -> int:
    """Print spend since `since` grouped by `by`. Returns the exit status: 0, or 2 with a
    one-line message on `err` for bad arguments or an unreachable ledger."""
    promoter: LabelPromoter | None = None
    if by.startswith(LABEL_PREFIX):
        key = by.removeprefix(LABEL_PREFIX)
        if key not in config.telemetry.labels.promote:
            promoted = ", ".join(config.telemetry.labels.promote) or "none"
            err.write(
                f"celgate costs: --by {by}: the label {key!r} is not promoted"
                f" (telemetry.labels.promote lists: {promoted})\n"
            )
            return 2
        promoter = promoter_for(config)
    elif by not in GROUP_BY:
        choices = ", ".join([*GROUP_BY, "label:KEY"])
        err.write(f"celgate costs: --by must be one of {choices}, not {by!r}\n")
        return 2
    try:
        start = parse_since(since) if isinstance(since, str) else since
        charges = asyncio.run(_read(config, start))
    except (ValueError, ConfigError, GatewayError) as exc:
        err.write(f"celgate costs: {exc}\n")
        return 2
    out.write(format_table(summarize(charges, by, promoter), by))
    return 0
