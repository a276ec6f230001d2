"""Settlements waiting for the shared ledger: a small SQLite file on local disk.

When Redis goes away after a call was answered, the call's charge cannot be written; it is
written here instead (synchronous=FULL: on disk before the settle returns) and replayed when
Redis answers again, by this process or, after a restart, by the next one that opens the same
file. Replaying is idempotent: the Redis charge script refuses a reservation it has already
settled, so a charge that did reach Redis before its answer was lost is not counted twice.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.budget.ledger import Bucket, Charge, Reservation
from gateway.config import ConfigError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY,
    reservation TEXT NOT NULL UNIQUE,
    entry TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Pending:
    """One settlement to replay: the reservation, the cost in nano-dollars and the charge."""

    reservation: Reservation
    cost: int
    charge: Charge


def _bucket(b: Bucket) -> dict[str, Any]:
    return {
        "key": b.key,
        "tenant": b.tenant,
        "label": b.label,
        "label_value": b.label_value,
        "window": b.window,
        "start": b.start.isoformat(),
        "end": b.end.isoformat(),
        "limit_nanos": b.limit_nanos,
        "hard": b.hard,
    }


def _encode(item: Pending) -> str:
    r, c = item.reservation, item.charge
    return json.dumps(
        {
            "reservation": {
                "id": r.id,
                "tenant": r.tenant,
                "labels": dict(r.labels),
                "amount_usd": r.amount_usd,
                "buckets": [_bucket(b) for b in r.buckets],
                "expires_at": r.expires_at.isoformat(),
            },
            "cost": item.cost,
            "charge": {
                "at": c.at.isoformat(),
                "tenant": c.tenant,
                "model": c.model,
                "task_type": c.task_type,
                "cost_usd": c.cost_usd,
                "labels": dict(c.labels),
            },
        },
        sort_keys=True,
    )


def _decode(text: str) -> Pending:
    data = json.loads(text)
    r, c = data["reservation"], data["charge"]
    buckets = tuple(
        Bucket(
            key=b["key"],
            tenant=b["tenant"],
            label=b["label"],
            label_value=b["label_value"],
            window=b["window"],
            start=datetime.fromisoformat(b["start"]),
            end=datetime.fromisoformat(b["end"]),
            limit_nanos=int(b["limit_nanos"]),
            hard=bool(b["hard"]),
        )
        for b in r["buckets"]
    )
    reservation = Reservation(
        id=r["id"],
        tenant=r["tenant"],
        labels=r["labels"],
        amount_usd=float(r["amount_usd"]),
        buckets=buckets,
        expires_at=datetime.fromisoformat(r["expires_at"]),
    )
    charge = Charge(
        at=datetime.fromisoformat(c["at"]),
        tenant=c["tenant"],
        model=c["model"],
        task_type=c["task_type"],
        cost_usd=float(c["cost_usd"]),
        labels=c["labels"],
    )
    return Pending(reservation, int(data["cost"]), charge)


class SettlementJournal:
    """Pending settlements, keyed by reservation id. Thread-safe; calls are short (one row)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            # FULL: a settlement is on disk before anyone is told it was recorded.
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)
            self._count = int(self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(
                f"ledger.journal_path: cannot open the settlement journal {path}:"
                f" {getattr(exc, 'strerror', None) or exc}"
            ) from None

    def __len__(self) -> int:
        return self._count

    def add(self, item: Pending) -> None:
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO pending (reservation, entry) VALUES (?, ?)",
                (item.reservation.id, _encode(item)),
            )
            self._count += cursor.rowcount

    def pending(self, limit: int = 500) -> list[Pending]:
        with self._lock:
            rows = self._db.execute(
                "SELECT reservation, entry FROM pending ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        out: list[Pending] = []
        for reservation, text in rows:
            try:
                out.append(_decode(text))
            except (ValueError, KeyError, TypeError):
                # A damaged line cannot be replayed; it must not block the ones after it.
                log.error("settlement journal: entry %s is unreadable; dropped", reservation)
                self.remove(reservation)
        return out

    def remove(self, reservation_id: str) -> None:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM pending WHERE reservation = ?", (reservation_id,)
            )
            self._count -= cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
