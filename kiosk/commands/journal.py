"""`kiosk journal list|show|export --csv`: the technician's view of the sale journal.

Opens the SQLite file read-only, so it is safe while the daemon runs (WAL lets readers and the
one writer go on together), and reads columns by name, so a newer journal with more columns is
still listed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from kiosk.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from kiosk.money import format_amount

EXIT_BAD_INPUT = 2
CSV_COLUMNS = (
    "created_at", "updated_at", "order_id", "slot_id", "amount_minor", "currency", "amount", "provider",
    "state", "close_reason", "refund_id", "provider_txn_id", "winner", "detail",
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("journal", help="list, show and export the sales in the journal")
    source = argparse.ArgumentParser(add_help=False)
    source.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="the journal named in this config")
    source.add_argument("--db", type=Path, default=None, help="a journal file (instead of --config)")
    sub = parser.add_subparsers(dest="journal_command", required=True)

    listing = sub.add_parser("list", parents=[source], help="the latest sales, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--state", default=None, help="only sales in this state, e.g. refunding")
    listing.add_argument("--open", action="store_true", help="only sales that are not final")
    listing.set_defaults(func=handle_list)

    show = sub.add_parser("show", parents=[source], help="one sale with every state change and payment attempt")
    show.add_argument("order_id")
    show.set_defaults(func=handle_show)

    export = sub.add_parser("export", parents=[source], help="every sale as CSV")
    export.add_argument("--csv", action="store_true", required=True, help="CSV (the only format for now)")
    export.add_argument("--since", default=None, help="only sales created at or after this ISO date, e.g. 2026-11-01")
    export.add_argument("--out", type=Path, default=None, help="default: standard output")
    export.set_defaults(func=handle_export)


class JournalMissing(Exception):
    pass


def journal_path(args: argparse.Namespace) -> Path:
    if args.db is not None:
        return Path(args.db)
    try:
        return load_config(args.config).journal.path
    except ConfigError as exc:
        raise JournalMissing(f"{args.config}: " + "; ".join(exc.problems)) from None


@contextmanager
def open_readonly(path: Path) -> Iterator[sqlite3.Connection]:
    if not path.is_file():
        raise JournalMissing(f"no journal at {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    db.row_factory = sqlite3.Row
    try:
        yield db
    finally:
        db.close()


FINAL = ("done", "refunded", "cancelled", "expired")


def _sales(
    db: sqlite3.Connection, where: str = "", params: tuple[object, ...] = (), limit: int = -1
) -> list[dict[str, Any]]:
    rows = db.execute(
        f"SELECT * FROM sales {where} ORDER BY created_at DESC, rowid DESC LIMIT ?", (*params, limit)
    ).fetchall()
    return [dict(row) for row in rows]


def _amount(sale: dict[str, Any]) -> str:
    try:
        return format_amount(int(sale["amount_minor"]), str(sale["currency"]))
    except (KeyError, ValueError, TypeError):
        return f"{sale.get('amount_minor')} {sale.get('currency')}"


def _run(args: argparse.Namespace, body: Any) -> int:
    try:
        with open_readonly(journal_path(args)) as db:
            result: int = body(db)
            return result
    except JournalMissing as exc:
        print(f"kiosk journal: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except sqlite3.Error as exc:
        print(f"kiosk journal: cannot read the journal: {exc}", file=sys.stderr)
        return 1


def handle_list(args: argparse.Namespace) -> int:
    def body(db: sqlite3.Connection) -> int:
        if args.open:
            sales = _sales(db, f"WHERE state NOT IN ({','.join('?' * len(FINAL))})", FINAL, args.limit)
        elif args.state:
            sales = _sales(db, "WHERE state = ?", (args.state,), args.limit)
        else:
            sales = _sales(db, limit=args.limit)
        if not sales:
            print("no sales")
            return 0
        print(f"{'created (UTC)':<24} {'order id':<32} {'slot':<6} {'amount':>12}  {'state':<17} provider")
        for s in sales:
            print(
                f"{s['created_at']:<24} {s['order_id']:<32} {s['slot_id']:<6} {_amount(s):>12}  "
                f"{s['state']:<17} {s.get('winner') or s['provider']}"
            )
        return 0

    return _run(args, body)


def handle_show(args: argparse.Namespace) -> int:
    def body(db: sqlite3.Connection) -> int:
        sales = _sales(db, "WHERE order_id = ?", (args.order_id,))
        if not sales:
            print(f"kiosk journal: no sale {args.order_id}", file=sys.stderr)
            return EXIT_BAD_INPUT
        sale = sales[0]
        for key, value in sale.items():
            if value is not None and key != "qr_content":
                print(f"{key:<16} {value}")
        print(f"{'amount':<16} {_amount(sale)}")
        print("state changes:")
        for event in db.execute(
            "SELECT state, at, note FROM sale_events WHERE order_id = ? ORDER BY id", (args.order_id,)
        ):
            note = f"  {json.loads(event['note'])}" if event["note"] else ""
            print(f"  {event['at']}  {event['state']}{note}")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "payments" in tables:
            payments = db.execute(
                "SELECT * FROM payments WHERE sale_id = ? ORDER BY started", (args.order_id,)
            ).fetchall()
            if payments:
                print("payment attempts:")
                for p in payments:
                    print(f"  {p['order_id']}  {p['provider']}  {p['mode']}  {p['state']}")
        return 0

    return _run(args, body)


def write_csv(sales: list[dict[str, Any]], out: TextIO) -> None:
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for sale in reversed(sales):  # oldest first, as an accountant reads it
        row = {**sale, "amount": _amount(sale)}
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in CSV_COLUMNS])


def handle_export(args: argparse.Namespace) -> int:
    def body(db: sqlite3.Connection) -> int:
        sales = _sales(db, "WHERE created_at >= ?", (args.since,)) if args.since else _sales(db)
        if args.out is None:
            write_csv(sales, sys.stdout)
        else:
            with args.out.open("w", newline="", encoding="utf-8") as fh:
                write_csv(sales, fh)
            print(f"{len(sales)} sale(s) written to {args.out}", file=sys.stderr)
        return 0

    return _run(args, body)
