"""The daemon: builds devices, journal, outbox, provider and engine from the config and runs them.

Start-up order matters for money: the journal and outbox open first, then recovery finishes
whatever a previous run left open, and only then does the engine offer anything for sale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from PIL import Image

from kiosk import crashpoints
from kiosk.config import KioskConfig
from kiosk.engine import Engine
from kiosk.fleet.link import FleetLink
from kiosk.fleet.outbox import Outbox
from kiosk.fleet.topics import Topics
from kiosk.hardware import Hardware, build_hardware, screen_renderer
from kiosk.journal import Journal
from kiosk.operator import KioskOperator
from kiosk.ops.service import OpsHooks
from kiosk.payments.base import Provider
from kiosk.recovery import Recovery
from kiosk.runner import Listener, SaleRunner
from kiosk.screens.model import Screen, ScreenKind
from kiosk.screens.render import ScreenRenderer

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The kiosk cannot start as configured; the message says what to fix."""


def build_providers(config: KioskConfig) -> dict[str, Provider]:
    """Every provider the config uses: the QR provider and those routed to by wallet family."""
    from kiosk.payments.registry import build_provider

    return {name: build_provider(name, config) for name in config.payments.used_providers()}


class KioskApp:
    def __init__(
        self,
        config: KioskConfig,
        *,
        providers: dict[str, Provider] | None = None,
        listener: Listener | None = None,
    ) -> None:
        self.config = config
        self._providers = providers
        self._listener = listener
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        self.engine: Engine | None = None
        self.hardware: Hardware | None = None
        self.outbox: Outbox | None = None
        self.link: FleetLink | None = None
        self.journal: Journal | None = None
        self.operator: KioskOperator | None = None
        self.on_ready: Callable[[], Awaitable[None] | None] | None = None
        self.scans: asyncio.Queue[str] | None = None
        self.ops = OpsHooks(config)  # sd_notify, watchdog, runtime state, update hold

    def request_stop(self) -> None:
        self._stop.set()
        self.ops.stopping()
        if self.engine is not None:
            self.engine.request_stop()

    async def run(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        try:
            renderer = ScreenRenderer(config.screens.font_path, (config.display.width, config.display.height))
        except Exception as exc:  # FontNotFoundError names the path and the fix
            raise StartupError(f"screens.font_path: {exc}") from exc
        self.journal = journal = Journal(config.journal.path)
        topics = Topics(config.mqtt.topic_prefix, config.device.fleet, config.device.id)
        self.outbox = outbox = Outbox(config.outbox.path, topics)
        self.link = link = FleetLink(config.mqtt, topics, outbox, client_id=config.device.id)
        self.hardware = hw = await build_hardware(config, loop)
        # The panel's own styling: density, colours, 1-bit, languages, CNY rates, refresh speed.
        renderer = screen_renderer(config, hw.display.driver)
        providers = self._providers or build_providers(config)
        # Fleet: commands, alarms, telemetry, birth and desired config around the link.
        self.operator = operator = KioskOperator(self, topics, providers)

        def emit_event(kind: str, data: dict[str, object], money: bool, event_id: str | None = None) -> bool:
            crashpoints.reached("outbox.before")
            # the outbox, plus derived events and counters
            stored = operator.agent.emit(kind, data, money, event_id)
            crashpoints.reached("outbox.after")
            link.notify()
            return stored

        async def show(screen: Screen) -> None:
            image: Image.Image = await asyncio.to_thread(renderer.render, screen)
            await hw.display.show(image, screen.kind.value)

        runner = SaleRunner(
            journal=journal,
            providers=providers,
            slots={s.id: s for s in config.catalog.slots},
            relays=dict(hw.relays),
            sensors=dict(hw.sensors),
            emit_event=emit_event,
            clock=loop.time,
            payment_timeout_s=config.selection.payment_timeout_s,
            subject_prefix=config.payments.subject_prefix,
        )
        recovery = Recovery(journal, runner, config.recovery.paid_undelivered, emit_event)
        scans: asyncio.Queue[str] | None = asyncio.Queue(maxsize=8) if hw.scanner is not None else None
        self.scans = scans
        self.engine = engine = Engine(
            config, runner, journal, show, hw.buttons.presses, scans=scans, reconcile=recovery.reconcile,
            can_sell=lambda: operator.can_sell() or self.ops.can_sell() or hw.unavailable_reason(),
        )
        runner.add_listener(engine.show_state)
        runner.add_listener(self.ops.on_sale)
        if self._listener is not None:
            runner.add_listener(self._listener)
        if self._stop.is_set():
            engine.request_stop()

        link_task = asyncio.create_task(link.run(), name="fleet-link")
        fleet_task = asyncio.create_task(operator.run(), name="fleet-agent")
        scanner_task = asyncio.create_task(self._drain_scanner(), name="scanner")
        try:
            await show(Screen(ScreenKind.OUT_OF_SERVICE, reason_en="Starting up", reason_zh="正在启动"))
            open_sales = await recovery.reconcile()
            if open_sales:
                log.warning("recovery: %d sale(s) still open; will retry between sales", open_sales)
            self.started.set()
            self.ops.started(self)
            await engine.run()
        finally:
            self.ops.stopping()
            scanner_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scanner_task
            fleet_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fleet_task
            await link.aclose()
            link_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link_task
            for provider in providers.values():
                await provider.aclose()
            if hw.scanner is not None:
                await hw.scanner.aclose()
            hw.close()
            outbox.close()
            journal.close()
            if operator.after_stop is not None:
                operator.after_stop()  # an operator's reboot or restart, now that all is closed
            await self.ops.aclose()

    async def _drain_scanner(self) -> None:
        """Scanner lines to the engine. A full queue drops the line: a tourist scanning again and
        again must not pile up charges."""
        hw = self.hardware
        if hw is None or hw.scanner is None or self.scans is None:
            return
        async for line in hw.scanner.codes():
            try:
                self.scans.put_nowait(line)
            except asyncio.QueueFull:
                log.warning("scanner: line dropped, the engine is busy")
