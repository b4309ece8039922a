"""The image's install step (image/scripts/install-kiosk.sh) run against a temporary root: the
venv under /opt/kiosk, the units enabled, sysusers/tmpfiles/udev and drop-ins in place, the
persistent state moved onto the data partition's tree with bind mounts, the overlay root and the
hardware watchdog switched on. The arm64 build itself is documented in image/README.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_ops_update import GOOD_A, build_releases

from kiosk.ops.update import Release

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Release]:
    return build_releases(tmp_path_factory.getbasetemp() / "kiosk-releases")


@pytest.mark.timeout(600)
def test_install_into_a_temporary_root(tmp_path: Path, releases: dict[str, Release]) -> None:
    root = tmp_path / "root"
    boot = root / "boot/firmware"
    boot.mkdir(parents=True)
    (boot / "cmdline.txt").write_text("console=serial0,115200 root=LABEL=ROOT rootwait\n")
    (boot / "config.txt").write_text("arm_64bit=1\n")
    (root / "etc").mkdir()
    (root / "etc/fstab").write_text("LABEL=ROOT / ext4 ro 0 1\n")
    env = {**os.environ, "PYTHON": f"{sys.base_prefix}/bin/python3"}
    result = subprocess.run(
        ["bash", str(REPO / "image/scripts/install-kiosk.sh"), "--root", str(root), "--wheels",
         str(releases[GOOD_A].path), "--repo", str(REPO)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"kiosk {GOOD_A}" in result.stdout

    # /opt/kiosk now lives on the data partition; at boot it is bound back to /opt/kiosk.
    opt = root / "data/opt-kiosk"
    assert os.readlink(opt / "current") == f"versions/{GOOD_A}"
    version = subprocess.run([str(opt / f"versions/{GOOD_A}/bin/python"), "-m", "kiosk", "--version"],
                             capture_output=True, text=True, check=True, cwd="/")
    assert version.stdout.strip() == f"kiosk {GOOD_A}"
    assert list((root / "opt/kiosk").iterdir()) == []

    units = root / "usr/lib/systemd/system"
    for unit in ("kiosk.service", "kiosk-firstboot.service", "kiosk-update.service", "kiosk-update.path",
                 "kiosk-update-recover.service"):
        assert (units / unit).read_text() == (REPO / "systemd" / unit).read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert {p.name for p in wants.iterdir()} == {"kiosk.service", "kiosk-firstboot.service", "kiosk-update.path",
                                                 "kiosk-update-recover.service"}
    assert os.readlink(wants / "kiosk.service") == "/usr/lib/systemd/system/kiosk.service"
    for path in ("usr/lib/sysusers.d/kiosk.conf", "usr/lib/tmpfiles.d/kiosk.conf",
                 "usr/lib/udev/rules.d/99-kiosk.rules", "usr/lib/systemd/system.conf.d/kiosk-watchdog.conf",
                 "usr/lib/systemd/journald.conf.d/kiosk.conf"):
        assert (root / path).is_file(), path

    fstab = (root / "etc/fstab").read_text().splitlines()
    assert "LABEL=KIOSKDATA /data ext4 defaults,noatime,commit=5,errors=remount-ro 0 2" in fstab
    for name, target in (("etc-kiosk", "/etc/kiosk"), ("lib-kiosk", "/var/lib/kiosk"),
                         ("log-kiosk", "/var/log/kiosk"), ("opt-kiosk", "/opt/kiosk"), ("journal", "/var/log/journal")):
        assert f"/data/{name} {target} none bind,x-systemd.requires-mounts-for=/data 0 0" in fstab
        assert (root / "data" / name).is_dir() and (root / target.lstrip("/")).is_dir()
    assert "overlayroot=tmpfs:recurse=0" in (boot / "cmdline.txt").read_text()
    assert (boot / "cmdline.txt").read_text().count("\n") == 1, "cmdline.txt stays one line"
    assert "dtparam=watchdog=on" in (boot / "config.txt").read_text()


def test_install_script_refuses_missing_arguments(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(REPO / "image/scripts/install-kiosk.sh"), "--root", str(tmp_path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "usage" in result.stderr
