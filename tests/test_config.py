"""Configuration: the example loads, every problem is named by its key path, env overrides work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kiosk.config import ConfigError, SelectionMode, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "kiosk.example.toml"


def broken_copy(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    text = EXAMPLE.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "kiosk.toml"
    path.write_text(text)
    return path


def test_the_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.selection.mode is SelectionMode.BUTTONS
    assert [s.id for s in config.catalog.slots] == ["A1", "A2", "B1"]
    assert config.catalog.slot("A2").delivery.mode == "pulses"
    # relative paths are resolved against the file, so a checkout runs from anywhere
    assert config.journal.path.is_absolute()


def test_every_problem_is_reported_with_its_key_path(tmp_path: Path) -> None:
    path = broken_copy(
        tmp_path,
        ("price = 500", "price = 0"),
        ('price = 350\ncurrency = "USD"', 'price = 350\ncurrency = "usd"'),
        ('delivery = { mode = "hold", s = 1.0 }', 'delivery = { mode = "hold", s = -1 }'),
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert "catalog.slots[2].price: must be greater than 0" in problems
    assert any(p.startswith("catalog.slots[1].currency:") for p in problems)
    assert any(p.startswith("catalog.slots[2].delivery.s:") for p in problems)


def test_unknown_keys_are_named(tmp_path: Path) -> None:
    path = broken_copy(tmp_path, ("[display]", "[display]\ncolour = 3"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == ["display.colour: extra inputs are not permitted"]


def test_single_product_mode_needs_exactly_one_slot(tmp_path: Path) -> None:
    path = broken_copy(tmp_path, ('mode = "buttons"', 'mode = "single"'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any("exactly one slot" in p for p in info.value.problems)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIOSK_SELECTION__PAYMENT_TIMEOUT_S", "33")
    monkeypatch.setenv("KIOSK_DEVICE__ID", "kiosk-from-env")
    config = load_config(EXAMPLE)
    assert config.selection.payment_timeout_s == 33
    assert config.device.id == "kiosk-from-env"
    assert config.selection.cancel_button == 21  # the rest of the section still comes from the file


def test_config_check_command_exit_codes(tmp_path: Path) -> None:
    bad = broken_copy(tmp_path, ("price = 500", "price = 0"))
    result = subprocess.run(
        [sys.executable, "-m", "kiosk", "config", "check", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "catalog.slots[2].price: must be greater than 0" in result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "kiosk", "config", "check", str(tmp_path / "nope.toml")],
        capture_output=True, text=True, check=False,
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    not_toml = tmp_path / "x.toml"
    not_toml.write_text("[device\nid=")
    bad_syntax = subprocess.run(
        [sys.executable, "-m", "kiosk", "config", "check", str(not_toml)], capture_output=True, text=True, check=False
    )
    assert bad_syntax.returncode == 2 and "not valid TOML" in bad_syntax.stderr


def test_secret_files_are_paths_and_their_absence_is_named(tmp_path: Path) -> None:
    # The example points at key files the demo generates; a fresh checkout has none yet.
    path = broken_copy(tmp_path, ('app_private_key_file = "../var/keys/app_private_key.pem"',
                                  f'app_private_key_file = "{tmp_path}/missing.pem"'))
    result = subprocess.run(
        [sys.executable, "-m", "kiosk", "config", "check", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "payments.alipay.app_private_key_file: file" in result.stderr
