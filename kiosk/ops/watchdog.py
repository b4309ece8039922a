"""The systemd watchdog, pinged only while the kiosk is healthy.

The pinger is a task on the daemon's own event loop, so a loop blocked by a stuck call cannot
ping: after WatchdogSec= systemd kills the process (SIGABRT) and Restart= brings it back. A loop
that runs but whose critical tasks died is caught by the health checks: a failing check stops
the pings too, with the reason in STATUS= for `systemctl status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from kiosk.ops.notify import Notifier

log = logging.getLogger(__name__)

# A check returns None when healthy, or a short reason.
HealthCheck = Callable[[], str | None]

# How late a tick may wake before it is logged: a loop that stalls this long is close to a kill.
LAG_WARNING_S = 1.0


def task_check(task: asyncio.Task[object], name: str) -> HealthCheck:
    """Unhealthy once the task has ended with an exception (ending cleanly is its own business)."""

    def check() -> str | None:
        if not task.done() or task.cancelled():
            return None
        exc = task.exception()
        return None if exc is None else f"{name} failed: {type(exc).__name__}: {exc}"

    return check


class Watchdog:
    def __init__(
        self,
        notifier: Notifier,
        checks: list[HealthCheck],
        *,
        interval_s: float | None = None,
        on_tick: Callable[[str | None], None] | None = None,
    ) -> None:
        self._notifier = notifier
        self._checks = checks
        watchdog = notifier.watchdog_interval_s()
        # systemd's advice: ping at half the interval. Without a watchdog we still tick (once a
        # second) to keep the runtime state file fresh.
        self.period_s = interval_s if interval_s is not None else (watchdog / 2 if watchdog else 1.0)
        self.pinging = watchdog is not None or interval_s is not None
        self._on_tick = on_tick
        self.pings = 0
        self.max_lag_s = 0.0
        self.unhealthy: str | None = None
        self._task: asyncio.Task[None] | None = None

    def add_check(self, check: HealthCheck) -> None:
        self._checks.append(check)

    def health(self) -> str | None:
        for check in self._checks:
            try:
                reason = check()
            except Exception as exc:  # a broken check is itself a health problem
                reason = f"health check failed: {type(exc).__name__}: {exc}"
            if reason is not None:
                return reason
        return None

    def tick(self) -> None:
        reason = self.health()
        if reason != self.unhealthy:
            if reason is None:
                log.info("watchdog: healthy again")
                self._notifier.status("ready")
            else:
                log.error("watchdog: not pinging: %s", reason)
                self._notifier.status(f"unhealthy: {reason}")
        self.unhealthy = reason
        if reason is None and self.pinging and self._notifier.watchdog():
            self.pings += 1
        if self._on_tick is not None:
            self._on_tick(reason)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.tick()
            due = loop.time() + self.period_s
            await asyncio.sleep(self.period_s)
            lag = loop.time() - due
            self.max_lag_s = max(self.max_lag_s, lag)
            if lag > LAG_WARNING_S:
                log.warning("watchdog: the event loop was blocked for %.1f s", lag)

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name="watchdog")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
