"""PNG display for development, tests and the demo: writes each frame, keeps the last one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from PIL import Image


class PngDisplay:
    """Like luma.core's `dummy` device, plus numbered PNG files a person can look at."""

    def __init__(self, directory: Path, size: tuple[int, int], *, keep_frames: bool = True) -> None:
        self._dir = directory
        self._size = size
        self._keep_frames = keep_frames
        self._count = 0
        self.last_frame: Image.Image | None = None
        self.frames_written: list[Path] = []
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    async def show(self, image: Image.Image, label: str = "frame") -> None:
        if image.size != self._size:
            raise ValueError(f"frame is {image.size}, display is {self._size}")
        self.last_frame = image.copy()
        self._count += 1
        name = f"{self._count:04d}-{label}.png" if self._keep_frames else "current.png"
        path = self._dir / name
        # PNG encoding takes tens of ms on a Pi: keep it off the event loop.
        await asyncio.to_thread(self.last_frame.save, path, "PNG")
        if self._keep_frames:
            self.frames_written.append(path)

    async def aclose(self) -> None:
        return None
