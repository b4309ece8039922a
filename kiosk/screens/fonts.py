"""One font face covering Latin and Chinese, loaded once, plus measuring and line wrapping.

Pillow has no per-glyph fallback, so a face without Chinese glyphs would draw boxes (tofu) for
every Chinese string; that is refused at start-up rather than discovered by a tourist.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

DEFAULT_FONT_PATH = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")

_FIX = "install fonts-wqy-microhei or fonts-noto-cjk, or set screens.font_path"


class FontNotFoundError(Exception):
    """The configured font is missing, unreadable or has no Chinese glyphs."""

    def __init__(self, path: Path, problem: str = "not found") -> None:
        self.path = path
        super().__init__(f"screen font {path}: {problem} ({_FIX})")


class Fonts:
    """A face from a .ttf/.otf file or a .ttc collection (`index` picks the face), per pixel size.

    Each size is opened by path rather than from bytes in memory: Pillow copies the whole file
    for every in-memory face, and a CJK font is 5-20 MB on a board with 512 MB.
    """

    def __init__(self, path: Path, index: int = 0) -> None:
        self.path = path
        self.index = index
        self._cache: dict[int, ImageFont.FreeTypeFont] = {}
        if not path.is_file():
            raise FontNotFoundError(path)
        try:
            probe = self.get(24)
        except OSError as exc:
            raise FontNotFoundError(path, f"cannot be read as a font face {index} ({exc})") from exc
        # A missing glyph renders as the face's .notdef box, the same for any missing code point.
        if bytes(probe.getmask("付")) == bytes(probe.getmask("\U0010fffd")):
            raise FontNotFoundError(path, f"face {index} ({_name(probe)}) has no Chinese glyphs")

    def get(self, size: int) -> ImageFont.FreeTypeFont:
        font = self._cache.get(size)
        if font is None:
            font = ImageFont.truetype(str(self.path), size, index=self.index)
            self._cache[size] = font
        return font

    def name(self) -> str:
        return _name(self.get(24))


def _name(font: ImageFont.FreeTypeFont) -> str:
    return " ".join(part for part in font.getname() if part)


@lru_cache(maxsize=2048)
def text_width(font: ImageFont.FreeTypeFont, text: str) -> int:
    """Pixels from the pen position to the right edge of the ink, which can pass the advance width."""
    return math.ceil(max(font.getlength(text), font.getbbox(text)[2]))


def line_height(font: ImageFont.FreeTypeFont) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent


# A Chinese line may break between any two characters; Latin text only at spaces.
_CJK = "\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+\s*|\s+")
# Punctuation that must not start a line (kinsoku): it stays with the character before it.
_NO_LINE_START = frozenset("，。、！？；：）」』》〉】…,.!?;:)]}%—")


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    for tok in _TOKEN.findall(text):
        if tokens and tok[0] in _NO_LINE_START:
            tokens[-1] += tok
        else:
            tokens.append(tok)
    return tokens


# Measuring text is the slow part of drawing (~0.2 ms per call); the pay screen is redrawn every
# second with mostly the same lines, so wrapped results are kept.
@lru_cache(maxsize=2048)
def wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> tuple[str, ...]:
    """Break `text` into lines no wider than `width`; a word wider than that is split by characters."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for tok in _tokens(paragraph):
            candidate = line + tok
            if font.getlength(candidate.rstrip()) <= width or not line.strip():
                line = candidate
            else:
                lines.append(line.rstrip())
                line = tok.lstrip()
            while font.getlength(line.rstrip()) > width and len(line.rstrip()) > 1:
                cut = _longest_prefix(line, font, width)
                lines.append(line[:cut].rstrip())
                line = line[cut:].lstrip()
        lines.append(line.rstrip())
    return tuple(lines)


def _longest_prefix(text: str, font: ImageFont.FreeTypeFont, width: int) -> int:
    cut = 1
    while cut < len(text) and font.getlength(text[: cut + 1]) <= width:
        cut += 1
    return cut


@lru_cache(maxsize=512)
def balanced_wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> tuple[str, ...]:
    """Wrap into as few lines as at `width`, but of even length, so no word is left alone on a line."""
    lines = wrap(text, font, width)
    if len(lines) < 2:
        return lines
    low, high = 1, width  # the narrowest width giving the same number of lines lies in (low, high]
    while high - low > 1:
        mid = (low + high) // 2
        if len(wrap(text, font, mid)) == len(lines):
            high = mid
        else:
            low = mid
    return wrap(text, font, high)
