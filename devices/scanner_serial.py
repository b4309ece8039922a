"""Payment-code scanners that send one line per scan over a serial port (TTL, RS-232, USB-COM).

pyserial-asyncio-fast, not pyserial-asyncio, which sleeps in the event loop. `codes()` never ends
by itself: when the port disappears (USB scanner unplugged) it reports the loss, retries every
`reconnect_s` and carries on when the port is back, under the same path. Use a stable path
(/dev/serial/by-id/..., or a udev symlink): /dev/ttyUSB0 may come back under another number.

The simulated scanner is a real pseudo-terminal: `PtyScanner` owns the master side and reads the
slave side through exactly the code path a real scanner uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import termios
import tty
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal

import serial
import serial_asyncio_fast
from pydantic import Field

from devices.base import Driver, DriverOptions
from devices.lines import CodeOptions, LineDecoder

log = logging.getLogger(__name__)

_PARITY = {"none": serial.PARITY_NONE, "even": serial.PARITY_EVEN, "odd": serial.PARITY_ODD}


class ScannerOptions(DriverOptions, CodeOptions):
    # A scanner the kiosk cannot sell without (the only way to pay): losing it stops sales.
    required: bool = True
    reconnect_s: float = Field(default=2.0, gt=0, le=300)


class SerialOptions(ScannerOptions):
    type: Literal["serial"] = "serial"
    port: str = Field(min_length=1, description="e.g. /dev/serial/by-id/usb-...-if00 or /dev/ttyAMA0")
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600] = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["none", "even", "odd"] = "none"
    stopbits: Literal[1, 2] = 1


class PtyOptions(ScannerOptions):
    type: Literal["pty"] = "pty"
    required: bool = False


class SerialScanner(Driver):
    kind = "scanner"
    name = "serial"
    Options: ClassVar[type[DriverOptions]] = SerialOptions

    def __init__(self, options: SerialOptions | PtyOptions) -> None:
        super().__init__(options)
        self.options: SerialOptions | PtyOptions = options
        self.decoder = LineDecoder(options)
        self.connected = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._closed = False

    @property
    def port(self) -> str:
        assert isinstance(self.options, SerialOptions)
        return self.options.port

    def _serial_kwargs(self) -> dict[str, int | str]:
        o = self.options
        if not isinstance(o, SerialOptions):
            return {"baudrate": 9600}
        return {"baudrate": o.baudrate, "bytesize": o.bytesize, "parity": _PARITY[o.parity], "stopbits": o.stopbits}

    async def open(self) -> None:
        """Nothing to do: `codes()` opens the port and keeps it open, retrying."""

    async def codes(self) -> AsyncIterator[str]:
        o = self.options
        retry_note_logged = False
        while not self._closed:
            try:
                kwargs: dict[str, Any] = self._serial_kwargs()
                reader, self._writer = await serial_asyncio_fast.open_serial_connection(url=self.port, **kwargs)
            except (OSError, serial.SerialException, termios.error) as exc:
                # termios.error: the port exists but refuses the settings (a pty and parity).
                self.report(False, f"{self.port}: {exc}")
                if not retry_note_logged:
                    log.warning("scanner %s unavailable (%s); retrying every %gs", self.port, exc, o.reconnect_s)
                    retry_note_logged = True
                await asyncio.sleep(self.options.reconnect_s)
                continue
            retry_note_logged = False
            self.decoder.reset()
            self.connected.set()
            self.report(True, f"{self.port} open")
            try:
                while True:
                    try:
                        chunk = await reader.read(256)
                    except (OSError, serial.SerialException) as exc:
                        log.warning("scanner %s lost: %s", self.port, exc)
                        break
                    if not chunk:
                        log.warning("scanner %s closed", self.port)
                        break
                    for code in self.decoder.feed(chunk):
                        yield code
            finally:
                self.connected.clear()
                await self._close_writer()
            if not self._closed:
                self.report(False, f"{self.port}: disconnected")
                await asyncio.sleep(self.options.reconnect_s)

    async def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        self._closed = True
        await self._close_writer()

    async def aclose(self) -> None:
        await self.close()

    def describe(self) -> str:
        o = self.options
        if isinstance(o, SerialOptions):
            framing = f"{o.bytesize}{o.parity[0].upper()}{o.stopbits}"
            return f"serial {o.port} {o.baudrate} {framing}, terminator {o.terminator}"
        return f"pty {self.port}"


class PtyScanner(SerialScanner):
    """A simulated scanner: `scan(code)` types a code as a real serial scanner would."""

    name = "pty"
    Options: ClassVar[type[DriverOptions]] = PtyOptions

    def __init__(self, options: PtyOptions | None = None) -> None:
        super().__init__(options or PtyOptions())
        self._master, slave = os.openpty()
        tty.setraw(slave)
        self._slave = slave
        self._port = os.ttyname(slave)

    @property
    def port(self) -> str:
        return self._port

    def scan(self, code: str, terminator: bytes = b"\r") -> None:
        os.write(self._master, code.encode() + terminator)

    def write_raw(self, data: bytes) -> None:
        os.write(self._master, data)

    async def close(self) -> None:
        await super().close()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._master = self._slave = -1
