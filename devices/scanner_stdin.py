"""Development scanners: codes typed on standard input, and none at all."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import ClassVar, Literal

from devices.base import Driver, DriverOptions
from devices.lines import LineDecoder
from devices.scanner_serial import ScannerOptions


class StdinOptions(ScannerOptions):
    type: Literal["stdin"] = "stdin"
    required: bool = False


class StdinScanner(Driver):
    """One code per line typed into the daemon's terminal (never on a kiosk: stdin is /dev/null)."""

    kind = "scanner"
    name = "stdin"
    Options: ClassVar[type[DriverOptions]] = StdinOptions

    def __init__(self, options: StdinOptions, *, fd: int | None = None) -> None:
        super().__init__(options)
        self.options: StdinOptions = options
        self.decoder = LineDecoder(options)
        self._fd = sys.stdin.fileno() if fd is None else fd

    async def codes(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        pipe = os.fdopen(self._fd, "rb", buffering=0, closefd=False)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        self.report(True, "reading standard input")
        try:
            while chunk := await reader.read(256):
                for code in self.decoder.feed(chunk):
                    yield code
        finally:
            transport.close()
        self.report(True, "standard input closed")

    async def aclose(self) -> None:
        await self.close()

    def describe(self) -> str:
        return "stdin"


class NoneOptions(DriverOptions):
    type: Literal["none"] = "none"


class NoScanner(Driver):
    """`type = "none"`: the kiosk takes payments only through the QR code on its screen."""

    kind = "scanner"
    name = "none"
    Options: ClassVar[type[DriverOptions]] = NoneOptions
