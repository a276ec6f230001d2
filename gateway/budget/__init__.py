"""Budgets: spend per tenant (and label) per UTC day or month, held atomically by a ledger."""

from __future__ import annotations

from gateway.budget.ledger import (
    Bucket,
    Charge,
    Clock,
    Ledger,
    Reservation,
    utc_now,
    window_bounds,
)
from gateway.config import Config


async def open_ledger(config: Config, *, clock: Clock = utc_now) -> Ledger:
    """The ledger the config names, connected and ready. Raises ConfigError when the SQLite
    file cannot be opened, gateway.errors.Unavailable when Redis cannot be reached."""
    if config.ledger.backend == "redis":
        from gateway.budget.redis import RedisLedger

        redis_ledger = RedisLedger(config, config.ledger.redis_url(), clock=clock)
        try:
            await redis_ledger.open()
        except BaseException:
            await redis_ledger.aclose()
            raise
        return redis_ledger
    from gateway.budget.sqlite import SqliteLedger

    sqlite_ledger = SqliteLedger(config, config.resolve(config.ledger.path), clock=clock)
    try:
        await sqlite_ledger.open()
    except BaseException:
        await sqlite_ledger.aclose()
        raise
    return sqlite_ledger


__all__ = [
    "Bucket",
    "Charge",
    "Clock",
    "Ledger",
    "Reservation",
    "open_ledger",
    "utc_now",
    "window_bounds",
]
