"""`kiosk update`: install a release beside the running one, switch, gate on health, roll back."""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from pathlib import Path
from typing import Any

from kiosk.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from kiosk.ops.logs import use_journald_when_run_by_systemd
from kiosk.ops.state import DEFAULT_RUNTIME_DIR
from kiosk.ops.update import (
    DEFAULT_BASE,
    Gate,
    Layout,
    SystemdService,
    UpdateError,
    Updater,
    load_release,
    outbox_sink,
    take_queued,
    write_manifest,
)

EXIT_BAD_INPUT = 2
DEFAULT_UPDATES_DIR = Path("/var/lib/kiosk/updates")
DEFAULT_LOG = Path("/var/log/kiosk/update.jsonl")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("update", help="safe updates: apply, recover, status, manifest")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--base", type=Path, default=DEFAULT_BASE, help="where the versioned venvs live")
    common.add_argument("--runtime-dir", type=Path, default=DEFAULT_RUNTIME_DIR, help="the daemon's state.json")
    common.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    common.add_argument("--unit", default="kiosk.service")
    common.add_argument("--log-file", type=Path, default=DEFAULT_LOG)
    common.add_argument("--deadline", type=float, default=120, help="seconds for the new version to get healthy")
    common.add_argument("--settle", type=float, default=10, help="seconds it must stay healthy")
    common.add_argument("--idle-timeout", type=float, default=1800, help="seconds to wait for a sale to end")
    sub = parser.add_subparsers(dest="update_command", required=True)

    apply = sub.add_parser("apply", parents=[common], help="update to the release in a directory")
    apply.add_argument("release", type=Path, help="a directory with manifest.json and the wheels")
    apply.add_argument("--allow-downgrade", action="store_true")
    apply.set_defaults(func=handle_apply)

    queued = sub.add_parser("apply-queued", parents=[common], help="the release a fleet command queued (signed)")
    queued.add_argument("--updates-dir", type=Path, default=DEFAULT_UPDATES_DIR)
    queued.set_defaults(func=handle_apply_queued)

    recover = sub.add_parser("recover", parents=[common], help="at boot: undo an update that never passed its gate")
    recover.set_defaults(func=handle_recover)

    status = sub.add_parser("status", parents=[common], help="installed versions and the last update")
    status.set_defaults(func=handle_status)

    manifest = sub.add_parser("manifest", help="release build: write manifest.json (and .sig) for a wheel directory")
    manifest.add_argument("release", type=Path)
    manifest.add_argument("--sign", type=Path, default=None, help="the fleet's Ed25519 private key (PEM)")
    manifest.set_defaults(func=handle_manifest)


def _kiosk_user() -> str | None:
    """Preflight runs the new code as the service user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("kiosk")
    except KeyError:
        return None
    return "kiosk"


def _updater(args: argparse.Namespace, **kwargs: Any) -> tuple[Updater, Path | None]:
    config_path: Path | None = args.config
    need_broker, public_key = False, None
    try:
        config = load_config(args.config)
        need_broker, public_key = config.mqtt.url is not None, config.fleet.public_key_file
    except ConfigError:
        config_path = None  # no config yet (a bare image): nothing to check it against
    updater = Updater(
        Layout(args.base),
        SystemdService(args.unit),
        args.runtime_dir,
        gate=Gate(args.deadline, args.settle, need_broker, args.idle_timeout),
        config_path=config_path,
        log_file=args.log_file,
        outbox=outbox_sink(args.config) if config_path else None,
        run_as=_kiosk_user(),
        **kwargs,
    )
    return updater, public_key


def _apply(args: argparse.Namespace, release_dir: Path, *, require_signature: bool) -> int:
    use_journald_when_run_by_systemd()  # under kiosk-update.service: UPDATE_* fields in the journal
    updater, public_key = _updater(args, allow_downgrade=getattr(args, "allow_downgrade", False))
    try:
        release = load_release(release_dir, public_key, require_signature=require_signature)
    except UpdateError as exc:
        print(f"kiosk update: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    outcome = updater.update(release)
    for event in outcome.events:
        print(f"{event['at']}  {event['step']:<13} {event['detail']}")
    verdict = "updated to" if outcome.ok else "still running"
    print(f"kiosk update: {verdict} {outcome.version}: {outcome.detail}")
    return 0 if outcome.ok else 1


def handle_apply(args: argparse.Namespace) -> int:
    return _apply(args, args.release, require_signature=False)


def handle_apply_queued(args: argparse.Namespace) -> int:
    try:
        release_dir = take_queued(args.updates_dir)
    except UpdateError as exc:
        print(f"kiosk update: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if release_dir is None:
        print("kiosk update: nothing queued")
        return 0
    # A request written by the unprivileged daemon is only trusted with the fleet's signature.
    return _apply(args, release_dir, require_signature=True)


def handle_recover(args: argparse.Namespace) -> int:
    updater, _ = _updater(args)
    restored = updater.recover()
    print(f"kiosk update: rolled back to {restored}" if restored else "kiosk update: nothing to recover")
    return 0


def handle_status(args: argparse.Namespace) -> int:
    layout = Layout(args.base)
    print(f"current   {layout.version_of(layout.current) or '-'}")
    print(f"previous  {layout.version_of(layout.previous) or '-'}")
    print(f"installed {', '.join(layout.installed()) or '-'}")
    if layout.status_file.is_file():
        print(f"last update: {layout.status_file.read_text(encoding='utf-8').strip()}")
    return 0


def handle_manifest(args: argparse.Namespace) -> int:
    try:
        release = write_manifest(args.release, args.sign)
    except UpdateError as exc:
        print(f"kiosk update: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{args.release}: kiosk {release.version}, {len(release.wheels)} wheel(s){', signed' if args.sign else ''}")
    return 0
