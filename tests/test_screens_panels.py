"""Screens on every supported panel: golden images, QR codes a phone reads at once, 1-bit,
physical minimums from the panel's density, languages, wallets and the CNY approximation.

Golden images: tests/golden/<kind>-<W>x<H>.png. After a deliberate change to the look, run
`KIOSK_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_screens_panels.py` and look at them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image, ImageChops, ImageFilter

from kiosk.screens.fonts import DEFAULT_FONT_PATH
from kiosk.screens.layout import BadgeItem, QrItem, TextItem
from kiosk.screens.model import Screen, ScreenKind
from kiosk.screens.render import MM_PER_INCH, ScreenRenderer, ScreenStyle, approx_cny
from kiosk.screens.samples import SAMPLE_QR_CONTENT, sample_screen

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_SIZES = [(800, 480), (480, 800), (240, 320)]
# From a 2.4" 240x320 LCD to a 7" 800x480 one, both ways round, and the common e-ink sizes.
PANELS = [(240, 320), (320, 240), (320, 480), (480, 320), (480, 800), (800, 480), (400, 300), (600, 448)]
STYLE = ScreenStyle(cny_rates=(("USD", 7.1),), dpi=140)
LONG_QR = "HTTPS://QR.SAMPLEDOMAIN.COM/MPM/3/R1BMRDA5NVBMOVVNBTUlEMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAw"

_cache: dict[tuple[tuple[int, int], ScreenStyle], ScreenRenderer] = {}


def renderer(size: tuple[int, int], style: ScreenStyle = STYLE) -> ScreenRenderer:
    key = (size, style)
    if key not in _cache:
        _cache[key] = ScreenRenderer(DEFAULT_FONT_PATH, size, style=style)
    return _cache[key]


def decode(image: Image.Image) -> list[str]:
    found = zxingcpp.read_barcodes(image.convert("L"))
    return [b.text for b in found if b.format == zxingcpp.BarcodeFormat.QRCode]


def as_a_phone_sees_it(image: Image.Image) -> Image.Image:
    small = image.convert("L").resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)
    return small.filter(ImageFilter.GaussianBlur(0.6))


@pytest.mark.parametrize("size", GOLDEN_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", list(ScreenKind))
def test_golden(kind: ScreenKind, size: tuple[int, int]) -> None:
    image = renderer(size).render(sample_screen(kind))
    path = GOLDEN / f"{kind.value.replace('_', '-')}-{size[0]}x{size[1]}.png"
    if os.environ.get("KIOSK_UPDATE_GOLDEN") or not path.exists():
        if not os.environ.get("KIOSK_UPDATE_GOLDEN"):
            pytest.fail(f"{path} missing: run with KIOSK_UPDATE_GOLDEN=1 and look at it", pytrace=False)
        image.save(path, optimize=True)
    with Image.open(path) as golden:
        assert golden.size == image.size
        diff = ImageChops.difference(golden.convert("RGB"), image).convert("L").point(lambda v: 255 if v > 64 else 0)
        changed = diff.histogram()[255]
    # A little tolerance for FreeType versions hinting a glyph one pixel differently.
    assert changed <= image.width * image.height * 0.004, f"{changed} pixels differ from {path.name}"


@pytest.mark.parametrize("mono", [False, True], ids=["colour", "1-bit"])
@pytest.mark.parametrize("size", PANELS, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("content", [SAMPLE_QR_CONTENT, LONG_QR], ids=["alipay", "long"])
def test_every_pay_screen_scans_also_at_half_size_and_blurred(size: tuple[int, int], mono: bool, content: str) -> None:
    style = dataclasses.replace(STYLE, mono=mono)
    screen = dataclasses.replace(sample_screen(ScreenKind.PAY), qr_content=content)
    image = renderer(size, style).render(screen)
    assert image.size == size and image.mode == ("1" if mono else "RGB")
    assert decode(image) == [content]
    assert decode(as_a_phone_sees_it(image)) == [content]


@pytest.mark.parametrize("size", PANELS, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dpi", [100, 140, 200])
def test_qr_modules_are_at_least_0_4_mm_at_the_panels_density(size: tuple[int, int], dpi: int) -> None:
    style = dataclasses.replace(STYLE, dpi=dpi)
    (qr,) = [i for i in renderer(size, style).layout(sample_screen(ScreenKind.PAY)) if isinstance(i, QrItem)]
    assert qr.code.pitch * MM_PER_INCH / dpi >= 0.4 - 1e-9


@pytest.mark.parametrize("size", PANELS, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", list(ScreenKind))
def test_no_text_below_the_readable_minimum(kind: ScreenKind, size: tuple[int, int]) -> None:
    r = renderer(size)
    sizes = [i.size for i in r.layout(sample_screen(kind)) if isinstance(i, TextItem | BadgeItem)]
    assert min(sizes) >= STYLE.min_text_px
    assert STYLE.min_text_px * MM_PER_INCH / STYLE.dpi >= 2.5


def test_the_minimum_text_follows_the_density() -> None:
    assert ScreenStyle(dpi=100).min_text_px == 12  # the floor for hanzi strokes
    assert ScreenStyle(dpi=200).min_text_px == 20  # 2.5 mm at 200 dpi


@pytest.mark.parametrize("size", [(800, 480), (240, 320)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_mono_screens_are_pure_black_and_white_without_grey_text(size: tuple[int, int]) -> None:
    image = renderer(size, dataclasses.replace(STYLE, mono=True)).render(sample_screen(ScreenKind.IDLE))
    assert image.mode == "1"
    assert {v for _, v in image.convert("L").getcolors() or []} <= {0, 255}


def test_slow_panels_get_the_static_scan_to_pay_layout() -> None:
    static = dataclasses.replace(STYLE, live=False, mono=True)
    r = renderer((800, 480), static)
    texts = [i.text for i in r.layout(sample_screen(ScreenKind.PAY)) if isinstance(i, TextItem)]
    assert "Scan with Alipay" in texts and not any("Pay within" in t for t in texts)
    # Without a countdown the frame does not change while the tourist pays: no e-ink refresh.
    a = r.render(dataclasses.replace(sample_screen(ScreenKind.PAY), seconds_left=85))
    b = r.render(dataclasses.replace(sample_screen(ScreenKind.PAY), seconds_left=12))
    assert ImageChops.difference(a.convert("L"), b.convert("L")).getbbox() is None


def test_cny_approximation() -> None:
    assert approx_cny("2.50 USD", {"USD": 7.1}) == "17.8"
    assert approx_cny("500 JPY", {"JPY": 0.047}) == "23.5"
    assert approx_cny("20.00 USD", {"USD": 7.1}) == "142"
    assert approx_cny("2.50 USD", {}) is None and approx_cny("9.00 CNY", {"CNY": 1}) is None
    texts = [i.text for i in renderer((800, 480)).layout(sample_screen(ScreenKind.PAY)) if isinstance(i, TextItem)]
    assert "≈ 24.9 CNY" in texts and "约合人民币24.9元" in texts
    idle = [i.text for i in renderer((800, 480)).layout(sample_screen(ScreenKind.IDLE)) if isinstance(i, TextItem)]
    assert "≈ 17.8 CNY" in idle


def test_wallet_badges_and_the_scan_title() -> None:
    style = dataclasses.replace(STYLE, wallets=("alipay", "wechat"))
    items = renderer((800, 480), style).layout(sample_screen(ScreenKind.PAY))
    assert [i.text for i in items if isinstance(i, BadgeItem)] == ["Alipay 支付宝", "WeChat Pay 微信支付"]
    shown = " ".join(i.text for i in items if isinstance(i, TextItem))  # wrapped lines joined
    assert "Scan with your wallet app" in shown and "请用手机钱包扫码" in shown


def test_more_languages_are_data() -> None:
    style = dataclasses.replace(STYLE, languages=("en", "zh-Hans", "ja", "ko"))
    r = renderer((800, 480), style)
    texts = [i.text for i in r.layout(Screen(ScreenKind.THANK_YOU)) if isinstance(i, TextItem)]
    assert texts[:4] == ["Thank you!", "谢谢惠顾！", "ありがとうございました！", "감사합니다!"]
    pay = [i.text for i in r.layout(sample_screen(ScreenKind.PAY)) if isinstance(i, TextItem)]
    assert "Alipayでスキャン" in pay and "알리페이(으)로 스캔하세요" in pay
