"""Screen and memory benchmarks. Each figure is a ratio to a baseline measured in the same run.

    .venv/bin/python bench/bench_screens.py [--rounds 40]

pay_screen: composing the whole pay screen (title, product, price, CNY, countdown, badges and the
QR at whole-pixel pitch) per new order, divided by the time of the bare qrcode + Pillow image of
the same QR content (ECC M, border 4, same pitch). Also the per-second redraw (only the countdown
changes) against the same baseline.

idle_rss: resident memory of the idle daemon in demo mode (sandbox gateway, mock pins, PNG
display, idle screen shown) divided by that of a bare process that imports the same third-party
dependencies and does nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import qrcode  # noqa: E402
import qrcode.constants  # noqa: E402

from kiosk.screens.fonts import DEFAULT_FONT_PATH  # noqa: E402
from kiosk.screens.model import ScreenKind  # noqa: E402
from kiosk.screens.render import ScreenRenderer, ScreenStyle  # noqa: E402
from kiosk.screens.samples import SAMPLE_QR_CONTENT, sample_screen  # noqa: E402

DEPENDENCIES = "aiomqtt httpx pydantic pydantic_settings cryptography PIL.Image PIL.ImageDraw qrcode gpiozero " \
    "serial_asyncio_fast sqlite3 asyncio"


def bare_qr(content: str, pitch: int) -> object:
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=pitch, border=4)
    code.add_data(content)
    code.make(fit=True)
    return code.make_image().get_image()


def pay_screen_ratio(rounds: int, size: tuple[int, int]) -> tuple[float, float, float]:
    renderer = ScreenRenderer(DEFAULT_FONT_PATH, size, style=ScreenStyle(cny_rates=(("USD", 7.1),)))
    base = sample_screen(ScreenKind.PAY)
    renderer.render(base)  # fonts and layout warm, as in a running kiosk
    contents = [f"{SAMPLE_QR_CONTENT}{i:04d}" for i in range(rounds)]
    start = time.perf_counter()
    for content in contents:
        renderer.render(dataclasses.replace(base, qr_content=content))
    compose = (time.perf_counter() - start) / rounds
    start = time.perf_counter()
    for i in range(rounds):
        renderer.render(dataclasses.replace(base, qr_content=contents[-1], seconds_left=90 - i % 90))
    redraw = (time.perf_counter() - start) / rounds
    pitch = next(i for i in renderer.layout(base) if hasattr(i, "code")).code.pitch  # type: ignore[union-attr]
    start = time.perf_counter()
    for content in contents:
        bare_qr(content, pitch)
    bare = (time.perf_counter() - start) / rounds
    return compose, redraw, bare


IDLE_DAEMON = textwrap.dedent(
    """
    import asyncio, sys, tempfile
    from pathlib import Path
    sys.path.insert(0, %r)
    from tests.kiosk_harness import make_config, running_kiosk
    from kiosk.payments.sandbox import SandboxGateway

    async def main():
        state = Path(tempfile.mkdtemp(prefix="kiosk-rss-"))
        sandbox = SandboxGateway(keys_dir=state / "keys")
        url = sandbox.start()
        config = make_config(state, url + "/gateway.do", state / "keys", None)
        async with running_kiosk(config) as kiosk:
            await asyncio.sleep(3)  # idle: the idle screen is up, nothing to do
            print(rss())
        sandbox.stop()

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    asyncio.run(main())
    """
) % str(ROOT)

BARE = textwrap.dedent(
    """
    import importlib
    for name in %r.split():
        importlib.import_module(name)
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            print(int(line.split()[1]))
    """
) % DEPENDENCIES


def rss_kib(code: str) -> int:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return int(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    for size in ((800, 480), (240, 320)):
        compose, redraw, bare = pay_screen_ratio(args.rounds, size)
        print(
            f"pay_screen {size[0]}x{size[1]}: compose {compose * 1000:.1f} ms per new order, redraw "
            f"{redraw * 1000:.1f} ms per countdown tick, bare qrcode+Pillow {bare * 1000:.1f} ms; "
            f"ratio {compose / bare:.1f}x (compose), {redraw / bare:.1f}x (redraw)"
        )
    daemon, bare_rss = rss_kib(IDLE_DAEMON), rss_kib(BARE)
    print(
        f"idle_rss: idle demo daemon {daemon / 1024:.1f} MiB, bare process importing its dependencies "
        f"{bare_rss / 1024:.1f} MiB; ratio {daemon / bare_rss:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
