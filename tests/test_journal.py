"""The journal is a real SQLite file: durable settings, every state change kept, restart-safe."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from kiosk.journal import Journal
from kiosk.sale import PaymentVerified, QrReady, Sale, SaleState, Selected


def test_every_state_change_is_kept_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    sale, _ = Sale().handle(Selected("A1", "K1", 250, "USD", 0))
    journal.record(sale, "alipay")
    sale, _ = sale.handle(QrReady("qr-text", 1, 60))
    journal.record(sale, "alipay")
    sale, _ = sale.handle(PaymentVerified("T9", 2))
    journal.record(sale, "alipay", {"why": "test"})
    journal.close()

    reopened = Journal(path)
    record = reopened.get("K1")
    assert record is not None
    assert record.state is SaleState.PAID and record.provider_txn_id == "T9" and record.qr_content == "qr-text"
    assert [e.state for e in reopened.events("K1")] == [
        SaleState.SELECTED, SaleState.AWAITING_PAYMENT, SaleState.PAID
    ]
    assert reopened.events("K1")[-1].note == {"why": "test"}
    assert [r.order_id for r in reopened.unfinished()] == ["K1"]
    restored = record.to_sale()
    assert restored.state is SaleState.PAID and restored.amount_minor == 250


def test_the_journal_uses_wal_and_full_sync(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    mode = journal._db.execute("PRAGMA journal_mode").fetchone()[0]
    sync = journal._db.execute("PRAGMA synchronous").fetchone()[0]
    assert mode == "wal" and sync == 2  # 2 = FULL


def test_a_committed_row_is_visible_to_another_connection_at_once(tmp_path: Path) -> None:
    # What a crash-restart relies on: the row is in the file when record() returns.
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    sale, _ = Sale().handle(Selected("A1", "K2", 100, "USD", 0))
    journal.record(sale, "alipay")
    other = sqlite3.connect(path)
    assert other.execute("SELECT state FROM sales WHERE order_id='K2'").fetchone() == ("selected",)


def test_order_ids_are_unique_and_short_enough_for_every_wallet() -> None:
    ids = {Journal.new_order_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) <= 32 and i.isalnum() for i in ids)
