"""`kiosk selftest`: the technician's check of a kiosk, with the running daemon's own view.

Files, storage, clock and devices first; then, unless the daemon is running (it owns the
hardware) or --no-hardware is given, the hardware test of `kiosk hwtest`: each relay clicked in
turn, a test pattern, a test scan, every input read. `--simulate` runs that on simulated hardware."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kiosk.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from kiosk.ops.selftest import offline_checks
from kiosk.ops.state import DEFAULT_RUNTIME_DIR, read_state


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("selftest", help="check config, files, storage, clock and devices")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    parser.add_argument("--runtime-dir", type=Path, default=DEFAULT_RUNTIME_DIR)
    parser.add_argument("--no-hardware", action="store_true", help="do not click relays or wait for a scan")
    parser.add_argument("--simulate", action="store_true", help="hardware test on mock pins, PNG, pty scanner")
    parser.add_argument("--scan-timeout", type=float, default=30.0, help="seconds to wait for a test scan")
    parser.add_argument("--click-ms", type=int, default=150, help="how long each relay clicks")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"FAIL config: {args.config}: " + "; ".join(exc.problems))
        return 2
    ok = True
    for check in offline_checks(config):
        ok &= check.ok
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    state = read_state(args.runtime_dir)
    if state is None:
        print(f"---- daemon: no state in {args.runtime_dir} (not running?)")
        if not args.no_hardware:
            from kiosk.commands import hwtest

            print("---- hardware")
            sys.stdout.flush()
            ok &= hwtest.handler(args) == 0
        return 0 if ok else 1
    print(f"---- daemon {state.version}, pid {state.pid}, since {state.started_at}")
    print(f"{'ok  ' if state.ready else 'FAIL'} ready")
    print(f"{'ok  ' if state.healthy else 'FAIL'} healthy{'' if state.healthy else ': ' + str(state.unhealthy_reason)}")
    if state.broker != "none":
        print(f"{'ok  ' if state.broker == 'connected' else 'FAIL'} broker {state.broker}")
    for check in state.self_test.get("checks", []):
        print(f"{'ok  ' if check.get('ok') else 'FAIL'} daemon {check.get('name')}: {check.get('detail')}")
    ok &= state.ready and state.healthy and state.self_test_ok and state.broker != "disconnected"
    if state.sale_in_progress:
        print(f"     sale {state.sale_id} in progress")
    sys.stdout.flush()
    return 0 if ok else 1
