"""`kiosk provision`: make a device's provisioning bundle, check one, or install one at first boot."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from kiosk.ops.provision import (
    BUNDLE_DIR_NAME,
    FAILED_RECEIPT,
    KIOSK_USER,
    ProvisionError,
    create_bundle,
    install_bundle,
    verify_bundle,
)

EXIT_BAD_INPUT = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("provision", help="provisioning bundles: create, verify, install")
    sub = parser.add_subparsers(dest="provision_command", required=True)

    create = sub.add_parser(
        "create",
        help="write the bundle for one device from a site template",
        description="Validate the site's config template with the daemon's own model, add this device's "
        "identity, broker and certificates (a new key and CSR unless --device-cert is given), and write "
        "a bundle to copy onto the SD card's boot partition as kiosk-provision/.",
    )
    create.add_argument("--template", type=Path, required=True, help="the site's kiosk.toml (catalog, payments, ...)")
    create.add_argument("--device-id", required=True)
    create.add_argument("--fleet", default=None, help="default: the template's device.fleet")
    create.add_argument("--mqtt-url", default=None, help="mqtt://host:1883 or mqtts://host:8883")
    create.add_argument("--ca-cert", type=Path, default=None, help="the CA that signed the broker's certificate")
    create.add_argument("--device-cert", type=Path, default=None, help="an issued client certificate (CN = device id)")
    create.add_argument("--device-key", type=Path, default=None, help="the key of --device-cert")
    create.add_argument("--out", type=Path, default=None, help="default: ./kiosk-provision-<device id>")
    create.set_defaults(func=handle_create)

    verify = sub.add_parser("verify", help="check a bundle's hashes and config")
    verify.add_argument("bundle", type=Path)
    verify.set_defaults(func=handle_verify)

    install = sub.add_parser("install", help="first boot: install the bundle into /etc/kiosk, wipe it from boot")
    install.add_argument("--bundle", type=Path, default=Path("/boot/firmware") / BUNDLE_DIR_NAME)
    install.add_argument("--root", type=Path, default=Path("/"), help="the system to install into")
    install.add_argument("--user", default=KIOSK_USER, help="the account the daemon runs as")
    install.set_defaults(func=handle_install)


def handle_create(args: argparse.Namespace) -> int:
    out: Path = args.out or Path(f"kiosk-provision-{args.device_id}")
    try:
        summary = create_bundle(
            args.template,
            out,
            device_id=args.device_id,
            fleet=args.fleet,
            mqtt_url=args.mqtt_url,
            ca_cert=args.ca_cert,
            device_cert=args.device_cert,
            device_key=args.device_key,
        )
    except ProvisionError as exc:
        print(f"kiosk provision: {exc}", file=sys.stderr)
        print("kiosk provision: nothing was written", file=sys.stderr)
        return EXIT_BAD_INPUT
    for line in summary.lines():
        print(line)
    print(f"next: copy {out} to the boot partition of the device's card as {BUNDLE_DIR_NAME}/")
    return 0


def handle_verify(args: argparse.Namespace) -> int:
    try:
        manifest, config = verify_bundle(args.bundle)
    except ProvisionError as exc:
        print(f"{args.bundle}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{args.bundle}: OK, {config.device.fleet}/{config.device.id}, {len(manifest['files'])} file(s)")
    for name, info in sorted(manifest["files"].items()):
        print(f"  {'secret' if info.get('secret') else 'public'}  {name}")
    return 0


def handle_install(args: argparse.Namespace) -> int:
    bundle: Path = args.bundle
    if not bundle.is_dir():
        print(f"kiosk provision install: no bundle at {bundle}; nothing to do")
        return 0
    try:
        result = install_bundle(bundle, args.root, user=args.user)
    except (ProvisionError, OSError) as exc:
        # The bundle stays where it is so a technician can see and fix it; the reason goes next to it.
        message = f"kiosk provision install: {exc}"
        print(message, file=sys.stderr)
        with contextlib.suppress(OSError):
            (bundle.parent / FAILED_RECEIPT).write_text(message + "\n", encoding="utf-8")
        return EXIT_BAD_INPUT
    print(f"kiosk provision install: {result.fleet}/{result.device_id}: {len(result.installed)} file(s) installed")
    print(f"receipt: {result.receipt}")
    return 0
