"""Which driver a config's `type = "..."` names, and its options model.

Like kvmd's plugin registry, a driver is found by name and imported only when asked for, so an
optional hardware library (luma.lcd, inky, waveshare_epd, evdev) is needed only on the kiosks
that use it: driver modules import those libraries inside `open()`, never at module level.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from devices.base import Driver, DriverOptions

# kind -> type name -> "module:Class". The order is the order `known` lists them in errors.
DRIVERS: dict[str, dict[str, str]] = {
    "display": {
        "png": "devices.display_png:PngDisplay",
        "fbdev": "devices.display_fbdev:FramebufferDisplay",
        "st7789": "devices.display_luma:St7789Display",
        "ili9341": "devices.display_luma:Ili9341Display",
        "waveshare_epd": "devices.display_epd:WaveshareEpdDisplay",
        "inky": "devices.display_inky:InkyDisplay",
    },
    "scanner": {
        "none": "devices.scanner_stdin:NoScanner",
        "serial": "devices.scanner_serial:SerialScanner",
        "pty": "devices.scanner_serial:PtyScanner",
        "evdev": "devices.scanner_evdev:EvdevScanner",
        "stdin": "devices.scanner_stdin:StdinScanner",
    },
    "gpio": {
        "gpiozero": "devices.gpio:GpioZero",
    },
}


class UnknownDriverError(LookupError):
    def __init__(self, kind: str, name: object) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(known(kind))}")


def known(kind: str) -> list[str]:
    return list(DRIVERS[kind])


@cache
def driver_class(kind: str, name: str) -> type[Driver]:
    try:
        target = DRIVERS[kind][name]
    except KeyError:
        raise UnknownDriverError(kind, name) from None
    module_name, _, class_name = target.partition(":")
    cls: type[Driver] = getattr(importlib.import_module(module_name), class_name)
    return cls


def options_model(kind: str, name: str) -> type[DriverOptions]:
    return driver_class(kind, name).Options


def parse_options(kind: str, value: Any, default_type: str) -> DriverOptions:
    """Validate one device section; errors carry the key inside it (`type`, `baudrate`, ...)."""
    if isinstance(value, DriverOptions):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"[{kind}] must be a table with a type, e.g. type = {default_type!r}")
    name = value.get("type", default_type)
    if not isinstance(name, str) or name not in DRIVERS[kind]:
        message = str(UnknownDriverError(kind, name)).replace("{", "{{").replace("}", "}}")
        detail = InitErrorDetails(
            type=PydanticCustomError("unknown_driver", message), loc=("type",), input=name
        )
        raise ValidationError.from_exception_data(kind, [detail])
    return options_model(kind, name).model_validate({**value, "type": name})


def build(options: DriverOptions, kind: str) -> Driver:
    """The driver for validated options (not opened yet)."""
    return driver_class(kind, options.type)(options)
