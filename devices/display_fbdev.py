"""Linux framebuffer (/dev/fbN): a kernel driver (fbtft, DRM fbdev emulation, HDMI) owns the panel.

Geometry, depth and line length come from sysfs (/sys/class/graphics/fbN/{virtual_size,
bits_per_pixel,stride}), never from guesses. Pixels are packed with Pillow's C code: RGB565 by
splitting channels into the two bytes of each little-endian pixel, XRGB8888 with the "BGRX" raw
packer (the byte order of a little-endian 0xXXRRGGBB word).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from PIL import Image, ImageChops

from devices.base import DeviceError, DriverOptions
from devices.display import DisplayDriver, RotatableOptions, device_lost, turned


class FbdevOptions(RotatableOptions):
    type: Literal["fbdev"] = "fbdev"
    device: Path = Path("/dev/fb0")
    # Where fbN's attributes are; the default is /sys/class/graphics/<name of device>.
    sysfs_dir: Path | None = None
    # Colour order inside a pixel: "rgb" (RGB565, XRGB8888) or "bgr" (BGR565, XBGR8888 panels).
    pixel_order: Literal["rgb", "bgr"] = "rgb"


@dataclass(frozen=True)
class FbGeometry:
    width: int
    height: int
    bits_per_pixel: int
    stride: int  # bytes per line, padding included

    @property
    def frame_bytes(self) -> int:
        return self.stride * self.height


def read_geometry(sysfs_dir: Path) -> FbGeometry:
    def attr(name: str) -> str:
        try:
            return (sysfs_dir / name).read_text().strip()
        except OSError as exc:
            raise DeviceError(f"{sysfs_dir / name}: {exc.strerror or exc}") from exc

    try:
        width, height = (int(v) for v in attr("virtual_size").split(","))
        bpp = int(attr("bits_per_pixel"))
        stride = int(attr("stride")) if (sysfs_dir / "stride").exists() else width * bpp // 8
    except ValueError as exc:
        raise DeviceError(f"{sysfs_dir}: unreadable framebuffer attributes ({exc})") from exc
    if bpp not in (16, 24, 32):
        raise DeviceError(f"{sysfs_dir}: {bpp} bits per pixel is not supported (16, 24 or 32)")
    return FbGeometry(width, height, bpp, stride)


def pack_rgb565(image: Image.Image, bgr: bool = False) -> bytes:
    """Little-endian RGB565: byte 0 = GGGBBBBB, byte 1 = RRRRRGGG."""
    r, g, b = image.convert("RGB").split()
    if bgr:
        r, b = b, r
    # The bit fields do not overlap, so a saturating add is a bitwise OR here.
    high = ImageChops.add(r.point(lambda v: v & 0xF8), g.point(lambda v: v >> 5))
    low = ImageChops.add(g.point(lambda v: (v & 0x1C) << 3), b.point(lambda v: v >> 3))
    return Image.merge("LA", (low, high)).tobytes()


def pack(image: Image.Image, bits_per_pixel: int, pixel_order: str = "rgb") -> bytes:
    bgr = pixel_order == "bgr"
    if bits_per_pixel == 16:
        return pack_rgb565(image, bgr)
    if bits_per_pixel == 24:
        return image.convert("RGB").tobytes("raw", "RGB" if bgr else "BGR")
    if bits_per_pixel == 32:
        return image.convert("RGB").tobytes("raw", "RGBX" if bgr else "BGRX")
    raise ValueError(f"{bits_per_pixel} bits per pixel")


def with_stride(data: bytes, row_bytes: int, stride: int, rows: int) -> bytes:
    if stride == row_bytes:
        return data
    pad = bytes(stride - row_bytes)
    return b"".join(data[i * row_bytes : (i + 1) * row_bytes] + pad for i in range(rows))


class FramebufferDisplay(DisplayDriver):
    name = "fbdev"
    Options: ClassVar[type[DriverOptions]] = FbdevOptions

    def __init__(self, options: FbdevOptions) -> None:
        super().__init__(options)
        self.options: FbdevOptions = options
        self.geometry: FbGeometry | None = None
        self._fd: int | None = None

    @property
    def sysfs_dir(self) -> Path:
        return self.options.sysfs_dir or Path("/sys/class/graphics") / self.options.device.name

    async def open(self) -> None:
        geometry = read_geometry(self.sysfs_dir)
        w, h = self.size if self.options.rotate in (0, 180) else self.size[::-1]
        if (geometry.width, geometry.height) != (w, h):
            # Drawing for the wrong size would cut the QR off or leave it small: refuse, say why.
            raise DeviceError(
                f"{self.options.device} is {geometry.width}x{geometry.height}, display.width/height "
                f"(rotated by {self.options.rotate}) give {w}x{h}"
            )
        try:
            fd = os.open(self.options.device, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise device_lost(self.options.device, exc) from exc
        await self.close()
        self.geometry, self._fd = geometry, fd

    async def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _write(self, image: Image.Image, label: str) -> None:
        geometry, fd = self.geometry, self._fd
        if geometry is None or fd is None:
            raise DeviceError(f"{self.options.device} is not open")
        frame = turned(image, self.options.rotate)
        data = pack(frame, geometry.bits_per_pixel, self.options.pixel_order)
        data = with_stride(data, frame.width * geometry.bits_per_pixel // 8, geometry.stride, frame.height)
        try:
            written = os.pwrite(fd, data, 0)
        except OSError as exc:
            raise device_lost(self.options.device, exc) from exc
        if written != len(data):
            raise DeviceError(f"{self.options.device}: wrote {written} of {len(data)} bytes")

    def describe(self) -> str:
        g = self.geometry
        depth = f", {g.bits_per_pixel} bpp, stride {g.stride}" if g else ""
        return f"fbdev {self.options.device}{depth}"
