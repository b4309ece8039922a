"""Screens: real font, real Pillow, QR codes read back with zxing-cpp as a phone would."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import zxingcpp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageFilter

from kiosk.screens import strings
from kiosk.screens.fonts import DEFAULT_FONT_PATH, FontNotFoundError, Fonts, wrap
from kiosk.screens.layout import Item, QrItem, TextItem
from kiosk.screens.model import ProductLine, Screen, ScreenKind
from kiosk.screens.qr import QUIET_ZONE, module_count, qr_code
from kiosk.screens.render import ACCENT, ScreenRenderer
from kiosk.screens.samples import SAMPLE_QR_CONTENT, sample_screen

FONT = DEFAULT_FONT_PATH
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
LANDSCAPE = [(800, 480), (480, 320)]
PORTRAIT = [(480, 800), (240, 320)]
SIZES = LANDSCAPE + PORTRAIT
REQUIRED_SIZES = [(800, 480), (480, 320), (480, 800)]
QR_CONTENTS = [
    SAMPLE_QR_CONTENT,
    "weixin://wxpay/bizpayurl?pr=Xy7abc1",
    # Alipay+ order codes are longer than Alipay's own (reference/peers-and-test-vectors.md 2a.5).
    "HTTPS://QR.SAMPLEDOMAIN.COM/MPM/3/R1BMRDA5NVBMOVVNBTUlEMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAw",
]
LONG_NAMES = ProductLine(
    slot_id="C12",
    name_en="Extra-large sparkling elderflowerlemonad",  # the config allows 40; a very long word
    name_zh="特大号接骨木花气泡柠檬水饮料（冰镇）限量版礼盒装",
    price_text="12345.678 KWD",
)
CJK = re.compile(r"[\u4e00-\u9fff]")

_renderers: dict[tuple[int, int], ScreenRenderer] = {}


@pytest.fixture(scope="module", autouse=True)
def _font_installed() -> None:
    # Fail, never skip: a kiosk without the font would draw boxes instead of Chinese.
    if not FONT.is_file():
        pytest.fail(f"{FONT} missing: apt install fonts-wqy-microhei", pytrace=False)


def renderer(size: tuple[int, int]) -> ScreenRenderer:
    if size not in _renderers:
        _renderers[size] = ScreenRenderer(FONT, size)
    return _renderers[size]


def text_lines(items: list[Item]) -> list[str]:
    return [i.text for i in items if isinstance(i, TextItem)]


def boxes(items: list[Item]) -> list[tuple[int, int, int, int]]:
    return [(i.x, i.y, i.x + i.width, i.y + i.height) for i in items]


def assert_on_screen_without_overlap(items: list[Item], size: tuple[int, int]) -> None:
    width, height = size
    placed = boxes(items)
    for item, (x0, y0, x1, y1) in zip(items, placed, strict=True):
        assert x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height, f"{item} leaves the {size} screen"
    for a in range(len(placed)):
        for b in range(a + 1, len(placed)):
            pa, pb = placed[a], placed[b]
            overlap = pa[0] < pb[2] and pb[0] < pa[2] and pa[1] < pb[3] and pb[1] < pa[3]
            assert not overlap, f"{items[a]} overlaps {items[b]}"


def assert_ink_inside_items(image: Image.Image, items: list[Item]) -> None:
    """Nothing is drawn outside the boxes the layout reports (so no glyph spills past its line)."""
    mask = Image.new("L", image.size, 0)
    for x0, y0, x1, y1 in boxes(items):
        mask.paste(255, (x0, y0, x1, y1))
    ink = ImageChops.difference(image, Image.new("RGB", image.size, (255, 255, 255))).convert("L")
    stray = ImageChops.subtract(ink, mask)
    assert stray.getbbox() is None, f"ink outside every item at {stray.getbbox()}"


def pay_screen(content: str = SAMPLE_QR_CONTENT, seconds_left: int | None = 85) -> Screen:
    return dataclasses.replace(sample_screen(ScreenKind.PAY), qr_content=content, seconds_left=seconds_left)


def qr_item(items: list[Item]) -> QrItem:
    (qr,) = [i for i in items if isinstance(i, QrItem)]
    return qr


def decode(image: Image.Image) -> list[str]:
    return [b.text for b in zxingcpp.read_barcodes(image) if b.format == zxingcpp.BarcodeFormat.QRCode]


# ------------------------------------------------------------------ every screen at every size


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", list(ScreenKind))
def test_every_kind_renders_bilingual_at_exact_size(kind: ScreenKind, size: tuple[int, int]) -> None:
    r = renderer(size)
    screen = sample_screen(kind)
    image = r.render(screen)
    assert image.size == size
    assert image.mode == "RGB"
    items = r.layout(screen)
    lines = text_lines(items)
    assert any(CJK.search(line) for line in lines), "no Chinese on the screen"
    assert any(re.search(r"[A-Za-z]{3}", line) for line in lines), "no English on the screen"
    assert_on_screen_without_overlap(items, size)
    assert_ink_inside_items(image, items)


@pytest.mark.parametrize("size", [(800, 480), (480, 800)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", list(ScreenKind))
def test_text_is_at_least_18_px_on_a_480_px_panel(kind: ScreenKind, size: tuple[int, int]) -> None:
    sizes = [i.size for i in renderer(size).layout(sample_screen(kind)) if isinstance(i, TextItem)]
    assert min(sizes) >= 18


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (ScreenKind.PAY, ["Scan with Alipay", "请使用支付宝扫码", "Pay within 85 s", "请在85秒内付款", "3.50 USD"]),
        (ScreenKind.CONFIRMING, ["Confirm the payment in your wallet", "请在手机上确认付款"]),
        (ScreenKind.REFUNDED, ["Delivery failed — your payment was refunded", "出货失败，已原路退款"]),
        (ScreenKind.CANCELLED, ["订单已取消", "付款超时，未扣款。"]),
        (ScreenKind.OUT_OF_SERVICE, ["Out of service", "暂停服务", "正在补货。"]),
        (ScreenKind.IDLE, ["Press a button to buy", "按键购买", "Spring water", "矿泉水", "5.00 USD"]),
    ],
)
def test_screens_say_what_the_tourist_needs(kind: ScreenKind, expected: list[str]) -> None:
    shown = " ".join(text_lines(renderer((800, 480)).layout(sample_screen(kind))))
    for text in expected:
        # Wrapped lines are joined with a space, so compare without spaces.
        assert text.replace(" ", "") in shown.replace(" ", ""), f"{text!r} missing from {shown!r}"


def test_single_product_mode_says_scan_to_pay_and_a_button_catalog_says_press() -> None:
    r = renderer((800, 480))
    one = (sample_screen(ScreenKind.IDLE).products[0],)
    single = text_lines(r.layout(Screen(ScreenKind.IDLE, products=one, single_product=True)))
    button = text_lines(r.layout(Screen(ScreenKind.IDLE, products=one)))
    assert "Scan to pay" in single and "扫码付款" in single
    assert "Press a button to buy" in button and "按键购买" in button
    assert "Scan to pay" not in button


def test_a_reason_that_repeats_the_title_is_not_shown_twice() -> None:
    # The engine sends reason_zh="暂停服务" with an English-only reason.
    screen = Screen(ScreenKind.OUT_OF_SERVICE, reason_en="Scanner disconnected", reason_zh="暂停服务")
    lines = text_lines(renderer((800, 480)).layout(screen))
    assert lines.count("暂停服务") == 1
    assert "Scanner disconnected" in lines


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_long_names_are_wrapped_or_shrunk_never_clipped(size: tuple[int, int]) -> None:
    r = renderer(size)
    idle = Screen(ScreenKind.IDLE, products=(*sample_screen(ScreenKind.IDLE).products, LONG_NAMES))
    for screen in (idle, Screen(ScreenKind.THANK_YOU, product=LONG_NAMES), pay_screen()):
        items = r.layout(screen)
        assert_on_screen_without_overlap(items, size)
        assert_ink_inside_items(r.render(screen), items)
    shown = "".join(text_lines(r.layout(idle))).replace(" ", "")
    for text in (LONG_NAMES.name_en, LONG_NAMES.name_zh, LONG_NAMES.price_text):
        assert text.replace(" ", "") in shown


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(240, 1024),
    height=st.integers(240, 1024),
    names=st.lists(
        st.tuples(
            st.text("abcdefghijklmnopqrstuvwxyzABCXYZ -,'&()0123456789", min_size=1, max_size=40),
            st.text("矿泉水绿茶洗车五分钟咖啡可乐冰镇特大号（）、", min_size=1, max_size=24),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_any_catalog_fits_any_panel(width: int, height: int, names: list[tuple[str, str]]) -> None:
    products = tuple(
        ProductLine(f"A{i}", en.strip() or "x", zh, f"{i + 1}.50 USD") for i, (en, zh) in enumerate(names)
    )
    r = ScreenRenderer(FONT, (width, height))
    for screen in (Screen(ScreenKind.IDLE, products=products), pay_screen()):
        items = r.layout(screen)
        assert_on_screen_without_overlap(items, (width, height))


# ------------------------------------------------------------------ the QR code


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("content", QR_CONTENTS, ids=["alipay", "wechat", "alipay-plus"])
def test_pay_qr_decodes_to_exactly_the_content(content: str, size: tuple[int, int]) -> None:
    assert decode(renderer(size).render(pay_screen(content))) == [content]


@pytest.mark.parametrize("size", REQUIRED_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("content", QR_CONTENTS, ids=["alipay", "wechat", "alipay-plus"])
def test_pay_qr_survives_half_scale_and_blur(content: str, size: tuple[int, int]) -> None:
    image = renderer(size).render(pay_screen(content))
    worse = image.resize((size[0] // 2, size[1] // 2), Image.Resampling.BILINEAR)
    worse = worse.filter(ImageFilter.GaussianBlur(0.6))
    assert decode(worse) == [content]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("content", QR_CONTENTS, ids=["alipay", "wechat", "alipay-plus"])
def test_pay_qr_has_whole_pixel_modules_and_a_white_quiet_zone(content: str, size: tuple[int, int]) -> None:
    r = renderer(size)
    image = r.render(pay_screen(content)).convert("L")
    pitch = qr_item(r.layout(pay_screen(content))).code.pitch
    (found,) = zxingcpp.read_barcodes(image)
    assert found.ec_level == "M"
    # The symbol is the dark area around the position zxing found; measured from pixels only.
    x0, y0 = found.position.top_left.x, found.position.top_left.y
    symbol = (module_count(content) - 2 * QUIET_ZONE) * pitch
    region = image.crop((x0, y0, x0 + symbol, y0 + symbol))
    assert ImageChops.invert(region).getbbox() == (0, 0, symbol, symbol), "symbol is not whole modules"
    assert {value for _, value in region.getcolors() or []} == {0, 255}, "modules were smoothed"
    quiet = QUIET_ZONE * pitch
    ring = (x0 - quiet, y0 - quiet, x0 + symbol + quiet, y0 + symbol + quiet)
    assert ring[0] >= 0 and ring[1] >= 0 and ring[2] <= size[0] and ring[3] <= size[1]
    around = image.crop(ring)
    around.paste(255, (quiet, quiet, quiet + symbol, quiet + symbol))
    assert ImageChops.invert(around).getbbox() is None, "something is drawn in the quiet zone"


def test_qr_uses_the_largest_whole_pitch_that_fits() -> None:
    modules = module_count(SAMPLE_QR_CONTENT)
    for side in (modules, 2 * modules - 1, 2 * modules, 300, 447):
        code = qr_code(SAMPLE_QR_CONTENT, side)
        assert code.pitch == side // modules
        assert code.image.size == (modules * code.pitch,) * 2
        assert code.image.width <= side < (code.pitch + 1) * modules
    with pytest.raises(ValueError):
        qr_code(SAMPLE_QR_CONTENT, modules - 1)


@pytest.mark.parametrize(("size", "landscape"), [*((s, True) for s in LANDSCAPE), *((s, False) for s in PORTRAIT)])
def test_qr_is_left_of_the_text_in_landscape_and_above_it_in_portrait(size: tuple[int, int], landscape: bool) -> None:
    items = renderer(size).layout(pay_screen())
    qr = qr_item(items)
    texts = [i for i in items if isinstance(i, TextItem)]
    if landscape:
        assert qr.x + qr.width <= min(t.x for t in texts)
    else:
        assert qr.y + qr.height <= min(t.y for t in texts)
    # Large: the code takes at least half of the panel's short side.
    assert qr.width >= min(size) / 2


# ------------------------------------------------------------------ the countdown


def test_countdown_text_is_the_seconds_left() -> None:
    assert strings.countdown(85) == ("Pay within 85 s", "请在85秒内付款")
    assert strings.countdown(7) == ("Pay within 7 s", "请在7秒内付款")
    assert strings.countdown(0) == ("Time is up", "付款时间已到")


@pytest.mark.parametrize("size", REQUIRED_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_countdown_changes_on_screen_and_nothing_else_moves(size: tuple[int, int]) -> None:
    r = renderer(size)
    before, after = r.layout(pay_screen(seconds_left=85)), r.layout(pay_screen(seconds_left=9))
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed, "the countdown did not change"
    for a, b in changed:
        assert isinstance(a, TextItem) and isinstance(b, TextItem)
        assert "85" in a.text and "9" in b.text
        assert (a.y, a.height, a.size) == (b.y, b.height, b.size), "the countdown line moved"
    diff = ImageChops.difference(r.render(pay_screen(seconds_left=85)), r.render(pay_screen(seconds_left=9)))
    x0, y0, x1, y1 = diff.getbbox() or (0, 0, 0, 0)
    lines = [a for a, _ in changed]
    assert x1 > x0 and y0 >= min(t.y for t in lines) and y1 <= max(t.y + t.height for t in lines)


# ------------------------------------------------------------------ fonts


def test_missing_font_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-font.ttc"
    with pytest.raises(FontNotFoundError) as err:
        ScreenRenderer(missing, (800, 480))
    assert str(missing) in str(err.value)
    assert "fonts-wqy-microhei" in str(err.value) and "screens.font_path" in str(err.value)


def test_a_file_that_is_not_a_font_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "font.ttc"
    junk.write_bytes(b"not a font")
    with pytest.raises(FontNotFoundError, match="cannot be read"):
        Fonts(junk)


def test_a_font_without_chinese_is_refused() -> None:
    if not DEJAVU.is_file():
        pytest.skip("needs fonts-dejavu-core for a Latin-only font")
    with pytest.raises(FontNotFoundError, match="no Chinese glyphs"):
        Fonts(DEJAVU)


def test_collection_index_picks_the_face_and_sizes_are_cached() -> None:
    assert "Mono" not in Fonts(FONT).name()
    mono = Fonts(FONT, index=1)
    assert "Mono" in mono.name()
    assert mono.get(30) is mono.get(30)


def test_wrapping_breaks_chinese_anywhere_english_at_spaces_and_keeps_punctuation() -> None:
    font = Fonts(FONT).get(30)
    width = round(font.getlength("出货失败，已原"))
    zh = wrap("出货失败，已原路退款。", font, width)
    assert "".join(zh) == "出货失败，已原路退款。"
    assert all(font.getlength(line) <= width for line in zh)
    assert not any(line.startswith(("，", "。")) for line in zh)
    en = wrap("Delivery failed — your payment was refunded", font, round(font.getlength("Delivery failed")))
    assert all(not line.startswith("—") for line in en)
    assert " ".join(en) == "Delivery failed — your payment was refunded"


# ------------------------------------------------------------------ strings and samples


def test_shipped_string_tables_are_complete_and_translated() -> None:
    tables = strings.load_tables()
    assert {"en", "zh-Hans", "ja", "ko"} <= set(tables)
    for lang in tables:
        assert set(tables[lang]) == set(tables[strings.BASE_LANGUAGE]), lang
    for msg_id, zh in tables["zh-Hans"].items():
        if msg_id != "wallet.alipay_plus":  # a brand written the same way in Chinese
            assert CJK.search(zh), f"zh-Hans {msg_id} is not Chinese: {zh!r}"


def test_a_language_is_added_as_data(tmp_path: Path) -> None:
    tables = strings.load_tables()
    tables["xx"] = {"pay.countdown": "{seconds}秒以内にお支払いください"}
    path = tmp_path / "strings.json"
    path.write_text(json.dumps(tables, ensure_ascii=False), encoding="utf-8")
    loaded = strings.load_tables(path)
    assert strings.text("pay.countdown", "xx", loaded, seconds=30) == "30秒以内にお支払いください"
    assert strings.text("pay.scan_any", "xx", loaded) == "Scan with your wallet app"  # falls back to English


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"en": {"a": "{seconds} s"}, "zh-Hans": {"a": "{secs}秒"}}, "uses"),
        ({"en": {"a": "x"}, "zh-Hans": {"b": "y"}}, "no such message id"),
        ({"zh-Hans": {"a": "y"}}, "'en' table"),
        ({"en": {"a": 3}}, "must map"),
    ],
)
def test_broken_string_tables_are_refused(bad: object, match: str) -> None:
    with pytest.raises(strings.StringsError, match=match):
        strings.check_tables(bad)


@pytest.mark.parametrize("kind", list(ScreenKind))
def test_samples_exist_for_every_kind(kind: ScreenKind) -> None:
    screen = sample_screen(kind)
    assert screen.kind is kind
    if kind is ScreenKind.PAY:
        assert screen.qr_content and screen.qr_content.startswith("https://qr.alipay.com/")
        assert screen.seconds_left and screen.product


@pytest.mark.parametrize("kind", list(ScreenKind))
def test_accent_colours_stay_dark_on_a_thresholded_e_ink_panel(kind: ScreenKind) -> None:
    grey = Image.new("RGB", (1, 1), ACCENT[kind]).convert("L").getpixel((0, 0))
    assert isinstance(grey, int) and grey < 128
