"""The embedded ledger: one SQLite file in WAL mode.

Every operation is one `BEGIN IMMEDIATE` transaction, so the check-and-reserve is atomic even
when several processes share the file. Transactions run on the event loop on a connection
that never waits for the lock (they take tens of microseconds); one that finds the file locked
by another process is retried a few times on the loop, then waits on the ledger's thread
(docs/performance.md, "A thread hop per ledger transaction").
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from gateway.budget.ledger import (
    Bucket,
    Charge,
    Clock,
    HoldResult,
    Ledger,
    Reservation,
    Totals,
    to_usd,
    utc_now,
)
from gateway.config import Config, ConfigError

T = TypeVar("T")

# Retries on the event loop of a transaction that found the file locked by another process
# (another worker holds it for a transaction of tens of microseconds), before the ledger's
# thread waits for the lock. SQLite's own busy handler there sleeps 1, 2, 5, 10... ms between
# tries, and that one thread serves every waiting transaction of the process in turn: with two
# workers a locked settlement or reservation waited ~15 ms on average that way.
_BUSY_RETRIES_S = (0.0, 0.0, 0.0005, 0.001, 0.002, 0.004)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    bucket TEXT PRIMARY KEY,
    spent INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holds (
    bucket TEXT NOT NULL,
    reservation TEXT NOT NULL,
    amount INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (bucket, reservation)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holds_by_reservation ON holds (reservation);
CREATE INDEX IF NOT EXISTS holds_by_expiry ON holds (expires_at);
CREATE TABLE IF NOT EXISTS charges (
    id INTEGER PRIMARY KEY,
    reservation TEXT NOT NULL UNIQUE,
    at REAL NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    task_type TEXT NOT NULL,
    labels TEXT NOT NULL,
    cost INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS charges_by_time ON charges (at);
"""


class SqliteLedger(Ledger):
    def __init__(self, config: Config, path: Path, *, clock: Clock = utc_now) -> None:
        super().__init__(config, clock=clock)
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="celgate-ledger")
        # Two connections to the one file. `_fast` runs on the event loop and never waits
        # for a lock (busy_timeout 0): a transaction here takes tens of microseconds, less
        # than one hop to a thread. When the file is locked by another process, or for a
        # checkpoint (the only step that syncs to disk), the work goes to `_slow` on the
        # worker thread, which may wait.
        self._fast: sqlite3.Connection | None = None
        self._slow: sqlite3.Connection | None = None
        self._writes = 0
        self._checkpoint: asyncio.Future[None] | None = None

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)

    def _connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._slow = self._open(busy_timeout_ms=5000)
            self._slow.executescript(_SCHEMA)
            self._fast = self._open(busy_timeout_ms=0)
            # Checkpoints are left to the worker thread (see `_after_write`).
            self._fast.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.Error as exc:
            raise ConfigError(
                f"ledger.path: cannot open the SQLite ledger {self.path}: {exc}"
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"ledger.path: cannot create the folder for {self.path}: {exc.strerror}"
            ) from None

    def _open(self, *, busy_timeout_ms: int) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below).
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode survives a process crash; only power loss can drop the last
        # transactions, which is acceptable for spend accounting.
        db.execute("PRAGMA synchronous = NORMAL")
        return db

    @staticmethod
    def _transaction(db: sqlite3.Connection | None, fn: Callable[[sqlite3.Connection], T]) -> T:
        if db is None:
            raise RuntimeError("the SQLite ledger is closed")
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        for delay in (*_BUSY_RETRIES_S, None):
            try:
                result = self._transaction(self._fast, fn)
                break
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
            if delay is None:  # still locked: wait for it on the ledger's thread
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(
                    self._executor, lambda: self._transaction(self._slow, fn)
                )
                break
            # Another process (a worker) holds the file for one short transaction: let this
            # loop serve other requests meanwhile and try again.
            await asyncio.sleep(delay)
        self._after_write()
        return result

    def _after_write(self) -> None:
        self._writes += 1
        if self._writes % 500 or (self._checkpoint and not self._checkpoint.done()):
            return
        slow, now = self._slow, self._clock().timestamp()

        def housekeeping() -> None:
            if slow is None:
                return
            slow.execute("DELETE FROM holds WHERE expires_at <= ?", (now,))
            # PASSIVE never waits for readers; the WAL file is reused once checkpointed.
            slow.execute("PRAGMA wal_checkpoint(PASSIVE)").close()

        self._checkpoint = asyncio.get_running_loop().run_in_executor(self._executor, housekeeping)

    @staticmethod
    def _totals(db: sqlite3.Connection, key: str, now: float) -> Totals:
        # Expired holds belong to calls that never settled (a crash): they stop counting
        # here, and `_after_write` deletes them now and then.
        spent, held = db.execute(
            "SELECT (SELECT spent FROM spend WHERE bucket = ?1),"
            " (SELECT COALESCE(SUM(amount), 0) FROM holds WHERE bucket = ?1 AND expires_at > ?2)",
            (key, now),
        ).fetchone()
        return Totals(spent or 0, held)

    async def _load(self, buckets: Sequence[Bucket], now: datetime) -> list[Totals]:
        ts = now.timestamp()

        def load(db: sqlite3.Connection) -> list[Totals]:
            return [self._totals(db, b.key, ts) for b in buckets]

        return await self._run(load)

    async def _hold(
        self,
        reservation_id: str,
        buckets: Sequence[Bucket],
        amount: int,
        now: datetime,
        expires_at: datetime,
    ) -> HoldResult:
        ts, expires = now.timestamp(), expires_at.timestamp()

        def hold(db: sqlite3.Connection) -> HoldResult:
            totals = tuple(self._totals(db, b.key, ts) for b in buckets)
            for i, (b, t) in enumerate(zip(buckets, totals, strict=True)):
                if b.hard and t.spent_nanos + t.reserved_nanos + amount > b.limit_nanos:
                    return HoldResult(totals, i)
            db.executemany(
                "INSERT INTO holds (bucket, reservation, amount, expires_at) VALUES (?, ?, ?, ?)",
                [(b.key, reservation_id, amount, expires) for b in buckets],
            )
            return HoldResult(totals, None)

        return await self._run(hold)

    async def _charge(self, reservation: Reservation, cost: int, charge: Charge) -> bool:
        def settle(db: sqlite3.Connection) -> bool:
            inserted = db.execute(
                "INSERT OR IGNORE INTO charges"
                " (reservation, at, tenant, model, task_type, labels, cost)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    reservation.id,
                    charge.at.timestamp(),
                    charge.tenant,
                    charge.model,
                    charge.task_type,
                    json.dumps(dict(charge.labels), sort_keys=True),
                    cost,
                ),
            ).rowcount
            if not inserted:
                return False
            db.execute("DELETE FROM holds WHERE reservation = ?", (reservation.id,))
            db.executemany(
                "INSERT INTO spend (bucket, spent) VALUES (?, ?)"
                " ON CONFLICT (bucket) DO UPDATE SET spent = spent + excluded.spent",
                [(b.key, cost) for b in reservation.buckets],
            )
            return True

        return await self._run(settle)

    async def _unhold(self, reservation: Reservation) -> None:
        def release(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM holds WHERE reservation = ?", (reservation.id,))

        await self._run(release)

    async def charges(self, since: datetime | None = None) -> list[Charge]:
        start = since.timestamp() if since else float("-inf")

        def read() -> list[Charge]:
            if self._slow is None:
                raise RuntimeError("the SQLite ledger is closed")
            # One SELECT reads a consistent snapshot without taking the write lock; a long
            # report runs on the worker thread so requests keep flowing.
            rows = self._slow.execute(
                "SELECT at, tenant, model, task_type, labels, cost FROM charges"
                " WHERE at >= ? ORDER BY at, id",
                (start,),
            ).fetchall()
            return [
                Charge(
                    at=datetime.fromtimestamp(at, UTC),
                    tenant=tenant,
                    model=model,
                    task_type=task_type,
                    cost_usd=to_usd(cost),
                    labels=json.loads(labels),
                )
                for at, tenant, model, task_type, labels, cost in rows
            ]

        return await asyncio.get_running_loop().run_in_executor(self._executor, read)

    async def aclose(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint
        fast, slow, self._fast, self._slow = self._fast, self._slow, None, None

        def close() -> None:
            for db in (fast, slow):
                if db is not None:
                    db.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)
