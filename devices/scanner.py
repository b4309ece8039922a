"""Payment-code scanners that send one line per scan over a serial port (or USB-COM).

The fake is a real pseudo-terminal: `PtyScanner` owns the master side and the daemon reads the
slave side through the same serial code path a real scanner uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import AsyncIterator

import serial_asyncio_fast

MAX_LINE = 256  # payment codes are 16-32 digits; anything longer is noise


class SerialScanner:
    def __init__(self, port: str, *, baudrate: int = 9600) -> None:
        self.port = port
        self.baudrate = baudrate
        self._writer: asyncio.StreamWriter | None = None

    async def codes(self) -> AsyncIterator[str]:
        reader, self._writer = await serial_asyncio_fast.open_serial_connection(
            url=self.port, baudrate=self.baudrate
        )
        buffer = b""
        while True:
            chunk = await reader.read(256)
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            if len(buffer) > MAX_LINE:
                buffer = b""  # an over-long line without terminator: drop it, keep reading
            for raw in lines:
                text = raw.decode("ascii", errors="replace").strip()
                if text and len(raw) <= MAX_LINE:
                    yield text

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class PtyScanner(SerialScanner):
    """A simulated scanner: `scan(code)` types a code as a real serial scanner would."""

    def __init__(self) -> None:
        self._master, slave = os.openpty()
        tty.setraw(slave)
        super().__init__(os.ttyname(slave))
        self._slave = slave

    def scan(self, code: str, terminator: bytes = b"\r") -> None:
        os.write(self._master, code.encode() + terminator)

    async def aclose(self) -> None:
        await super().aclose()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
