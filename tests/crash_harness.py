"""Crash-matrix machinery: run the real daemon, kill it at a named point, restart, check money.

One cell = (kill point, provider, mode, scenario). The daemon runs in single-product mode against
the in-process sandbox gateway; in code mode the test types the tourist's payment code into a
pseudo-terminal the daemon reads as its serial scanner. After the kill, a second daemon recovers;
then the journal, the sandbox's books and the broker's messages must agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kiosk.payments.sandbox import SandboxGateway
from kiosk.payments.sandbox.configs import provider_config
from tests.kiosk_harness import ended_at_provider

# A payment code per provider that its sandbox accepts (the family decides the route).
CODES = {
    "alipay": "286543210987654321",
    "wechat_v2": "134567890123456789",
    "wechat_v3": "134567890123456789",
    "alipay_plus": "281001123456789012345678",
    "citcon": "134567890123456789",
}
ROUTE_FAMILY = {
    "alipay": "alipay_cn",
    "wechat_v2": "wechat",
    "wechat_v3": "wechat",
    "alipay_plus": "alipay_plus",
    "citcon": "wechat",
}


@dataclass(frozen=True)
class Cell:
    point: str
    provider: str
    mode: str  # "qr" or "code"
    scenario: str  # "delivered", "jammed" (delivery fails -> refund), "unpaid" (expires)

    @property
    def label(self) -> str:
        return f"{self.point:<32} {self.provider:<12} {self.mode:<5} {self.scenario:<9}"


@dataclass
class Outcome:
    killed: bool
    final_states: list[str]
    problems: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        where = "killed" if self.killed else "not reached"
        result = ",".join(sorted(set(self.final_states))) or "-"
        return f"{where:<11} -> {result:<18} {'OK' if not self.problems else 'FAIL: ' + '; '.join(self.problems)}"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def _section(name: str, model: BaseModel) -> str:
    lines = [f"[{name}]"]
    for key, value in model:
        if value is not None and not isinstance(value, BaseModel | dict | list):
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines)


def write_config(cell: Cell, work: Path, gateway: SandboxGateway, scanner_port: str | None, mqtt_url: str) -> Path:
    confirm = 'confirm = { pin = 27, timeout_s = 0.5 }' if cell.scenario == "jammed" else ""
    qr_provider = f'"{cell.provider}"' if cell.mode == "qr" else '"none"'
    routes = f'[payments.routes]\n{ROUTE_FAMILY[cell.provider]} = "{cell.provider}"' if cell.mode == "code" else ""
    scanner = f'[scanner]\ntype = "serial"\nport = "{scanner_port}"' if scanner_port else ""
    section = provider_config(gateway, cell.provider, poll_interval_s=0.3)
    text = f"""
[device]
id = "crash-{os.getpid()}-{abs(hash(cell)) % 10**8}"
fleet = "crash"

[selection]
mode = "single"
payment_timeout_s = {4 if cell.scenario == "unpaid" else 30}
result_screen_s = 0.2

[[catalog.slots]]
id = "W1"
names = {{ en = "Car wash", "zh-Hans" = "洗车" }}
price = 500
currency = "USD"
relay = 23
delivery = {{ mode = "pulse", ms = 50 }}
{confirm}

[payments]
provider = {qr_provider}

{routes}

{_section("payments." + cell.provider, section)}

{scanner}

[display]
dir = "{work}/frames"
width = 320
height = 240
keep_frames = false

[journal]
path = "{work}/state/journal.sqlite"

[outbox]
path = "{work}/state/outbox.sqlite"

[mqtt]
url = "{mqtt_url}"
"""
    path = work / "kiosk.toml"
    path.write_text(text)
    return path


def start(config: Path, crash_at: str | None, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "KIOSK_CRASH_AT"}
    env.update(extra_env or {})
    if crash_at:
        env["KIOSK_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [sys.executable, "-m", "kiosk", "--log-level", "WARNING", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


def journal_rows(work: Path, sql: str) -> list[tuple[Any, ...]]:
    path = work / "state" / "journal.sqlite"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []


def money_queued(work: Path) -> int | None:
    """Money events still in the outbox (None until the daemon has created it)."""
    path = work / "state" / "outbox.sqlite"
    if not path.exists():
        return None
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM outbox WHERE class = 'money'").fetchone()[0])
    except sqlite3.OperationalError:
        return None


def sale_states(work: Path) -> dict[str, str]:
    return dict(journal_rows(work, "SELECT order_id, state FROM sales ORDER BY rowid"))


@dataclass
class Pty:
    master: int
    slave: int

    @classmethod
    def open(cls) -> Pty:
        master, slave = os.openpty()
        tty.setraw(slave)
        return cls(master, slave)

    @property
    def path(self) -> str:
        return os.ttyname(self.slave)

    def scan(self, code: str) -> None:
        os.write(self.master, code.encode() + b"\r")

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def run_cell(
    cell: Cell,
    work: Path,
    gateway: SandboxGateway,
    mqtt_url: str,
    deadline_s: float = 40,
    power_cut_shim: Path | None = None,
) -> Outcome:
    """Kill the daemon at the cell's point during its first sale, restart it, let it recover.

    With power_cut_shim, the first daemon runs under the fsync-tracking shim and only what it
    fsynced survives the kill: a power cut rather than a crash."""
    (work / "state").mkdir(parents=True, exist_ok=True)
    shim_env: dict[str, str] | None = None
    if power_cut_shim is not None:
        from tests.powerloss import env_for

        shim_env = env_for(power_cut_shim, work / "state", work / "durable")
    pty = Pty.open() if cell.mode == "code" else None
    config = write_config(cell, work, gateway, pty.path if pty else None, mqtt_url)
    if cell.scenario == "unpaid":
        gateway.set_behaviour("never_pays", for_next="default")
    else:
        gateway.set_behaviour("pays", scan_delay_s=0.1, pay_delay_s=0.2, pending_polls=1, for_next=1)
        gateway.set_behaviour("never_pays", for_next="default")
    try:
        first = start(config, cell.point, shim_env)
        scanned = False
        end = time.monotonic() + deadline_s
        # Run until the kill, or until the first sale ended without reaching the point.
        while first.poll() is None and time.monotonic() < end:
            states = sale_states(work)
            if pty is not None and not scanned and "awaiting_payment" in states.values():
                pty.scan(CODES[cell.provider])
                scanned = True
            if states and next(iter(states.values())) in ("done", "refunded", "expired", "cancelled"):
                # Points just after the final journal write (the outbox, the after-write hook)
                # come microseconds later: give the process the chance to reach them.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    first.wait(1.5)
                break
            time.sleep(0.03)
        killed = first.poll() == -signal.SIGKILL
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)
        first.wait(20)
        if power_cut_shim is not None:
            from tests.powerloss import restore_after_power_cut

            restore_after_power_cut(work / "durable", work / "state")
        # The second life: recovery settles whatever the first left open.
        second = start(config, None)
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            unsettled = journal_rows(
                work,
                "SELECT count(*) FROM sales WHERE state NOT IN ('done','refunded','expired','cancelled')",
            )
            states = list(sale_states(work).values())
            first_sale = states[0] if states else None
            # Ready: recovery is over and the engine offers the next sale (single-product mode).
            if (
                len(states) >= 2
                and first_sale in ("done", "refunded", "expired", "cancelled")
                and unsettled
                and unsettled[0][0] <= 1
                and money_queued(work) == 0
            ):
                break
            time.sleep(0.05)
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
        problems = [] if second.returncode == 0 else [f"second daemon exit {second.returncode}: {err[-400:]!r}"]
        return Outcome(killed, list(sale_states(work).values()), problems)
    finally:
        if pty is not None:
            pty.close()


def check_money(work: Path, gateway: SandboxGateway, events: list[dict[str, Any]]) -> list[str]:
    """The invariants: every order final at its provider, every payment delivered or refunded,
    nothing charged or refunded twice, the journal and the provider agree, each money event
    reached the broker exactly once after de-duplication."""
    problems: list[str] = []
    sales = journal_rows(work, "SELECT order_id, state, winner FROM sales")
    attempts = journal_rows(work, "SELECT order_id, sale_id FROM payments")
    views = {v["out_trade_no"]: v for v in gateway.orders()}
    unique_events = {e["id"]: e for e in events}
    for sale_id, state, winner in sales:
        if state not in ("done", "refunded", "expired", "cancelled"):
            problems.append(f"sale {sale_id} left {state}")
            continue
        kept = []
        for order_id, owner in attempts:
            if owner != sale_id:
                continue
            view = views.get(order_id)
            if view is None:
                continue  # never reached the provider
            if view.get("refunded_minor", 0) > view["amount_minor"]:
                problems.append(f"{order_id} refunded more than it took")
            if len(view.get("refund_requests", [])) > 1:
                problems.append(f"{order_id} refunded twice: {view['refund_requests']}")
            if view["paid"] and view.get("refunded_minor", 0) < view["amount_minor"]:
                kept.append(order_id)
            elif not ended_at_provider(view):
                problems.append(f"{order_id} still open at the provider ({view.get('state')})")
        if state == "done" and kept != [winner]:
            problems.append(f"sale {sale_id} done but the provider kept {kept} (winner {winner})")
        if state != "done" and kept:
            problems.append(f"sale {sale_id} {state} but the provider kept money of {kept}")
        sale_events = [e for e in unique_events.values() if e["data"].get("order_id") == sale_id
                       and e["type"] in ("sale", "refund")]
        if state == "done" and [e["type"] for e in sale_events] != ["sale"]:
            problems.append(f"sale {sale_id} done with money events {[e['type'] for e in sale_events]}")
        if state == "refunded" and [e["type"] for e in sale_events] != ["refund"]:
            problems.append(f"sale {sale_id} refunded with money events {[e['type'] for e in sale_events]}")
    return problems
