"""E-ink panels: 1-bit frames, slow refreshes that never block the event loop, full vs partial.

A refresh takes 2 to 30 s. `show()` therefore only hands the newest frame to a worker and
returns; frames that arrive while the panel is busy replace each other (the tourist needs the
latest screen, not every screen in between), and a frame equal to the one on the panel is
skipped. Partial refreshes are fast but leave ghosts, so every `full_refresh_every`-th refresh is a
full one, and so is the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from PIL import Image, ImageChops
from pydantic import Field

from devices.base import DeviceError
from devices.display import DisplayDriver, RotatableOptions, turned

log = logging.getLogger(__name__)


class EinkOptions(RotatableOptions):
    mono: bool = True
    partial_refresh: bool = True
    full_refresh_every: int = Field(default=5, ge=1, le=100)
    # Seconds one full refresh takes on this panel (screens leave out the ticking countdown).
    refresh_s: float = Field(default=4.0, gt=0, le=120)


def to_1bit(image: Image.Image) -> Image.Image:
    """Threshold at 50 %, no dithering: dithered QR modules lose their edges."""
    if image.mode == "1":
        return image
    return image.convert("L").point(lambda v: 255 if v >= 128 else 0).convert("1", dither=Image.Dither.NONE)


class EinkDisplay(DisplayDriver):
    def __init__(self, options: EinkOptions) -> None:
        super().__init__(options)
        self.options: EinkOptions = options
        self.refresh_s = options.refresh_s
        self.on_panel: Image.Image | None = None
        self.full_refreshes = 0
        self.partial_refreshes = 0
        self._since_full = 0
        self._pending: Image.Image | None = None
        self._worker: asyncio.Task[None] | None = None
        self._error: DeviceError | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def supports_partial(self) -> bool:
        return False

    async def show(self, image: Image.Image, label: str = "frame") -> None:
        if image.size != self.size:
            raise ValueError(f"frame is {image.size}, display is {self.size}")
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        frame = to_1bit(image)
        self.last_frame = frame
        reference = self._pending or self.on_panel
        if reference is not None and ImageChops.difference(reference, frame).getbbox() is None:
            return
        self._pending = frame
        self._idle.clear()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._refresh_latest(), name=f"{self.name}-refresh")

    async def drain(self) -> None:
        """Wait until the panel shows the latest frame (tests, self-test, shutdown)."""
        await self._idle.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def _refresh_latest(self) -> None:
        try:
            while self._pending is not None:
                frame, self._pending = self._pending, None
                full = (
                    self.on_panel is None
                    or not (self.options.partial_refresh and self.supports_partial())
                    or self._since_full + 1 >= self.options.full_refresh_every
                )
                try:
                    await asyncio.to_thread(self._refresh, turned(frame, self.options.rotate), full)
                except DeviceError as exc:
                    self._error = exc
                    self.on_panel = None
                    return
                except Exception as exc:  # the vendor libraries raise anything
                    self._error = DeviceError(f"{self.name}: refresh failed: {exc}")
                    self.on_panel = None
                    return
                self.on_panel = frame
                if full:
                    self.full_refreshes += 1
                    self._since_full = 0
                else:
                    self.partial_refreshes += 1
                    self._since_full += 1
        finally:
            self._idle.set()

    def _refresh(self, frame: Image.Image, full: bool) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            # Let a refresh in progress finish: cutting power mid-waveform can damage the film.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(worker), self.refresh_s * 3)
        self.on_panel = None
        await self._sleep_panel()

    async def _sleep_panel(self) -> None:
        return None

    def _write(self, image: Image.Image, label: str) -> None:  # pragma: no cover - show() is overridden
        raise NotImplementedError

    @staticmethod
    def describe_library(obj: Any) -> str:
        return type(obj).__module__
