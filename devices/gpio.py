"""Relays, buttons, sensors, the door switch and the status LED through gpiozero.

Its pin factory is the seam: lgpio on a Pi (the only one that works on a Pi 5), MockFactory in
tests, the demo and simulation. gpiozero runs input callbacks in its own threads; they reach the
event loop only through `loop.call_soon_threadsafe`. Relays are off at boot whatever their active
level, and are switched off again whenever a delivery is cancelled mid-pulse.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import ClassVar, Literal

from gpiozero import LED, Button, Device, DigitalInputDevice, OutputDevice
from gpiozero.pins.mock import MockFactory
from pydantic import BaseModel, ConfigDict, Field

from devices.base import DeviceError, Driver, DriverOptions

PinFactoryName = Literal["mock", "lgpio", "rpigpio", "native"]


class DoorOptions(BaseModel):
    """A service-door switch: open door = maintenance (no sales) and an alarm."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    pin: int | str
    # A reed switch closes with the door: pulled up, the line reads high when the door opens.
    open_high: bool = True
    bounce_s: float = Field(default=0.1, ge=0, le=5)


class LedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pin: int | str
    active_high: bool = True


class GpioOptions(DriverOptions):
    type: Literal["gpiozero"] = "gpiozero"
    pin_factory: PinFactoryName = "mock"
    door: DoorOptions | None = None
    status_led: LedOptions | None = None


class GpioZero(Driver):
    """Owns the pin factory every GPIO device of the kiosk is built from."""

    kind = "gpio"
    name = "gpiozero"
    Options: ClassVar[type[DriverOptions]] = GpioOptions

    def __init__(self, options: GpioOptions) -> None:
        super().__init__(options)
        self.options: GpioOptions = options
        self.factory: object | None = None

    async def open(self) -> None:
        try:
            self.factory = install_pin_factory(self.options.pin_factory)
        except Exception as exc:  # lgpio: no /dev/gpiochip*, permission denied, not a Pi
            raise DeviceError(f"gpio.pin_factory {self.options.pin_factory!r}: {exc}") from exc

    async def close(self) -> None:
        factory, self.factory = self.factory, None
        close = getattr(factory, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()

    def describe(self) -> str:
        return f"gpiozero ({self.options.pin_factory} pins)"


def make_pin_factory(name: str) -> object:
    """The gpiozero pin factory named in the config ("mock" for simulation and tests)."""
    if name == "mock":
        return MockFactory()
    if name == "lgpio":
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    if name == "rpigpio":
        from gpiozero.pins.rpigpio import RPiGPIOFactory

        return RPiGPIOFactory()
    if name == "native":
        from gpiozero.pins.native import NativeFactory

        return NativeFactory()
    raise ValueError(f"unknown pin factory {name!r}")


def install_pin_factory(name: str) -> object:
    """Make the factory and make it gpiozero's default, so every device built later uses it."""
    factory = make_pin_factory(name)
    Device.pin_factory = factory
    os.environ.setdefault("GPIOZERO_PIN_FACTORY", name)
    return factory


class GpioRelay:
    """A relay that is off at boot (initial_value=False), whatever its active level."""

    def __init__(self, pin: int | str, *, active_high: bool = True, pin_factory: object | None = None) -> None:
        self._out = OutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory)

    @property
    def is_on(self) -> bool:
        return bool(self._out.value)

    async def pulse(self, ms: int) -> None:
        await self.pulses(1, ms, 0)

    async def pulses(self, count: int, ms: int, gap_ms: int) -> None:
        try:
            for i in range(count):
                self._out.on()
                await asyncio.sleep(ms / 1000)
                self._out.off()
                if i + 1 < count:
                    await asyncio.sleep(gap_ms / 1000)
        finally:
            # Cancelled mid-pulse (shutdown): never leave a relay energized.
            self._out.off()

    async def hold(self, seconds: float) -> None:
        try:
            self._out.on()
            await asyncio.sleep(seconds)
        finally:
            self._out.off()

    def close(self) -> None:
        self._out.off()
        self._out.close()


class GpioInput:
    """A drop sensor or door switch. `wait_active` waits for the active edge, or returns False."""

    def __init__(self, pin: int | str, *, active_high: bool = False, pin_factory: object | None = None) -> None:
        # Open-collector drop sensors pull the line low when triggered: pull up and read active-low.
        self._dev = DigitalInputDevice(pin, pull_up=not active_high, pin_factory=pin_factory)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[asyncio.Future[bool]] = []
        self._dev.when_activated = self._on_active

    @property
    def is_active(self) -> bool:
        return bool(self._dev.is_active)

    def _on_active(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(True)
        self._waiters.clear()

    async def wait_active(self, timeout: float | None = None) -> bool:
        self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = self._loop.create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)

    def close(self) -> None:
        self._dev.close()


class DoorSwitch:
    """Calls `on_change(is_open)` in the event loop whenever the door opens or closes."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        options: DoorOptions,
        on_change: Callable[[bool], None],
        *,
        pin_factory: object | None = None,
    ) -> None:
        self._loop = loop
        self._on_change = on_change
        # The switch closes with the door and the pull holds the line at its open level, so the
        # device is active while the door is closed and a cut wire reads as an open door.
        self._dev = DigitalInputDevice(
            options.pin, pull_up=options.open_high, bounce_time=options.bounce_s or None, pin_factory=pin_factory
        )
        self._dev.when_deactivated = lambda: self._post(True)
        self._dev.when_activated = lambda: self._post(False)

    @property
    def is_open(self) -> bool:
        return not self._dev.is_active

    def _post(self, is_open: bool) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_change, is_open)

    def close(self) -> None:
        self._dev.close()


class StatusLed:
    """Steady on: selling. Blinking: out of service or an alarm. Off: stopped."""

    def __init__(self, options: LedOptions, *, pin_factory: object | None = None) -> None:
        self._led = LED(options.pin, active_high=options.active_high, initial_value=False, pin_factory=pin_factory)
        self.state: Literal["on", "blink", "off"] = "off"

    def set(self, state: Literal["on", "blink", "off"]) -> None:
        if state == self.state:
            return
        self.state = state
        if state == "on":
            self._led.on()
        elif state == "blink":
            self._led.blink(on_time=0.25, off_time=0.75)
        else:
            self._led.off()

    def close(self) -> None:
        self._led.off()
        self._led.close()


class ButtonBank:
    """Buttons whose presses arrive in the event loop as names on one queue.

    `accept(name)` may refuse a press (out of service: a slot button must not start a sale).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        buttons: dict[str, int | str],
        *,
        active_high: bool = False,
        bounce_s: float = 0.05,
        pin_factory: object | None = None,
    ) -> None:
        self.presses: asyncio.Queue[str] = asyncio.Queue()
        self.accept: Callable[[str], bool] = lambda _name: True
        self.buttons: dict[str, Button] = {}
        self._loop = loop
        self._active_high = active_high
        self._bounce_s = bounce_s
        self._last_press: dict[str, float] = {}
        self.attach(buttons, pin_factory=pin_factory)

    def attach(self, buttons: dict[str, int | str], *, pin_factory: object | None = None) -> None:
        """(Re)build the buttons on `pin_factory`; presses keep arriving on the same queue."""
        self.close()
        for name, pin in buttons.items():
            button = Button(
                pin,
                pull_up=None if self._active_high else True,
                active_state=True if self._active_high else None,
                bounce_time=self._bounce_s or None,
                pin_factory=pin_factory,
            )
            button.when_pressed = self._callback(self._loop, name)
            self.buttons[name] = button

    def _callback(self, loop: asyncio.AbstractEventLoop, name: str) -> Callable[[], None]:
        def pressed() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._pressed, name)

        return pressed

    def _pressed(self, name: str) -> None:
        # Debounced here as well as by the pin: not every pin factory filters bounces
        # (MockFactory does not), and a bouncing contact must not count as several presses.
        now = self._loop.time()
        if now - self._last_press.get(name, -1e9) < self._bounce_s:
            return
        self._last_press[name] = now
        if self.accept(name):
            self.presses.put_nowait(name)

    def close(self) -> None:
        buttons, self.buttons = self.buttons, {}
        for button in buttons.values():
            button.close()
