"""The daemon's runtime state file, and the hold request other processes use to ask it to pause.

The daemon rewrites `state.json` in its runtime directory (systemd's RuntimeDirectory=, i.e.
/run/kiosk) on every watchdog tick and at once when a sale starts or ends. The updater reads it
to learn whether the new version is ready, connected and self-tested, and whether a sale is in
progress. To get the kiosk idle it writes `hold`: the daemon then starts no new sale (the engine
shows "out of service") and reports `holding` once no sale is in progress. /run is a tmpfs, and
systemd empties the runtime directory when the service stops, so a hold never outlives the run
it was meant for.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
HOLD_FILE = "hold"
DEFAULT_RUNTIME_DIR = Path("/run/kiosk")
# The holder rewrites its hold while it waits; one not refreshed for this long was left behind by
# a holder that died, and no longer stops the kiosk from selling.
HOLD_STALE_S = 120.0


def runtime_dir_from_env(environ: dict[str, str] | None = None) -> Path | None:
    """systemd's $RUNTIME_DIRECTORY (the first one if several), or None outside systemd."""
    env = os.environ if environ is None else environ
    value = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(value) if value else None


@dataclass
class RuntimeState:
    pid: int
    version: str
    started_at: str
    updated_at: str = ""
    ready: bool = False
    stopping: bool = False
    healthy: bool = True
    unhealthy_reason: str | None = None
    sale_in_progress: bool = False
    sale_id: str | None = None
    hold_requested: bool = False
    holding: bool = False
    broker: str = "none"  # "none" (no mqtt.url), "connected", "disconnected"
    self_test: dict[str, Any] = field(default_factory=dict)
    watchdog_pings: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RuntimeState:
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def self_test_ok(self) -> bool:
        return bool(self.self_test.get("ok"))


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Readers see the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with_suppressed_unlink(Path(tmp))
        raise


def with_suppressed_unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def read_state(runtime_dir: Path) -> RuntimeState | None:
    try:
        return RuntimeState.from_json((runtime_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def request_hold(runtime_dir: Path, reason: str) -> None:
    write_atomically(runtime_dir / HOLD_FILE, json.dumps({"reason": reason, "pid": os.getpid()}))


def release_hold(runtime_dir: Path) -> None:
    with_suppressed_unlink(runtime_dir / HOLD_FILE)


def hold_reason(runtime_dir: Path, stale_s: float = HOLD_STALE_S) -> str | None:
    path = runtime_dir / HOLD_FILE
    try:
        if time.time() - path.stat().st_mtime > stale_s:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, OSError):
        return "maintenance"
    return str(data.get("reason") or "maintenance") if isinstance(data, dict) else "maintenance"
