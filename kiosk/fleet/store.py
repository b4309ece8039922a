"""The fleet's history: every event, status change and alarm, de-duplicated, in SQLite or PostgreSQL.

One schema and the same SQL for both (JSON kept as text); `?` placeholders become `%s` for
psycopg. Events are keyed by their envelope id, so a record the kiosk re-sent after a lost ack,
or that two ingest instances both saw, is stored once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        id TEXT PRIMARY KEY, fleet TEXT NOT NULL, device TEXT NOT NULL, seq BIGINT NOT NULL,
        type TEXT NOT NULL, ts TEXT NOT NULL, received_at TEXT NOT NULL, historical INTEGER NOT NULL,
        data TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_device_ts ON events (device, ts)",
    "CREATE INDEX IF NOT EXISTS events_type_ts ON events (type, ts)",
    """CREATE TABLE IF NOT EXISTS statuses (
        fleet TEXT NOT NULL, device TEXT NOT NULL, state TEXT NOT NULL, session BIGINT NOT NULL,
        ts TEXT NOT NULL, received_at TEXT NOT NULL, PRIMARY KEY (fleet, device, session, state))""",
    """CREATE TABLE IF NOT EXISTS alarms (
        fleet TEXT NOT NULL, device TEXT NOT NULL, alarm_id TEXT NOT NULL, raised_at TEXT NOT NULL,
        severity TEXT NOT NULL, message TEXT NOT NULL, cleared_at TEXT,
        PRIMARY KEY (fleet, device, alarm_id, raised_at))""",
)


@dataclass(frozen=True)
class EventRow:
    id: str
    fleet: str
    device: str
    seq: int
    type: str
    ts: str
    historical: bool
    data: dict[str, Any]


@dataclass(frozen=True)
class StatusRow:
    fleet: str
    device: str
    state: str
    session: int
    ts: str


@dataclass(frozen=True)
class AlarmRow:
    fleet: str
    device: str
    alarm_id: str
    raised_at: str | None  # None: cleared
    severity: str = ""
    message: str = ""


Row = EventRow | StatusRow | AlarmRow


class Store:
    """Thread-safe (one lock): ingest writes from a worker thread, the console reads."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._lock = threading.Lock()
        self.postgres = target.startswith(("postgresql://", "postgres://"))
        if self.postgres:
            try:
                import psycopg
            except ImportError as exc:  # the optional extra `fleet`
                raise RuntimeError("PostgreSQL needs psycopg: pip install 'kiosk[fleet]'") from exc
            self._db: Any = psycopg.connect(target, autocommit=False)
        else:
            path = Path(target.removeprefix("sqlite://"))
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
        with self._lock:
            for statement in SCHEMA:
                self._execute(statement)
            self._db.commit()

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.postgres else statement

    def _execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        cursor = self._db.cursor()
        cursor.execute(self._sql(statement), params)
        return cursor

    def add(self, rows: Iterable[Row], received_at: str) -> int:
        """Store a batch in one transaction; returns how many were new."""
        new = 0
        with self._lock:
            try:
                for row in rows:
                    new += self._add(row, received_at)
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
        return new

    def _add(self, row: Row, received_at: str) -> int:
        if isinstance(row, EventRow):
            cursor = self._execute(
                "INSERT INTO events (id, fleet, device, seq, type, ts, received_at, historical, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (row.id, row.fleet, row.device, row.seq, row.type, row.ts, received_at, int(row.historical),
                 json.dumps(row.data, ensure_ascii=False)),
            )
            return max(int(cursor.rowcount), 0)
        if isinstance(row, StatusRow):
            cursor = self._execute(
                "INSERT INTO statuses (fleet, device, state, session, ts, received_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (fleet, device, session, state) DO NOTHING",
                (row.fleet, row.device, row.state, row.session, row.ts, received_at),
            )
            return max(int(cursor.rowcount), 0)
        if row.raised_at is None:
            cursor = self._execute(
                "UPDATE alarms SET cleared_at = ?"
                " WHERE fleet = ? AND device = ? AND alarm_id = ? AND cleared_at IS NULL",
                (received_at, row.fleet, row.device, row.alarm_id),
            )
            return max(int(cursor.rowcount), 0)
        cursor = self._execute(
            "INSERT INTO alarms (fleet, device, alarm_id, raised_at, severity, message) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (fleet, device, alarm_id, raised_at) DO NOTHING",
            (row.fleet, row.device, row.alarm_id, row.raised_at, row.severity, row.message),
        )
        return max(int(cursor.rowcount), 0)

    # ------------------------------------------------------------ reading (the console)

    def events(
        self, *, device: str | None = None, since: str | None = None, types: Sequence[str] = (), limit: int = 1000
    ) -> list[dict[str, Any]]:
        where, params = ["1=1"], []
        if device:
            where.append("device = ?")
            params.append(device)
        if since:
            where.append("ts >= ?")
            params.append(since)
        if types:
            where.append(f"type IN ({', '.join('?' * len(types))})")
            params.extend(types)
        with self._lock:
            rows = self._execute(
                "SELECT id, fleet, device, seq, type, ts, historical, data FROM events WHERE "
                + " AND ".join(where) + " ORDER BY ts, device, seq LIMIT ?",
                (*params, limit),
            ).fetchall()
            self._db.commit()
        return [
            {"id": r[0], "fleet": r[1], "device": r[2], "seq": r[3], "type": r[4], "ts": r[5],
             "historical": bool(r[6]), "data": json.loads(r[7])}
            for r in rows
        ]

    def count(self, table: str) -> int:
        assert table in ("events", "statuses", "alarms")
        with self._lock:
            (n,) = self._execute(f"SELECT count(*) FROM {table}").fetchone()
            self._db.commit()
        return int(n)

    def open_alarms(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._execute(
                "SELECT fleet, device, alarm_id, raised_at, severity, message FROM alarms WHERE cleared_at IS NULL"
                " ORDER BY raised_at"
            ).fetchall()
            self._db.commit()
        keys = ("fleet", "device", "id", "raised_at", "severity", "message")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def sales_summary(events: list[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """Sales and refunds grouped by day, device or wallet (provider), per currency. A refund is
    counted once per refund id even if a kiosk reported it twice."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    refunds_seen: set[str] = set()
    for event in events:
        data = event["data"]
        if event["type"] not in ("sale", "refund"):
            continue
        if event["type"] == "refund":
            refund_key = str(data.get("refund_id") or event["id"])
            if refund_key in refunds_seen:
                continue
            refunds_seen.add(refund_key)
        key = {"day": event["ts"][:10], "device": event["device"], "wallet": str(data.get("provider") or "?")}[by]
        currency = str(data.get("currency") or "?")
        group = groups.setdefault((key, currency), {by: key, "currency": currency, "sales": 0, "sales_minor": 0,
                                                     "refunds": 0, "refunds_minor": 0})
        amount = int(data.get("amount_minor") or 0)
        if event["type"] == "sale":
            group["sales"] += 1
            group["sales_minor"] += amount
        else:
            group["refunds"] += 1
            group["refunds_minor"] += amount
    return [groups[k] for k in sorted(groups)]
