"""The self-test picture: colour bars, a one-pixel grid, corner marks and the panel's size.

A technician sees at once a wrong rotation (the arrow), swapped colour channels (the labelled
bars), a wrong pixel format or stride (the grid shears), and an edge the bezel hides (corners).
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from kiosk.screens.fonts import Fonts

BARS = (("R", (255, 0, 0)), ("G", (0, 255, 0)), ("B", (0, 0, 255)), ("W", (255, 255, 255)), ("K", (0, 0, 0)))


def test_pattern(size: tuple[int, int], *, mono: bool = False, font: Fonts | None = None) -> Image.Image:
    width, height = size
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    step = max(8, min(size) // 12)
    for x in range(0, width, step):
        draw.line((x, 0, x, height - 1), fill=(200, 200, 200))
    for y in range(0, height, step):
        draw.line((0, y, width - 1, y), fill=(200, 200, 200))
    bar_h = height // 5
    bar_w = width // len(BARS)
    for i, (_label, colour) in enumerate(BARS):
        draw.rectangle((i * bar_w, height - bar_h, (i + 1) * bar_w - 1, height - 1), fill=colour, outline=(0, 0, 0))
    mark = step
    for cx, cy in ((0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1)):
        dx = 1 if cx == 0 else -1
        dy = 1 if cy == 0 else -1
        draw.polygon([(cx, cy), (cx + dx * mark, cy), (cx, cy + dy * mark)], fill=(0, 0, 0))
    draw.rectangle((0, 0, width - 1, height - 1), outline=(0, 0, 0))
    # An arrow pointing up: a panel mounted the wrong way round shows it pointing elsewhere.
    ax, top = width // 2, step
    draw.polygon([(ax, top), (ax - step, top + step), (ax + step, top + step)], fill=(0, 0, 0))
    if font is not None:
        size_px = max(12, min(size) // 12)
        f = font.get(size_px)
        label = f"{width}x{height}  自检 Self-test"
        draw.text((step, top + 2 * step), label, font=f, fill=(0, 0, 0))
        for i, (name, _colour) in enumerate(BARS):
            draw.text((i * bar_w + 4, height - bar_h - size_px - 4), name, font=f, fill=(0, 0, 0))
    if mono:
        return image.convert("L").point(lambda v: 255 if v >= 128 else 0).convert("1", dither=Image.Dither.NONE)
    return image
