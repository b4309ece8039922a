"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET per message.

The protocol is stable (systemd.io/PORTABILITY_AND_STABILITY); this follows systemd's own
self-contained example (man/notify-selfcontained-example.py, MIT-0). Outside systemd (no
$NOTIFY_SOCKET) every call is a no-op, so the daemon runs the same in a terminal and in tests.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def _address(path: str) -> str:
    # "@name" is an abstract-namespace socket: the kernel wants a leading NUL instead.
    return "\0" + path[1:] if path.startswith("@") else path


class Notifier:
    """Sends READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 to the service manager, if there is one."""

    def __init__(self, socket_path: str | None = None, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.socket_path = socket_path if socket_path is not None else env.get("NOTIFY_SOCKET") or None
        self._watchdog_usec = env.get("WATCHDOG_USEC")
        self._watchdog_pid = env.get("WATCHDOG_PID")
        self.sent = 0
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def watchdog_interval_s(self) -> float | None:
        """WatchdogSec= as seconds, when the watchdog is meant for this process; else None."""
        if not self._watchdog_usec:
            return None
        if self._watchdog_pid and self._watchdog_pid != str(os.getpid()):
            return None  # set for another process (e.g. inherited by a child): not ours to ping
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        return usec / 1_000_000 if usec > 0 else None

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` fields as one message; True if it was delivered."""
        if self.socket_path is None:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(_address(self.socket_path))
                sock.sendall(message)
        except OSError as exc:
            if not self._warned:  # once: a broken socket must not flood the log every ping
                log.warning("sd_notify to %s failed: %s", self.socket_path, exc)
                self._warned = True
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={_one_line(status)}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={_one_line(status)}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={_one_line(status)}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start-up (or stop) time, e.g. while recovery talks to a slow provider."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")


def _one_line(text: str) -> str:
    # A newline would start a new KEY=value field.
    return " ".join(text.split())
