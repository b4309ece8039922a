"""A device missing at start or lost at run time: alarm, out-of-service screen, retry, recovery."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from devices.display_fbdev import FbdevOptions
from devices.scanner_serial import PtyOptions
from devices.supervisor import Supervisor
from kiosk.config import KioskConfig, load_config
from kiosk.hardware import build_hardware

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "kiosk.example.toml"


class Alarms:
    def __init__(self) -> None:
        self.log: list[tuple[str, ...]] = []

    def on_alarm(self, alarm_id: str, severity: str, message: str) -> None:
        self.log.append(("alarm", alarm_id, severity, message))

    def on_clear(self, alarm_id: str) -> None:
        self.log.append(("clear", alarm_id))


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def fb_config(tmp_path: Path) -> tuple[KioskConfig, Path, Path]:
    sysfs = tmp_path / "sys" / "fb1"
    device = tmp_path / "fb1"
    base = load_config(EXAMPLE)
    display = FbdevOptions(device=device, sysfs_dir=sysfs, width=480, height=320)
    return base.model_copy(update={"display": display}), device, sysfs


def plug_fb(device: Path, sysfs: Path) -> None:
    sysfs.mkdir(parents=True, exist_ok=True)
    (sysfs / "virtual_size").write_text("480,320\n")
    (sysfs / "bits_per_pixel").write_text("16\n")
    (sysfs / "stride").write_text("960\n")
    device.write_bytes(bytes(960 * 320))


async def test_a_display_missing_at_start_is_retried_and_shows_the_latest_screen(tmp_path: Path) -> None:
    config, device, sysfs = fb_config(tmp_path)
    hw = await build_hardware(config)
    alarms = Alarms()
    hw.supervisor.add_alarm_sink(alarms)
    hw.supervisor.retry_s = 0.05
    try:
        assert not hw.healthy() and hw.health()["display"]["ok"] is False
        assert alarms.log[0][:3] == ("alarm", "device.display", "critical")
        assert hw.unavailable_reason() == "Display not working"
        idle = Image.new("RGB", (480, 320), (255, 255, 255))
        await hw.display.show(idle, "idle")  # no panel: remembered, never raised
        plug_fb(device, sysfs)
        await until(hw.healthy, 10)
        assert alarms.log[-1] == ("clear", "device.display")
        await until(lambda: hw.display.shown_label == "idle")  # the out-of-service screen, then idle again
        assert device.read_bytes() == b"\xff" * (960 * 320)  # white in RGB565
    finally:
        hw.close()
        await hw.aclose()


async def test_a_display_lost_at_run_time_recovers_by_itself(tmp_path: Path) -> None:
    config, device, sysfs = fb_config(tmp_path)
    plug_fb(device, sysfs)
    hw = await build_hardware(config)
    hw.supervisor.retry_s = 0.05
    try:
        assert hw.healthy()
        driver = hw.display.driver
        await driver.close()  # the fd is gone, as after the panel's USB/SPI bridge disappeared
        (sysfs / "virtual_size").unlink()
        await hw.display.show(Image.new("RGB", (480, 320)), "pay")
        assert not hw.healthy()
        await asyncio.sleep(0.2)
        assert not hw.healthy()  # still retrying, nothing crashed
        plug_fb(device, sysfs)
        await until(hw.healthy, 10)
        assert hw.display.shown_label == "pay"
    finally:
        hw.close()
        await hw.aclose()


async def test_out_of_service_replaces_the_idle_screen_and_slot_buttons_are_ignored(tmp_path: Path) -> None:
    base = load_config(EXAMPLE)
    frames = tmp_path / "frames"
    config = base.model_copy(update={"display": base.display.model_copy(update={"dir": frames})})
    hw = await build_hardware(config)
    try:
        await hw.display.show(Image.new("RGB", (800, 480), (255, 255, 255)), "idle")
        assert hw.display.shown_label == "idle"
        hw.supervisor.set_maintenance("Service door open")
        await until(lambda: hw.display.shown_label == "out_of_service")
        assert not hw.buttons.accept("A1") and hw.buttons.accept("cancel")
        hw.supervisor.set_maintenance(None)
        await until(lambda: hw.display.shown_label == "idle")
        assert hw.buttons.accept("A1")
        assert [p.name.split("-", 1)[1] for p in hw.display.frames_written] == [
            "idle.png", "out_of_service.png", "idle.png"
        ]
    finally:
        hw.close()
        await hw.aclose()


async def test_a_required_scanner_lost_takes_the_kiosk_out_of_service(tmp_path: Path) -> None:
    base = load_config(EXAMPLE)
    config = base.model_copy(update={"scanner": PtyOptions(required=True)})
    hw = await build_hardware(config)
    alarms = Alarms()
    hw.supervisor.add_alarm_sink(alarms)
    try:
        listen = hw.scanner.health_listener
        listen(False, "/dev/ttyUSB0: disconnected")
        assert hw.unavailable_reason() == "Scanner not working"
        assert alarms.log == [("alarm", "device.scanner", "critical", "scanner (pty " + hw.scanner.port + "): "
                               "/dev/ttyUSB0: disconnected")]
        listen(True, "open")
        assert hw.unavailable_reason() is None and alarms.log[-1] == ("clear", "device.scanner")
        assert set(hw.health()) == {"gpio", "display", "scanner"}
    finally:
        hw.close()
        await hw.aclose()


async def test_supervisor_backs_off_and_never_raises() -> None:
    supervisor = Supervisor(retry_s=0.02, max_retry_s=0.08)
    tries: list[float] = []

    async def reopen() -> None:
        tries.append(asyncio.get_running_loop().time())
        if len(tries) < 4:
            raise OSError("still gone")

    supervisor.track("display", "fake", required=True, reopen=reopen)
    supervisor.failed("display", "gone")
    task = asyncio.create_task(supervisor.run())
    try:
        await until(supervisor.healthy, 5)
    finally:
        task.cancel()
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert len(tries) == 4 and gaps[-1] >= gaps[0]


def test_hwtest_in_simulation_passes_and_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kiosk", "hwtest", "--simulate", "--config", str(EXAMPLE), "--scan-timeout", "10"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for row in ("relay A1", "relay A2", "relay B1", "display", "scanner", "button A1", "sensor A1", "cancel button"):
        assert row in out, row
    assert "FAIL" not in out and "12 passed, 0 failed" in out


def test_hwtest_fails_when_a_device_is_missing(tmp_path: Path) -> None:
    fbdev = '[display]\ntype = "fbdev"\ndevice = "/nonexistent/fb9"'
    text = EXAMPLE.read_text().replace('[display]\ntype = "png"', fbdev)
    text = text.replace('dir = "../var/frames"\n', "")
    path = tmp_path / "kiosk.toml"
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "kiosk", "hwtest", "--config", str(path), "--scan-timeout", "1"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "display" in result.stdout and "FAIL" in result.stdout


@pytest.mark.parametrize("screen", ["pay", "idle", "test-pattern"])
def test_render_command_writes_the_png(tmp_path: Path, screen: str) -> None:
    out = tmp_path / f"{screen}.png"
    result = subprocess.run(
        [sys.executable, "-m", "kiosk", "render", screen, "--size", "240x320", "--mono", "--out", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        assert image.size == (240, 320) and image.mode == "1"
