"""Relays and digital inputs through gpiozero; its pin factory is the seam tests swap.

gpiozero runs input callbacks in its own threads; they reach the event loop only through
`loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

from gpiozero import Button, Device, DigitalInputDevice, OutputDevice
from gpiozero.pins.mock import MockFactory


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


class ButtonBank:
    """Buttons whose presses arrive in the event loop as names on one queue."""

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
        self._buttons: list[Button] = []
        for name, pin in buttons.items():
            button = Button(
                pin,
                pull_up=None if active_high else True,
                active_state=True if active_high else None,
                bounce_time=bounce_s or None,
                pin_factory=pin_factory,
            )
            button.when_pressed = self._callback(loop, name)
            self._buttons.append(button)

    def _callback(self, loop: asyncio.AbstractEventLoop, name: str) -> Callable[[], None]:
        def pressed() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self.presses.put_nowait, name)

        return pressed

    def close(self) -> None:
        for button in self._buttons:
            button.close()
