"""Render every sample screen to docs/screens/ as PNG.

Usage: python scripts/render_screens.py [--font PATH] [--out DIR] [--size WxH ...]
Without --size: every kind at 800x480, and the pay screen also at 480x800.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kiosk.screens.fonts import DEFAULT_FONT_PATH
from kiosk.screens.model import ScreenKind
from kiosk.screens.render import ScreenRenderer
from kiosk.screens.samples import sample_screen

DEFAULT_JOBS: list[tuple[tuple[int, int], list[ScreenKind]]] = [
    ((800, 480), list(ScreenKind)),
    ((480, 800), [ScreenKind.PAY]),
]


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--font", type=Path, default=DEFAULT_FONT_PATH)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "screens")
    parser.add_argument("--size", type=_size, action="append", help="e.g. 480x320; renders every kind")
    args = parser.parse_args()
    jobs = [(size, list(ScreenKind)) for size in args.size] if args.size else DEFAULT_JOBS
    args.out.mkdir(parents=True, exist_ok=True)
    for size, kinds in jobs:
        renderer = ScreenRenderer(args.font, size)
        for kind in kinds:
            path = args.out / f"{kind.value.replace('_', '-')}-{size[0]}x{size[1]}.png"
            renderer.render(sample_screen(kind)).save(path, optimize=True)
            print(path)


if __name__ == "__main__":
    main()
