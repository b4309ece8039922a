"""Screen descriptions drawn to Pillow images for any panel size and orientation.

Drawing happens in two steps: `layout` places items (text lines, rules, the QR code) and
`render` paints them. Tests and drivers can ask where things are without reading pixels, e.g.
to check that nothing leaves the screen or to refresh only part of an e-ink panel.
"""

from __future__ import annotations

from pathlib import Path
from typing import assert_never

from PIL import Image, ImageDraw

from kiosk.screens.fonts import Fonts
from kiosk.screens.layout import INK, RGB, Area, Block, Fitter, Item, Para, QrItem, Role, RuleItem, Table, TextItem
from kiosk.screens.model import ProductLine, Screen, ScreenKind
from kiosk.screens.qr import qr_code
from kiosk.screens.strings import countdown, texts

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


class ScreenRenderer:
    """Draws any Screen for one panel size. Landscape panels put the QR code left of the text,
    portrait panels above it; text sizes scale with the panel and shrink or wrap to fit.

    Construction opens the font (FontNotFoundError if it is missing or has no Chinese);
    `render` then needs no files and is safe to call from a worker thread, one call at a time.
    """

    def __init__(self, font_path: Path, size: tuple[int, int], *, font_index: int = 0) -> None:
        width, height = size
        if width < 32 or height < 32:
            raise ValueError(f"screen size {width}x{height} is too small to draw on")
        self.size = (width, height)
        self.fonts = Fonts(font_path, font_index)
        # Sub-linear: a small panel is read from as close as a big one, so its text shrinks less
        # than its pixel count (240 px: 62 % of the 480 px sizes, not 50 %).
        unit = (min(width, height) / 480) ** 0.7
        self._fitter = Fitter(self.fonts, unit)
        self._margin = max(4, round(min(width, height) * 0.035))
        self._band = max(2, round(8 * unit))

    @property
    def landscape(self) -> bool:
        return self.size[0] > self.size[1]

    def render(self, screen: Screen) -> Image.Image:
        """An "RGB" image of exactly `size`.

        A pay screen whose code does not fit the panel even at one pixel per module raises
        QrDoesNotFitError (a ValueError); wallet codes (QR versions 2-6) fit any panel above 100 px.
        """
        image = Image.new("RGB", self.size, WHITE)
        draw = ImageDraw.Draw(image)
        for item in self.layout(screen):
            if isinstance(item, TextItem):
                draw.text((item.x, item.y), item.text, font=self.fonts.get(item.size), fill=item.fill)
            elif isinstance(item, RuleItem):
                draw.rectangle((item.x, item.y, item.x + item.width - 1, item.y + item.height - 1), item.fill)
            else:
                image.paste(item.code.image, (item.x, item.y))
        return image

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
        if self.landscape:
            code = qr_code(content, min(height - top, round(width * 0.56)))
            side = code.image.width
            qr = QrItem(0, top + (height - top - side) // 2, code)
            return qr, Area(side + m // 2, top + m, width - side - m // 2 - m, height - top - 2 * m)
        code = qr_code(content, min(width, round((height - top) * 0.6)))
        side = code.image.width
        qr = QrItem((width - side) // 2, top, code)
        return qr, Area(m, top + side, width - 2 * m, height - top - side - m)

    def _blocks(self, screen: Screen, accent: RGB) -> list[Block]:
        product = screen.product
        names = [Para((product.name_en, product.name_zh), Role.BODY, priority=1)] if product else []
        price = [Para((product.price_text,), Role.AMOUNT)] if product else []
        kind = screen.kind
        if kind is ScreenKind.IDLE:
            return self._idle_blocks(screen.products, screen.single_product, accent)
        if kind is ScreenKind.PAY:
            return [Para(texts("pay.scan"), Role.TITLE, accent), *names, *price, *_countdown(screen)]
        if kind is ScreenKind.CONFIRMING:
            # The wallet's confirmation still counts against the time to pay.
            return [Para(texts("confirming.title"), Role.TITLE, accent), *names, *price, *_countdown(screen)]
        if kind is ScreenKind.DELIVERING:
            return [
                Para(texts("delivering.title"), Role.TITLE, accent),
                Para(texts("delivering.body"), Role.BODY),
                *names,
            ]
        if kind is ScreenKind.THANK_YOU:
            return [
                Para(texts("thank_you.title"), Role.TITLE, accent),
                *names,
                Para(texts("thank_you.body"), Role.SMALL, GREY, priority=2),
            ]
        if kind is ScreenKind.REFUNDED:
            return [Para(texts("refunded.title"), Role.TITLE, accent), *names, *price]
        if kind is ScreenKind.CANCELLED:
            title = texts("cancelled.title")
            return [Para(title, Role.TITLE, accent), *_reason(screen, title), *names]
        if kind is ScreenKind.OUT_OF_SERVICE:
            title = texts("out_of_service.title")
            return [
                Para(title, Role.TITLE, accent),
                *_reason(screen, title),
                Para(texts("out_of_service.sorry"), Role.SMALL, GREY, priority=1),
            ]
        assert_never(kind)

    def _idle_blocks(self, products: tuple[ProductLine, ...], single: bool, accent: RGB) -> list[Block]:
        accepts = Para(texts("idle.accepts"), Role.SMALL, GREY, priority=1)
        if not products:
            return [Para(texts("idle.nothing_on_offer"), Role.TITLE, accent)]
        if len(products) == 1:
            # Nothing to choose between, so the product itself is the headline.
            (only,) = products
            return [
                Para((only.name_en, only.name_zh), Role.TITLE),
                Para((only.price_text,), Role.AMOUNT),
                Para(texts("idle.scan_to_pay" if single else "idle.press_button"), Role.BODY, accent),
                accepts,
            ]
        return [Para(texts("idle.press_button"), Role.TITLE, accent), Table(products, accent), accepts]


def _countdown(screen: Screen) -> list[Block]:
    if screen.seconds_left is None:
        return []
    urgent = screen.seconds_left <= URGENT_SECONDS
    # Sized as the widest number of as many digits, so the layout stays put while it ticks.
    probe = countdown(10 ** max(2, len(str(screen.seconds_left))) - 1)
    return [Para(countdown(screen.seconds_left), Role.BODY, URGENT if urgent else INK, probes=probe)]


def _reason(screen: Screen, title: tuple[str, ...]) -> list[Block]:
    # A reason that only repeats the title (e.g. "暂停服务" under "暂停服务") is left out.
    reason = tuple(t for t in (screen.reason_en, screen.reason_zh) if t and t not in title)
    return [Para(reason, Role.BODY)] if reason else []
