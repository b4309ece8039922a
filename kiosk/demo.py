"""`kiosk demo`: the whole kiosk on simulated hardware against the sandbox gateway.

Simulated tourists press a slot button, scan the QR and pay in the sandbox; one sale jams in
the machine and is refunded. Every frame the screen shows is written as a PNG.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gpiozero.pins.mock import MockFactory

from devices.sim import SimSlot, SimulatedMachine
from kiosk.app import KioskApp
from kiosk.config import KioskConfig, load_config
from kiosk.money import format_amount
from kiosk.payments.sandbox import SandboxGateway
from kiosk.sale import Sale, SaleState

EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "config" / "kiosk.example.toml"


@dataclass
class DemoResult:
    sales: list[Sale]
    events_delivered: int
    events_queued: int
    frames: list[Path]
    provider_orders: list[dict[str, Any]] = field(default_factory=list)  # the sandbox's books

    @property
    def paid(self) -> int:
        return sum(1 for s in self.sales if SaleState.PAID in s.history)

    @property
    def refunded(self) -> int:
        return sum(1 for s in self.sales if s.state is SaleState.REFUNDED)

    @property
    def delivered(self) -> int:
        return sum(1 for s in self.sales if s.state is SaleState.DONE)


# The wallet family a provider's sample code belongs to, for the route that sends it there.
SAMPLE_CODES = {
    "alipay": ("alipay_cn", "286543210987654321"),
    "wechat_v2": ("wechat", "134567890123456789"),
    "wechat_v3": ("wechat", "134567890123456789"),
    "alipay_plus": ("alipay_plus", "281001123456789012345678"),
    "citcon": ("wechat", "134567890123456789"),
}


def demo_config(
    base: KioskConfig,
    state: Path,
    frames: Path,
    gateway: SandboxGateway,
    mqtt: str | None,
    *,
    provider: str = "alipay",
    mode: str = "qr",
) -> KioskConfig:
    """The example config pointed at the sandbox gateway for one provider and scan direction."""
    from kiosk.payments.sandbox.configs import provider_config

    section = provider_config(gateway, provider)
    routes = base.payments.routes
    if mode in ("code", "both"):
        family, _ = SAMPLE_CODES[provider]
        routes = routes.model_copy(update={family: provider})
    payments = base.payments.model_copy(
        update={"provider": provider if mode in ("qr", "both") else None, "routes": routes, provider: section}
    )
    config = with_state(base, state, frames, mqtt).model_copy(update={"payments": payments})
    if mode in ("code", "both"):
        from devices.scanner_serial import PtyOptions

        config = config.model_copy(update={"scanner": PtyOptions()})
    return config


def with_state(base: KioskConfig, state: Path, frames: Path, mqtt: str | None) -> KioskConfig:
    """Simulated pins, frames written to `frames`, journal and outbox under `state`."""
    return base.model_copy(
        update={
            "display": base.display.model_copy(update={"dir": frames, "keep_frames": True}),
            "journal": base.journal.model_copy(update={"path": state / "journal.sqlite"}),
            "outbox": base.outbox.model_copy(update={"path": state / "outbox.sqlite"}),
            "gpio": base.gpio.model_copy(update={"pin_factory": "mock"}),
            "mqtt": base.mqtt.model_copy(update={"url": mqtt}),
            "selection": base.selection.model_copy(update={"result_screen_s": 1.0}),
        }
    )


class Timeline:
    """Prints each state change of each sale, with time since the demo started."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._t0 = time.monotonic()
        self._numbers: dict[str, int] = {}

    def line(self, text: str) -> None:
        print(f"{time.monotonic() - self._t0:7.2f}s  {text}", file=self._out, flush=True)

    def __call__(self, sale: Sale, detail: str) -> None:
        if sale.order_id is None:
            return
        number = self._numbers.setdefault(sale.order_id, len(self._numbers) + 1)
        code = next((a for a in reversed(sale.attempts) if a.mode.value == "code"), None)
        what = {
            "BuyerScanned": "the wallet asks the tourist to confirm"
            + (" the code payment" if code and code.confirming else " (QR scanned)"),
            "Tick": "payment time is up",
            "CodeScanned": f"charging the payment code at {code.provider}" if code else "",
            "CodeRefused": "the wallet refused the code; the tourist may try again",
            "OrderClosed": "the other payment order is closed at its provider",
        }.get(detail, "")
        text = f"sale {number}  {sale.slot_id}  {sale.state.value:<17}"
        if sale.state is SaleState.SELECTED:
            text += f" order {sale.order_id}, {format_amount(sale.amount_minor, sale.currency)}"
        elif sale.state is SaleState.AWAITING_PAYMENT and detail == "QrReady":
            text += f" QR on screen: {sale.qr_content}"
        elif sale.state is SaleState.PAID:
            text += f" payment verified (trade {sale.provider_txn_id})"
        elif sale.state is SaleState.REFUNDING:
            text += f" {sale.detail}; refund {sale.refund_id}"
        elif what:
            text += f" {what}"
        self.line(text)


async def run_demo(
    *,
    sales: int,
    frames: Path,
    mqtt: str | None,
    config_path: Path = EXAMPLE_CONFIG,
    out: TextIO,
    jam_sale: int = 2,
    provider: str = "alipay",
    mode: str = "qr",
    stay: asyncio.Event | None = None,
) -> DemoResult:
    base = load_config(config_path)
    state = Path(tempfile.mkdtemp(prefix="kiosk-demo-"))
    sandbox = SandboxGateway(keys_dir=state / "keys")
    url = sandbox.start()
    timeline = Timeline(out)
    timeline.line(f"sandbox gateway listening at {url} ({provider}, {mode})")
    config = demo_config(base, state, frames, sandbox, mqtt, provider=provider, mode=mode)
    app = KioskApp(config, listener=timeline)
    app_task = asyncio.create_task(app.run(), name="kiosk")
    try:
        await _wait_for(lambda: app.started.is_set() or app_task.done(), 30, "the kiosk to start")
        if app_task.done():
            app_task.result()  # re-raise the start-up error
        assert app.hardware is not None and app.engine is not None
        factory = app.hardware.pin_factory
        assert isinstance(factory, MockFactory)
        machine = SimulatedMachine(
            factory,
            {
                s.id: SimSlot(s.relay, s.confirm.pin if s.confirm else None, s.relay_active_high)
                for s in config.catalog.slots
            },
        )
        slots = config.catalog.slots
        for number in range(1, sales + 1):
            slot = slots[(number - 1) % len(slots)]
            jam = number == jam_sale and slot.confirm is not None
            if number == jam_sale and not jam:
                slot = next(s for s in slots if s.confirm is not None)
                jam = True
            behaviour = "pays_then_jam" if jam else "pays"
            # With both directions armed, tourists alternate: odd ones show their code.
            show_code = mode == "code" or (mode == "both" and number % 2 == 1)
            if show_code and mode == "both":
                # The sandbox hands out tourists in order: the QR order comes first, and this
                # tourist does not scan it.
                sandbox.set_behaviour("never_pays", for_next=1)
            # Code payments: the wallet asks the tourist to confirm once before it pays.
            sandbox.set_behaviour(behaviour, scan_delay_s=1.0, pay_delay_s=2.0, pending_polls=1, for_next=1)
            machine.jammed = {slot.id} if jam else set()
            timeline.line(
                f"tourist {number} presses {slot.id} ({slot.names.en})" + (" - the slot will jam" if jam else "")
            )
            finished = app.engine.sales_finished
            count = len(finished) + 1
            assert slot.button is not None
            machine.press(slot.button)
            if show_code:
                await _wait_for(lambda: engine_awaiting(app), 20, "the pay screen")
                code = fresh_code(provider)
                timeline.line(f"tourist {number} shows a payment code to the scanner")
                scanner = app.hardware.scanner if app.hardware else None
                assert scanner is not None and hasattr(scanner, "scan")
                scanner.scan(code)
            await _wait_for(lambda: len(finished) >= count, 90, f"sale {number} to finish")  # noqa: B023
            await asyncio.sleep(config.selection.result_screen_s + 0.2)
        if stay is not None:
            # The operator's walkthrough: the kiosk stays up (and on the broker) until Ctrl-C.
            timeline.line("the demo kiosk keeps running; press Ctrl-C to stop it")
            await stay.wait()
        outbox = app.outbox
        if mqtt and outbox is not None:
            with contextlib.suppress(TimeoutError):
                await _wait_for(lambda: outbox.depth() == 0, 5, "the outbox to drain")
    finally:
        app.request_stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(app_task, 30)
        provider_orders = sandbox.orders()
        sandbox.stop()
    assert app.engine is not None and app.link is not None
    return DemoResult(
        sales=list(app.engine.sales_finished),
        events_delivered=app.link.delivered,
        events_queued=_queued(config),
        frames=list(app.hardware.display.frames_written) if app.hardware else [],
        provider_orders=provider_orders,
    )


def fresh_code(provider: str) -> str:
    """A payment code of the provider's wallet family; codes are single-use, like real ones."""
    _, sample = SAMPLE_CODES[provider]
    return sample[:-8] + f"{secrets.randbelow(10**8):08d}"


def engine_awaiting(app: KioskApp) -> bool:
    engine = app.engine
    return engine is not None and engine.runner.sale.state is SaleState.AWAITING_PAYMENT


def _queued(config: KioskConfig) -> int:
    from kiosk.fleet.outbox import Outbox
    from kiosk.fleet.topics import Topics

    topics = Topics(config.mqtt.topic_prefix, config.device.fleet, config.device.id)
    with Outbox(config.outbox.path, topics) as outbox:
        return outbox.depth()


async def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def print_summary(result: DemoResult, mqtt: str | None, frames: Path, out: TextIO) -> None:
    print("", file=out)
    print("Summary", file=out)
    print(f"  sales:     {len(result.sales)}", file=out)
    print(f"  paid:      {result.paid}", file=out)
    print(f"  delivered: {result.delivered}", file=out)
    print(f"  refunded:  {result.refunded}", file=out)
    if mqtt:
        print(f"  events:    {result.events_delivered} delivered to {mqtt}, {result.events_queued} queued", file=out)
    else:
        print(
            f"  events:    {result.events_queued} queued in the outbox (no broker configured; "
            "pass --mqtt mqtt://127.0.0.1:1883 to publish them)",
            file=out,
        )
    print(f"  frames:    {len(result.frames)} PNG files in {frames}", file=out)
