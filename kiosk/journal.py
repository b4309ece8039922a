"""The sale journal: every sale and each of its state changes, durable before anything happens.

SQLite in WAL mode with synchronous=FULL: a commit returns only after the WAL is on disk, so a
row written before a side effect survives a power cut that happens during the side effect.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from kiosk.durable import created_durably, make_dirs
from kiosk.payments.base import PaymentMode
from kiosk.sale import FINAL_STATES, Attempt, AttemptState, CloseReason, Sale, SaleState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sales (
    order_id        TEXT PRIMARY KEY,
    slot_id         TEXT NOT NULL,
    amount_minor    INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    provider        TEXT NOT NULL,
    state           TEXT NOT NULL,
    close_reason    TEXT,
    refund_id       TEXT,
    provider_txn_id TEXT,
    qr_content      TEXT,
    detail          TEXT,
    winner          TEXT,
    reported        INTEGER NOT NULL DEFAULT 0,  -- its final event is in the outbox
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sale_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id  TEXT NOT NULL REFERENCES sales(order_id),
    state     TEXT NOT NULL,
    at        TEXT NOT NULL,
    note      TEXT
);
CREATE TABLE IF NOT EXISTS payments (
    order_id    TEXT PRIMARY KEY,
    sale_id     TEXT NOT NULL REFERENCES sales(order_id),
    provider    TEXT NOT NULL,
    mode        TEXT NOT NULL,
    state       TEXT NOT NULL,
    started     REAL NOT NULL,
    confirming  INTEGER NOT NULL DEFAULT 0,
    updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_sale ON payments(sale_id);
CREATE INDEX IF NOT EXISTS sale_events_order ON sale_events(order_id);
CREATE INDEX IF NOT EXISTS sales_state ON sales(state);
"""


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class SaleRecord:
    order_id: str
    slot_id: str
    amount_minor: int
    currency: str
    provider: str
    state: SaleState
    close_reason: CloseReason | None
    refund_id: str | None
    provider_txn_id: str | None
    qr_content: str | None
    detail: str | None
    created_at: str
    updated_at: str
    winner: str | None = None
    attempts: tuple[Attempt, ...] = ()

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def to_sale(self) -> Sale:
        return Sale(
            state=self.state,
            order_id=self.order_id,
            slot_id=self.slot_id,
            amount_minor=self.amount_minor,
            currency=self.currency,
            qr_content=self.qr_content,
            provider_txn_id=self.provider_txn_id,
            close_reason=self.close_reason,
            refund_id=self.refund_id,
            detail=self.detail,
            attempts=self.attempts,
            winner=self.winner,
            history=(self.state,),
        )


@dataclass(frozen=True)
class SaleEvent:
    order_id: str
    state: SaleState
    at: str
    note: dict[str, object] | None


class Journal:
    def __init__(self, path: Path) -> None:
        make_dirs(path.parent)
        new = not path.exists()
        self.path = path
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so each record is one transaction.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._ensure_column("sales", "winner", "TEXT")
        self._ensure_column("sales", "reported", "INTEGER NOT NULL DEFAULT 0")
        if new:
            created_durably(path)

    def _ensure_column(self, table: str, column: str, declaration: str) -> None:
        """Journals written by an older version gain new columns in place (nothing is lost)."""
        columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def new_order_id(prefix: str = "K") -> str:
        """Unique across restarts and devices, <= 32 alphanumerics (WeChat's limit)."""
        stamp = datetime.now(UTC).strftime("%y%m%d%H%M%S")
        return f"{prefix[:6]}{stamp}{secrets.token_hex(6)}"

    def record(self, sale: Sale, provider: str = "", note: dict[str, object] | None = None) -> None:
        """Write the sale's current state and one event row, durably, in one transaction."""
        if sale.order_id is None or sale.slot_id is None:
            raise ValueError("only a sale with an order id can be journaled")
        now = utc_now_iso()
        provider = _sale_provider(sale) or provider
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute(
                """INSERT INTO sales (order_id, slot_id, amount_minor, currency, provider, state,
                       close_reason, refund_id, provider_txn_id, qr_content, detail, winner, created_at, updated_at)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(order_id) DO UPDATE SET state=excluded.state, provider=excluded.provider,
                       close_reason=excluded.close_reason, refund_id=excluded.refund_id,
                       provider_txn_id=excluded.provider_txn_id, qr_content=excluded.qr_content,
                       detail=excluded.detail, winner=excluded.winner, updated_at=excluded.updated_at""",
                (
                    sale.order_id, sale.slot_id, sale.amount_minor, sale.currency, provider,
                    sale.state.value, sale.close_reason.value if sale.close_reason else None,
                    sale.refund_id, sale.provider_txn_id, sale.qr_content, sale.detail, sale.winner, now, now,
                ),
            )
            for a in sale.attempts:
                cur.execute(
                    """INSERT INTO payments (order_id, sale_id, provider, mode, state, started, confirming, updated_at)
                       VALUES (?,?,?,?,?,?,?,?)
                       ON CONFLICT(order_id) DO UPDATE SET state=excluded.state,
                           confirming=excluded.confirming, updated_at=excluded.updated_at""",
                    (a.order_id, sale.order_id, a.provider, a.mode.value, a.state.value, a.started,
                     int(a.confirming), now),
                )
            cur.execute(
                "INSERT INTO sale_events (order_id, state, at, note) VALUES (?,?,?,?)",
                (sale.order_id, sale.state.value, now, json.dumps(note) if note else None),
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def mark_reported(self, order_id: str) -> None:
        """The sale's final event is safely in the outbox; recovery need not report it again."""
        self._db.execute("UPDATE sales SET reported = 1 WHERE order_id = ?", (order_id,))

    def unreported(self) -> list[SaleRecord]:
        """Final sales whose event may not have reached the outbox (a crash came in between)."""
        rows = self._db.execute(
            f"SELECT {_SALE_COLUMNS} FROM sales WHERE state IN ({_FINALS}) AND reported = 0 ORDER BY created_at"
        ).fetchall()
        return [self._with_attempts(_to_record(r)) for r in rows]

    def get(self, order_id: str) -> SaleRecord | None:
        row = self._db.execute(f"SELECT {_SALE_COLUMNS} FROM sales WHERE order_id = ?", (order_id,)).fetchone()
        return self._with_attempts(_to_record(row)) if row else None

    def _with_attempts(self, record: SaleRecord) -> SaleRecord:
        rows = self._db.execute(
            "SELECT order_id, provider, mode, state, started, confirming FROM payments"
            " WHERE sale_id = ? ORDER BY rowid",
            (record.order_id,),
        ).fetchall()
        attempts = tuple(
            Attempt(r[0], r[1], PaymentMode(r[2]), float(r[4]), AttemptState(r[3]), bool(r[5])) for r in rows
        )
        return replace(record, attempts=attempts)

    def unsettled(self) -> list[SaleRecord]:
        """Sales not final, or final with a losing attempt that may still hold money."""
        rows = self._db.execute(
            f"""SELECT {_SALE_COLUMNS} FROM sales s WHERE s.state NOT IN ({_FINALS})
                OR EXISTS (SELECT 1 FROM payments p WHERE p.sale_id = s.order_id
                           AND p.state IN ('open', 'paid') AND p.order_id IS NOT s.winner)
                ORDER BY s.created_at""",
        ).fetchall()
        return [self._with_attempts(_to_record(r)) for r in rows]

    def unfinished(self) -> list[SaleRecord]:
        rows = self._db.execute(
            f"SELECT {_SALE_COLUMNS} FROM sales WHERE state NOT IN ({_FINALS}) ORDER BY created_at"
        ).fetchall()
        return [self._with_attempts(_to_record(r)) for r in rows]

    def sales(self, limit: int = 100) -> list[SaleRecord]:
        rows = self._db.execute(
            f"SELECT {_SALE_COLUMNS} FROM sales ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,)
        ).fetchall()
        return [self._with_attempts(_to_record(r)) for r in rows]

    def events(self, order_id: str) -> list[SaleEvent]:
        rows = self._db.execute(
            "SELECT order_id, state, at, note FROM sale_events WHERE order_id = ? ORDER BY id", (order_id,)
        ).fetchall()
        return [SaleEvent(r[0], SaleState(r[1]), r[2], json.loads(r[3]) if r[3] else None) for r in rows]


_SALE_COLUMNS = (
    "order_id, slot_id, amount_minor, currency, provider, state, close_reason, refund_id, provider_txn_id, "
    "qr_content, detail, created_at, updated_at, winner"
)
_FINALS = ",".join(f"'{s.value}'" for s in sorted(FINAL_STATES))


def _sale_provider(sale: Sale) -> str | None:
    winner = sale.attempt(sale.winner) if sale.winner else None
    chosen = winner or (sale.attempts[0] if sale.attempts else None)
    return chosen.provider if chosen else None


def _to_record(row: tuple[object, ...]) -> SaleRecord:
    (order_id, slot_id, amount, currency, provider, state, reason, refund_id, txn, qr, detail,
     created, updated, winner) = row
    return SaleRecord(
        order_id=str(order_id),
        slot_id=str(slot_id),
        amount_minor=int(amount),  # type: ignore[call-overload]
        currency=str(currency),
        provider=str(provider),
        state=SaleState(str(state)),
        close_reason=CloseReason(str(reason)) if reason else None,
        refund_id=str(refund_id) if refund_id else None,
        provider_txn_id=str(txn) if txn else None,
        qr_content=str(qr) if qr else None,
        detail=str(detail) if detail else None,
        created_at=str(created),
        updated_at=str(updated),
        winner=str(winner) if winner else None,
    )
