"""What fleet operators can do to a running kiosk: the device side of every MQTT command.

KioskOperator implements the command dispatcher's DeviceActions (and the desired-config target)
against the app: the engine for maintenance and the catalog, the journal and a SaleRunner of its
own for refunds, the relays for tests, a ring of recent log lines. What operators set (catalog,
maintenance, exchange rates) is kept in the outbox database, so it survives a restart with the
broker away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from kiosk import __version__
from kiosk.config import Catalog, Slot
from kiosk.fleet.agent import FleetAgent
from kiosk.fleet.commands import CommandFailed
from kiosk.fleet.desired import DesiredConfig
from kiosk.fleet.outbox import utc_now_iso
from kiosk.fleet.topics import Topics
from kiosk.payments.base import Provider
from kiosk.runner import SaleRunner, Unresolved
from kiosk.sale import SaleState

if TYPE_CHECKING:
    from kiosk.app import KioskApp

log = logging.getLogger(__name__)

# systemd/kiosk.service restarts the daemon on this exit status (RestartForceExitStatus=).
EXIT_RESTART_REQUESTED = 75

# Fields of a slot that name hardware: fixed by the config file, never changed over MQTT.
HARDWARE_FIELDS = ("relay", "relay_active_high", "button", "confirm", "delivery")
STOP_DELAY_S = 0.5  # lets the reply to reboot/restart reach the broker first


class LogRing(logging.Handler):
    """The last N formatted log lines, for the `logs` command."""

    def __init__(self, capacity: int = 1000) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(self.format(record))


def _severity(value: str) -> str:
    return value if value in ("info", "warning", "critical") else "warning"


class KioskOperator:
    def __init__(self, app: KioskApp, topics: Topics, providers: dict[str, Provider]) -> None:
        assert app.outbox is not None and app.link is not None
        self.app = app
        self.topics = topics
        self.providers = providers
        self.outbox = app.outbox
        self.link = app.link
        # The class quotas from [outbox] (the app opens the outbox before the config is split up).
        self.outbox.money_limit = app.config.outbox.money_limit
        self.outbox.telemetry_limit = app.config.outbox.telemetry_limit
        self.configured = app.config.catalog
        self.catalog = app.config.catalog
        self.maintenance = False
        self.maintenance_reason: str | None = None
        self.exchange_rates: dict[str, float] = {}
        self.started_at = time.monotonic()
        self.log_ring = LogRing()
        self.after_stop: Callable[[], None] | None = None
        self._refunds: SaleRunner | None = None
        self._relay_lock = asyncio.Lock()
        self._door_open = False
        self.agent = FleetAgent(
            app.config.fleet,
            topics,
            self.outbox,
            self.link,
            self,
            self,
            journal_path=app.config.journal.path,
            describe=self.describe,
        )

    # ------------------------------------------------------------ lifecycle (app wiring)

    def can_sell(self) -> str | None:
        return self.agent.can_sell()

    async def run(self) -> None:
        logging.getLogger().addHandler(self.log_ring)
        try:
            self._restore()
            self.agent.on_resume = lambda: self.app.engine.wake() if self.app.engine is not None else None
            supervisor = getattr(self.app.hardware, "supervisor", None)
            if supervisor is not None:
                supervisor.add_alarm_sink(self)  # device failures and the service door, as fleet alarms
            await self.agent.run()
        finally:
            logging.getLogger().removeHandler(self.log_ring)

    def _restore(self) -> None:
        saved = json.loads(self.outbox.get_state("operator") or "{}")
        if saved.get("catalog"):
            try:
                self._apply_catalog(self._checked_catalog(saved["catalog"]), save=False)
            except CommandFailed as exc:
                log.warning("the catalog set by operators no longer fits this config (%s); using the file's", exc)
        self.exchange_rates = dict(saved.get("exchange_rates") or {})
        if saved.get("maintenance"):
            self._apply_maintenance(True, saved.get("maintenance_reason"), save=False)

    def _save(self) -> None:
        state = {
            "catalog": None
            if self.catalog is self.configured
            else [s.model_dump(by_alias=True) for s in self.catalog.slots],
            "maintenance": self.maintenance,
            "maintenance_reason": self.maintenance_reason,
            "exchange_rates": self.exchange_rates,
        }
        self.outbox.set_state("operator", json.dumps(state, ensure_ascii=False, default=str))

    def describe(self) -> dict[str, Any]:
        """Birth fields: peripherals and their health, what is on sale, what operators set."""
        hw = self.app.hardware
        peripherals: list[dict[str, Any]] = []
        health: dict[str, dict[str, object]] = {}
        with contextlib.suppress(Exception):  # the supervisor's view, where the hardware has one
            health = hw.health() if hw is not None else {}
        for name, h in health.items():
            peripherals.append({"name": name, "type": str(h.get("driver", "")), "healthy": bool(h.get("ok", True)),
                                "detail": str(h.get("detail", ""))})
        if hw is not None and not health:
            peripherals.append({"name": "display", "type": type(hw.display).__name__, "healthy": True})
            for slot_id in hw.relays:
                peripherals.append({"name": f"relay:{slot_id}", "type": "relay", "healthy": True})
        return {
            "peripherals": peripherals,
            "providers": sorted(self.providers),
            "selection_mode": self.app.config.selection.mode.value,
            # Which config file the kiosk runs: equal digests, equal configs (secrets are paths only).
            "config_digest": hashlib.sha256(self.app.config.model_dump_json(warnings=False).encode()).hexdigest()[:16],
            "catalog": [
                {"id": s.id, "name": s.names.en, "price": s.price, "currency": s.currency} for s in self.catalog.slots
            ],
            "maintenance": self.maintenance,
            "exchange_rates": self.exchange_rates,
        }

    # ------------------------------------------------------------ the hardware supervisor's alarms

    def on_alarm(self, alarm_id: str, severity: str, message: str) -> None:
        if alarm_id == "maintenance" and "door" in message.lower():
            self._door_open = True
            self.agent.emit("door_opened", {"message": message}, False)
        self.agent.spawn(self.agent.alarms.raise_(alarm_id, _severity(severity), message, source="hardware"))

    def on_clear(self, alarm_id: str) -> None:
        if alarm_id == "maintenance" and self._door_open:
            self._door_open = False
            self.agent.emit("door_closed", {}, False)
        self.agent.spawn(self.agent.alarms.clear(alarm_id))

    # ------------------------------------------------------------ commands

    async def ping(self) -> dict[str, Any]:
        return {
            "pong": True,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "maintenance": self.maintenance,
            "selling": self._selling(),
            "outbox_depth": self.outbox.depth(),
        }

    async def reboot(self) -> dict[str, Any]:
        command = list(self.app.config.fleet.reboot_command)

        def reboot_now() -> None:
            log.warning("rebooting: %s", " ".join(command))
            subprocess.run(command, check=False)  # after the loop has stopped

        self.after_stop = reboot_now
        asyncio.get_running_loop().call_later(STOP_DELAY_S, self.app.request_stop)
        return {"stopping": True, "then": command, "selling": self._selling()}

    async def restart(self) -> dict[str, Any]:
        """Stop cleanly (a sale under way finishes), then run again: exec the same command line,
        or, under systemd, exit with EXIT_RESTART_REQUESTED and let systemd start it."""
        argv = [sys.executable, "-m", "kiosk", *sys.argv[1:]]

        def exec_again() -> None:
            if os.environ.get("INVOCATION_ID"):
                # Started by systemd: exit with the status the unit lists in
                # RestartForceExitStatus=, so it starts us again (Restart=on-failure alone would not).
                os._exit(EXIT_RESTART_REQUESTED)
            log.warning("restarting: %s", " ".join(argv))
            os.execv(sys.executable, argv)

        self.after_stop = exec_again
        asyncio.get_running_loop().call_later(STOP_DELAY_S, self.app.request_stop)
        return {"stopping": True, "selling": self._selling()}

    async def set_maintenance(self, on: bool, reason: str | None) -> dict[str, Any]:
        self._apply_maintenance(on, reason)
        await self.link.set_state("maintenance" if on else "online")
        self.agent.emit("maintenance", {"on": on, "reason": reason}, False)
        return {"maintenance": on, "selling": self._selling()}

    async def set_catalog(self, slots: list[dict[str, Any]]) -> dict[str, Any]:
        catalog = self._checked_catalog(slots)
        self._apply_catalog(catalog)
        self.agent.emit("config_applied", {"source": "set_catalog", "ok": True, "catalog": self._prices()}, False)
        await self.agent.publish_birth()
        return {"catalog": self._prices()}

    async def set_prices(self, prices: dict[str, int]) -> dict[str, Any]:
        catalog = self._priced_catalog(prices)
        self._apply_catalog(catalog)
        self.agent.emit("config_applied", {"source": "set_prices", "ok": True, "catalog": self._prices()}, False)
        await self.agent.publish_birth()
        return {"catalog": self._prices()}

    async def set_exchange_rate(self, currency: str, rate: float) -> dict[str, Any]:
        """CNY per one unit of `currency` (the prices' currency), e.g. USD 7.1."""
        self.exchange_rates[currency] = rate
        self._save()
        applied = {"source": "set_exchange_rate", "ok": True, "rates": dict(self.exchange_rates)}
        self.agent.emit("config_applied", applied, False)
        return {"exchange_rates": dict(self.exchange_rates)}

    async def apply_desired(self, desired: DesiredConfig) -> dict[str, Any]:
        """All parts are checked before any is applied, and applied without yielding in between."""
        catalog = None
        if desired.catalog is not None:
            catalog = self._checked_catalog(desired.catalog)
        if desired.prices is not None:
            catalog = self._priced_catalog(desired.prices, base=catalog)
        applied: dict[str, Any] = {}
        if catalog is not None:
            self._apply_catalog(catalog, save=False)
            applied["catalog"] = self._prices()
        if desired.exchange_rates is not None:
            self.exchange_rates.update(desired.exchange_rates)
            applied["exchange_rates"] = dict(self.exchange_rates)
        if desired.maintenance is not None:
            self._apply_maintenance(desired.maintenance, desired.maintenance_reason, save=False)
            applied["maintenance"] = desired.maintenance
        if desired.telemetry_interval_s is not None:
            self.agent.set_telemetry_interval(desired.telemetry_interval_s)
            applied["telemetry_interval_s"] = desired.telemetry_interval_s
        self._save()
        if desired.maintenance is not None:
            await self.link.set_state("maintenance" if desired.maintenance else "online")
        await self.agent.publish_birth()
        return applied

    async def refund(self, order_id: str, reason: str, request_id: str) -> dict[str, Any]:
        """Refund a delivered sale in full: journaled as refunding (with the same refund id rule
        as a failed delivery, `<winning order>R1`) before the provider is asked, so a crash half
        way is finished by recovery with the same id."""
        journal = self.app.journal
        if journal is None:
            raise CommandFailed("busy", "the kiosk is starting")
        record = journal.get(order_id)
        if record is None:
            raise CommandFailed("not_found", f"no order {order_id} in the journal")
        if record.state is SaleState.REFUNDED:
            raise CommandFailed("conflict", f"order {order_id} is already refunded")
        if record.state is not SaleState.DONE:
            raise CommandFailed(
                "conflict", f"order {order_id} is {record.state.value}; only a delivered sale can be refunded"
            )
        sale = record.to_sale()
        winner = sale.winner or order_id
        refund_id = f"{winner}R1"
        sale = dataclasses.replace(
            sale,
            state=SaleState.REFUNDING,
            refund_id=refund_id,
            detail=f"operator refund: {reason}",
            history=(SaleState.DONE, SaleState.REFUNDING),
        )
        journal.record(sale, note={"operator_refund": request_id, "reason": reason, "refund_id": refund_id})
        runner = self._refund_runner()
        runner.adopt(sale)
        try:
            await runner.refund(refund_id, winner)
        except Unresolved as exc:
            raise CommandFailed("failed", f"{exc}; the journal keeps it and recovery retries") from exc
        return {"order_id": order_id, "refund_id": refund_id, "amount_minor": sale.amount_minor,
                "currency": sale.currency, "state": runner.sale.state.value}

    def _refund_runner(self) -> SaleRunner:
        """A runner of its own: the engine's is busy with the sale on screen."""
        if self._refunds is None:
            journal = self.app.journal
            assert journal is not None
            self._refunds = SaleRunner(
                journal=journal,
                providers=self.providers,
                slots={s.id: s for s in self.catalog.slots},
                relays={},
                sensors={},
                emit_event=self.agent.emit,
                clock=asyncio.get_running_loop().time,
                payment_timeout_s=self.app.config.selection.payment_timeout_s,
                subject_prefix=self.app.config.payments.subject_prefix,
            )
        return self._refunds

    async def self_test(self) -> dict[str, Any]:
        checks: list[dict[str, Any]] = []

        def check(name: str, ok: bool, detail: str) -> None:
            checks.append({"name": name, "ok": ok, "detail": detail})

        journal = self.app.config.journal.path
        try:
            with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
                result = db.execute("PRAGMA quick_check").fetchone()[0]
            check("journal", result == "ok", f"quick_check: {result}")
        except sqlite3.Error as exc:
            check("journal", False, str(exc))
        check("outbox", not self.outbox.money_full, f"{self.outbox.depth()} waiting")
        free = shutil.disk_usage(self.outbox.path.parent).free
        check("disk", free > 200 * 2**20, f"{free // 2**20} MiB free")
        hw = self.app.hardware
        if hw is not None:
            stuck = [slot for slot, relay in hw.relays.items() if getattr(relay, "is_on", False)]
            check("relays", not stuck or self._selling(), f"{len(hw.relays)} relays; on now: {stuck or 'none'}")
            check("display", True, type(hw.display).__name__)
        check("mqtt", self.link.connected, f"session {self.link.session}")
        check("providers", bool(self.providers), ", ".join(sorted(self.providers)))
        passed = all(c["ok"] for c in checks)
        result_body = {"passed": passed, "checks": checks}
        self.agent.emit("self_test", result_body, False)
        return result_body

    async def test_relay(self, slot: str, ms: int) -> dict[str, Any]:
        hw = self.app.hardware
        if hw is None or slot not in hw.relays:
            raise CommandFailed("not_found", f"no relay for slot {slot!r}")
        if not self.maintenance:
            raise CommandFailed("conflict", "switch maintenance on first: a relay test must not meet a sale")
        if self._selling() or self._relay_lock.locked():
            raise CommandFailed("busy", "a sale or another relay test is under way")
        async with self._relay_lock:
            await hw.relays[slot].pulse(ms)
        self.agent.emit("relay_test", {"slot": slot, "ms": ms}, False)
        return {"slot": slot, "ms": ms, "pulsed_at": utc_now_iso()}

    async def logs(self, lines: int) -> dict[str, Any]:
        return {"lines": list(self.log_ring.lines)[-lines:]}

    async def rebirth(self) -> dict[str, Any]:
        ok = await self.agent.publish_birth()
        await self.agent.alarms.republish()
        await self.agent.publish_counters()
        return {"birth_published": ok}

    async def raise_alarm(self, alarm_id: str, severity: str, message: str) -> dict[str, Any]:
        changed = await self.agent.alarms.raise_(alarm_id, severity, message, source="operator")
        return {"id": alarm_id, "raised": True, "changed": changed}

    async def clear_alarm(self, alarm_id: str) -> dict[str, Any]:
        if not await self.agent.alarms.clear(alarm_id):
            raise CommandFailed("not_found", f"alarm {alarm_id!r} is not raised")
        return {"id": alarm_id, "cleared": True}

    # ------------------------------------------------------------ helpers

    def _selling(self) -> bool:
        engine = self.app.engine
        return bool(engine is not None and engine.selling)

    def _prices(self) -> dict[str, dict[str, Any]]:
        return {s.id: {"price": s.price, "currency": s.currency, "name": s.names.en} for s in self.catalog.slots}

    def _apply_maintenance(self, on: bool, reason: str | None, *, save: bool = True) -> None:
        self.maintenance = on
        self.maintenance_reason = reason if on else None
        engine = self.app.engine
        if engine is not None:
            engine.set_maintenance(on)
        if save:
            self._save()
        log.warning("maintenance %s%s", "on" if on else "off", f": {reason}" if reason else "")

    def _apply_catalog(self, catalog: Catalog, *, save: bool = True) -> None:
        self.catalog = catalog
        engine = self.app.engine
        if engine is not None:
            engine.replace_catalog(catalog)
        if self._refunds is not None:
            self._refunds = None  # rebuilt with the new names on the next refund
        if save:
            self._save()
        log.info("catalog now: %s", self._prices())

    def _checked_catalog(self, slots: list[dict[str, Any]]) -> Catalog:
        """A new catalog for the same hardware: same slot ids, same pins and delivery."""
        try:
            catalog = Catalog.model_validate({"slots": slots})
        except ValidationError as exc:
            problems = "; ".join(
                f"slots{''.join(f'[{p}]' if isinstance(p, int) else f'.{p}' for p in e['loc'][1:])}: {e['msg']}"
                for e in exc.errors()
            )
            raise CommandFailed("bad_request", f"invalid catalog: {problems}") from None
        configured = {s.id: s for s in self.configured.slots}
        new_ids = [s.id for s in catalog.slots]
        if sorted(new_ids) != sorted(configured):
            raise CommandFailed("bad_request", f"the catalog must have exactly the slots {sorted(configured)}")
        for slot in catalog.slots:
            fixed = configured[slot.id]
            for name in HARDWARE_FIELDS:
                if getattr(slot, name) != getattr(fixed, name):
                    raise CommandFailed("bad_request", f"slot {slot.id}: {name} is set by the config file")
        order = {s.id: i for i, s in enumerate(self.configured.slots)}
        return Catalog(slots=sorted(catalog.slots, key=lambda s: order[s.id]))

    def _priced_catalog(self, prices: dict[str, int], base: Catalog | None = None) -> Catalog:
        base = base or self.catalog
        known = {s.id for s in base.slots}
        unknown = sorted(set(prices) - known)
        if unknown:
            raise CommandFailed("bad_request", f"no slot(s) {unknown}; slots are {sorted(known)}")
        bad = sorted(k for k, v in prices.items() if not isinstance(v, int) or isinstance(v, bool) or v <= 0)
        if bad:
            raise CommandFailed("bad_request", f"prices must be positive integers in minor units: {bad}")
        slots: list[Slot] = [s.model_copy(update={"price": prices.get(s.id, s.price)}) for s in base.slots]
        return Catalog(slots=slots)
