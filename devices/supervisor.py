"""Device health, alarms and retries: a device that is missing or lost never crashes the kiosk.

Each device the kiosk uses is tracked by name ("display", "scanner", "gpio", ...). A driver that
fails is reported here: the supervisor raises an alarm once (`on_alarm(alarm_id, severity,
message)`), marks the kiosk unavailable if the device is required (the out-of-service screen; no
new sales), and, for devices it can reopen, retries with a growing interval until the device is
back; then it clears the alarm (`on_clear(alarm_id)`). Scanners reconnect by themselves and only
report how they are. Conditions that are not devices (the service door) use the same alarms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

log = logging.getLogger(__name__)

Severity = Literal["critical", "warning", "info"]


class AlarmSink(Protocol):
    def on_alarm(self, alarm_id: str, severity: str, message: str) -> None: ...

    def on_clear(self, alarm_id: str) -> None: ...


@dataclass
class DeviceHealth:
    name: str
    driver: str
    required: bool
    ok: bool = True
    detail: str = ""
    since: float = field(default_factory=time.time)  # wall clock, for telemetry
    failures: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Tracked:
    health: DeviceHealth
    reopen: Callable[[], Awaitable[None]] | None
    retry_s: float
    next_try: float = 0.0


def device_alarm_id(name: str) -> str:
    return f"device.{name}"


class Supervisor:
    def __init__(self, *, retry_s: float = 2.0, max_retry_s: float = 60.0) -> None:
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self._devices: dict[str, _Tracked] = {}
        self._sinks: list[AlarmSink] = []
        self._active: dict[str, tuple[str, str]] = {}  # alarm id -> (severity, message)
        self._maintenance: str | None = None
        self._listeners: list[Callable[[], None]] = []
        self._wake = asyncio.Event()

    # ------------------------------------------------------------ alarms

    def add_alarm_sink(self, sink: AlarmSink) -> None:
        """Tell `sink` of every alarm from now on, and of those already active."""
        self._sinks.append(sink)
        for alarm_id, (severity, message) in self._active.items():
            sink.on_alarm(alarm_id, severity, message)

    def raise_alarm(self, alarm_id: str, severity: Severity, message: str) -> None:
        if self._active.get(alarm_id) == (severity, message):
            return
        self._active[alarm_id] = (severity, message)
        log.warning("alarm %s (%s): %s", alarm_id, severity, message)
        for sink in self._sinks:
            sink.on_alarm(alarm_id, severity, message)

    def clear_alarm(self, alarm_id: str) -> None:
        if self._active.pop(alarm_id, None) is None:
            return
        log.info("alarm %s cleared", alarm_id)
        for sink in self._sinks:
            sink.on_clear(alarm_id)

    @property
    def active_alarms(self) -> dict[str, tuple[str, str]]:
        return dict(self._active)

    # ------------------------------------------------------------ devices

    def track(
        self,
        name: str,
        driver: str,
        *,
        required: bool,
        reopen: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._devices[name] = _Tracked(DeviceHealth(name, driver, required), reopen, self.retry_s)

    def failed(self, name: str, detail: str) -> None:
        tracked = self._devices[name]
        health = tracked.health
        if health.ok:
            health.ok, health.since = False, time.time()
            tracked.retry_s = self.retry_s
            tracked.next_try = time.monotonic() + tracked.retry_s
        health.failures += 1
        health.detail = detail
        severity: Severity = "critical" if health.required else "warning"
        self.raise_alarm(device_alarm_id(name), severity, f"{name} ({health.driver}): {detail}")
        self._changed()

    def recovered(self, name: str, detail: str = "") -> None:
        health = self._devices[name].health
        was_down = not health.ok
        health.ok, health.detail = True, detail
        if was_down:
            health.since = time.time()
            log.info("%s is back: %s", name, detail)
        self.clear_alarm(device_alarm_id(name))
        if was_down:
            self._changed()

    def listener_for(self, name: str) -> Callable[[bool, str], None]:
        """A `Driver.health_listener` that reports to this supervisor under `name`."""

        def listen(ok: bool, detail: str) -> None:
            if ok:
                self.recovered(name, detail)
            else:
                self.failed(name, detail)

        return listen

    def health(self) -> dict[str, DeviceHealth]:
        return {name: t.health for name, t in self._devices.items()}

    def healthy(self) -> bool:
        return all(t.health.ok for t in self._devices.values()) and self._maintenance is None

    # ------------------------------------------------------------ selling or not

    def set_maintenance(self, reason: str | None) -> None:
        if reason == self._maintenance:
            return
        self._maintenance = reason
        if reason is None:
            self.clear_alarm("maintenance")
        else:
            self.raise_alarm("maintenance", "warning", reason)
        self._changed()

    @property
    def maintenance(self) -> str | None:
        return self._maintenance

    def unavailable_reason(self) -> str | None:
        """Why the kiosk must not sell now (English, for the screen and logs), or None."""
        if self._maintenance is not None:
            return self._maintenance
        down = [t.health.name for t in self._devices.values() if t.health.required and not t.health.ok]
        if down:
            return f"{', '.join(down).capitalize()} not working"
        return None

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Called (in the event loop) whenever a device fails or recovers, or maintenance changes."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        self._wake.set()
        for listener in self._listeners:
            listener()

    # ------------------------------------------------------------ retrying

    async def run(self) -> None:
        """Reopen failed devices, each at its own growing interval, until cancelled."""
        while True:
            now = time.monotonic()
            due = [
                t for t in self._devices.values() if not t.health.ok and t.reopen is not None and t.next_try <= now
            ]
            for tracked in due:
                await self._retry(tracked)
            waits = [
                t.next_try - time.monotonic()
                for t in self._devices.values()
                if not t.health.ok and t.reopen is not None
            ]
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.05, min(waits)) if waits else None)

    async def _retry(self, tracked: _Tracked) -> None:
        assert tracked.reopen is not None
        name = tracked.health.name
        try:
            await tracked.reopen()
        except Exception as exc:  # any failure to reopen is one more failed try, never a crash
            tracked.retry_s = min(tracked.retry_s * 2, self.max_retry_s)
            tracked.next_try = time.monotonic() + tracked.retry_s
            tracked.health.detail = str(exc)
            log.debug("%s still unavailable (%s); next try in %.0fs", name, exc, tracked.retry_s)
            return
        self.recovered(name, "reopened")
