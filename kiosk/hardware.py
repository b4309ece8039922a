"""The kiosk's hardware, built from the config's device sections and kept alive by a supervisor.

`build_hardware` opens every device it can. One that is missing does not stop the kiosk: the
supervisor raises an alarm, the display shows the out-of-service screen instead of the idle
screen, slot buttons are ignored, and the device is retried until it is back. Relays and sensors
are handles whose gpiozero device can be replaced when the GPIO chip comes back; a relay that
has none raises DeviceError, which the sale runner turns into a refund.

The fleet link subscribes to alarms with `hardware.supervisor.add_alarm_sink(sink)` (an object
with `on_alarm(alarm_id, severity, message)` and `on_clear(alarm_id)`), reads
`hardware.health()` for telemetry, and the engine can take `can_sell=hardware.unavailable_reason`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from devices import registry
from devices.base import DeviceError, Driver
from devices.display import DisplayDriver
from devices.gpio import ButtonBank, DoorSwitch, GpioInput, GpioRelay, GpioZero, StatusLed
from devices.scanner_serial import ScannerOptions
from devices.supervisor import Supervisor
from kiosk.config import KioskConfig, SelectionMode
from kiosk.screens.model import Screen, ScreenKind

log = logging.getLogger(__name__)

CANCEL = "cancel"  # the engine's name for the cancel button


# ---------------------------------------------------------------- relays and sensors


class RelayHandle:
    """A slot's relay; raises DeviceError while the GPIO chip is unavailable."""

    def __init__(self, pin: int | str, active_high: bool) -> None:
        self.pin = pin
        self.active_high = active_high
        self.device: GpioRelay | None = None

    def attach(self, factory: object) -> None:
        self.detach()
        self.device = GpioRelay(self.pin, active_high=self.active_high, pin_factory=factory)

    def detach(self) -> None:
        device, self.device = self.device, None
        if device is not None:
            with contextlib.suppress(Exception):
                device.close()

    def _relay(self) -> GpioRelay:
        if self.device is None:
            raise DeviceError(f"relay on pin {self.pin}: GPIO not available")
        return self.device

    @property
    def is_on(self) -> bool:
        return self.device is not None and self.device.is_on

    async def pulse(self, ms: int) -> None:
        await self._relay().pulse(ms)

    async def pulses(self, count: int, ms: int, gap_ms: int) -> None:
        await self._relay().pulses(count, ms, gap_ms)

    async def hold(self, seconds: float) -> None:
        await self._relay().hold(seconds)

    def close(self) -> None:
        self.detach()


class InputHandle:
    """A drop sensor; never active while the GPIO chip is unavailable."""

    def __init__(self, pin: int | str, active_high: bool) -> None:
        self.pin = pin
        self.active_high = active_high
        self.device: GpioInput | None = None

    def attach(self, factory: object) -> None:
        self.detach()
        self.device = GpioInput(self.pin, active_high=self.active_high, pin_factory=factory)

    def detach(self) -> None:
        device, self.device = self.device, None
        if device is not None:
            with contextlib.suppress(Exception):
                device.close()

    @property
    def is_active(self) -> bool:
        return self.device is not None and self.device.is_active

    async def wait_active(self, timeout: float | None = None) -> bool:
        if self.device is None:
            await asyncio.sleep(timeout or 0)
            return False
        return await self.device.wait_active(timeout)

    def close(self) -> None:
        self.detach()


# ---------------------------------------------------------------- the display


class SupervisedDisplay:
    """The engine's display: never raises, replaces the idle screen while the kiosk cannot sell,
    and shows the latest frame again when a lost panel comes back."""

    def __init__(self, driver: DisplayDriver, supervisor: Supervisor, name: str = "display") -> None:
        self.driver = driver
        self.name = name
        self._supervisor = supervisor
        self.ok = False
        self.wanted: tuple[Image.Image, str] | None = None
        self.shown_label: str | None = None
        self.override: Callable[[], Image.Image | None] = lambda: None

    @property
    def size(self) -> tuple[int, int]:
        return self.driver.size

    @property
    def last_frame(self) -> Image.Image | None:
        return self.driver.last_frame

    @property
    def frames_written(self) -> list[Path]:
        frames: list[Path] = getattr(self.driver, "frames_written", [])
        return frames

    async def open(self) -> None:
        await self.driver.open()
        self.ok = True
        if self.wanted is not None:
            await self._show(*self.wanted)

    async def show(self, image: Image.Image, label: str = "frame") -> None:
        self.wanted = (image, label)
        if self.ok:
            await self._show(image, label)

    async def refresh(self) -> None:
        """Show the wanted frame again (the kiosk went out of or back into service)."""
        if self.ok and self.wanted is not None:
            await self._show(*self.wanted)

    async def _show(self, image: Image.Image, label: str) -> None:
        if label == ScreenKind.IDLE.value:
            replacement = self.override()
            if replacement is not None:
                image, label = replacement, ScreenKind.OUT_OF_SERVICE.value
        try:
            await self.driver.show(image, label)
        except (DeviceError, OSError) as exc:
            self.ok = False
            self._supervisor.failed(self.name, str(exc))
            with contextlib.suppress(Exception):
                await self.driver.close()
            return
        self.shown_label = label

    async def aclose(self) -> None:
        drain = getattr(self.driver, "drain", None)
        if drain is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(drain(), 60)
        await self.driver.close()


# ---------------------------------------------------------------- all of it


@dataclass
class Hardware:
    display: SupervisedDisplay
    relays: dict[str, RelayHandle]
    sensors: dict[str, InputHandle]
    buttons: ButtonBank
    pin_factory: object
    supervisor: Supervisor
    gpio: GpioZero
    scanner: Any = None  # a scanner driver with codes() and aclose(), or None
    door: DoorSwitch | None = None
    status_led: StatusLed | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closers: list[Callable[[], object]] = field(default_factory=list)

    def healthy(self) -> bool:
        return self.supervisor.healthy()

    def health(self) -> dict[str, dict[str, object]]:
        """Per device: driver, ok, detail, since (unix time), failures, required. For telemetry."""
        return {name: h.as_dict() for name, h in self.supervisor.health().items()}

    def unavailable_reason(self) -> str | None:
        return self.supervisor.unavailable_reason()

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for relay in self.relays.values():
            relay.close()
        for sensor in self.sensors.values():
            sensor.close()
        self.buttons.close()
        for device in (self.door, self.status_led):
            if device is not None:
                device.close()
        for closer in self.closers:
            with contextlib.suppress(Exception):
                closer()

    async def aclose(self) -> None:
        """Everything `close` does, and waits for the display (an e-ink refresh in progress)."""
        self.close()
        with contextlib.suppress(Exception):
            await self.display.aclose()
        if self.scanner is not None:
            await self.scanner.aclose()
        await self.gpio.close()


def _button_pins(config: KioskConfig) -> dict[str, int | str]:
    names: dict[str, int | str] = {}
    if config.selection.mode is SelectionMode.BUTTONS:
        names.update({s.id: s.button for s in config.catalog.slots if s.button is not None})
    if config.selection.cancel_button is not None:
        names[CANCEL] = config.selection.cancel_button
    return names


def screen_renderer(config: KioskConfig, display: DisplayDriver | None = None) -> Any:
    """The renderer for this kiosk's panel: its size, density, colours and refresh speed."""
    from kiosk.screens.render import ScreenRenderer, style_from_config

    refresh_s = display.refresh_s if display is not None else 0.0
    style = style_from_config(config, refresh_s=refresh_s)
    return ScreenRenderer(config.screens.font_path, (config.display.width, config.display.height), style=style)


async def build_hardware(config: KioskConfig, loop: asyncio.AbstractEventLoop | None = None) -> Hardware:
    loop = loop or asyncio.get_running_loop()
    supervisor = Supervisor()

    gpio = registry.build(config.gpio, "gpio")
    assert isinstance(gpio, GpioZero)
    relays = {s.id: RelayHandle(s.relay, s.relay_active_high) for s in config.catalog.slots}
    sensors = {
        s.id: InputHandle(s.confirm.pin, s.confirm.active_high) for s in config.catalog.slots if s.confirm is not None
    }
    buttons = ButtonBank(loop, {}, active_high=config.selection.button_active_high, bounce_s=config.selection.bounce_s)
    pins = _button_pins(config)
    # Out of service, a slot button must not start a sale; cancel still cancels.
    buttons.accept = lambda name: name == CANCEL or supervisor.unavailable_reason() is None

    display_driver = registry.build(config.display, "display")
    assert isinstance(display_driver, DisplayDriver)
    display = SupervisedDisplay(display_driver, supervisor)
    supervisor.track("display", display_driver.describe(), required=True, reopen=display.open)

    hw = Hardware(display, relays, sensors, buttons, None, supervisor, gpio)

    def attach_gpio() -> None:
        factory = gpio.factory
        hw.pin_factory = factory
        for relay in relays.values():
            relay.attach(factory)
        for sensor in sensors.values():
            sensor.attach(factory)
        buttons.attach(pins, pin_factory=factory)
        options = gpio.options
        if options.door is not None:
            hw.door = DoorSwitch(loop, options.door, on_door, pin_factory=factory)
            on_door(hw.door.is_open)
        if options.status_led is not None:
            hw.status_led = StatusLed(options.status_led, pin_factory=factory)
            on_change()

    async def reopen_gpio() -> None:
        await gpio.open()
        attach_gpio()

    def on_door(is_open: bool) -> None:
        supervisor.set_maintenance("Service door open" if is_open else None)

    renderer: list[Any] = []

    def out_of_service_frame() -> Image.Image | None:
        reason = supervisor.unavailable_reason()
        if reason is None:
            return None
        if not renderer:
            renderer.append(screen_renderer(config, display_driver))
        zh = "维护中" if supervisor.maintenance else "设备故障"
        image: Image.Image = renderer[0].render(Screen(ScreenKind.OUT_OF_SERVICE, reason_en=reason, reason_zh=zh))
        return image

    display.override = out_of_service_frame

    def on_change() -> None:
        if hw.status_led is not None:
            hw.status_led.set("on" if supervisor.healthy() else "blink")
        if display.shown_label in (ScreenKind.IDLE.value, ScreenKind.OUT_OF_SERVICE.value):
            loop.create_task(display.refresh())

    supervisor.add_listener(on_change)

    supervisor.track("gpio", gpio.describe(), required=True, reopen=reopen_gpio)
    try:
        await gpio.open()
        attach_gpio()
        supervisor.recovered("gpio", "open")
    except DeviceError as exc:
        supervisor.failed("gpio", str(exc))

    try:
        await display.open()
        supervisor.recovered("display", "open")
    except DeviceError as exc:
        supervisor.failed("display", str(exc))

    if config.scanner.type != "none":
        scanner = registry.build(config.scanner, "scanner")
        options = config.scanner
        required = isinstance(options, ScannerOptions) and options.required
        supervisor.track("scanner", scanner.describe(), required=required)
        scanner.health_listener = supervisor.listener_for("scanner")
        hw.scanner = scanner

    hw.tasks.append(loop.create_task(supervisor.run(), name="device-supervisor"))
    return hw


def driver_for(config_section: Any, kind: str) -> Driver:
    """A driver for one device section, not opened (self-test, tools)."""
    return registry.build(config_section, kind)
