"""The driver registry behind the config's device sections: errors name the key."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from devices import registry
from devices.display_fbdev import FbdevOptions
from devices.scanner_serial import SerialOptions
from kiosk import config as config_module
from kiosk.config import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "kiosk.example.toml"


def with_section(tmp_path: Path, header: str, body: str) -> Path:
    text = EXAMPLE.read_text()
    start = text.index(header)
    end = text.index("\n[", start + 1)
    path = tmp_path / "kiosk.toml"
    path.write_text(text[:start] + header + "\n" + body + "\n" + text[end:])
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_an_unknown_type_names_the_key_and_the_known_types(tmp_path: Path) -> None:
    assert problems(with_section(tmp_path, "[display]", 'type = "fbdevv"')) == [
        "display.type: unknown display 'fbdevv'; known: png, fbdev, st7789, ili9341, waveshare_epd, inky"
    ]
    assert problems(with_section(tmp_path, "[scanner]", 'type = "usb"')) == [
        "scanner.type: unknown scanner 'usb'; known: none, serial, pty, evdev, stdin"
    ]


def test_a_bad_option_names_the_key_inside_the_section(tmp_path: Path) -> None:
    found = problems(with_section(tmp_path, "[scanner]", 'type = "serial"\nport = "/dev/ttyUSB0"\nbaudrate = 9601'))
    assert len(found) == 1 and found[0].startswith("scanner.baudrate: ")
    found = problems(with_section(tmp_path, "[scanner]", 'type = "serial"'))
    assert found == ["scanner.port: field required"] or found[0].startswith("scanner.port:")
    found = problems(with_section(tmp_path, "[display]", 'type = "fbdev"\ndir = "/tmp"'))
    assert found == ["display.dir: extra inputs are not permitted"]
    found = problems(with_section(tmp_path, "[gpio]", 'pin_factory = "pigpio"'))
    assert found[0].startswith("gpio.pin_factory: ")


def test_each_driver_is_selectable_from_the_config(tmp_path: Path) -> None:
    fbdev = 'type = "fbdev"\ndevice = "/dev/fb1"\nwidth = 480\nheight = 320'
    config = load_config(with_section(tmp_path, "[display]", fbdev))
    assert isinstance(config.display, FbdevOptions) and config.display.device == Path("/dev/fb1")
    serial = 'type = "serial"\nport = "/dev/ttyACM0"\nterminator = "CR"'
    config = load_config(with_section(tmp_path, "[scanner]", serial))
    assert isinstance(config.scanner, SerialOptions) and config.scanner.terminator == "CR"
    for kind, names in registry.DRIVERS.items():
        for name in names:
            assert registry.driver_class(kind, name).Options.model_fields["type"].default == name


def test_the_config_unions_list_every_registered_driver() -> None:
    display = {a.model_fields["type"].default for a in typing.get_args(config_module.DisplayOptionsUnion)}
    scanner = {a.model_fields["type"].default for a in typing.get_args(config_module.ScannerOptionsUnion)}
    assert display == set(registry.DRIVERS["display"]) and scanner == set(registry.DRIVERS["scanner"])


def test_device_options_come_from_the_environment_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIOSK_DISPLAY__WIDTH", "480")
    monkeypatch.setenv("KIOSK_DISPLAY__HEIGHT", "320")
    config = load_config(EXAMPLE)
    assert (config.display.width, config.display.height) == (480, 320)


def test_config_check_reports_a_bad_device(tmp_path: Path) -> None:
    path = with_section(tmp_path, "[display]", 'type = "fbdevv"')
    result = subprocess.run(
        [sys.executable, "-m", "kiosk", "config", "check", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "display.type: unknown display 'fbdevv'; known: png, fbdev" in result.stderr


def test_screen_languages_need_a_table(tmp_path: Path) -> None:
    path = with_section(tmp_path, "[screens]", 'languages = ["en", "fr"]')
    config = load_config(path)
    assert any(p.startswith("screens.languages: no string table for 'fr'") for p in config_module.check_files(config))
    assert problems(with_section(tmp_path, "[screens]", "cny_rates = { USB = 7.1 }"))[0].startswith("screens.cny_rates")
