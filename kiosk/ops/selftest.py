"""Self-test: what a technician (and the update health gate) checks before trusting a kiosk.

The checks only look; none of them moves a relay or calls a payment provider. The daemon runs
them once it is up and publishes the result in its runtime state; `kiosk selftest` runs the same
checks from a shell and also shows the running daemon's view.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiosk.config import KioskConfig, check_files

MIN_FREE_BYTES = 50 * 1024 * 1024
# A clock before this is unset (no RTC, no NTP yet): certificates and signed requests will fail.
EARLIEST_SANE_TIME = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def summary(checks: list[Check]) -> dict[str, Any]:
    return {"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}


def _sqlite_ok(name: str, path: Path) -> Check:
    if not path.exists():
        return Check(name, True, f"{path} not created yet")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            result = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.Error as exc:
        return Check(name, False, f"{path}: {exc}")
    return Check(name, result == "ok", f"{path}: {result}")


def _writable_dir(name: str, directory: Path) -> Check:
    if not directory.is_dir():
        return Check(name, False, f"{directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        return Check(name, False, f"{directory} is not writable by this user")
    free = shutil.disk_usage(directory).free
    if free < MIN_FREE_BYTES:
        return Check(name, False, f"{directory}: only {free // (1024 * 1024)} MiB free")
    return Check(name, True, f"{directory}: {free // (1024 * 1024)} MiB free")


def _clock(now: datetime | None = None) -> Check:
    now = now or datetime.now(UTC)
    ok = now >= EARLIEST_SANE_TIME
    return Check("clock", ok, now.isoformat(timespec="seconds") + ("" if ok else " (not set: no NTP yet?)"))


def _devices(config: KioskConfig) -> list[Check]:
    checks: list[Check] = []
    if config.gpio.pin_factory in ("lgpio", "rpigpio", "native"):
        chips = sorted(Path("/dev").glob("gpiochip*"))
        checks.append(Check("gpio", bool(chips), ", ".join(map(str, chips)) or "no /dev/gpiochip*"))
    if config.scanner.type == "serial":
        port = Path(config.scanner.port or "")
        ok = port.exists() and os.access(port, os.R_OK | os.W_OK)
        checks.append(Check("scanner", ok, f"{port}" + ("" if ok else " missing or not accessible")))
    return checks


def offline_checks(config: KioskConfig) -> list[Check]:
    """From a shell, with or without the daemon running."""
    problems = check_files(config)
    checks = [Check("config files", not problems, "; ".join(problems) or "keys, certificates and font present")]
    checks.append(_writable_dir("state directory", config.journal.path.parent))
    checks.append(_sqlite_ok("journal", config.journal.path))
    checks.append(_sqlite_ok("outbox", config.outbox.path))
    checks.append(_clock())
    checks.extend(_devices(config))
    return checks


def daemon_checks(config: KioskConfig, *, relays: int, display_frames: bool) -> list[Check]:
    """Inside the running daemon, after start-up."""
    checks = [
        _writable_dir("state directory", config.journal.path.parent),
        _sqlite_ok("journal", config.journal.path),
        _sqlite_ok("outbox", config.outbox.path),
        _clock(),
        Check("relays", relays == len(config.catalog.slots), f"{relays} of {len(config.catalog.slots)} slots"),
        Check("display", display_frames, "start-up screen drawn" if display_frames else "nothing drawn yet"),
    ]
    checks.extend(_devices(config))
    return checks
