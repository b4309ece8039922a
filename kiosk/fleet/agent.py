"""The kiosk's side of the fleet, wired together: commands in, birth/counters/alarms/telemetry out,
desired config applied. The app builds one FleetAgent next to its FleetLink and runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt

from kiosk import __version__
from kiosk.config import FleetConfig
from kiosk.fleet.alarms import AlarmBoard
from kiosk.fleet.commands import COMMANDS, CommandDispatcher, DeviceActions
from kiosk.fleet.desired import DesiredConfigApplier, DesiredTarget
from kiosk.fleet.discovery import discovery_message
from kiosk.fleet.link import FleetLink
from kiosk.fleet.outbox import MessageClass, Outbox, utc_now_iso
from kiosk.fleet.signing import load_public_key
from kiosk.fleet.telemetry import LoopLag, SalesCounters, system_sample
from kiosk.fleet.topics import Topics

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 2.0
DISK_LOW_BYTES = 200 * 1024 * 1024
CPU_HOT_C = 80.0


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def hardware_model() -> str:
    for path in (Path("/proc/device-tree/model"), Path("/sys/firmware/devicetree/base/model")):
        try:
            return path.read_text().strip("\x00\n ")
        except OSError:
            continue
    return f"{platform.system()} {platform.machine()}"


class FleetAgent:
    def __init__(
        self,
        config: FleetConfig,
        topics: Topics,
        outbox: Outbox,
        link: FleetLink,
        actions: DeviceActions,
        target: DesiredTarget,
        *,
        journal_path: Path,
        describe: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.config = config
        self.topics = topics
        self.outbox = outbox
        self.link = link
        self.alarms = AlarmBoard(topics, outbox, link.publish)
        self.alarms.on_change = self._schedule_counters
        public_key = load_public_key(config.public_key_file) if config.public_key_file else None
        self.dispatcher = CommandDispatcher(
            topics,
            actions,
            link.publish,
            outbox,
            public_key=public_key,
            signed_commands=frozenset(config.signed_commands),
            max_age_s=config.command_max_age_s,
        )
        self.desired = DesiredConfigApplier(topics, outbox, target, link.publish, self.emit)
        self.counters = SalesCounters(journal_path)
        self.lag = LoopLag()
        self.describe = describe
        self.telemetry_interval_s = config.telemetry_interval_s
        self.state_dir = outbox.path.parent
        self.emit_failed: str | None = None
        self.on_resume: Callable[[], None] | None = None
        self._counters_task: asyncio.Task[None] | None = None
        self._wake_telemetry = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        link.subscriptions[:] = [topics.commands_filter, topics.desired_config]
        link.message_handler = self._on_message
        link.connect_hooks[:] = [self._on_connect]

    # ------------------------------------------------------------ events from the kiosk

    def emit(
        self,
        kind: str,
        data: dict[str, object],
        money: bool,
        event_id: str | None = None,
        topic: str | None = None,
    ) -> bool:
        """Store an event in the outbox (money ones never dropped) and wake the link.
        False: a money event could not be stored (the journal keeps the sale unreported, so
        recovery repeats it under the same event_id)."""
        try:
            self.outbox.put_event(kind, data, money=money, topic=topic, event_id=event_id)
        except Exception as exc:
            # The journal still holds the sale; what cannot be recorded here must stop selling.
            if money:
                self.emit_failed = f"{type(exc).__name__}: {exc}"
                log.critical("outbox cannot store a %s event: %s; selling stops", kind, exc)
                return False
            raise
        self.link.notify()
        self._derived(kind, data)
        if kind in ("sale", "refund"):
            self._schedule_counters()
        return True

    def _derived(self, kind: str, data: dict[str, object]) -> None:
        """Events operators ask for by name, derived from the sale's own records."""
        reason = str(data.get("reason") or "")
        if kind == "refund" and reason and not reason.startswith("operator") and reason != "cancelled_by_customer":
            if data.get("state") == "refunded" and "refund_id" in data and reason not in ("shutdown", "expired"):
                failure = {"order_id": data.get("order_id"), "slot_id": data.get("slot_id"), "reason": reason}
                self.emit("delivery_failed", failure, False)
                slot = str(data.get("slot_id") or "unknown")
                self._spawn(
                    self.alarms.raise_(f"delivery_failed_{slot}", "warning", f"slot {slot}: delivery failed ({reason})")
                )
        elif kind == "sale_closed" and data.get("reason") == "provider_error":
            self.emit("payment_error", {"order_id": data.get("order_id"), "provider": data.get("provider")}, False)

    def can_sell(self) -> str | None:
        """A reason to pause selling, or None (the engine's can_sell hook)."""
        if self.emit_failed is not None:
            return "Sales records cannot be stored"
        if self.outbox.money_full:
            return "Sales records waiting for the network"
        return None

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self.lag.run(), name="loop-lag"),
            asyncio.create_task(self._telemetry_loop(), name="telemetry"),
            asyncio.create_task(self._housekeeping_loop(), name="fleet-housekeeping"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.counters.close()

    async def _telemetry_loop(self) -> None:
        while True:
            try:
                if self.link.address is not None:  # without a broker nobody would read them
                    self.emit("telemetry", self.telemetry_sample(), False, topic=self.topics.telemetry)
            except Exception:
                log.exception("telemetry sample failed")
            self._schedule_counters()
            self._wake_telemetry.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_telemetry.wait(), self.telemetry_interval_s)

    async def _housekeeping_loop(self) -> None:
        while True:
            reason = self.can_sell()
            if reason is not None:
                await self.alarms.raise_("outbox_full", "critical", f"selling paused: {reason}")
            elif self.alarms.is_raised("outbox_full"):
                await self.alarms.clear("outbox_full")
                if self.on_resume is not None:
                    self.on_resume()  # the engine looks again now, not at its next check
            await asyncio.sleep(HOUSEKEEPING_S)

    def set_telemetry_interval(self, seconds: float) -> None:
        self.telemetry_interval_s = seconds
        self._wake_telemetry.set()

    def telemetry_sample(self) -> dict[str, Any]:
        sample = system_sample(self.state_dir)
        sample["loop_lag"] = self.lag.take()
        sample["outbox"] = {
            "depth": self.outbox.depth(),
            "money": self.outbox.depth(MessageClass.MONEY),
            "dropped_telemetry": self.outbox.dropped_telemetry,
        }
        sample["sales"] = self.counters.read()
        sample["mqtt"] = {"connected": self.link.connected, "session": self.link.session}
        self._check_health(sample)
        return sample

    def _check_health(self, sample: dict[str, Any]) -> None:
        free = sample.get("disk", {}).get("free_bytes")
        if free is not None and free < DISK_LOW_BYTES:
            self._spawn(self.alarms.raise_("disk_low", "critical", f"{free // 2**20} MiB free on the state disk"))
        elif free is not None and self.alarms.is_raised("disk_low"):
            self._spawn(self.alarms.clear("disk_low"))
        temp = sample.get("cpu_temp_c")
        if temp is not None and temp >= CPU_HOT_C:
            self._spawn(self.alarms.raise_("cpu_hot", "warning", f"CPU at {temp:.0f} °C"))
        elif temp is not None and temp < CPU_HOT_C - 5 and self.alarms.is_raised("cpu_hot"):
            self._spawn(self.alarms.clear("cpu_hot"))

    # ------------------------------------------------------------ MQTT

    async def _on_message(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        if topic == self.topics.desired_config:
            await self.desired.handle(message.payload if isinstance(message.payload, bytes) else b"")
        else:
            await self.dispatcher.handle(message)

    async def _on_connect(self) -> None:
        await self.publish_birth()
        await self.alarms.republish()
        await self.publish_counters()
        await self.desired.publish_reported()
        if self.config.ha_discovery:
            topic, body = discovery_message(self.config.ha_discovery_prefix, self.topics)
            await self.link.publish(topic, body, retain=True)

    def birth(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "session": self.link.session,
            "boot_id": boot_id(),
            "ts": utc_now_iso(),
            "software": {"kiosk": __version__, "python": sys.version.split()[0]},
            "config_version": self.desired.applied_version,
            "hardware": {"model": hardware_model(), "machine": platform.machine()},
            "capabilities": {
                "commands": sorted(COMMANDS),
                "signed_commands": sorted(self.config.signed_commands),
                "desired_config": True,
                "request_response": ["mqtt5", "reply_topic"],
            },
            "telemetry_interval_s": self.telemetry_interval_s,
        }
        body.update(self.describe())
        return body

    async def publish_birth(self) -> bool:
        payload = json.dumps(self.birth(), separators=(",", ":"), ensure_ascii=False, default=str).encode()
        return await self.link.publish(self.topics.birth, payload, retain=True)

    async def publish_counters(self) -> bool:
        body = self.counters.read()
        alarms = sorted(self.alarms.active)
        body.update({"open_alarms": len(alarms), "alarms": alarms, "ts": utc_now_iso()})
        payload = json.dumps(body, separators=(",", ":")).encode()
        return await self.link.publish(self.topics.counters, payload, retain=True)

    def _schedule_counters(self) -> None:
        if self._counters_task is None or self._counters_task.done():
            self._counters_task = self._spawn(self.publish_counters())

    def spawn(self, coro: Any) -> asyncio.Task[Any] | None:
        return self._spawn(coro)

    def _spawn(self, coro: Any) -> asyncio.Task[Any] | None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a synchronous caller at shutdown)
            coro.close()
            return None
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task
