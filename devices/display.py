"""The display driver base: size and colours from the options, writes off the event loop."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from PIL import Image

from devices.base import DeviceError, DisplayOptions, Driver

Rotation = Literal[0, 90, 180, 270]


class RotatableOptions(DisplayOptions):
    # Degrees clockwise the picture is turned on its way to the panel, for a panel mounted sideways
    # (width and height stay the picture as the tourist sees it).
    rotate: Rotation = 0


class DisplayDriver(Driver):
    """`show(image)` checks the size, then runs the blocking `_write` in a worker thread.

    Like luma.core's `dummy` device it keeps the last frame, for tests and for the supervisor,
    which shows it again when the panel comes back.
    """

    kind = "display"

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.last_frame: Image.Image | None = None
        self._lock = asyncio.Lock()

    @property
    def size(self) -> tuple[int, int]:
        return (self.options.width, self.options.height)

    @property
    def mono(self) -> bool:
        return bool(self.options.mono)

    # Slow panels (e-ink) say so; screens then leave out what must change every second.
    refresh_s: float = 0.0

    async def show(self, image: Image.Image, label: str = "frame") -> None:
        if image.size != self.size:
            raise ValueError(f"frame is {image.size}, display is {self.size}")
        frame = image.copy()
        async with self._lock:  # one write at a time, in the order they were asked for
            await asyncio.to_thread(self._write, frame, label)
        self.last_frame = frame

    def _write(self, image: Image.Image, label: str) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.close()


def turned(image: Image.Image, rotate: int) -> Image.Image:
    """The frame as the panel's own scan order needs it."""
    if rotate == 0:
        return image
    method = {
        90: Image.Transpose.ROTATE_270,  # PIL turns counter-clockwise
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_90,
    }[rotate]
    return image.transpose(method)


def device_lost(path: object, exc: OSError) -> DeviceError:
    return DeviceError(f"{path}: {exc.strerror or exc}")

