"""Running a whole kiosk in-process for tests: sandbox gateway, mock pins, PNG display."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from devices.sim import SimSlot, SimulatedMachine
from kiosk.app import KioskApp
from kiosk.config import AlipayConfig, KioskConfig, load_config
from kiosk.demo import EXAMPLE_CONFIG, with_state
from kiosk.payments.base import Order, PaymentState, PaymentStatus, Provider
from kiosk.payments.sandbox import SandboxGateway
from kiosk.payments.sandbox.gateway import DEFAULT_APP_ID
from kiosk.sale import Sale


def make_config(tmp_path: Path, gateway_url: str, keys: Path, mqtt: str | None, **selection: Any) -> KioskConfig:
    """The example kiosk (Alipay QR) against a sandbox at gateway_url whose keys are in `keys`."""
    base = with_state(load_config(EXAMPLE_CONFIG), tmp_path, tmp_path / "frames", mqtt)
    alipay = AlipayConfig(
        gateway_url=gateway_url,
        app_id=DEFAULT_APP_ID,
        app_private_key_file=keys / "app_private_key.pem",
        alipay_public_key_file=keys / "gateway_public_key.pem",
        poll_interval_s=1,
    )
    config = base.model_copy(update={"payments": base.payments.model_copy(update={"alipay": alipay})})
    if selection:
        config = config.model_copy(update={"selection": config.selection.model_copy(update=selection)})
    return config


async def wait_for(condition: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class RunningKiosk:
    app: KioskApp
    machine: SimulatedMachine
    config: KioskConfig

    @property
    def finished(self) -> list[Sale]:
        assert self.app.engine is not None
        return self.app.engine.sales_finished

    async def buy(self, slot_id: str, timeout: float = 30) -> Sale:
        before = len(self.finished)
        slot = self.config.catalog.slot(slot_id)
        assert slot.button is not None
        self.machine.press(slot.button)
        await wait_for(lambda: len(self.finished) > before, timeout, f"the sale of {slot_id} to finish")
        return self.finished[-1]

    def press_cancel(self) -> None:
        assert self.config.selection.cancel_button is not None
        self.machine.press(self.config.selection.cancel_button)


@contextlib.asynccontextmanager
async def running_kiosk(config: KioskConfig) -> AsyncIterator[RunningKiosk]:
    app = KioskApp(config)
    task = asyncio.create_task(app.run())
    try:
        await wait_for(lambda: app.started.is_set() or task.done(), 20, "the kiosk to start")
        if task.done():
            task.result()
        assert app.hardware is not None
        factory = app.hardware.pin_factory
        assert isinstance(factory, MockFactory)
        machine = SimulatedMachine(
            factory,
            {
                s.id: SimSlot(s.relay, s.confirm.pin if s.confirm else None, s.relay_active_high)
                for s in config.catalog.slots
            },
        )
        yield RunningKiosk(app, machine, config)
    finally:
        app.request_stop()
        await asyncio.wait_for(task, 30)


@contextlib.contextmanager
def sandbox_gateway(keys: Path) -> Any:
    gateway = SandboxGateway(keys_dir=keys)
    url = gateway.start()
    try:
        yield gateway, url + "/gateway.do"
    finally:
        gateway.stop()


# Provider states in which an unpaid order is over: closed, cancelled, reversed, or refused for good.
_ENDED_UNPAID = {"PAYERROR", "FAIL", "fail", "failed", "TRADE_CLOSED", "CLOSED", "REVOKED", "CANCELLED", "cancelled"}


def ended_at_provider(view: dict[str, Any]) -> bool:
    """A sandbox order view that can no longer take money: paid, closed, or finally refused."""
    states = {str(view.get(key, "")) for key in ("state", "trade_state", "status", "payment_status")}
    return bool(view["paid"] or view["closed"] or states & _ENDED_UNPAID)


async def query_until(provider: Provider, order: Order, state: PaymentState, timeout: float = 5.0) -> PaymentStatus:
    """Query until the order reaches `state`; fail if it is PAID first or the time runs out."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await provider.query(order)
        if status.state is state:
            return status
        assert status.state is not PaymentState.PAID, "paid before expected"
        assert asyncio.get_running_loop().time() < deadline, f"still {status.state} after {timeout}s"
        await asyncio.sleep(0.03)
