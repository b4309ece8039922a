"""Fitting bilingual text into a box: the largest readable size, wrapping, never clipping.

Content is a stack of blocks (paragraphs and the product table). The fitter tries sizes from
large to small, then leaves out optional blocks, and shrinks below the readable size only as a
last resort, because smaller text is better than text cut off at the edge of the panel.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass

from PIL.ImageFont import FreeTypeFont

from kiosk.screens.fonts import Fonts, balanced_wrap, line_height, text_width, wrap
from kiosk.screens.model import ProductLine
from kiosk.screens.qr import QrCode

RGB = tuple[int, int, int]
INK: RGB = (0, 0, 0)
RULE: RGB = (190, 190, 190)
NOTE: RGB = (70, 70, 70)


class Role(enum.IntEnum):
    """Text sizes in pixels on a panel whose short side is 480 px; scaled to the real panel."""

    AMOUNT = 46
    TITLE = 40
    BODY = 30
    SMALL = 24


# Text grows up to 125 % when a screen has room, and shrinks to 75 %: the smallest text is then
# 18 px at 480 px, still readable at arm's length.
_READABLE_STEPS = tuple(1.25 - i * 0.05 for i in range(11))
# Below that only as a last resort, because shrinking further is better than clipping.
_LAST_RESORT_STEPS = tuple(0.7 - i * 0.05 for i in range(12))
_MIN_PX = 6


@dataclass(frozen=True)
class TextItem:
    x: int
    y: int  # top of the line box (ascender line)
    width: int
    height: int
    text: str
    size: int
    fill: RGB


@dataclass(frozen=True)
class RuleItem:
    x: int
    y: int
    width: int
    height: int
    fill: RGB


@dataclass(frozen=True)
class BadgeItem:
    """A wallet name in an outlined box; text drawn `pad` pixels inside the box."""

    x: int
    y: int
    width: int
    height: int
    text: str
    size: int
    fill: RGB
    pad: int
    border: int


@dataclass(frozen=True)
class QrItem:
    x: int
    y: int
    code: QrCode

    @property
    def width(self) -> int:
        return self.code.image.width

    @property
    def height(self) -> int:
        return self.code.image.height


Item = TextItem | RuleItem | QrItem | BadgeItem


@dataclass(frozen=True)
class Para:
    """Lines centred in their column, each text wrapped on its own (one per language)."""

    texts: tuple[str, ...]
    role: Role
    fill: RGB = INK
    priority: int = 0  # when space runs out, higher numbers are left out first
    probes: tuple[str, ...] = ()  # sized by these instead, so a ticking countdown never reflows


@dataclass(frozen=True)
class Table:
    """Products on offer: slot id, names in both languages, price aligned right (with an
    optional note under each price, e.g. the amount in CNY)."""

    rows: tuple[ProductLine, ...]
    id_fill: RGB
    priority: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Badges:
    """Short labels in outlined boxes, centred, wrapped onto as many rows as needed."""

    labels: tuple[str, ...]
    fill: RGB
    priority: int = 0


Block = Para | Table | Badges
_Wrap = Callable[[str, FreeTypeFont, int], tuple[str, ...]]


@dataclass(frozen=True)
class Area:
    x: int
    y: int
    w: int
    h: int


class Fitter:
    """Lays blocks out in an area for one panel; `unit` scales the Role sizes to that panel."""

    def __init__(self, fonts: Fonts, unit: float, min_px: int = _MIN_PX) -> None:
        self.fonts = fonts
        self.unit = unit
        # The smallest readable text on this panel; only the last resort goes below it.
        self.min_px = max(_MIN_PX, min_px)
        self._choices: dict[tuple[tuple[Block, ...], Area], tuple[int, float]] = {}

    def fit(self, blocks: list[Block], area: Area) -> list[Item]:
        # The choice of size is cached: the pay screen is redrawn every second and only its
        # countdown changes, which is sized by its probe text and so never changes the choice.
        sizing = tuple(_sizing(b) for b in blocks)
        key = (sizing, area)
        choice = self._choices.get(key)
        if choice is None:
            if len(self._choices) > 64:
                self._choices.clear()
            choice = self._choices[key] = self._choose(list(sizing), area)
        max_priority, k = choice
        kept = [b for b in blocks if b.priority <= max_priority]
        items, used = self._stack(kept, k, area.w, balance=True)
        return _shift(items, area.x, area.y + max(0, area.h - used) // 2)

    def _choose(self, blocks: list[Block], area: Area) -> tuple[int, float]:
        """Largest readable size that fits; then without optional blocks; shrink as a last resort."""
        for max_priority in sorted({b.priority for b in blocks}, reverse=True):
            kept = [b for b in blocks if b.priority <= max_priority]
            k = self._largest_fitting(kept, area, _READABLE_STEPS)
            if k is not None:
                return max_priority, k
        essential = [b for b in blocks if b.priority == 0]
        k = self._largest_fitting(essential, area, _LAST_RESORT_STEPS)
        return 0, _LAST_RESORT_STEPS[-1] if k is None else k

    def _readable(self, k: float) -> bool:
        return k >= _READABLE_STEPS[-1] - 1e-9

    def _largest_fitting(self, blocks: list[Block], area: Area, steps: tuple[float, ...]) -> float | None:
        # Bisection: a stack never gets shorter as its text grows.
        def fits(i: int) -> bool:
            return self._stack(blocks, steps[i], area.w, balance=False)[1] <= area.h

        if not fits(len(steps) - 1):
            return None
        low, high = -1, len(steps) - 1  # steps[high] fits; steps[low] does not (or is out of range)
        while high - low > 1:
            mid = (low + high) // 2
            if fits(mid):
                high = mid
            else:
                low = mid
        return steps[high]

    def _px(self, role: Role, k: float) -> int:
        floor = self.min_px if self._readable(k) else _MIN_PX
        return max(floor, round(role * k * self.unit))

    def _stack(self, blocks: list[Block], k: float, width: int, balance: bool) -> tuple[list[Item], int]:
        gap = round(self._px(Role.BODY, k) * 0.55)
        items: list[Item] = []
        y = 0
        for i, block in enumerate(blocks):
            y += gap if i else 0
            # Balancing lines keeps their number, hence the height: only the final pass needs it.
            wrapper = balanced_wrap if balance else wrap
            if isinstance(block, Para):
                placed, used = self._para(block, k, width, y, wrapper)
            elif isinstance(block, Badges):
                placed, used = self._badges(block, k, width, y)
            else:
                placed, used = self._table(block, k, width, y, wrapper)
            items += placed
            y += used
        return items, y

    def _para(self, para: Para, k: float, width: int, top: int, wrapper: _Wrap) -> tuple[list[Item], int]:
        size = self._px(para.role, k)
        font = self.fonts.get(size)
        step = line_height(font)
        lines = [line for t in para.texts for line in wrapper(t, font, width)]
        used = step * len(lines)
        if para.probes:
            probe_used = step * sum(len(wrap(t, font, width)) for t in para.probes)
            top += max(0, probe_used - used) // 2
            used = max(used, probe_used)
        items: list[Item] = []
        for i, line in enumerate(lines):
            w = text_width(font, line)
            items.append(TextItem((width - w) // 2, top + i * step, w, step, line, size, para.fill))
        return items, used

    def _table(self, table: Table, k: float, width: int, top: int, wrapper: _Wrap) -> tuple[list[Item], int]:
        size = self._px(Role.BODY, k)
        font = self.fonts.get(size)
        step = line_height(font)
        gap = round(step * 0.6)
        notes = table.notes or tuple("" for _ in table.rows)
        id_w = max(text_width(font, r.slot_id) for r in table.rows)
        price_w = max(text_width(font, t) for r, n in zip(table.rows, notes, strict=True) for t in (r.price_text, n))
        name_x = id_w + gap
        # Beside the names while that leaves them at least 40 % of the width, under them otherwise.
        beside = width - name_x - price_w - gap >= width * 0.4
        name_w = max(1, width - name_x - (price_w + gap if beside else 0))
        items: list[Item] = []
        y = top
        for i, (row, note) in enumerate(zip(table.rows, notes, strict=True)):
            if i:
                items.append(RuleItem(name_x, y + gap // 2, width - name_x, max(1, round(self.unit)), RULE))
                y += gap
            lines = wrapper(row.name_en, font, name_w) + wrapper(row.name_zh, font, name_w)
            for j, line in enumerate(lines):
                items.append(TextItem(name_x, y + j * step, text_width(font, line), step, line, size, INK))
            names_h = step * len(lines)
            items.append(TextItem(0, y, id_w, step, row.slot_id, size, table.id_fill))
            prices = [t for t in (row.price_text, note) if t]
            prices_h = step * len(prices)
            p_y = y + max(0, names_h - prices_h) // 2 if beside else y + names_h
            for j, price in enumerate(prices):
                p_w = text_width(font, price)
                items.append(TextItem(width - p_w, p_y + j * step, p_w, step, price, size, INK if j == 0 else NOTE))
            y += max(names_h, prices_h) if beside else names_h + prices_h
        return items, y - top

    def _badges(self, badges: Badges, k: float, width: int, top: int) -> tuple[list[Item], int]:
        size = self._px(Role.SMALL, k)
        font = self.fonts.get(size)
        step = line_height(font)
        pad = max(2, round(size * 0.3))
        border = max(1, round(size / 14))
        gap = max(4, round(size * 0.5))
        boxes = [(label, min(width, text_width(font, label) + 2 * pad)) for label in badges.labels]
        rows: list[list[tuple[str, int]]] = [[]]
        for box in boxes:
            row_w = sum(w for _, w in rows[-1]) + gap * len(rows[-1])
            if rows[-1] and row_w + box[1] > width:
                rows.append([])
            rows[-1].append(box)
        items: list[Item] = []
        y = top
        box_h = step + 2 * pad
        for row in rows:
            row_w = sum(w for _, w in row) + gap * (len(row) - 1)
            x = (width - row_w) // 2
            for label, w in row:
                items.append(BadgeItem(x, y, w, box_h, label, size, badges.fill, pad, border))
                x += w + gap
            y += box_h + gap
        return items, y - gap - top


def _sizing(block: Block) -> Block:
    # A block sized by its probes: replaced by them, so the cached choice fits any of its texts.
    if isinstance(block, Para) and block.probes:
        return dataclasses.replace(block, texts=block.probes, probes=())
    return block


def _shift(items: list[Item], dx: int, dy: int) -> list[Item]:
    return [dataclasses.replace(item, x=item.x + dx, y=item.y + dy) for item in items]
