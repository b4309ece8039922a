"""Display drivers: a fake framebuffer file with sysfs attributes, luma on a noop SPI interface,
Waveshare and inky through fakes of their library shapes, and PNG."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from luma.core.interface.serial import noop
from PIL import Image

from devices.base import DeviceError
from devices.display_epd import WaveshareEpdDisplay, WaveshareOptions
from devices.display_fbdev import FbdevOptions, FramebufferDisplay, pack_rgb565
from devices.display_inky import InkyDisplay, InkyOptions
from devices.display_luma import Ili9341Display, Ili9341Options, St7789Display, St7789Options
from devices.display_png import PngDisplay, PngOptions

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0), (18, 52, 86)]


def fake_fb(tmp_path: Path, width: int, height: int, bpp: int, stride: int | None = None) -> tuple[Path, Path]:
    stride = stride or width * bpp // 8
    sysfs = tmp_path / "sys" / "fb1"
    sysfs.mkdir(parents=True)
    (sysfs / "virtual_size").write_text(f"{width},{height}\n")
    (sysfs / "bits_per_pixel").write_text(f"{bpp}\n")
    (sysfs / "stride").write_text(f"{stride}\n")
    device = tmp_path / "fb1"
    device.write_bytes(bytes(stride * height))
    return device, sysfs


def stripes(size: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", size)
    for x in range(size[0]):
        for y in range(size[1]):
            image.putpixel((x, y), COLOURS[(x + y) % len(COLOURS)])
    return image


def rgb565(r: int, g: int, b: int) -> int:
    return ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)


async def test_fbdev_rgb565_pixels_are_packed_little_endian(tmp_path: Path) -> None:
    device, sysfs = fake_fb(tmp_path, 96, 64, 16)
    display = FramebufferDisplay(FbdevOptions(device=device, sysfs_dir=sysfs, width=96, height=64))
    await display.open()
    image = stripes((96, 64))
    await display.show(image)
    data = device.read_bytes()
    for x, y in ((0, 0), (1, 0), (5, 3), (95, 63), (40, 17)):
        (value,) = struct.unpack_from("<H", data, (y * 96 + x) * 2)
        assert value == rgb565(*image.getpixel((x, y))), (x, y)
    await display.close()


async def test_fbdev_xrgb8888_with_stride_padding(tmp_path: Path) -> None:
    device, sysfs = fake_fb(tmp_path, 70, 64, 32, stride=320)  # 70*4 = 280 bytes + 40 of padding
    display = FramebufferDisplay(FbdevOptions(device=device, sysfs_dir=sysfs, width=70, height=64))
    await display.open()
    image = stripes((70, 64))
    await display.show(image)
    data = device.read_bytes()
    assert len(data) == 320 * 64
    for x, y in ((0, 0), (69, 0), (3, 63), (69, 63)):
        (value,) = struct.unpack_from("<I", data, y * 320 + x * 4)
        r, g, b = image.getpixel((x, y))
        assert value & 0xFFFFFF == (r << 16) | (g << 8) | b, (x, y)
    assert data[280:320] == bytes(40)


async def test_fbdev_rotation_and_bgr(tmp_path: Path) -> None:
    device, sysfs = fake_fb(tmp_path, 64, 96, 16)  # a portrait panel mounted landscape
    options = FbdevOptions(device=device, sysfs_dir=sysfs, width=96, height=64, rotate=90, pixel_order="bgr")
    display = FramebufferDisplay(options)
    await display.open()
    image = Image.new("RGB", (96, 64), (255, 255, 255))
    image.putpixel((0, 0), (255, 0, 0))  # top left of the picture ...
    await display.show(image)
    data = device.read_bytes()
    (value,) = struct.unpack_from("<H", data, 63 * 2)  # ... is the top right pixel of the panel
    assert value == rgb565(0, 0, 255)  # red, in a BGR panel's blue bits


async def test_fbdev_geometry_mismatch_and_missing_device_are_device_errors(tmp_path: Path) -> None:
    device, sysfs = fake_fb(tmp_path, 480, 320, 16)
    with pytest.raises(DeviceError, match="480x320"):
        await FramebufferDisplay(FbdevOptions(device=device, sysfs_dir=sysfs)).open()
    with pytest.raises(DeviceError, match="virtual_size"):
        await FramebufferDisplay(FbdevOptions(device=device, sysfs_dir=tmp_path / "nothing")).open()
    display = FramebufferDisplay(FbdevOptions(device=device, sysfs_dir=sysfs, width=480, height=320))
    await display.open()
    await display.close()
    with pytest.raises(DeviceError):
        await display.show(Image.new("RGB", (480, 320)))


def test_rgb565_packing_matches_the_formula_for_every_channel_value() -> None:
    image = Image.new("RGB", (256, 3))
    for v in range(256):
        image.putpixel((v, 0), (v, 0, 0))
        image.putpixel((v, 1), (0, v, 0))
        image.putpixel((v, 2), (0, 0, v))
    data = pack_rgb565(image)
    for i, (x, y) in enumerate((x, y) for y in range(3) for x in range(256)):
        (value,) = struct.unpack_from("<H", data, i * 2)
        assert value == rgb565(*image.getpixel((x, y)))


@pytest.mark.parametrize(
    ("cls", "options"),
    [(St7789Display, St7789Options()), (Ili9341Display, Ili9341Options(gpio_backlight=None))],
)
async def test_luma_lcds_take_frames_through_luma(cls: Any, options: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cls, "interface_factory", staticmethod(lambda _o: noop()))
    if options.gpio_backlight is not None:
        options = options.model_copy(update={"gpio_backlight": None})
    display = cls(options)
    await display.open()
    assert tuple(display.device.size) == display.size
    shown: list[Image.Image] = []
    monkeypatch.setattr(display.device, "display", lambda image: shown.append(image))
    await display.show(stripes(display.size))
    assert shown[0].size == display.size and shown[0].mode == "RGB"
    await display.close()


class FakeEpd:
    """Waveshare's EPD class shape (epd2in13_V4 style partial refresh)."""

    width, height = 480, 800
    calls: list[str]

    def __init__(self) -> None:
        self.calls = []

    def init(self) -> int:
        self.calls.append("init")
        return 0

    def getbuffer(self, image: Image.Image) -> bytes:
        assert image.mode == "1"
        return image.tobytes()

    def displayPartBaseImage(self, buf: bytes) -> None:
        self.calls.append("full")

    def displayPartial(self, buf: bytes) -> None:
        self.calls.append("partial")

    def display(self, buf: bytes) -> None:
        self.calls.append("display")

    def sleep(self) -> None:
        self.calls.append("sleep")


async def test_waveshare_full_then_partial_refreshes_coalesced(monkeypatch: pytest.MonkeyPatch) -> None:
    epd = FakeEpd()
    loader = staticmethod(lambda model: SimpleNamespace(EPD=lambda: epd))
    monkeypatch.setattr(WaveshareEpdDisplay, "module_loader", loader)
    display = WaveshareEpdDisplay(WaveshareOptions(model="epd7in5_V2", full_refresh_every=3))
    await display.open()
    frames = [Image.new("RGB", (800, 480), (255, 255, 255)) for _ in range(6)]
    for i, frame in enumerate(frames):
        frame.putpixel((i, i), (0, 0, 0))
    await display.show(frames[0])  # full (the first)
    await display.drain()
    await display.show(frames[0])  # the same picture: no refresh at all
    await display.show(frames[1])
    await display.drain()
    # Three frames while the panel is busy: only the newest is drawn.
    await display.show(frames[2])
    await display.show(frames[3])
    await display.show(frames[4])
    await display.drain()
    await display.show(frames[5])
    await display.drain()
    assert epd.calls == ["init", "full", "partial", "partial", "full"]
    assert display.full_refreshes == 2 and display.partial_refreshes == 2
    await display.close()
    assert epd.calls[-1] == "sleep"


async def test_waveshare_wrong_size_is_a_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WaveshareEpdDisplay, "module_loader", staticmethod(lambda m: SimpleNamespace(EPD=FakeEpd)))
    with pytest.raises(DeviceError, match="480x800"):
        await WaveshareEpdDisplay(WaveshareOptions(width=400, height=300)).open()


async def test_inky_gets_its_own_palette_indices_full_refresh_only(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[Image.Image] = []
    board = SimpleNamespace(
        width=400, height=300, WHITE=0, BLACK=1,
        set_image=shown.append, set_border=lambda colour: None, show=lambda: None,
    )
    monkeypatch.setattr(InkyDisplay, "board_factory", staticmethod(lambda o: board))
    display = InkyDisplay(InkyOptions())
    await display.open()
    frame = Image.new("RGB", (400, 300), (255, 255, 255))
    frame.putpixel((10, 20), (0, 0, 0))
    await display.show(frame)
    await display.drain()
    assert shown[0].mode == "P" and shown[0].getpixel((10, 20)) == 1 and shown[0].getpixel((0, 0)) == 0
    assert display.full_refreshes == 1 and display.refresh_s >= 10


async def test_png_keeps_frames_and_refuses_a_wrong_size(tmp_path: Path) -> None:
    display = PngDisplay(PngOptions(dir=tmp_path / "frames", width=320, height=240))
    await display.open()
    await display.show(Image.new("RGB", (320, 240)), "idle")
    assert [p.name for p in display.frames_written] == ["0001-idle.png"]
    with pytest.raises(ValueError):
        await display.show(Image.new("RGB", (240, 320)))
    assert asyncio.iscoroutinefunction(display.show)
