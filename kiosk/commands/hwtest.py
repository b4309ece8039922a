"""`kiosk hwtest`: the technician's hardware self-test. It moves things, so it is explicit.

Clicks each slot's relay in turn, shows a test pattern, waits for a test scan, reads every input
(buttons, drop sensors, door) and blinks the status LED; prints one table and exits 1 on any
failure. `--simulate` runs it on simulated hardware (MockFactory pins, a PNG display, a
pseudo-terminal scanner that types its own test code), which is how CI checks it.

`kiosk selftest` (kiosk/ops) only looks at files, storage and the clock and never moves a relay;
this is the other half, for a technician standing at the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from devices.display_png import PngOptions
from devices.scanner_serial import PtyOptions, PtyScanner
from kiosk.config import DEFAULT_CONFIG_PATH, ConfigError, KioskConfig, load_config
from kiosk.hardware import CANCEL, Hardware, build_hardware

EXIT_FAILED = 1
EXIT_CONFIG = 2


@dataclass(frozen=True)
class Row:
    device: str
    check: str
    ok: bool
    detail: str


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("hwtest", help="hardware self-test: relays, display, scanner, inputs")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    parser.add_argument("--simulate", action="store_true", help="mock pins, PNG display, pty scanner")
    parser.add_argument("--scan-timeout", type=float, default=30.0, help="seconds to wait for a test scan")
    parser.add_argument("--click-ms", type=int, default=150, help="how long each relay clicks")
    parser.set_defaults(func=handler)


def simulated(config: KioskConfig, frames: Path) -> KioskConfig:
    """The same catalog and pins on simulated hardware."""
    display = PngOptions(
        width=config.display.width, height=config.display.height, dpi=config.display.dpi,
        mono=config.display.mono, dir=frames, keep_frames=True,
    )
    return config.model_copy(
        update={
            "display": display,
            "scanner": PtyOptions(),
            "gpio": config.gpio.model_copy(update={"pin_factory": "mock"}),
        }
    )


def handler(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if args.simulate:
        config = simulated(config, Path(tempfile.mkdtemp(prefix="kiosk-hwtest-")))
    rows = asyncio.run(run_hwtest(config, scan_timeout=args.scan_timeout, click_ms=args.click_ms))
    print_table(rows, sys.stdout)
    return 0 if all(r.ok for r in rows) else EXIT_FAILED


def print_table(rows: list[Row], out: TextIO) -> None:
    header = Row("device", "check", True, "detail")
    widths = [max(len(getattr(r, f)) for r in [header, *rows]) for f in ("device", "check")]
    print(f"{'device':<{widths[0]}}  {'check':<{widths[1]}}  result  detail", file=out)
    for r in rows:
        result = "ok    " if r.ok else "FAIL  "
        print(f"{r.device:<{widths[0]}}  {r.check:<{widths[1]}}  {result}  {r.detail}", file=out)
    failed = sum(not r.ok for r in rows)
    print(f"{len(rows) - failed} passed, {failed} failed", file=out)


async def run_hwtest(config: KioskConfig, *, scan_timeout: float = 30.0, click_ms: int = 150) -> list[Row]:
    hw = await build_hardware(config)
    rows: list[Row] = []
    try:
        health = hw.supervisor.health()
        gpio = health["gpio"]
        rows.append(Row("gpio", "open", gpio.ok, gpio.driver if gpio.ok else gpio.detail))
        rows.append(await _display(hw, config))
        if gpio.ok:
            rows += await _relays(hw, config, click_ms)
            rows += _inputs(hw)
            rows += await _led(hw)
        rows.append(await _scanner(hw, scan_timeout))
    finally:
        hw.close()
        await hw.aclose()
    return rows


async def _display(hw: Hardware, config: KioskConfig) -> Row:
    from kiosk.hardware import screen_renderer
    from kiosk.screens.testpattern import test_pattern

    name = hw.display.driver.describe()
    if not hw.display.ok:
        return Row("display", "test pattern", False, hw.supervisor.health()["display"].detail)
    try:
        fonts = screen_renderer(config, hw.display.driver).fonts
    except Exception as exc:  # the font is a config problem, not the panel's
        return Row("display", "test pattern", False, f"font: {exc}")
    await hw.display.show(test_pattern(hw.display.size, mono=hw.display.driver.mono, font=fonts), "test_pattern")
    drain = getattr(hw.display.driver, "drain", None)
    if drain is not None:
        with contextlib.suppress(Exception):
            await drain()
    ok = hw.display.ok and hw.display.shown_label == "test_pattern"
    detail = name if ok else hw.supervisor.health()["display"].detail
    return Row("display", "test pattern", ok, detail)


async def _relays(hw: Hardware, config: KioskConfig, click_ms: int) -> list[Row]:
    rows: list[Row] = []
    for slot in config.catalog.slots:
        relay = hw.relays[slot.id]
        pin = getattr(hw.pin_factory, "pin", None)
        before = len(pin(slot.relay).states) if pin is not None and hasattr(pin(slot.relay), "states") else None
        try:
            await relay.pulse(click_ms)
        except Exception as exc:
            rows.append(Row(f"relay {slot.id}", f"click pin {slot.relay}", False, str(exc)))
            continue
        detail = f"{click_ms} ms, {'active high' if slot.relay_active_high else 'active low'}, off again"
        ok = not relay.is_on
        if before is not None and pin is not None:
            # Simulated pins record every level: the click must show as on, then off.
            levels = [s.state for s in pin(slot.relay).states[before:]]
            on, off = (slot.relay_active_high, not slot.relay_active_high)
            ok = ok and levels[-2:] == [on, off]
            detail += f" (pin levels {''.join('1' if v else '0' for v in levels)})"
        rows.append(Row(f"relay {slot.id}", f"click pin {slot.relay}", ok, detail))
        await asyncio.sleep(0.2)  # one at a time: a technician should hear each one
    return rows


def _inputs(hw: Hardware) -> list[Row]:
    rows: list[Row] = []
    for name, button in hw.buttons.buttons.items():
        what = "cancel button" if name == CANCEL else f"button {name}"
        rows.append(_read(what, lambda b=button: "pressed" if b.is_pressed else "released"))
    for slot_id, sensor in hw.sensors.items():
        rows.append(_read(f"sensor {slot_id}", lambda s=sensor: "active" if s.is_active else "inactive"))
    door = hw.door
    if door is not None:
        rows.append(_read("door", lambda: "open (maintenance)" if door.is_open else "closed"))
    return rows


def _read(device: str, read: Any) -> Row:
    try:
        return Row(device, "read", True, read())
    except Exception as exc:
        return Row(device, "read", False, str(exc))


async def _led(hw: Hardware) -> list[Row]:
    led = hw.status_led
    if led is None:
        return []
    try:
        led.set("blink")
        await asyncio.sleep(1.0)
        led.set("on")
    except Exception as exc:
        return [Row("status LED", "blink", False, str(exc))]
    return [Row("status LED", "blink", True, "blinked for 1 s, now on")]


async def _scanner(hw: Hardware, timeout: float) -> Row:
    scanner = hw.scanner
    if scanner is None:
        return Row("scanner", "test scan", True, "none configured (type = \"none\")")
    expected: str | None = None
    if isinstance(scanner, PtyScanner):
        expected = "SELFTEST" + os.urandom(4).hex().upper()
    else:
        print(f"scan any barcode or QR code within {timeout:g} s ...", flush=True)
    codes: AsyncIterator[str] = scanner.codes()
    started = time.monotonic()

    async def first_code() -> str:
        return await codes.__anext__()

    reading = asyncio.create_task(first_code())
    try:
        if expected is not None:
            assert isinstance(scanner, PtyScanner)
            await asyncio.wait_for(scanner.connected.wait(), timeout)
            scanner.scan(expected)
        code = await asyncio.wait_for(reading, timeout)
    except TimeoutError:
        detail = hw.supervisor.health().get("scanner")
        why = detail.detail if detail is not None and not detail.ok else f"no scan within {timeout:g} s"
        return Row("scanner", "test scan", False, why)
    finally:
        reading.cancel()
        with contextlib.suppress(BaseException):
            await reading
        with contextlib.suppress(Exception):
            await codes.aclose()  # type: ignore[attr-defined]
    ok = expected is None or code == expected
    shown = code if len(code) <= 24 else code[:21] + "..."
    took = time.monotonic() - started
    return Row("scanner", "test scan", ok, f"read {shown!r} after {took:.1f} s ({scanner.describe()})")
