"""Screen descriptions drawn to Pillow images for any panel size and orientation.

Drawing happens in two steps: `layout` places items (text lines, rules, badges, the QR code) and
`render` paints them. Tests and drivers can ask where things are without reading pixels, e.g.
to check that nothing leaves the screen or to refresh only part of an e-ink panel.

A `ScreenStyle` carries what depends on the kiosk rather than the screen: the languages, the
wallets it takes, exchange rates for the approximate CNY price, and the panel's density, colours
and refresh speed. The density sets the two physical minimums a tourist at arm's length needs:
a QR module of at least 0.4 mm and text of at least 2.5 mm (both configurable).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_never

from PIL import Image, ImageDraw

from kiosk.screens.fonts import Fonts
from kiosk.screens.layout import (
    INK,
    RGB,
    Area,
    BadgeItem,
    Badges,
    Block,
    Fitter,
    Item,
    Para,
    QrItem,
    Role,
    RuleItem,
    Table,
    TextItem,
)
from kiosk.screens.model import ProductLine, Screen, ScreenKind
from kiosk.screens.qr import module_count, qr_code
from kiosk.screens.strings import SCREEN_LANGUAGES, Tables, countdown, shipped_tables, text, texts

if TYPE_CHECKING:
    from kiosk.config import KioskConfig

WHITE: RGB = (255, 255, 255)
GREY: RGB = (70, 70, 70)
URGENT: RGB = (190, 0, 0)
# Every colour is dark enough to stay black when a 1-bit e-ink driver thresholds at 50 %.
ACCENT: dict[ScreenKind, RGB] = {
    ScreenKind.IDLE: (0, 82, 155),
    ScreenKind.PAY: (22, 105, 230),
    ScreenKind.CONFIRMING: (22, 105, 230),
    ScreenKind.DELIVERING: (0, 120, 60),
    ScreenKind.THANK_YOU: (0, 120, 60),
    ScreenKind.REFUNDED: (180, 70, 0),
    ScreenKind.CANCELLED: (90, 90, 90),
    ScreenKind.OUT_OF_SERVICE: (180, 0, 0),
}
URGENT_SECONDS = 10
MM_PER_INCH = 25.4
# Whatever the density says, hanzi below this many pixels lose strokes.
MIN_TEXT_PX = 12
WALLETS = ("alipay", "wechat", "alipay_plus", "unionpay")
# Panels slower than this cannot tick a countdown honestly: they get the static layout.
LIVE_REFRESH_S = 1.0


@dataclass(frozen=True)
class ScreenStyle:
    languages: tuple[str, ...] = SCREEN_LANGUAGES
    wallets: tuple[str, ...] = ("alipay",)
    # CNY per one unit of the price currency (USD 7.1 = 1 USD is about 7.1 CNY).
    cny_rates: tuple[tuple[str, float], ...] = ()
    dpi: float = 140.0
    mono: bool = False
    # False on panels that take seconds to refresh (e-ink): no ticking countdown, a static
    # "scan to pay" layout instead, so what the panel shows is never stale.
    live: bool = True
    min_text_mm: float = 2.5
    min_module_mm: float = 0.4
    tables: Mapping[str, Mapping[str, str]] | None = field(default=None, compare=False, hash=False)

    def px(self, mm: float) -> int:
        return math.ceil(mm * self.dpi / MM_PER_INCH - 1e-9)

    @property
    def min_text_px(self) -> int:
        return max(MIN_TEXT_PX, self.px(self.min_text_mm))

    @property
    def min_pitch(self) -> int:
        return max(1, self.px(self.min_module_mm))


def wallets_for_payments(config: KioskConfig) -> tuple[str, ...]:
    """The wallets a tourist can pay with, from the providers and scanner routes configured."""
    found: list[str] = []
    by_provider = {
        "alipay": ("alipay",),
        "wechat_v2": ("wechat",),
        "wechat_v3": ("wechat",),
        "alipay_plus": ("alipay_plus",),
        "citcon": ("alipay", "wechat", "unionpay"),
    }
    if config.payments.provider:
        found += by_provider.get(config.payments.provider, ())
    routes = config.payments.routes
    for wallet, route in (("wechat", routes.wechat), ("alipay", routes.alipay_cn), ("alipay_plus", routes.alipay_plus),
                          ("unionpay", routes.unionpay)):
        if route is not None:
            found.append(wallet)
    return tuple(dict.fromkeys(found)) or ("alipay",)


def style_from_config(config: KioskConfig, *, refresh_s: float = 0.0) -> ScreenStyle:
    from kiosk.screens.strings import load_tables, merged_tables

    screens = config.screens
    tables = None
    if screens.strings_file is not None:
        tables = merged_tables(shipped_tables(), load_tables(screens.strings_file))
    display: Any = config.display
    return ScreenStyle(
        languages=tuple(screens.languages),
        wallets=tuple(screens.wallets) if screens.wallets else wallets_for_payments(config),
        cny_rates=tuple(sorted(screens.cny_rates.items())),
        dpi=float(display.dpi),
        mono=bool(display.mono),
        live=refresh_s <= LIVE_REFRESH_S,
        min_text_mm=screens.min_text_mm,
        min_module_mm=screens.min_module_mm,
        tables=tables,
    )


_PRICE = re.compile(r"^(\d+(?:\.\d+)?) ([A-Z]{3})$")


def approx_cny(price_text: str, rates: Mapping[str, float]) -> str | None:
    """"2.50 USD" at 7.1 -> "17.8"; None without a rate, for CNY itself, or for other text."""
    match = _PRICE.match(price_text)
    if match is None or match.group(2) == "CNY" or match.group(2) not in rates:
        return None
    value = Decimal(match.group(1)) * Decimal(str(rates[match.group(2)]))
    # An approximation: tenths of a yuan below 100, whole yuan above.
    step = Decimal("0.1") if value < 100 else Decimal("1")
    return str(value.quantize(step, rounding=ROUND_HALF_UP))


class ScreenRenderer:
    """Draws any Screen for one panel size. Landscape panels put the QR code left of the text,
    portrait panels above it; text sizes scale with the panel and shrink or wrap to fit.

    Construction opens the font (FontNotFoundError if it is missing or has no Chinese);
    `render` then needs no files and is safe to call from a worker thread, one call at a time.
    """

    def __init__(
        self, font_path: Path, size: tuple[int, int], *, font_index: int = 0, style: ScreenStyle | None = None
    ) -> None:
        width, height = size
        if width < 32 or height < 32:
            raise ValueError(f"screen size {width}x{height} is too small to draw on")
        self.size = (width, height)
        self.style = style or ScreenStyle()
        self.fonts = Fonts(font_path, font_index)
        # Sub-linear: a small panel is read from as close as a big one, so its text shrinks less
        # than its pixel count (240 px: 62 % of the 480 px sizes, not 50 %).
        unit = (min(width, height) / 480) ** 0.7
        self._fitter = Fitter(self.fonts, unit, self.style.min_text_px)
        self._margin = max(4, round(min(width, height) * 0.035))
        self._band = max(2, round(8 * unit))
        self._rates = dict(self.style.cny_rates)

    @property
    def landscape(self) -> bool:
        return self.size[0] > self.size[1]

    def render(self, screen: Screen) -> Image.Image:
        """An "RGB" image of exactly `size`, or a "1" image when the style is mono.

        A pay screen whose code does not fit the panel even at one pixel per module raises
        QrDoesNotFitError (a ValueError); wallet codes (QR versions 2-6) fit any panel above 100 px.
        """
        mono = self.style.mono
        image = Image.new("L" if mono else "RGB", self.size, 255 if mono else WHITE)
        draw = ImageDraw.Draw(image)
        if mono:
            draw.fontmode = "1"  # no anti-aliasing: grey edges would threshold into ragged strokes

        def ink(fill: RGB) -> Any:
            return (0 if fill != WHITE else 255) if mono else fill

        for item in self.layout(screen):
            if isinstance(item, TextItem):
                draw.text((item.x, item.y), item.text, font=self.fonts.get(item.size), fill=ink(item.fill))
            elif isinstance(item, RuleItem):
                draw.rectangle((item.x, item.y, item.x + item.width - 1, item.y + item.height - 1), ink(item.fill))
            elif isinstance(item, BadgeItem):
                box = (item.x, item.y, item.x + item.width - 1, item.y + item.height - 1)
                draw.rounded_rectangle(box, radius=item.pad, outline=ink(item.fill), width=item.border)
                font = self.fonts.get(item.size)
                draw.text((item.x + item.pad, item.y + item.pad), item.text, font=font, fill=ink(item.fill))
            else:
                image.paste(item.code.image, (item.x, item.y))
        return image.convert("1", dither=Image.Dither.NONE) if mono else image

    def layout(self, screen: Screen) -> list[Item]:
        """Where everything on `screen` goes; every item lies inside the screen."""
        width, height = self.size
        accent = ACCENT[screen.kind]
        m = self._margin
        items: list[Item] = [RuleItem(0, 0, width, self._band, accent)]
        text_area = Area(m, self._band + m, width - 2 * m, height - self._band - 2 * m)
        if screen.kind is ScreenKind.PAY and screen.qr_content:
            qr, text_area = self._place_qr(screen.qr_content)
            items.append(qr)
        items += self._fitter.fit(self._blocks(screen, accent), text_area)
        return items

    def _place_qr(self, content: str) -> tuple[QrItem, Area]:
        # The quiet zone is white like the background, so the code may reach the screen edge.
        width, height = self.size
        m, top = self._margin, self._band
        modules = module_count(content)
        # The share of the panel the code gets; more when that is what a 0.4 mm module needs,
        # up to the whole short side (text then shrinks or leaves out what is optional).
        if self.landscape:
            most = min(height - top, width - 4 * self.style.min_text_px)
            side = max(min(height - top, round(width * 0.56)), min(most, modules * self.style.min_pitch))
            code = qr_code(content, side)
            side = code.image.width
            qr = QrItem(0, top + (height - top - side) // 2, code)
            return qr, Area(side + m // 2, top + m, width - side - m // 2 - m, height - top - 2 * m)
        most = min(width, height - top - 4 * self.style.min_text_px)
        side = max(min(width, round((height - top) * 0.6)), min(most, modules * self.style.min_pitch))
        code = qr_code(content, side)
        side = code.image.width
        qr = QrItem((width - side) // 2, top, code)
        return qr, Area(m, top + side, width - 2 * m, height - top - side - m)

    # ------------------------------------------------------------ texts

    @property
    def _tables(self) -> Tables | None:
        return self.style.tables

    def _texts(self, msg_id: str, **params: object) -> tuple[str, ...]:
        return texts(msg_id, self._tables, self.style.languages, **params)

    def _scan_title(self) -> tuple[str, ...]:
        wallets = self.style.wallets
        if len(wallets) != 1:
            return self._texts("pay.scan_any")
        lines: list[str] = []
        for lang in self.style.languages:
            wallet = text(f"wallet.{wallets[0]}", lang, self._tables)
            line = text("pay.scan_wallet", lang, self._tables, wallet=wallet)
            if line not in lines:
                lines.append(line)
        return tuple(lines)

    def _badges(self, fill: RGB, priority: int) -> list[Block]:
        labels = []
        for wallet in self.style.wallets:
            names = dict.fromkeys(text(f"wallet.{wallet}", lang, self._tables) for lang in self.style.languages)
            labels.append(" ".join(names))
        return [Badges(tuple(labels), fill, priority)] if labels else []

    def _cny(self, product: ProductLine | None, priority: int) -> list[Block]:
        amount = approx_cny(product.price_text, self._rates) if product else None
        if amount is None:
            return []
        return [Para(self._texts("price.approx_cny", amount=amount), Role.SMALL, GREY, priority=priority)]

    def _countdown(self, screen: Screen) -> list[Block]:
        if screen.seconds_left is None or not self.style.live:
            return []
        urgent = screen.seconds_left <= URGENT_SECONDS
        # Sized as the widest number of as many digits, so the layout stays put while it ticks.
        probe = countdown(10 ** max(2, len(str(screen.seconds_left))) - 1, self._tables, self.style.languages)
        shown = countdown(screen.seconds_left, self._tables, self.style.languages)
        return [Para(shown, Role.BODY, URGENT if urgent else INK, probes=probe)]

    def _blocks(self, screen: Screen, accent: RGB) -> list[Block]:
        t = self._texts
        product = screen.product
        names = [Para((product.name_en, product.name_zh), Role.BODY, priority=1)] if product else []
        price = [Para((product.price_text,), Role.AMOUNT)] if product else []
        kind = screen.kind
        if kind is ScreenKind.IDLE:
            return self._idle_blocks(screen.products, screen.single_product, accent)
        if kind is ScreenKind.PAY:
            return [
                Para(self._scan_title(), Role.TITLE, accent),
                *names,
                *price,
                *self._cny(product, 2),
                *self._countdown(screen),
                *self._badges(GREY, 3),
            ]
        if kind is ScreenKind.CONFIRMING:
            # The wallet's confirmation still counts against the time to pay.
            return [Para(t("confirming.title"), Role.TITLE, accent), *names, *price, *self._countdown(screen)]
        if kind is ScreenKind.DELIVERING:
            return [Para(t("delivering.title"), Role.TITLE, accent), Para(t("delivering.body"), Role.BODY), *names]
        if kind is ScreenKind.THANK_YOU:
            return [
                Para(t("thank_you.title"), Role.TITLE, accent),
                *names,
                Para(t("thank_you.body"), Role.SMALL, GREY, priority=2),
            ]
        if kind is ScreenKind.REFUNDED:
            return [Para(t("refunded.title"), Role.TITLE, accent), *names, *price]
        if kind is ScreenKind.CANCELLED:
            title = t("cancelled.title")
            return [Para(title, Role.TITLE, accent), *_reason(screen, title), *names]
        if kind is ScreenKind.OUT_OF_SERVICE:
            title = t("out_of_service.title")
            return [
                Para(title, Role.TITLE, accent),
                *_reason(screen, title),
                Para(t("out_of_service.sorry"), Role.SMALL, GREY, priority=1),
            ]
        assert_never(kind)

    def _idle_blocks(self, products: tuple[ProductLine, ...], single: bool, accent: RGB) -> list[Block]:
        t = self._texts
        accepts = [Para(t("idle.accepts"), Role.SMALL, GREY, priority=2), *self._badges(GREY, 2)]
        if not products:
            return [Para(t("idle.nothing_on_offer"), Role.TITLE, accent)]
        if len(products) == 1:
            # Nothing to choose between, so the product itself is the headline.
            (only,) = products
            return [
                Para((only.name_en, only.name_zh), Role.TITLE),
                Para((only.price_text,), Role.AMOUNT),
                *self._cny(only, 1),
                Para(t("idle.scan_to_pay" if single else "idle.press_button"), Role.BODY, accent),
                *accepts,
            ]
        notes = tuple(
            f"≈ {amount} CNY" if (amount := approx_cny(p.price_text, self._rates)) else "" for p in products
        )
        return [
            Para(t("idle.press_button"), Role.TITLE, accent),
            Table(products, accent, notes=notes if any(notes) else ()),
            *accepts,
        ]


def _reason(screen: Screen, title: tuple[str, ...]) -> list[Block]:
    # A reason that only repeats the title (e.g. "暂停服务" under "暂停服务") is left out.
    reason = tuple(t for t in (screen.reason_en, screen.reason_zh) if t and t not in title)
    return [Para(reason, Role.BODY)] if reason else []
