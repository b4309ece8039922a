"""Safe app-level updates: versioned venvs side by side, an atomic switch, a health gate, rollback.

    /opt/kiosk/versions/<version>/   one venv per installed version
    /opt/kiosk/current  -> versions/<v>   what kiosk.service runs (ExecStart=/opt/kiosk/current/bin/kiosk)
    /opt/kiosk/previous -> versions/<u>   what a rollback returns to
    /opt/kiosk/update-status.json    the update in flight, so a reboot in the middle rolls back

A release is a directory of wheels (the kiosk's and every dependency's) with `manifest.json`
(version and sha256 of each wheel), optionally signed (`manifest.sig`, Ed25519, by the fleet key).
Steps, each reported as an event (log, update.jsonl, and the fleet outbox):

 1. verify    the manifest, every hash and the signature; refuse the running version and downgrades
 2. install   a new venv from those wheels only (pip --no-index --require-hashes); the new version
              must print its version and accept this device's config (`kiosk config check`)
 3. wait      hold the kiosk: the daemon starts no new sale; wait until no sale is in progress
 4. switch    `current` is replaced by rename(2), never rewritten in place (`ln -sf` is not atomic)
 5. restart   the service
 6. gate      within the deadline the new process must be ready, healthy, self-tested and, when a
              broker is configured, connected, and stay so for a settling time
 7. commit    keep it (and one previous version); or roll back: switch back, restart, report
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from kiosk.ops.state import RuntimeState, read_state, release_hold, request_hold, write_atomically

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
STATUS_FILE = "update-status.json"
DEFAULT_BASE = Path("/opt/kiosk")
HOLD_REASON = "update"
_WHEEL = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)-[^-]+-[^-]+-[^-]+\.whl$")


class UpdateError(Exception):
    """The update cannot go on; the running version is untouched (or was restored)."""


# ---------------------------------------------------------------- versions


def version_key(version: str) -> tuple[Any, ...]:
    """Orders 0.9.0 < 0.10.0 < 1.0.0; pre-release suffixes sort before the release."""
    parts: list[Any] = []
    for piece in re.split(r"[.+-]", version):
        match = re.match(r"^(\d+)(.*)$", piece)
        if match:
            parts.append((1, int(match.group(1)), match.group(2) == "", match.group(2)))
        else:
            parts.append((0, 0, False, piece))
    return tuple(parts)


def wheel_name_version(filename: str) -> tuple[str, str]:
    match = _WHEEL.match(filename)
    if not match:
        raise UpdateError(f"{filename} is not a wheel file name")
    return match.group("name").replace("_", "-").lower(), match.group("version")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- releases


@dataclass(frozen=True)
class Release:
    path: Path
    version: str
    wheels: dict[str, str]  # file name -> sha256

    @property
    def requirements(self) -> str:
        lines = []
        for filename, digest in sorted(self.wheels.items()):
            name, version = wheel_name_version(filename)
            lines.append(f"{name}=={version} --hash=sha256:{digest}")
        return "\n".join(lines) + "\n"


def write_manifest(release_dir: Path, signing_key: Path | None = None) -> Release:
    """For the release build: hash every wheel in the directory, find the kiosk's version."""
    wheels = {p.name: sha256_file(p) for p in sorted(release_dir.glob("*.whl"))}
    versions = [wheel_name_version(n)[1] for n in wheels if wheel_name_version(n)[0] == "kiosk"]
    if len(versions) != 1:
        raise UpdateError(f"{release_dir}: expected exactly one kiosk wheel, found {len(versions)}")
    data = json.dumps({"format": 1, "version": versions[0], "wheels": wheels}, indent=2, sort_keys=True) + "\n"
    (release_dir / MANIFEST).write_text(data, encoding="utf-8")
    if signing_key is not None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = serialization.load_pem_private_key(signing_key.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise UpdateError(f"{signing_key} is not an Ed25519 private key")
        (release_dir / SIGNATURE).write_bytes(key.sign(data.encode()))
    return Release(release_dir, versions[0], wheels)


def load_release(release_dir: Path, public_key: Path | None = None, *, require_signature: bool = False) -> Release:
    manifest_path = release_dir / MANIFEST
    try:
        raw = manifest_path.read_bytes()
        data = json.loads(raw)
        version, wheels = str(data["version"]), dict(data["wheels"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UpdateError(f"{manifest_path}: not a release manifest ({exc})") from None
    if public_key is not None:
        _verify_signature(raw, release_dir / SIGNATURE, public_key)
    elif require_signature:
        raise UpdateError("this update must be signed, but no fleet public key is configured (fleet.public_key_file)")
    for filename, digest in wheels.items():
        if "/" in filename or not (release_dir / filename).is_file():
            raise UpdateError(f"{filename}: listed in the manifest but not in {release_dir}")
        if sha256_file(release_dir / filename) != digest:
            raise UpdateError(f"{filename}: sha256 does not match the manifest")
    kiosk = [wheel_name_version(n)[1] for n in wheels if wheel_name_version(n)[0] == "kiosk"]
    if kiosk != [version]:
        raise UpdateError(f"{manifest_path}: version {version} but kiosk wheel(s) {kiosk}")
    return Release(release_dir, version, wheels)


def _verify_signature(data: bytes, signature_path: Path, public_key: Path) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(public_key.read_bytes())
        signature = signature_path.read_bytes()
    except (OSError, ValueError) as exc:
        raise UpdateError(f"cannot check the release signature: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UpdateError(f"{public_key} is not an Ed25519 public key")
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise UpdateError("the release manifest's signature does not verify with the fleet key") from None


# ---------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    base: Path = DEFAULT_BASE

    @property
    def versions(self) -> Path:
        return self.base / "versions"

    @property
    def current(self) -> Path:
        return self.base / "current"

    @property
    def previous(self) -> Path:
        return self.base / "previous"

    @property
    def status_file(self) -> Path:
        return self.base / STATUS_FILE

    def venv(self, version: str) -> Path:
        return self.versions / version

    def version_of(self, link: Path) -> str | None:
        try:
            target = os.readlink(link)
        except OSError:
            return None
        return Path(target).name

    def point(self, link: Path, version: str) -> None:
        """Atomically make `link` point at versions/<version>: a new symlink renamed over the old."""
        tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}")
        os.symlink(Path("versions") / version, tmp)
        os.replace(tmp, link)
        fd = os.open(link.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def installed(self) -> list[str]:
        if not self.versions.is_dir():
            return []
        return sorted((p.name for p in self.versions.iterdir() if (p / "bin/kiosk").exists()), key=version_key)


# ---------------------------------------------------------------- installing a venv


def install_venv(
    layout: Layout,
    release: Release,
    *,
    base_python: str | None = None,
    pip_python: str | None = None,
    timeout_s: float = 900,
) -> Path:
    """A fresh venv for the release's version from its wheels only; removed again if anything fails.

    Created in place (a venv's scripts name their absolute path, so it cannot be built elsewhere and
    moved); a `.installing` marker says it is not complete until the end.
    """
    target = layout.venv(release.version)
    layout.versions.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)  # a leftover of an interrupted or failed attempt; never the current one
    base = base_python or f"{sys.base_prefix}/bin/python3"
    # pip from the running (current) version installs into the new venv: faster than bootstrapping
    # a new pip, and the release decides whether the new venv carries pip itself.
    runner = pip_python or (sys.executable if _has_pip(sys.executable) else None)
    try:
        target.mkdir()
        (target / ".installing").touch()
        venv_args = [base, "-m", "venv", *(["--without-pip"] if runner else []), str(target)]
        _run(venv_args, "create the venv", timeout_s)
        (target / ".installing").touch()
        new_python = str(target / "bin/python")
        pip = [runner, "-m", "pip", "--python", new_python] if runner else [new_python, "-m", "pip"]
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as reqs:
            reqs.write(release.requirements)
        try:
            _run(
                [*pip, "install", "--quiet", "--no-index", "--no-cache-dir", "--disable-pip-version-check",
                 "--find-links", str(release.path), "--require-hashes", "--only-binary=:all:", "-r", reqs.name],
                "install the wheels",
                timeout_s,
            )
        finally:
            os.unlink(reqs.name)
        (target / ".installing").unlink()
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _has_pip(python: str) -> bool:
    result = subprocess.run([python, "-c", "import pip"], capture_output=True, check=False)
    return result.returncode == 0


def _run(args: list[str], what: str, timeout_s: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs)
    except subprocess.TimeoutExpired:
        raise UpdateError(f"could not {what}: no answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise UpdateError(f"could not {what}: {exc}") from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise UpdateError(f"could not {what} (exit {result.returncode}): " + " | ".join(tail))
    return result


def preflight(venv: Path, version: str, config_path: Path | None, *, run_as: str | None = None) -> None:
    """Before switching: the new version runs, says it is `version`, and accepts this device's config.

    Run as the kiosk user (not root) when the updater is root: the new code is not trusted yet.
    """
    user: dict[str, Any] = {"user": run_as} if run_as else {}
    kiosk = str(venv / "bin/kiosk")
    out = _run([kiosk, "--version"], "run the new version", 120, **user).stdout.strip()
    if out != f"kiosk {version}":
        raise UpdateError(f"the new venv says {out!r}, expected 'kiosk {version}'")
    if config_path is not None:
        _run([kiosk, "config", "check", str(config_path)], f"check {config_path} with the new version", 120, **user)


# ---------------------------------------------------------------- the service and the daemon's state


class ServiceControl(Protocol):
    def restart(self) -> None: ...


@dataclass
class SystemdService:
    unit: str = "kiosk.service"

    def restart(self) -> None:
        # --no-block: the health gate below decides, not systemctl's own start timeout.
        _run(["systemctl", "restart", "--no-block", self.unit], f"restart {self.unit}", 60)


# ---------------------------------------------------------------- events


@dataclass
class Reporter:
    """Each step as an event: to the log (journald), to a JSON-lines file, and to the fleet outbox."""

    update_id: str
    from_version: str | None
    to_version: str
    log_file: Path | None = None
    outbox: Callable[[dict[str, object]], None] | None = None
    events: list[dict[str, object]] = field(default_factory=list)

    def __call__(self, step: str, ok: bool = True, detail: str = "") -> None:
        event: dict[str, object] = {
            "update_id": self.update_id,
            "step": step,
            "ok": ok,
            "from": self.from_version,
            "to": self.to_version,
            "detail": detail,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        self.events.append(event)
        fields = {"UPDATE_ID": self.update_id, "UPDATE_STEP": step, "UPDATE_TO": self.to_version}
        log.log(
            logging.INFO if ok else logging.ERROR,
            "update %s -> %s: %s%s", self.from_version, self.to_version, step, f": {detail}" if detail else "",
            extra={"journal": fields},
        )
        if self.log_file is not None:
            try:
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                with self.log_file.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(event, sort_keys=True) + "\n")
            except OSError as exc:
                log.warning("cannot append to %s: %s", self.log_file, exc)
        if self.outbox is not None:
            try:
                self.outbox(event)
            except Exception as exc:  # the fleet report must never stop a rollback
                log.warning("cannot queue the update event for the fleet: %s", exc)


def outbox_sink(config_path: Path) -> Callable[[dict[str, object]], None] | None:
    """Events into the daemon's outbox (SQLite takes a second writer); None if there is none yet."""
    from kiosk.config import ConfigError, load_config
    from kiosk.fleet.outbox import Outbox
    from kiosk.fleet.topics import Topics

    try:
        config = load_config(config_path)
    except ConfigError:
        return None
    if not config.outbox.path.exists():
        return None
    topics = Topics(config.mqtt.topic_prefix, config.device.fleet, config.device.id)

    def put(event: dict[str, object]) -> None:
        outbox = Outbox(config.outbox.path, topics)
        try:
            outbox.put_event("update", event, money=False)
        finally:
            outbox.close()

    return put


# ---------------------------------------------------------------- the updater


@dataclass
class Gate:
    deadline_s: float = 120.0  # from restart to healthy
    settle_s: float = 10.0  # healthy for this long in a row
    need_broker: bool = False
    idle_timeout_s: float = 1800.0  # how long to wait for a sale to end before giving up
    poll_s: float = 0.5


@dataclass
class Outcome:
    ok: bool
    version: str  # the version running at the end
    detail: str
    events: list[dict[str, object]]


class Updater:
    def __init__(
        self,
        layout: Layout,
        service: ServiceControl,
        runtime_dir: Path,
        *,
        gate: Gate | None = None,
        config_path: Path | None = None,
        log_file: Path | None = None,
        outbox: Callable[[dict[str, object]], None] | None = None,
        base_python: str | None = None,
        run_as: str | None = None,
        allow_downgrade: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.layout = layout
        self.service = service
        self.runtime_dir = runtime_dir
        self.gate = gate or Gate()
        self.config_path = config_path
        self.log_file = log_file
        self.outbox = outbox
        self.base_python = base_python
        self.run_as = run_as
        self.allow_downgrade = allow_downgrade
        self._clock = clock
        self._sleep = sleep

    # ------------------------------------------------------------ entry points

    def update(self, release: Release) -> Outcome:
        layout = self.layout
        current = layout.version_of(layout.current)
        report = Reporter(uuid.uuid4().hex[:12], current, release.version, self.log_file, self.outbox)
        report("requested", detail=f"release {release.path}")
        try:
            self._check_versions(current, release.version)
            report("verified", detail=f"{len(release.wheels)} wheel(s), hashes match")
            self._status("installing", current, release.version, report.update_id)
            venv = install_venv(layout, release, base_python=self.base_python)
            preflight(venv, release.version, self.config_path, run_as=self.run_as)
            report("installed", detail=str(venv))
        except UpdateError as exc:
            report("failed", ok=False, detail=str(exc))
            self._status("failed", current, release.version, report.update_id, str(exc))
            return Outcome(False, current or "", str(exc), report.events)

        with self._held():
            if not self._wait_idle(report):
                detail = f"a sale was still in progress after {self.gate.idle_timeout_s:g} s; try again later"
                report("deferred", ok=False, detail=detail)
                self._status("deferred", current, release.version, report.update_id, detail)
                return Outcome(False, current or "", detail, report.events)
            old = read_state(self.runtime_dir)
            self._status("switching", current, release.version, report.update_id)
            if current is not None:
                layout.point(layout.previous, current)
            layout.point(layout.current, release.version)
            report("switched", detail=f"current -> versions/{release.version}")
            self.service.restart()
            report("restarted")
            healthy, why = self._health_gate(release.version, old.pid if old else None)
        if healthy:
            report("healthy", detail=why)
            self._status("committed", current, release.version, report.update_id)
            self._prune(keep={release.version, current})
            report("committed")
            return Outcome(True, release.version, why, report.events)

        report("unhealthy", ok=False, detail=why)
        if current is None:
            self._status("failed", current, release.version, report.update_id, why)
            return Outcome(False, release.version, why + "; no previous version to return to", report.events)
        restored = self._roll_back(current, release.version, report, why)
        return Outcome(False, current, why if restored else why + "; the rollback is not healthy either", report.events)

    def recover(self) -> str | None:
        """At boot, before the service starts: an update switched but never committed is undone."""
        status = self._read_status()
        if status is None or status.get("state") != "switching":
            return None
        previous, new = status.get("from"), status.get("to")
        current = self.layout.version_of(self.layout.current)
        if previous and current == new and (self.layout.venv(previous) / "bin/kiosk").exists():
            self.layout.point(self.layout.current, previous)
            report = Reporter(str(status.get("update_id", "")), previous, str(new), self.log_file, self.outbox)
            report("rolled_back", ok=False, detail="the device restarted before the update passed its health gate")
            self._status("rolled_back", previous, str(new), report.update_id, "restart during the health gate")
            return str(previous)
        return None

    # ------------------------------------------------------------ steps

    def _check_versions(self, current: str | None, new: str) -> None:
        if current == new:
            raise UpdateError(f"version {new} is already running")
        if current is not None and version_key(new) < version_key(current) and not self.allow_downgrade:
            raise UpdateError(f"{new} is older than the running {current}; refusing a silent downgrade")

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        try:
            yield
        finally:
            release_hold(self.runtime_dir)

    def _hold(self) -> None:
        """(Re)write the hold: the daemon ignores a stale one, and a restart empties /run/kiosk."""
        if self.runtime_dir.is_dir():
            with contextlib.suppress(OSError):
                request_hold(self.runtime_dir, HOLD_REASON)

    def _wait_idle(self, report: Reporter) -> bool:
        end = self._clock() + self.gate.idle_timeout_s
        announced = False
        while True:
            self._hold()
            state = read_state(self.runtime_dir)
            if state is None or not _alive(state) or not state.sale_in_progress:
                if announced:
                    report("idle", detail="the sale ended; no new sale will start")
                return True
            if not announced:
                report("waiting", detail=f"sale {state.sale_id} in progress; waiting for it to end")
                announced = True
            if self._clock() >= end:
                return False
            self._sleep(self.gate.poll_s)

    def _health_gate(self, version: str, old_pid: int | None) -> tuple[bool, str]:
        end = self._clock() + self.gate.deadline_s
        healthy_since: float | None = None
        last = "no state from the new process yet"
        while self._clock() < end:
            self._hold()  # the new version sells only once it has passed
            state = read_state(self.runtime_dir)
            problem = self._problem(state, version, old_pid)
            if problem is None:
                assert state is not None
                healthy_since = healthy_since or self._clock()
                if self._clock() - healthy_since >= self.gate.settle_s:
                    broker = ", broker connected" if self.gate.need_broker else ""
                    return True, f"ready, self-test ok{broker} (pid {state.pid})"
            else:
                healthy_since = None
                last = problem
            self._sleep(self.gate.poll_s)
        return False, f"not healthy within {self.gate.deadline_s:g} s: {last}"

    def _problem(self, state: RuntimeState | None, version: str, old_pid: int | None) -> str | None:
        if state is None:
            return "no state from the new process yet"
        if state.pid == old_pid or state.version != version:
            return f"still the old process ({state.version}, pid {state.pid})"
        if not _alive(state):
            return f"process {state.pid} is gone"
        if not state.ready:
            return "not ready"
        if not state.healthy:
            return f"unhealthy: {state.unhealthy_reason}"
        if not state.self_test_ok:
            failed = [c["name"] for c in state.self_test.get("checks", []) if not c.get("ok")]
            return f"self-test failed: {', '.join(failed)}"
        if self.gate.need_broker and state.broker != "connected":
            return f"broker {state.broker}"
        return None

    def _roll_back(self, good: str, bad: str, report: Reporter, why: str) -> bool:
        report("rolling_back", ok=False, detail=f"back to {good}")
        with self._held():
            self._wait_idle(report)  # the gate held the new version, but a sale may have slipped in
            bad_state = read_state(self.runtime_dir)
            self.layout.point(self.layout.current, good)
            self.service.restart()
            healthy, detail = self._health_gate(good, bad_state.pid if bad_state else None)
        self._status("rolled_back", good, bad, report.update_id, why)
        report("rolled_back", ok=healthy, detail=detail)
        shutil.rmtree(self.layout.venv(bad), ignore_errors=True)
        return healthy

    def _prune(self, keep: set[str | None]) -> None:
        for version in self.layout.installed():
            if version not in keep:
                shutil.rmtree(self.layout.venv(version), ignore_errors=True)

    # ------------------------------------------------------------ persistent status

    def _status(self, state: str, current: str | None, new: str, update_id: str, detail: str = "") -> None:
        data = {"state": state, "from": current, "to": new, "update_id": update_id, "detail": detail,
                "at": datetime.now(UTC).isoformat(timespec="seconds")}
        self.layout.base.mkdir(parents=True, exist_ok=True)
        write_atomically(self.layout.status_file, json.dumps(data, indent=2) + "\n")

    def _read_status(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.layout.status_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data


def _alive(state: RuntimeState) -> bool:
    """Is the process that wrote this state still there? (The updater runs as root: it may look.)"""
    try:
        os.kill(state.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not state.stopping


# ---------------------------------------------------------------- queued requests (fleet command)

QUEUE_REQUEST = "request.json"


def queue_update(updates_dir: Path, version: str) -> Path:
    """For the daemon's fleet command handler: ask for the release already placed in
    <updates_dir>/<version>/. A root path unit (kiosk-update.path) notices the request and runs
    `kiosk update apply-queued`; the daemon itself never replaces its own code."""
    if not (updates_dir / version / MANIFEST).is_file():
        raise UpdateError(f"no release at {updates_dir / version}")
    request = updates_dir / QUEUE_REQUEST
    write_atomically(request, json.dumps({"version": version}) + "\n")
    return request


def take_queued(updates_dir: Path) -> Path | None:
    """The release dir of the queued request, which is consumed (a failed update is not retried)."""
    request = updates_dir / QUEUE_REQUEST
    try:
        version = str(json.loads(request.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        with contextlib.suppress(OSError):
            request.unlink()
        return None
    request.unlink()
    if not re.fullmatch(r"[A-Za-z0-9_.!+-]+", version):
        raise UpdateError(f"bad version in the request: {version!r}")
    return updates_dir / version
