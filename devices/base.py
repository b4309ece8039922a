"""Device contracts. A display is `show(PIL.Image)` (as luma.core); relays and inputs are async.

Blocking libraries (gpiozero callbacks, SPI writes) cross into the event loop only through
`loop.call_soon_threadsafe` or `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from PIL import Image


class DeviceError(Exception):
    """A device is missing, unplugged or misbehaving."""


class Display(Protocol):
    @property
    def size(self) -> tuple[int, int]: ...

    async def show(self, image: Image.Image) -> None: ...

    async def aclose(self) -> None: ...


class Scanner(Protocol):
    def codes(self) -> AsyncIterator[str]:
        """Each complete line the scanner read, stripped of its terminator."""
        ...

    async def aclose(self) -> None: ...


class Relay(Protocol):
    async def pulse(self, ms: int) -> None: ...

    async def pulses(self, count: int, ms: int, gap_ms: int) -> None: ...

    async def hold(self, seconds: float) -> None: ...

    def close(self) -> None: ...


class Input(Protocol):
    """A digital input (button, drop sensor). `wait_active` returns False on timeout."""

    @property
    def is_active(self) -> bool: ...

    async def wait_active(self, timeout: float | None = None) -> bool: ...

    def close(self) -> None: ...
