"""Waveshare e-Paper HATs through Waveshare's own Python modules (optional extra `eink`).

Either the official `waveshare_epd` package from Waveshare's repository or the PyPI packaging
of the same files (`waveshare-epaper`, module `epaper`) works: `model` is the module name, e.g.
"epd7in5_V2" (800x480) or "epd4in2_V2" (400x300). The modules busy-wait on the BUSY pin for
seconds, so every call runs in a worker thread (EinkDisplay). Their partial-refresh methods differ
between models; the three shapes they come in are all handled here.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar, Literal

from PIL import Image
from pydantic import Field

from devices.base import DeviceError, DriverOptions
from devices.eink import EinkDisplay, EinkOptions


class WaveshareOptions(EinkOptions):
    type: Literal["waveshare_epd"] = "waveshare_epd"
    model: str = Field(default="epd7in5_V2", pattern=r"^epd[0-9a-zA-Z_]+$")
    width: int = Field(default=800, ge=64, le=4096)
    height: int = Field(default=480, ge=64, le=4096)
    dpi: float = Field(default=125, ge=50, le=600)


def load_module(model: str) -> ModuleType:
    try:
        return importlib.import_module(f"waveshare_epd.{model}")
    except ModuleNotFoundError as first:
        if first.name not in ("waveshare_epd", f"waveshare_epd.{model}"):
            raise
    try:
        import epaper
    except ModuleNotFoundError as exc:
        raise DeviceError(
            "display.type 'waveshare_epd' needs Waveshare's driver: pip install 'kiosk[eink]'"
        ) from exc
    module: ModuleType = epaper.epaper(model)
    return module


class WaveshareEpdDisplay(EinkDisplay):
    name = "waveshare_epd"
    Options: ClassVar[type[DriverOptions]] = WaveshareOptions
    # The seam tests swap for a fake module with Waveshare's EPD class shape.
    module_loader: ClassVar[Callable[[str], ModuleType]] = staticmethod(load_module)

    def __init__(self, options: WaveshareOptions) -> None:
        super().__init__(options)
        self.options: WaveshareOptions = options
        self.epd: Any = None
        self._partial_mode = False

    async def open(self) -> None:
        try:
            module = type(self).module_loader(self.options.model)
        except ModuleNotFoundError as exc:
            raise DeviceError(f"display.model {self.options.model!r}: no such Waveshare module ({exc})") from exc
        epd = module.EPD()
        native = {(epd.width, epd.height), (epd.height, epd.width)}
        if self.size not in native:
            w, h = self.size
            raise DeviceError(f"{self.options.model} is {epd.width}x{epd.height}; display.width/height say {w}x{h}")
        status = await asyncio.to_thread(epd.init)
        if status not in (None, 0):
            raise DeviceError(f"{self.options.model}: init failed (is the HAT connected and SPI enabled?)")
        self.epd, self._partial_mode = epd, False

    def supports_partial(self) -> bool:
        epd = self.epd
        return epd is not None and (hasattr(epd, "displayPartial") or hasattr(epd, "display_Partial"))

    def _refresh(self, frame: Image.Image, full: bool) -> None:
        epd = self.epd
        if epd is None:
            raise DeviceError(f"{self.options.model} is not open")
        buffer = epd.getbuffer(frame)
        if full:
            if self._partial_mode:
                epd.init()
                self._partial_mode = False
            # displayPartBaseImage shows the frame and keeps it as the base later partials diff from.
            (getattr(epd, "displayPartBaseImage", None) or epd.display)(buffer)
            return
        if hasattr(epd, "displayPartial"):
            epd.displayPartial(buffer)
            return
        partial = epd.display_Partial
        if len(inspect.signature(partial).parameters) == 1:
            partial(buffer)
            return
        if not self._partial_mode and hasattr(epd, "init_part"):
            epd.init_part()
        self._partial_mode = True
        partial(buffer, 0, 0, epd.width, epd.height)

    async def _sleep_panel(self) -> None:
        epd, self.epd = self.epd, None
        if epd is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(epd.sleep)

    def describe(self) -> str:
        o = self.options
        mode = f"partial refresh, full every {o.full_refresh_every}" if o.partial_refresh else "full refresh only"
        return f"waveshare_epd {o.model} {o.width}x{o.height}, {mode}"
