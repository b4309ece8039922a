"""`kiosk sandbox`: run the sandbox Alipay gateway in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from kiosk.payments.sandbox.faults import FAULTS
from kiosk.payments.sandbox.gateway import DEFAULT_APP_ID, SandboxGateway
from kiosk.payments.sandbox.ledger import BEHAVIOURS

DEFAULT_PORT = 8765


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiosk sandbox",
        description="Local Alipay gateway (alipay.trade.precreate/query/cancel/refund) with simulated "
        f"tourists ({', '.join(BEHAVIOURS)}) and injectable faults ({', '.join(FAULTS)}).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any)")
    parser.add_argument(
        "--keys", type=Path, default=Path("var/keys"),
        help="directory for the app and gateway key pairs (created if missing)",
    )
    parser.add_argument("--app-id", default=None, help="accept only this app_id (default: any)")
    parser.add_argument("--behaviour", choices=BEHAVIOURS, default="pays", help="default tourist")
    parser.add_argument("--scan-delay", type=float, default=2.0, help="seconds until the tourist scans")
    parser.add_argument("--pay-delay", type=float, default=3.0, help="seconds from scan to payment")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    gateway = SandboxGateway(host=args.host, port=args.port, keys_dir=args.keys, app_id=args.app_id)
    gateway.set_behaviour(args.behaviour, scan_delay_s=args.scan_delay, pay_delay_s=args.pay_delay)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        gateway.start()
        print(f"sandbox gateway:     {gateway.gateway_url}")
        print(f"control API:         {gateway.url}/sandbox/")
        print(f"app_id:              {args.app_id or DEFAULT_APP_ID + ' (any accepted)'}")
        print(f"app private key:     {gateway.app_private_key_file}  (payments.alipay.app_private_key_file)")
        print(f"app public key:      {gateway.app_public_key_file}")
        print(f"gateway public key:  {gateway.gateway_public_key_file}  (payments.alipay.alipay_public_key_file)")
        print("Ctrl-C to stop.", flush=True)
        while not done.wait(0.5):
            pass
    finally:
        gateway.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
