"""`kiosk selftest`: the technician's check, hardware included, on simulated hardware."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from kiosk.payments.sandbox.keys import ensure_keys

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "kiosk.example.toml"


def selftest(config: Path, runtime: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiosk", "--log-level", "WARNING", "selftest", "--config", str(config),
         "--simulate", "--scan-timeout", "5", "--runtime-dir", str(runtime)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_selftest_clicks_every_relay_reads_every_input_and_takes_a_test_scan(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    config = tmp_path / "config" / "kiosk.toml"
    shutil.copy(EXAMPLE, config)
    ensure_keys(tmp_path / "var" / "keys")  # the example's key files, relative to the config
    result = selftest(config, tmp_path / "run")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for row in ("relay A1", "relay A2", "relay B1", "cancel button", "sensor A1", "test pattern", "test scan"):
        assert row in out, row
    assert "passed, 0 failed" in out


def test_selftest_fails_when_something_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    config = tmp_path / "config" / "kiosk.toml"
    shutil.copy(EXAMPLE, config)  # no key files next to it
    result = selftest(config, tmp_path / "run")
    assert result.returncode == 1
    assert "FAIL config files: payments.alipay.app_private_key_file" in result.stdout
