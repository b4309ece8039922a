"""`kiosk render SCREEN --size WxH [--mono] --out FILE.png`: preview any screen without a kiosk."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kiosk.screens.fonts import DEFAULT_FONT_PATH, FontNotFoundError
from kiosk.screens.model import ScreenKind
from kiosk.screens.render import ScreenRenderer, ScreenStyle
from kiosk.screens.samples import sample_screen
from kiosk.screens.testpattern import test_pattern

SCREENS = [k.value.replace("_", "-") for k in ScreenKind] + ["test-pattern"]


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT, e.g. 480x320")
    return int(width), int(height)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("render", help="draw a sample screen to a PNG file")
    parser.add_argument("screen", choices=SCREENS)
    parser.add_argument("--size", type=_size, default=(800, 480), help="WIDTHxHEIGHT (default 800x480)")
    parser.add_argument("--mono", action="store_true", help="1-bit, as an e-ink panel shows it")
    parser.add_argument("--static", action="store_true", help="the layout for slow panels: no countdown")
    parser.add_argument("--dpi", type=float, default=140, help="panel density (default 140)")
    parser.add_argument("--lang", action="append", help="screen languages in order (default en, zh-Hans)")
    parser.add_argument("--wallet", action="append", help="wallet badges (default alipay)")
    parser.add_argument("--cny-rate", type=float, default=None, help="CNY per USD, to show the approximation")
    parser.add_argument("--font", type=Path, default=DEFAULT_FONT_PATH)
    parser.add_argument("--out", type=Path, required=True)
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    style = ScreenStyle(
        languages=tuple(args.lang or ("en", "zh-Hans")),
        wallets=tuple(args.wallet or ("alipay",)),
        cny_rates=(("USD", args.cny_rate),) if args.cny_rate else (),
        dpi=args.dpi,
        mono=args.mono,
        live=not args.static,
    )
    try:
        renderer = ScreenRenderer(args.font, args.size, style=style)
    except (FontNotFoundError, ValueError) as exc:
        print(f"kiosk render: {exc}")
        return 2
    if args.screen == "test-pattern":
        image = test_pattern(args.size, mono=args.mono, font=renderer.fonts)
    else:
        image = renderer.render(sample_screen(ScreenKind(args.screen.replace("-", "_"))))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, "PNG", optimize=True)
    print(f"{args.out}: {args.screen} {args.size[0]}x{args.size[1]}{' 1-bit' if args.mono else ''}")
    return 0
