"""SPI colour LCDs through luma.lcd (optional extra `lcd`): ST7789 and ILI9341.

luma's `device.display(PIL.Image)` is a blocking SPI transfer; DisplayDriver.show runs it in a
worker thread. luma is imported in `open()`, so kiosks without the extra still load this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from PIL import Image
from pydantic import Field

from devices.base import DeviceError, DriverOptions
from devices.display import DisplayDriver, RotatableOptions


class LumaOptions(RotatableOptions):
    spi_port: int = Field(default=0, ge=0)
    spi_device: int = Field(default=0, ge=0)
    bus_speed_hz: int = Field(default=32_000_000, ge=500_000, le=125_000_000)
    gpio_dc: int = 24
    gpio_rst: int | None = 25
    # None: the backlight is wired on, not switched by a pin.
    gpio_backlight: int | None = 18
    backlight_active_low: bool = False


class St7789Options(LumaOptions):
    type: Literal["st7789"] = "st7789"
    width: int = Field(default=240, ge=64, le=4096)
    height: int = Field(default=320, ge=64, le=4096)
    dpi: float = Field(default=200, ge=50, le=600)  # 2.0" 240x320


class Ili9341Options(LumaOptions):
    type: Literal["ili9341"] = "ili9341"
    width: int = Field(default=320, ge=64, le=4096)
    height: int = Field(default=240, ge=64, le=4096)
    dpi: float = Field(default=143, ge=50, le=600)  # 2.8" 320x240


def spi_interface(options: LumaOptions) -> Any:
    from luma.core.interface.serial import spi

    return spi(
        port=options.spi_port,
        device=options.spi_device,
        gpio_DC=options.gpio_dc,
        gpio_RST=options.gpio_rst,
        bus_speed_hz=options.bus_speed_hz,
    )


class LumaDisplay(DisplayDriver):
    luma_class: ClassVar[str] = ""
    # The seam tests swap (luma's own `noop` interface), like gpiozero's pin factory.
    interface_factory: ClassVar[Callable[[LumaOptions], Any]] = staticmethod(spi_interface)

    def __init__(self, options: LumaOptions) -> None:
        super().__init__(options)
        self.options: LumaOptions = options
        self.device: Any = None

    async def open(self) -> None:
        try:
            import luma.lcd.device as lcd
        except ImportError as exc:
            raise DeviceError(f"display.type {self.name!r} needs luma.lcd: pip install 'kiosk[lcd]' ({exc})") from exc
        o = self.options
        native = self.size if o.rotate in (0, 180) else self.size[::-1]
        kwargs: dict[str, Any] = {"width": native[0], "height": native[1], "rotate": o.rotate // 90}
        if o.gpio_backlight is None:
            kwargs["backlight"] = _always_on
        else:
            kwargs.update(gpio_LIGHT=o.gpio_backlight, active_low=o.backlight_active_low)
        try:
            self.device = getattr(lcd, self.luma_class)(type(self).interface_factory(o), **kwargs)
        except Exception as exc:  # luma raises DeviceNotFoundError, OSError, RuntimeError...
            raise DeviceError(f"{self.name} on SPI {o.spi_port}.{o.spi_device}: {exc}") from exc
        if tuple(self.device.size) != self.size:
            raise DeviceError(f"{self.name}: luma reports {self.device.size}, config says {self.size}")

    async def close(self) -> None:
        device, self.device = self.device, None
        if device is not None:
            with contextlib.suppress(Exception):  # a panel that is gone cannot be cleaned up
                device.cleanup()

    def _write(self, image: Image.Image, label: str) -> None:
        if self.device is None:
            raise DeviceError(f"{self.name} is not open")
        try:
            self.device.display(image.convert(self.device.mode))
        except OSError as exc:
            raise DeviceError(f"{self.name}: SPI write failed: {exc}") from exc

    def describe(self) -> str:
        o = self.options
        return f"{self.name} on SPI {o.spi_port}.{o.spi_device} ({o.width}x{o.height}, rotate {o.rotate})"


def _always_on(_on: bool) -> None:
    return None


class St7789Display(LumaDisplay):
    name = "st7789"
    Options: ClassVar[type[DriverOptions]] = St7789Options
    luma_class = "st7789"


class Ili9341Display(LumaDisplay):
    name = "ili9341"
    Options: ClassVar[type[DriverOptions]] = Ili9341Options
    luma_class = "ili9341"
