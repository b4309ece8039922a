"""`kiosk fleet ...`: the operator console and the ingest service.

    kiosk fleet status                       every kiosk from the retained topics
    kiosk fleet watch                        the same, live, with recent sales
    kiosk fleet alarms                       open alarms (retained)
    kiosk fleet send DEVICE COMMAND [k=v..]  a command, signed where needed; prints the reply
    kiosk fleet desired DEVICE FILE.json     a versioned desired config; waits for the report
    kiosk fleet events [--device D] [--since T] --db DB
    kiosk fleet sales [--by day|device|wallet] --db DB
    kiosk fleet ingest --db DB               keep history (SQLite path or postgresql:// URL)
    kiosk fleet keygen DIR                   the fleet's Ed25519 command-signing key pair

The broker comes from --url or KIOSK_FLEET_URL (mqtts:// with --ca-file, --cert-file, --key-file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from kiosk.config import MqttConfig
from kiosk.fleet.console import DEFAULT_SIGNED, ConsoleOptions, publish_desired, send, snapshot, watch
from kiosk.fleet.signing import generate_keypair, load_private_key

EXIT_FAILED = 1
EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("fleet", help="operator console and ingest service (MQTT)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("KIOSK_FLEET_URL", "mqtt://127.0.0.1:1883"))
    common.add_argument("--prefix", default="kiosk/v1")
    common.add_argument("--fleet", default="+", help="one fleet, or + for all")
    common.add_argument("--client-id", default=None)
    common.add_argument("--ca-file", type=Path, default=None)
    common.add_argument("--cert-file", type=Path, default=None)
    common.add_argument("--key-file", type=Path, default=None)
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--db", default=os.environ.get("KIOSK_FLEET_DB", "fleet.sqlite"),
                       help="SQLite file or postgresql://... URL (default fleet.sqlite)")
    sub = parser.add_subparsers(dest="fleet_command", required=True)

    status = sub.add_parser("status", parents=[common], help="a table of every kiosk")
    status.add_argument("--limit", type=int, default=None)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=handler)

    live = sub.add_parser("watch", parents=[common], help="the table, live")
    live.add_argument("--limit", type=int, default=40)
    live.add_argument("--refresh", type=float, default=1.0)
    live.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    live.add_argument("--no-clear", action="store_true", help="append frames instead of redrawing")
    live.set_defaults(func=handler)

    alarms = sub.add_parser("alarms", parents=[common], help="open alarms")
    alarms.add_argument("--db", default=None, help="from the ingest store instead of the broker")
    alarms.set_defaults(func=handler)

    cmd = sub.add_parser("send", parents=[common], help="send a command and print the reply")
    cmd.add_argument("device", help="DEVICE or FLEET/DEVICE")
    cmd.add_argument("command")
    cmd.add_argument("args", nargs="*", help="key=value (value parsed as JSON when it can be)")
    cmd.add_argument("--args-json", default=None, help="all arguments as one JSON object")
    cmd.add_argument("--sign-key", type=Path, default=os.environ.get("KIOSK_FLEET_SIGN_KEY"),
                     help="the fleet's Ed25519 private key (needed for refund and test_relay)")
    cmd.add_argument("--timeout", type=float, default=15.0)
    cmd.add_argument("--v311", action="store_true", help="MQTT 3.1.1: reply topic instead of response topic")
    cmd.set_defaults(func=handler)

    desired = sub.add_parser("desired", parents=[common], help="publish a desired config and wait for the report")
    desired.add_argument("device", help="DEVICE or FLEET/DEVICE")
    desired.add_argument("file", type=Path)
    desired.add_argument("--timeout", type=float, default=15.0)
    desired.set_defaults(func=handler)

    events = sub.add_parser("events", parents=[store], help="events from the ingest store")
    events.add_argument("--device", default=None)
    events.add_argument("--since", default=None, help="ISO time or date, e.g. 2026-11-21")
    events.add_argument("--type", action="append", default=[])
    events.add_argument("--limit", type=int, default=200)
    events.add_argument("--json", action="store_true")
    events.set_defaults(func=handler)

    sales = sub.add_parser("sales", parents=[store], help="sales and refunds from the ingest store")
    sales.add_argument("--by", choices=("day", "device", "wallet"), default="day")
    sales.add_argument("--since", default=None)
    sales.set_defaults(func=handler)

    ingest = sub.add_parser("ingest", parents=[common, store], help="store every event, status and alarm")
    ingest.add_argument("--group", default="kiosk-ingest", help="shared-subscription group ('' for none)")
    ingest.set_defaults(func=handler)

    keygen = sub.add_parser("keygen", help="make the fleet's Ed25519 signing key pair")
    keygen.add_argument("dir", type=Path)
    keygen.set_defaults(func=handler)


def _options(args: argparse.Namespace) -> ConsoleOptions:
    tls = MqttConfig(ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)
    options = ConsoleOptions(url=args.url, prefix=args.prefix, fleet=args.fleet, mqtt=tls)
    if args.client_id:
        options.client_id = args.client_id
    return options


def _device(args: argparse.Namespace) -> tuple[str, str]:
    if "/" in args.device:
        fleet, device = args.device.split("/", 1)
        return fleet, device
    if args.fleet != "+":
        return args.fleet, args.device
    # Find the kiosk's fleet from its retained status.
    view = asyncio.run(snapshot(_options(args), quiet_s=0.3, max_s=5))
    fleets = [f for (f, d) in view.rows if d == args.device]
    if len(fleets) != 1:
        raise SystemExit(f"kiosk fleet: {args.device!r} is in {len(fleets)} fleet(s); give FLEET/DEVICE or --fleet")
    return fleets[0], args.device


def _parse_args(pairs: list[str], raw: str | None) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(raw) if raw else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"kiosk fleet send: argument {pair!r} is not key=value")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def handler(args: argparse.Namespace) -> int:
    try:
        return _dispatch(args)
    except (OSError, TimeoutError) as exc:
        print(f"kiosk fleet {args.fleet_command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    command = args.fleet_command
    if command == "keygen":
        private, public = generate_keypair(args.dir)
        print(f"private key {private} (keep it with the operators; --sign-key)")
        print(f"public key  {public} (fleet.public_key_file on every kiosk)")
        return 0
    if command == "status":
        view = asyncio.run(snapshot(_options(args)))
        if args.json:
            print(json.dumps([vars(r) for r in view.rows.values()], indent=2, default=str))
        else:
            print(view.table(args.limit))
        return 0
    if command == "watch":
        asyncio.run(watch(_options(args), refresh_s=args.refresh, limit=args.limit, duration_s=args.duration,
                          clear=not args.no_clear))
        return 0
    if command == "alarms":
        if args.db:
            from kiosk.fleet.store import Store

            rows = Store(args.db).open_alarms()
            lines = [f"{r['fleet']:<10} {r['device']:<18} {r['id']:<24} {r['severity']:<8} {r['raised_at']}  "
                     f"{r['message']}" for r in rows]
        else:
            lines = asyncio.run(snapshot(_options(args))).alarm_lines()
        print("\n".join(lines) if lines else "no open alarms")
        return 0
    if command == "send":
        fleet, device = _device(args)
        key = load_private_key(Path(args.sign_key)) if args.sign_key else None
        if args.command in DEFAULT_SIGNED and key is None:
            print(f"kiosk fleet send: {args.command} must be signed: --sign-key or KIOSK_FLEET_SIGN_KEY",
                  file=sys.stderr)
            return EXIT_USAGE
        reply = asyncio.run(send(_options(args), fleet, device, args.command, _parse_args(args.args, args.args_json),
                                 key=key, timeout_s=args.timeout, v311=args.v311))
        print(json.dumps(reply, indent=2, ensure_ascii=False))
        return 0 if reply.get("ok") else EXIT_FAILED
    if command == "desired":
        fleet, device = _device(args)
        doc = json.loads(args.file.read_text())
        reported = asyncio.run(publish_desired(_options(args), fleet, device, doc, timeout_s=args.timeout))
        print(json.dumps(reported, indent=2, ensure_ascii=False))
        return 0 if reported.get("status") == "applied" else EXIT_FAILED
    if command in ("events", "sales"):
        from kiosk.fleet.store import Store, sales_summary

        db = Store(args.db)
        try:
            if command == "events":
                rows = db.events(device=args.device, since=args.since, types=args.type, limit=args.limit)
                for row in rows:
                    if args.json:
                        print(json.dumps(row, ensure_ascii=False))
                    else:
                        data = row["data"]
                        what = data.get("order_id") or data.get("reason") or ""
                        flag = " historical" if row["historical"] else ""
                        print(f"{row['ts']}  {row['device']:<16} {row['seq']:>6} {row['type']:<16} {what}{flag}")
            else:
                events = db.events(since=args.since, types=("sale", "refund"), limit=10_000_000)
                from kiosk.money import format_amount

                print(f"{args.by.upper():<20} {'CUR':<4} {'SALES':>6} {'AMOUNT':>14} {'REFUNDS':>8} {'REFUNDED':>14}")
                for g in sales_summary(events, args.by):
                    print(f"{g[args.by]:<20} {g['currency']:<4} {g['sales']:>6} "
                          f"{format_amount(g['sales_minor'], g['currency']):>14} {g['refunds']:>8} "
                          f"{format_amount(g['refunds_minor'], g['currency']):>14}")
        finally:
            db.close()
        return 0
    if command == "ingest":
        return _run_ingest(args)
    return EXIT_USAGE


def _run_ingest(args: argparse.Namespace) -> int:
    from kiosk.fleet.ingest import Ingest
    from kiosk.fleet.store import Store

    options = _options(args)
    store = Store(args.db)
    ingest = Ingest(
        url=args.url, store=store, prefix=args.prefix, fleet=args.fleet, group=args.group or None,
        # Stable across restarts: the broker keeps this session's unacknowledged messages.
        client_id=args.client_id or f"kiosk-ingest-{socket.gethostname()}", mqtt=options.mqtt,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await ingest.run(stop)

    try:
        asyncio.run(main())
    finally:
        with contextlib.suppress(Exception):
            store.close()
    print(f"ingest: {ingest.received} received, {ingest.stored} new rows stored", file=sys.stderr)
    return 0
