"""Health samples for the fleet: what a Raspberry Pi in a vending machine can tell about itself.

Everything is read from /proc and /sys (no extra dependency, nothing that blocks for long); a
value the board does not have (no thermal zone, no Wi-Fi) is left out rather than faked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

THERMAL = Path("/sys/class/thermal")
PROC = Path("/proc")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def uptime_s(proc: Path = PROC) -> float | None:
    text = _read(proc / "uptime")
    return round(float(text.split()[0]), 1) if text else None


def cpu_temp_c(thermal: Path = THERMAL) -> float | None:
    """The CPU's thermal zone (type cpu-thermal on a Pi), else the first zone that reads."""
    zones = sorted(thermal.glob("thermal_zone*"))
    ordered = sorted(zones, key=lambda z: 0 if "cpu" in (_read(z / "type") or "") else 1)
    for zone in ordered:
        text = _read(zone / "temp")
        if text and text.strip().lstrip("-").isdigit():
            return round(int(text) / 1000, 1)
    return None


def memory(proc: Path = PROC) -> dict[str, int] | None:
    text = _read(proc / "meminfo")
    if not text:
        return None
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("MemTotal", "MemAvailable"):
            values[name] = int(rest.split()[0]) * 1024
    if len(values) < 2:
        return None
    return {"total_bytes": values["MemTotal"], "available_bytes": values["MemAvailable"]}


def disk(path: Path) -> dict[str, int] | None:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return {"total_bytes": usage.total, "free_bytes": usage.free}


def network(proc: Path = PROC) -> dict[str, Any] | None:
    """The interface of the default route, and Wi-Fi link quality and signal when it is wireless."""
    routes = _read(proc / "net" / "route")
    iface = None
    for line in (routes or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            iface = fields[0]
            break
    if iface is None:
        return None
    result: dict[str, Any] = {"interface": iface}
    wireless = _read(proc / "net" / "wireless")
    for line in (wireless or "").splitlines()[2:]:
        name, _, rest = line.partition(":")
        if name.strip() == iface:
            fields = rest.split()
            result["wifi_link_quality"] = float(fields[1].rstrip("."))
            result["wifi_signal_dbm"] = float(fields[2].rstrip("."))
    return result


class LoopLag:
    """How late the event loop wakes a sleeper: a blocked loop shows as lag before it shows as a
    missed QR countdown."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.last_ms = 0.0
        self.max_ms = 0.0

    async def run(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, (time.monotonic() - start - self.interval_s) * 1000)
            self.last_ms = lag
            self.max_ms = max(self.max_ms, lag)

    def take(self) -> dict[str, float]:
        out = {"last_ms": round(self.last_ms, 1), "max_ms": round(self.max_ms, 1)}
        self.max_ms = self.last_ms
        return out


@dataclass
class SalesCounters:
    """Today's (UTC) sales and refunds from the journal, read through a read-only connection."""

    journal_path: Path
    _db: sqlite3.Connection | None = field(default=None, repr=False)

    def read(self) -> dict[str, Any]:
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        out: dict[str, Any] = {"day": day, "sales": 0, "refunds": 0, "amounts": {}}
        rows: list[tuple[str, str, int, int]] = []
        try:
            if self._db is None:
                if not self.journal_path.exists():
                    return out
                self._db = sqlite3.connect(f"file:{self.journal_path}?mode=ro", uri=True, check_same_thread=False)
            rows = self._db.execute(
                "SELECT state, currency, count(*), coalesce(sum(amount_minor), 0) FROM sales"
                " WHERE updated_at >= ? AND state IN ('done', 'refunded') GROUP BY state, currency",
                (f"{day}T00:00:00",),
            ).fetchall()
        except sqlite3.Error:
            return out
        for state, currency, count, amount in rows:
            key = "sales" if state == "done" else "refunds"
            out[key] += count
            out["amounts"].setdefault(currency, {"sales": 0, "refunds": 0})[key] = amount
        return out

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def system_sample(state_dir: Path) -> dict[str, Any]:
    sample: dict[str, Any] = {}
    for name, value in (
        ("uptime_s", uptime_s()),
        ("cpu_temp_c", cpu_temp_c()),
        ("memory", memory()),
        ("disk", disk(state_dir)),
        ("network", network()),
    ):
        if value is not None:
            sample[name] = value
    with contextlib.suppress(OSError):
        sample["load"] = [round(x, 2) for x in os.getloadavg()]
    return sample
