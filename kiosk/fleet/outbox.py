"""Store-and-forward outbox: events wait in SQLite until the broker has acknowledged them.

Two classes of message:
- money (sale, refund, recovery): never dropped. `money_full` turns true at the money limit and
  the app stops selling (and raises an alarm) until the broker has taken some; if the disk fills,
  put_event raises and selling stops too. Silently losing a sale record is worse than refusing
  the next sale.
- telemetry (telemetry samples and every other event): bounded; over its quota the oldest rows
  are dropped (and counted).

The same file keeps the little state the fleet link needs across restarts: session and sequence
counters, raised alarms, the applied desired-config version, and the nonces of signed commands
already run (so a replay is refused even after a reboot).

Every event gets a per-device sequence number from a counter kept in the same database and
advanced in the same transaction as the insert, so numbers never repeat after a crash or reboot
and a gap seen by the backend means a dropped telemetry row, never a lost sale.

The connection is used from the asyncio thread: each call is one short transaction on a local
file, which is cheaper than hopping to a worker thread.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiosk.durable import created_durably, make_dirs
from kiosk.fleet.topics import Topics

SCHEMA_VERSION = 2
DEFAULT_TELEMETRY_LIMIT = 10_000
DEFAULT_MONEY_LIMIT = 50_000

# Separate statements: executescript() would COMMIT our open transaction first.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
        pos     INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order, never reused
        id      TEXT NOT NULL UNIQUE,
        seq     INTEGER NOT NULL,
        class   TEXT NOT NULL CHECK (class IN ('money', 'telemetry')),
        kind    TEXT NOT NULL,
        topic   TEXT NOT NULL,
        payload BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_class_pos ON outbox (class, pos)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires REAL NOT NULL)",
)


class MessageClass(enum.StrEnum):
    MONEY = "money"
    TELEMETRY = "telemetry"


@dataclass(frozen=True)
class OutboxRecord:
    id: str
    seq: int
    message_class: MessageClass
    kind: str
    topic: str
    payload: bytes  # the UTF-8 JSON envelope, published as is
    pos: int = 0  # insertion order in the outbox

    def historical_payload(self) -> bytes:
        """The envelope with `"historical":true`: a replay of a record queued while offline
        (Sparkplug's is_historical), so a backend does not mistake it for live state."""
        return b'{"historical":true,' + self.payload[1:]

    @property
    def money(self) -> bool:
        return self.message_class is MessageClass.MONEY

    def envelope(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.payload)
        return result


def utc_now_iso() -> str:
    """UTC ISO-8601 with milliseconds and a Z, e.g. 2026-11-21T12:11:18.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Outbox:
    def __init__(
        self,
        path: Path,
        topics: Topics,
        *,
        telemetry_limit: int = DEFAULT_TELEMETRY_LIMIT,
        money_limit: int = DEFAULT_MONEY_LIMIT,
    ):
        if telemetry_limit < 1:
            raise ValueError("telemetry_limit must be at least 1")
        self.path = path
        self.topics = topics
        self.telemetry_limit = telemetry_limit
        self.money_limit = money_limit
        make_dirs(path.parent)
        new = not path.exists()
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so the write lock is taken
        # before the counter is read and two writers can never hand out the same seq.
        self._db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        try:
            self._setup()
        except BaseException:
            self._db.close()
            raise
        if new:
            created_durably(path)  # the file's name must survive a power cut too

    def _setup(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"{self.path}: cannot switch to WAL journal (got {mode})")
        # FULL: a commit is fsynced before put_event returns, so an acknowledged sale survives a
        # power cut. WAL + NORMAL would only guarantee consistency, not durability.
        self._db.execute("PRAGMA synchronous=FULL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"{self.path}: outbox schema {version} is newer than this firmware ({SCHEMA_VERSION})"
            )
        with self._transaction():
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # ------------------------------------------------------------------ writing

    def put_event(
        self,
        kind: str,
        data: dict[str, object],
        *,
        money: bool,
        topic: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Store one event; return its id. Raises before storing anything if data is not JSON.

        A caller that may repeat an event after a crash (the sale runner) passes a deterministic
        event_id: a repeat still queued is not stored twice, and one already sent is de-duplicated
        by the backend on the same id."""
        topic = topic or self.topics.event(kind)
        message_class = MessageClass.MONEY if money else MessageClass.TELEMETRY
        if event_id is not None:
            if self._db.execute("SELECT 1 FROM outbox WHERE id = ?", (event_id,)).fetchone():
                return event_id
        else:
            event_id = uuid.uuid4().hex
        with self._transaction():
            seq = self._next_counter(f"seq:{self.topics.device}")
            envelope = {
                "id": event_id,
                "seq": seq,
                "type": kind,
                "device": self.topics.device,
                "fleet": self.topics.fleet,
                "ts": utc_now_iso(),
                "data": data,
            }
            # allow_nan=False: NaN/Infinity are not JSON and a strict backend parser would reject
            # the record forever. A TypeError/ValueError here rolls the seq back too.
            payload = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            self._db.execute(
                "INSERT INTO outbox (id, seq, class, kind, topic, payload) VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, seq, message_class.value, kind, topic, payload.encode()),
            )
            if message_class is MessageClass.TELEMETRY:
                self._enforce_telemetry_limit()
        return event_id

    def _enforce_telemetry_limit(self) -> None:
        (count,) = self._db.execute("SELECT count(*) FROM outbox WHERE class = 'telemetry'").fetchone()
        excess = count - self.telemetry_limit
        if excess > 0:
            self._db.execute(
                "DELETE FROM outbox WHERE pos IN (SELECT pos FROM outbox WHERE class = 'telemetry'"
                " ORDER BY pos LIMIT ?)",
                (excess,),
            )
            self._add_counter("dropped_telemetry", excess)

    def next_session(self) -> int:
        """A new connection number (1, 2, ...), persisted so it never repeats across reboots.

        The link puts it in both its Will and its online status, so the backend can tell a late
        "lost" of an old connection from the state of the current one.
        """
        with self._transaction():
            return self._next_counter(f"session:{self.topics.device}")

    def ack_many(self, record_ids: list[str]) -> int:
        """Delete several acknowledged records in one transaction (one fsync); returns how many."""
        if not record_ids:
            return 0
        with self._transaction():
            cursor = self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in record_ids])
            return cursor.rowcount

    @property
    def money_full(self) -> bool:
        """True when money records reached the limit: stop selling until the broker takes some."""
        return self.depth(MessageClass.MONEY) >= self.money_limit

    def get_state(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, name: str, value: str | None) -> None:
        with self._transaction():
            if value is None:
                self._db.execute("DELETE FROM state WHERE name = ?", (name,))
            else:
                self._db.execute(
                    "INSERT INTO state (name, value) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (name, value),
                )

    def use_nonce(self, nonce: str, expires: float, now: float) -> bool:
        """Record a signed command's nonce; False if it was seen before (a replay)."""
        with self._transaction():
            self._db.execute("DELETE FROM nonces WHERE expires < ?", (now,))
            cursor = self._db.execute("INSERT OR IGNORE INTO nonces (nonce, expires) VALUES (?, ?)", (nonce, expires))
            return cursor.rowcount == 1

    def ack(self, record_id: str) -> bool:
        """Delete a record the broker has acknowledged. Unknown ids are ignored (returns False)."""
        with self._transaction():
            cursor = self._db.execute("DELETE FROM outbox WHERE id = ?", (record_id,))
            return cursor.rowcount > 0

    # ------------------------------------------------------------------ reading

    def pending(self, limit: int, after_pos: int = 0) -> list[OutboxRecord]:
        """Up to `limit` records after `after_pos`, oldest first (insertion order, both classes)."""
        rows = self._db.execute(
            "SELECT id, seq, class, kind, topic, payload, pos FROM outbox WHERE pos > ? ORDER BY pos LIMIT ?",
            (after_pos, limit),
        ).fetchall()
        return [
            OutboxRecord(
                id=r[0], seq=r[1], message_class=MessageClass(r[2]), kind=r[3], topic=r[4], payload=r[5], pos=r[6]
            )
            for r in rows
        ]

    def last_pos(self) -> int:
        """The newest record's position (0 when empty): records up to it were queued before now."""
        row = self._db.execute("SELECT max(pos) FROM outbox").fetchone()
        return int(row[0] or 0)

    def depth(self, message_class: MessageClass | None = None) -> int:
        """Records waiting, all or of one class (money depth is what a stop-selling rule watches)."""
        if message_class is None:
            row = self._db.execute("SELECT count(*) FROM outbox").fetchone()
        else:
            row = self._db.execute("SELECT count(*) FROM outbox WHERE class = ?", (message_class.value,)).fetchone()
        return int(row[0])

    @property
    def dropped_telemetry(self) -> int:
        """Telemetry records dropped over quota since the database was created."""
        return self._counter("dropped_telemetry")

    @property
    def last_seq(self) -> int:
        return self._counter(f"seq:{self.topics.device}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _add_counter(self, name: str, amount: int) -> int:
        # UPSERT then SELECT rather than RETURNING, which needs SQLite 3.35 (Debian 11 ships 3.34).
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, amount),
        )
        return self._counter(name)

    def _next_counter(self, name: str) -> int:
        return self._add_counter(name, 1)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception (including cancellation)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
