"""PNG display for development, tests and the demo: writes each frame, keeps the last one."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from PIL import Image
from pydantic import Field

from devices.base import DeviceError, DisplayOptions, DriverOptions
from devices.display import DisplayDriver


class PngOptions(DisplayOptions):
    type: Literal["png"] = "png"
    dir: Path = Path("/var/lib/kiosk/frames")
    keep_frames: bool = Field(default=True, description="write every frame, not only the last one")


class PngDisplay(DisplayDriver):
    """Like luma.core's `dummy` device, plus numbered PNG files a person can look at."""

    name = "png"
    Options: ClassVar[type[DriverOptions]] = PngOptions

    def __init__(self, options: PngOptions) -> None:
        super().__init__(options)
        self.options: PngOptions = options
        self._count = 0
        self.frames_written: list[Path] = []

    async def open(self) -> None:
        try:
            self.options.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeviceError(f"display.dir {self.options.dir}: {exc.strerror or exc}") from exc

    def _write(self, image: Image.Image, label: str) -> None:
        # PNG encoding takes tens of ms on a Pi: DisplayDriver.show runs this in a worker thread.
        self._count += 1
        keep = self.options.keep_frames
        path = self.options.dir / (f"{self._count:04d}-{label}.png" if keep else "current.png")
        try:
            image.save(path, "PNG")
        except OSError as exc:
            raise DeviceError(f"{path}: {exc.strerror or exc}") from exc
        if keep:
            self.frames_written.append(path)

    def describe(self) -> str:
        return f"png {self.options.width}x{self.options.height} in {self.options.dir}"
