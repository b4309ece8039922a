"""USB HID scanners in keyboard mode (KBW), read through evdev (optional extra `evdev`).

The device is grabbed exclusively, so the codes it types reach only the kiosk, not a console or
a login prompt. Unplugging it ends the read with OSError (ENODEV); the scanner reports the loss and
reopens the same path when it is back: use the stable /dev/input/by-id/...-event-kbd path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from devices.base import Driver, DriverOptions
from devices.keymap import KEY_ENTER, KEY_KPENTER, KEY_TAB, KeyDecoder
from devices.lines import clean
from devices.scanner_serial import ScannerOptions

log = logging.getLogger(__name__)


class EvdevOptions(ScannerOptions):
    type: Literal["evdev"] = "evdev"
    path: Path = Field(description="e.g. /dev/input/by-id/usb-SCANNER-event-kbd")
    grab: bool = Field(default=True, description="exclusive: keystrokes do not leak to a console")
    end_key: Literal["enter", "tab"] = "enter"


def open_input_device(path: Path) -> Any:
    try:
        import evdev
    except ModuleNotFoundError as exc:
        raise OSError(f"scanner.type 'evdev' needs python-evdev: pip install 'kiosk[evdev]' ({exc})") from exc
    return evdev.InputDevice(str(path))


class EvdevScanner(Driver):
    kind = "scanner"
    name = "evdev"
    Options: ClassVar[type[DriverOptions]] = EvdevOptions
    # The seam tests swap: returns an object with grab(), ungrab(), close(), async_read_loop().
    device_factory: ClassVar[Callable[[Path], Any]] = staticmethod(open_input_device)

    def __init__(self, options: EvdevOptions) -> None:
        super().__init__(options)
        self.options: EvdevOptions = options
        ends = (KEY_ENTER, KEY_KPENTER) if options.end_key == "enter" else (KEY_TAB,)
        self.decoder = KeyDecoder(end_keys=ends, max_length=options.max_length)
        self.connected = asyncio.Event()
        self._device: Any = None
        self._closed = False

    async def codes(self) -> AsyncIterator[str]:
        path = self.options.path
        while not self._closed:
            try:
                self._device = type(self).device_factory(path)
                if self.options.grab:
                    self._device.grab()
            except OSError as exc:
                self.report(False, f"{path}: {exc.strerror or exc}")
                self._release()
                await asyncio.sleep(self.options.reconnect_s)
                continue
            self.decoder.reset()
            self.connected.set()
            self.report(True, f"{path} open{' (grabbed)' if self.options.grab else ''}")
            try:
                async for event in self._device.async_read_loop():
                    line = self.decoder.feed(event.type, event.code, event.value)
                    if line is None:
                        continue
                    if len(line) > self.options.max_length:
                        log.warning("scanner: dropped a line of %d characters", len(line))
                        continue
                    code = clean(line, self.options)
                    if code is not None:
                        yield code
            except OSError as exc:
                log.warning("scanner %s lost: %s", path, exc.strerror or exc)
            finally:
                self.connected.clear()
                self._release()
            if not self._closed:
                self.report(False, f"{path}: disconnected")
                await asyncio.sleep(self.options.reconnect_s)

    def _release(self) -> None:
        device, self._device = self._device, None
        if device is None:
            return
        with contextlib.suppress(OSError):
            if self.options.grab:
                device.ungrab()
        with contextlib.suppress(OSError):
            device.close()

    async def close(self) -> None:
        self._closed = True
        self._release()

    async def aclose(self) -> None:
        await self.close()

    def describe(self) -> str:
        return f"evdev {self.options.path}{' (exclusive grab)' if self.options.grab else ''}"
