"""The settlement journal: entries survive reopening, come back exactly as written, and a
damaged entry is dropped without blocking the ones after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.budget.journal import Pending, SettlementJournal
from gateway.budget.ledger import Bucket, Charge, Reservation

NOW = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)


def _pending(rid: str) -> Pending:
    bucket = Bucket(
        key=f"t|day|2026-12-02||{rid}",
        tenant="t",
        label="team",
        label_value="x",
        window="day",
        start=NOW.replace(hour=0),
        end=NOW.replace(hour=0) + timedelta(days=1),
        limit_nanos=5_000_000_000,
        hard=True,
    )
    reservation = Reservation(
        id=rid,
        tenant="t",
        labels={"team": "x"},
        amount_usd=0.5,
        buckets=(bucket,),
        expires_at=NOW + timedelta(minutes=15),
    )
    charge = Charge(at=NOW, tenant="t", model="m", task_type="chat", cost_usd=0.25, labels={})
    return Pending(reservation, 250_000_000, charge)


def test_entries_survive_reopening_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = SettlementJournal(path)
    journal.add(_pending("a"))
    journal.add(_pending("a"))  # the same settlement twice is one entry
    journal.add(_pending("b"))
    journal.close()
    again = SettlementJournal(path)
    assert len(again) == 2
    assert again.pending() == [_pending("a"), _pending("b")]
    again.remove("a")
    assert [p.reservation.id for p in again.pending()] == ["b"]
    assert len(again) == 1
    again.close()


def test_a_damaged_entry_is_dropped(tmp_path: Path) -> None:
    journal = SettlementJournal(tmp_path / "journal.sqlite3")
    journal.add(_pending("a"))
    journal._db.execute("UPDATE pending SET entry = '{not json' WHERE reservation = 'a'")
    journal.add(_pending("b"))
    assert [p.reservation.id for p in journal.pending()] == ["b"]
    assert len(journal) == 1
    journal.close()
