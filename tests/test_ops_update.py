"""Safe updates with real builds of this package: two good versions and one that fails its
health gate, each a wheel built from a copy of this source tree with its version changed, plus
every dependency's wheel (downloaded once per session through pip, like the release build).

A small process supervisor stands in for systemd: `restart()` stops the daemon with SIGTERM and
starts /opt/kiosk/current/bin/kiosk again, so the symlink switch decides which version runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiosk import __version__
from kiosk.ops.state import read_state
from kiosk.ops.update import Gate, Layout, Release, Updater, install_venv, load_release, write_manifest
from kiosk.payments.sandbox import SandboxGateway

REPO = Path(__file__).resolve().parent.parent
GOOD_A, GOOD_B, BAD = "9000.0.1", "9000.0.2", "9000.0.3"

BROKEN = '''

async def _broken_run(self: KioskApp) -> None:
    raise RuntimeError("this build is broken on purpose (update rollback test)")


KioskApp.run = _broken_run  # type: ignore[method-assign]
'''


def copy_source(dest: Path, version: str, broken: bool = False) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    dest.mkdir(parents=True)
    for name in ("kiosk", "devices"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, dest / name)
    pyproject = (dest / "pyproject.toml").read_text()
    assert f'version = "{__version__}"' in pyproject
    (dest / "pyproject.toml").write_text(pyproject.replace(f'version = "{__version__}"', f'version = "{version}"', 1))
    init = dest / "kiosk/__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{__version__}"', f'__version__ = "{version}"'))
    if broken:
        with (dest / "kiosk/app.py").open("a") as fh:
            fh.write(BROKEN)
    return dest


def build_releases(base: Path) -> dict[str, Release]:
    """Built once per session (several test modules use it); the directory is the cache."""
    done = base / "done"
    if not done.exists():
        # The first with the project's own release script (host wheels instead of arm64).
        src = copy_source(base / f"src-{GOOD_A}", GOOD_A)
        env = {**os.environ, "KIOSK_WHEEL_PLATFORM": "host", "PYTHON": sys.executable}
        subprocess.run(["bash", str(REPO / "image/scripts/build-wheels.sh"), "--repo", str(src), "--out",
                        str(base / GOOD_A)], env=env, check=True, capture_output=True, timeout=600)
        deps = [p for p in (base / GOOD_A).glob("*.whl") if not p.name.startswith("kiosk-")]
        for version, broken in ((GOOD_B, False), (BAD, True)):
            src = copy_source(base / f"src-{version}", version, broken)
            out = base / version
            out.mkdir()
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
                            str(src)], check=True, capture_output=True, timeout=600)
            for dep in deps:
                os.link(dep, out / dep.name)
            write_manifest(out)
        done.touch()
    return {v: load_release(base / v) for v in (GOOD_A, GOOD_B, BAD)}


@pytest.fixture(scope="session")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Release]:
    return build_releases(tmp_path_factory.getbasetemp() / "kiosk-releases")


# ---------------------------------------------------------------- the stand-in for systemd


@dataclass
class ProcService:
    layout: Layout
    config: Path
    runtime: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        env = {**os.environ, "RUNTIME_DIRECTORY": str(self.runtime), "PYTHONUNBUFFERED": "1"}
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "PYTHONPATH"):
            env.pop(key, None)
        log = (self.runtime.parent / f"daemon-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen([str(self.layout.current / "bin/kiosk"), "run", "--config", str(self.config)],
                                     env=env, stdout=log, stderr=subprocess.STDOUT, cwd="/")
        self.starts += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


CONFIG = """
[device]
id = "update-kiosk"
fleet = "test"

[selection]
mode = "{mode}"
payment_timeout_s = {timeout}
result_screen_s = 0.2

[[catalog.slots]]
id = "A1"
names = {{ en = "Water", "zh-Hans" = "水" }}
price = 250
currency = "USD"
relay = 17
button = 5

[payments]
provider = "alipay"

[payments.alipay]
gateway_url = "{gateway}"
app_id = "2021000000000001"
app_private_key_file = "{keys}/app_private_key.pem"
alipay_public_key_file = "{keys}/gateway_public_key.pem"
poll_interval_s = 0.5

[display]
type = "png"
dir = "{state}/frames"
width = 320
height = 240
keep_frames = false

[journal]
path = "{state}/journal.sqlite"

[outbox]
path = "{state}/outbox.sqlite"
{mqtt}
"""


@dataclass
class Device:
    layout: Layout
    service: ProcService
    runtime: Path
    config: Path
    state_dir: Path
    sandbox: SandboxGateway

    def updater(self, *, need_broker: bool = False, deadline_s: float = 40) -> Updater:
        return Updater(
            self.layout, self.service, self.runtime,
            gate=Gate(deadline_s=deadline_s, settle_s=1.0, need_broker=need_broker, idle_timeout_s=60, poll_s=0.1),
            config_path=self.config,
            log_file=self.state_dir / "log/update.jsonl",
            outbox=None,
        )

    def wait_ready(self, version: str, timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = read_state(self.runtime)
            proc = self.service.proc
            assert proc is not None and proc.poll() is None, "the daemon exited"
            if state and state.ready and state.version == version and state.pid == proc.pid:
                return
            time.sleep(0.1)
        raise AssertionError(f"kiosk {version} did not get ready")


_LAYOUT: list[Layout] = []


def fresh_layout(releases: dict[str, Release]) -> Layout:
    """/opt/kiosk as the image leaves it: only GOOD_A, current. Installed once per session (a venv
    takes seconds to build and cannot be moved), then reset for each test."""
    if not _LAYOUT:
        layout = Layout(releases[GOOD_A].path.parent / "opt/kiosk")
        install_venv(layout, releases[GOOD_A])
        _LAYOUT.append(layout)
    layout = _LAYOUT[0]
    layout.point(layout.current, GOOD_A)
    for version in layout.installed():
        if version != GOOD_A:
            shutil.rmtree(layout.venv(version))
    layout.previous.unlink(missing_ok=True)
    layout.status_file.unlink(missing_ok=True)
    return layout


def make_device(tmp_path: Path, releases: dict[str, Release], *, mode: str = "buttons", timeout: float = 60,
                mqtt: str | None = None) -> Iterator[Device]:
    sandbox = SandboxGateway(keys_dir=tmp_path / "keys")
    url = sandbox.start()
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    runtime = tmp_path / "run"
    runtime.mkdir()
    config = tmp_path / "kiosk.toml"
    config.write_text(CONFIG.format(mode=mode, timeout=timeout, gateway=url + "/gateway.do", keys=tmp_path / "keys",
                                    state=state_dir, mqtt=f'\n[mqtt]\nurl = "{mqtt}"\n' if mqtt else ""))
    layout = fresh_layout(releases)
    service = ProcService(layout, config, runtime)
    service.start()
    device = Device(layout, service, runtime, config, state_dir, sandbox)
    try:
        device.wait_ready(GOOD_A)
        yield device
    finally:
        service.stop()
        sandbox.stop()


def steps(events: list[dict[str, object]]) -> list[object]:
    return [e["step"] for e in events]


@pytest.mark.timeout(600)
def test_a_good_version_is_kept(tmp_path: Path, releases: dict[str, Release], mosquitto: object) -> None:
    for device in make_device(tmp_path, releases, mqtt=mosquitto.url):  # type: ignore[attr-defined]
        outcome = device.updater(need_broker=True).update(releases[GOOD_B])
        assert outcome.ok, outcome.detail
        assert steps(outcome.events) == ["requested", "verified", "installed", "switched", "restarted", "healthy",
                                         "committed"]
        assert device.layout.version_of(device.layout.current) == GOOD_B
        assert device.layout.version_of(device.layout.previous) == GOOD_A
        assert os.readlink(device.layout.current) == f"versions/{GOOD_B}"
        state = read_state(device.runtime)
        assert state is not None and state.version == GOOD_B and state.broker == "connected"
        assert device.service.proc is not None and device.service.proc.poll() is None
        assert not (device.runtime / "hold").exists(), "the new version may sell once it passed"
        logged = [json.loads(line) for line in (device.state_dir / "log/update.jsonl").read_text().splitlines()]
        assert steps(logged) == steps(outcome.events)
        status = json.loads(device.layout.status_file.read_text())
        assert status["state"] == "committed" and status["to"] == GOOD_B
        # Updating to the same version again is refused before anything is touched.
        again = device.updater().update(releases[GOOD_B])
        assert not again.ok and "already running" in again.detail


@pytest.mark.timeout(600)
def test_a_version_that_fails_its_health_gate_is_rolled_back(tmp_path: Path, releases: dict[str, Release]) -> None:
    for device in make_device(tmp_path, releases):
        outcome = device.updater(deadline_s=8).update(releases[BAD])
        assert not outcome.ok
        assert outcome.version == GOOD_A
        assert steps(outcome.events) == ["requested", "verified", "installed", "switched", "restarted", "unhealthy",
                                         "rolling_back", "rolled_back"]
        assert outcome.events[-1]["ok"] is True, outcome.events[-1]
        assert device.layout.version_of(device.layout.current) == GOOD_A
        assert not device.layout.venv(BAD).exists()
        device.wait_ready(GOOD_A)
        broken_log = (tmp_path / "daemon-1.log").read_text()
        assert "broken on purpose" in broken_log
        status = json.loads(device.layout.status_file.read_text())
        assert status["state"] == "rolled_back"


@pytest.mark.timeout(600)
def test_an_update_requested_during_a_sale_waits_for_it(tmp_path: Path, releases: dict[str, Release]) -> None:
    # Single-product mode sells by itself; the sandbox never pays, so each sale ends by timeout.
    for device in make_device(tmp_path, releases, mode="single", timeout=4):
        device.sandbox.set_behaviour("never_pays", for_next="default")
        deadline = time.monotonic() + 20
        while not ((s := read_state(device.runtime)) and s.sale_in_progress):
            assert time.monotonic() < deadline, "no sale started"
            time.sleep(0.05)
        outcome = device.updater().update(releases[GOOD_B])
        assert outcome.ok, outcome.detail
        assert steps(outcome.events)[:6] == ["requested", "verified", "installed", "waiting", "idle", "switched"]
        waiting = next(e for e in outcome.events if e["step"] == "waiting")
        sale_id = str(waiting["detail"]).split()[1]  # "sale K... in progress; ..."
        switched_at = next(e["at"] for e in outcome.events if e["step"] == "switched")
        with sqlite3.connect(device.state_dir / "journal.sqlite") as db:
            state, updated = db.execute("SELECT state, updated_at FROM sales WHERE order_id = ?", (sale_id,)).fetchone()
            later = db.execute("SELECT count(*) FROM sales WHERE created_at > ? AND created_at < ?",
                               (waiting["at"], switched_at)).fetchone()[0]
        assert state == "expired", "the sale ran to its end; it was not cut by the restart"
        assert str(updated) <= str(switched_at)
        assert later == 0, "no new sale started while the update held the kiosk"


def test_recover_after_a_reboot_during_the_gate(tmp_path: Path, releases: dict[str, Release]) -> None:
    layout = Layout(tmp_path / "opt/kiosk")
    for version in (GOOD_A, GOOD_B):
        (layout.venv(version) / "bin").mkdir(parents=True)
        (layout.venv(version) / "bin/kiosk").touch()
    layout.point(layout.current, GOOD_B)
    layout.status_file.write_text(json.dumps({"state": "switching", "from": GOOD_A, "to": GOOD_B, "update_id": "x"}))
    updater = Updater(layout, ProcService(layout, tmp_path / "c", tmp_path), tmp_path, log_file=tmp_path / "u.jsonl")
    assert updater.recover() == GOOD_A
    assert layout.version_of(layout.current) == GOOD_A
    assert updater.recover() is None  # once


@pytest.mark.timeout(600)
def test_tampered_release_is_refused(tmp_path: Path, releases: dict[str, Release]) -> None:
    release = tmp_path / "rel"
    shutil.copytree(releases[GOOD_B].path, release)
    wheel = next(release.glob("kiosk-*.whl"))
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    from kiosk.ops.update import UpdateError

    with pytest.raises(UpdateError, match="sha256"):
        load_release(release)


@pytest.mark.timeout(600)
def test_signed_release(tmp_path: Path, releases: dict[str, Release]) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from kiosk.ops.update import UpdateError

    key = Ed25519PrivateKey.generate()
    (tmp_path / "release.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    (tmp_path / "fleet.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    release = tmp_path / "rel"
    release.mkdir()
    for wheel in releases[GOOD_B].path.glob("*.whl"):
        os.link(wheel, release / wheel.name)
    write_manifest(release, tmp_path / "release.key")
    assert load_release(release, tmp_path / "fleet.pub", require_signature=True).version == GOOD_B
    with pytest.raises(UpdateError, match="must be signed"):
        load_release(release, None, require_signature=True)
    other = Ed25519PrivateKey.generate().public_key()
    (tmp_path / "other.pub").write_bytes(other.public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(UpdateError, match="does not verify"):
        load_release(release, tmp_path / "other.pub")
