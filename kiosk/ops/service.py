"""The daemon's side of field operations, called from KioskApp at a few points:

- `on_sale` (a runner listener): one structured log line per sale state change, and the
  sale-in-progress flag the updater waits on;
- `can_sell` (the engine's pause hook): no new sale while an update holds the kiosk;
- `started`: self-test, READY=1, and the watchdog task;
- `stopping` / `aclose`: STOPPING=1 on SIGTERM, and a last state write.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiosk import __version__
from kiosk.config import KioskConfig
from kiosk.ops import selftest
from kiosk.ops.logs import use_journald_when_run_by_systemd
from kiosk.ops.notify import Notifier
from kiosk.ops.state import STATE_FILE, RuntimeState, hold_reason, runtime_dir_from_env, write_atomically
from kiosk.ops.watchdog import Watchdog, task_check
from kiosk.sale import Sale

if TYPE_CHECKING:
    from kiosk.app import KioskApp

log = logging.getLogger("kiosk.sales")
ops_log = logging.getLogger(__name__)

# Tasks the app starts by these names: if one dies with an exception the kiosk is not healthy.
CRITICAL_TASKS = ("fleet-link", "scanner")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class OpsHooks:
    def __init__(
        self,
        config: KioskConfig,
        *,
        notifier: Notifier | None = None,
        runtime_dir: Path | None = None,
        version: str = __version__,
    ) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self.runtime_dir = runtime_dir if runtime_dir is not None else runtime_dir_from_env()
        self.state = RuntimeState(pid=os.getpid(), version=version, started_at=_now())
        self.watchdog = Watchdog(self.notifier, [], on_tick=self._on_tick)
        self._app: KioskApp | None = None
        self.journald = use_journald_when_run_by_systemd()

    # ------------------------------------------------------------ sales

    def on_sale(self, sale: Sale, detail: str) -> None:
        if sale.order_id is None:
            return
        fields: dict[str, Any] = {"SLOT_ID": sale.slot_id, "SALE_STATE": sale.state.value}
        if sale.amount_minor:
            fields["AMOUNT_MINOR"] = sale.amount_minor
            fields["CURRENCY"] = sale.currency
        if sale.close_reason is not None:
            fields["CLOSE_REASON"] = sale.close_reason.value
        log.info(
            "sale %s %s %s%s",
            sale.order_id,
            sale.slot_id,
            sale.state.value,
            f": {detail}" if detail else "",
            extra={"sale_id": sale.order_id, "journal": fields},
        )
        in_progress = not sale.is_final
        if in_progress != self.state.sale_in_progress or self.state.sale_id != sale.order_id:
            self.state.sale_in_progress = in_progress
            self.state.sale_id = sale.order_id if in_progress else None
            self._refresh_hold()
            self.write_state()

    def can_sell(self) -> str | None:
        reason = hold_reason(self.runtime_dir) if self.runtime_dir is not None else None
        if reason is None:
            return None
        return "Updating software" if reason.startswith("update") else f"Paused: {reason}"

    def _refresh_hold(self) -> None:
        requested = self.runtime_dir is not None and hold_reason(self.runtime_dir) is not None
        self.state.hold_requested = requested
        self.state.holding = requested and not self.state.sale_in_progress

    # ------------------------------------------------------------ lifecycle

    def started(self, app: KioskApp) -> None:
        """Call once the journal, outbox and devices are up and recovery has run."""
        self._app = app
        for task in asyncio.all_tasks():
            if task.get_name() in CRITICAL_TASKS:
                self.watchdog.add_check(task_check(task, task.get_name()))
        self.run_self_test()
        self.state.ready = True
        self._refresh_broker()
        self._refresh_hold()
        self.write_state()
        self.notifier.ready(self._status_line())
        self.watchdog.start()
        ops_log.info(
            "kiosk %s ready (self-test %s, watchdog %s)",
            self.state.version,
            "ok" if self.state.self_test_ok else "FAILED",
            f"every {self.watchdog.period_s:g} s" if self.watchdog.pinging else "off",
        )

    def run_self_test(self) -> None:
        app = self._app
        hardware = app.hardware if app is not None else None
        checks = selftest.daemon_checks(
            self.config,
            relays=len(hardware.relays) if hardware is not None else 0,
            display_frames=hardware is not None,
        )
        for check in checks:
            if not check.ok:
                ops_log.error("self-test: %s: %s", check.name, check.detail)
        self.state.self_test = selftest.summary(checks)

    def stopping(self) -> None:
        if self.state.stopping:
            return
        self.state.stopping = True
        self.notifier.stopping("stopping: finishing the current sale" if self.state.sale_in_progress else "stopping")
        self.write_state()

    async def aclose(self) -> None:
        await self.watchdog.stop()
        self.state.ready = False
        self.write_state()

    # ------------------------------------------------------------ state

    def _refresh_broker(self) -> None:
        link = self._app.link if self._app is not None else None
        if self.config.mqtt.url is None or link is None:
            self.state.broker = "none"
        else:
            self.state.broker = "connected" if link.connected else "disconnected"

    def _on_tick(self, unhealthy: str | None) -> None:
        self.state.healthy = unhealthy is None
        self.state.unhealthy_reason = unhealthy
        self.state.watchdog_pings = self.watchdog.pings
        before = (self.state.broker, self.state.holding)
        self._refresh_broker()
        self._refresh_hold()
        if (self.state.broker, self.state.holding) != before and unhealthy is None:
            self.notifier.status(self._status_line())
        self.write_state()

    def _status_line(self) -> str:
        parts = [f"kiosk {self.state.version}", "ready" if self.state.ready else "starting"]
        if self.state.broker != "none":
            parts.append(f"broker {self.state.broker}")
        if self.state.holding:
            parts.append("holding for update")
        if not self.state.self_test_ok:
            parts.append("self-test failed")
        return ", ".join(parts)

    def write_state(self) -> None:
        if self.runtime_dir is None:
            return
        self.state.updated_at = _now()
        try:
            write_atomically(self.runtime_dir / STATE_FILE, self.state.to_json())
        except OSError as exc:
            ops_log.warning("cannot write %s: %s", self.runtime_dir / STATE_FILE, exc)
