"""A real Mosquitto broker for tests: generated config, free port on 127.0.0.1, start/stop/restart.

Tests use the broker the firmware will meet in the field rather than a mock, so QoS 1 acks,
retained messages and Last Will behave as they really do.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO_FALLBACK = "/usr/sbin/mosquitto"


class MosquittoMissing(RuntimeError):
    pass


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or (MOSQUITTO_FALLBACK if os.access(MOSQUITTO_FALLBACK, os.X_OK) else None)
    if found is None:
        raise MosquittoMissing(
            "mosquitto is not installed (looked on PATH and at /usr/sbin/mosquitto); the fleet tests "
            "need a real broker: apt-get install mosquitto"
        )
    return found


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it; it may be reused, but rarely is)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """One broker process on 127.0.0.1:<port>. start() and stop() may be repeated (same port)."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, port: int | None = None, extra_config: str = "") -> None:
        self.binary = find_mosquitto()
        self.workdir = workdir
        self.port = free_port() if port is None else port
        self.extra_config = extra_config
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"
        self.config_path = workdir / "mosquitto.conf"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
            "log_type all",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto would switch to user "mosquitto", who may not read our tmp dir.
            lines.append("user root")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join(lines) + "\n" + self.extra_config + "\n")

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        self._write_config()
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout_s
        while not port_accepts(self.host, self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not listen on {self.port} in {timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
