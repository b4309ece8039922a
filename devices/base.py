"""Device contracts and the driver lifecycle.

A display is `show(PIL.Image)` (as luma.core); scanners yield codes; relays and inputs are async.
Every driver is a `Driver`: built from its own pydantic options model (declared next to it, as
kvmd's plugins declare theirs), then `open()`ed and `close()`d by its owner. `open()` raises
DeviceError when the hardware is missing, so a supervisor can retry it instead of crashing.

Blocking libraries (gpiozero callbacks, SPI and framebuffer writes) cross into the event loop only
through `loop.call_soon_threadsafe` or `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, Protocol

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field


class DeviceError(Exception):
    """A device is missing, unplugged or misbehaving."""


class DriverOptions(BaseModel):
    """Options of one driver, exactly as written in its config section (`type` picks the driver)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str


class DisplayOptions(DriverOptions):
    """What every display has: the picture size as the tourist sees it, its density and colours."""

    width: int = Field(default=800, ge=64, le=4096)
    height: int = Field(default=480, ge=64, le=4096)
    # Pixels per inch of the panel: sets the QR module pitch (>= 0.4 mm) and the smallest text.
    dpi: float = Field(default=140, ge=50, le=600)
    # 1-bit layouts (no grey, no anti-aliasing); e-ink drivers default to it.
    mono: bool = False


class Driver:
    """Lifecycle base: `open()` (DeviceError if missing), use, `close()`; both idempotent."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    Options: ClassVar[type[DriverOptions]] = DriverOptions

    def __init__(self, options: Any) -> None:
        self.options = options
        # Drivers that reconnect by themselves (scanners) tell their supervisor how they are.
        self.health_listener: Callable[[bool, str], None] | None = None

    def report(self, ok: bool, detail: str) -> None:
        if self.health_listener is not None:
            self.health_listener(ok, detail)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def describe(self) -> str:
        """One line for logs and the self-test table."""
        return self.name


class Display(Protocol):
    @property
    def size(self) -> tuple[int, int]: ...

    async def show(self, image: Image.Image, label: str = "frame") -> None: ...

    async def aclose(self) -> None: ...


class Scanner(Protocol):
    def codes(self) -> AsyncIterator[str]:
        """Each complete code the scanner read, stripped of terminator, prefix and suffix."""
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
