"""sd_notify, the health-gated watchdog, journald's native protocol, and the daemon's use of them.

A real AF_UNIX datagram socket stands in for systemd's $NOTIFY_SOCKET and for journald's socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiosk.ops.logs import JournaldHandler, StderrPriorityFormatter, encode_fields, sale_context
from kiosk.ops.notify import Notifier
from kiosk.ops.state import read_state
from kiosk.ops.watchdog import Watchdog, task_check
from kiosk.payments.sandbox import SandboxGateway


class Listener:
    """Collects datagrams with the time they arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data))

    def texts(self) -> list[str]:
        return [m.decode() for _, m in self.messages]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[Listener]:
    listener = Listener(tmp_path / "notify")
    yield listener
    listener.close()


def wait(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_notifier_sends_one_datagram_per_message(notify_socket: Listener) -> None:
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(notify_socket.path)})
    assert notifier.ready("kiosk 1.0 ready")
    assert notifier.watchdog()
    assert notifier.stopping()
    wait(lambda: len(notify_socket.messages) == 3)
    ready, ping, stopping = notify_socket.texts()
    assert ready.splitlines()[:2] == ["READY=1", "STATUS=kiosk 1.0 ready"]
    assert ping == "WATCHDOG=1"
    assert stopping.startswith("STOPPING=1\n")


def test_notifier_abstract_socket_and_no_socket() -> None:
    name = f"kiosk-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert Notifier(environ={"NOTIFY_SOCKET": "@" + name}).status("hello\nworld")
        assert sock.recv(100) == b"STATUS=hello world"  # a newline would start a new field
    silent = Notifier(environ={})
    assert not silent.enabled and not silent.watchdog()


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_our_pid() -> None:
    ours = Notifier(environ={"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
    assert ours.watchdog_interval_s() == 30
    assert Watchdog(ours, []).period_s == 15
    theirs = Notifier(environ={"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
    assert theirs.watchdog_interval_s() is None


async def test_pings_stop_while_the_event_loop_is_blocked(notify_socket: Listener) -> None:
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(notify_socket.path)})
    watchdog = Watchdog(notifier, [], interval_s=0.05)
    watchdog.start()
    try:
        await asyncio.sleep(0.5)
        assert len(notify_socket.messages) >= 5
        blocked_from = time.monotonic()
        time.sleep(1.0)  # noqa: ASYNC251 - the point: a stuck call on the loop, nothing else runs
        blocked_until = time.monotonic()
        await asyncio.sleep(0.3)
    finally:
        await watchdog.stop()
    during = [t for t, m in notify_socket.messages if m == b"WATCHDOG=1" and blocked_from + 0.01 < t < blocked_until]
    after = [t for t, m in notify_socket.messages if m == b"WATCHDOG=1" and t > blocked_until]
    assert during == [], "no ping while the loop was blocked"
    assert after, "pings resume once the loop runs again"
    assert watchdog.max_lag_s >= 0.9


async def test_pings_stop_when_a_critical_task_fails(notify_socket: Listener) -> None:
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(notify_socket.path)})

    async def link() -> None:
        await asyncio.sleep(0.3)
        raise ConnectionError("broker gone mad")

    task = asyncio.create_task(link(), name="fleet-link")
    watchdog = Watchdog(notifier, [task_check(task, "fleet-link")], interval_s=0.05)  # type: ignore[arg-type]
    watchdog.start()
    await asyncio.sleep(0.8)
    await watchdog.stop()
    pings = [t for t, m in notify_socket.messages if m == b"WATCHDOG=1"]
    failed_at = next(t for t, m in notify_socket.messages if m.startswith(b"STATUS=unhealthy"))
    assert pings and all(t < failed_at for t in pings)
    statuses = [m for _, m in notify_socket.messages if m.startswith(b"STATUS=")]
    assert statuses == [b"STATUS=unhealthy: fleet-link failed: ConnectionError: broker gone mad"]
    assert watchdog.unhealthy is not None


# ---------------------------------------------------------------- journald


def decode_fields(data: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            fields[key.decode()] = value.decode()
            i = nl + 1
        else:
            (size,) = struct.unpack("<Q", data[nl + 1 : nl + 9])
            fields[line.decode()] = data[nl + 9 : nl + 9 + size].decode()
            i = nl + 9 + size + 1
    return fields


def test_journald_native_fields_with_sale_ids(tmp_path: Path) -> None:
    journal = Listener(tmp_path / "journal")
    handler = JournaldHandler(journal.path)
    logger = logging.getLogger("kiosk.test.journald")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        logger.warning("order %s: query outcome unknown", "K261121121503abcdef012345")
        with sale_context("K261121121504aaaaaaaaaaaa"):
            logger.info("relay 17 on")
        logger.error("two\nlines", extra={"sale_id": "K261121121505bbbbbbbbbbbb", "journal": {"slot_id": "A1"}})
        wait(lambda: len(journal.messages) == 3)
    finally:
        logger.removeHandler(handler)
        handler.close()
        journal.close()
    first, second, third = (decode_fields(m) for _, m in journal.messages)
    assert first["SALE_ID"] == "K261121121503abcdef012345" and first["PRIORITY"] == "4"
    assert first["SYSLOG_IDENTIFIER"] == "kiosk" and first["LOGGER"] == "kiosk.test.journald"
    assert second["SALE_ID"] == "K261121121504aaaaaaaaaaaa" and second["PRIORITY"] == "6"
    assert third["MESSAGE"] == "two\nlines" and third["SLOT_ID"] == "A1" and third["PRIORITY"] == "3"
    assert third["SALE_ID"] == "K261121121505bbbbbbbbbbbb"
    assert encode_fields({"A": "x\ny"}) == b"A\n" + struct.pack("<Q", 3) + b"x\ny\n"


def test_journald_unreachable_falls_back_to_stderr_with_priority(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = JournaldHandler(tmp_path / "no-such-socket")
    record = logging.LogRecord(
        "kiosk.x", logging.ERROR, __file__, 1, "order %s failed", ("K261121121503abcdef012345",), None
    )
    handler.emit(record)
    handler.close()
    assert capsys.readouterr().err == "<3>kiosk.x: order K261121121503abcdef012345 failed\n"
    formatted = StderrPriorityFormatter().format(logging.LogRecord("k", logging.INFO, "", 1, "hi", (), None))
    assert formatted == "<6>k: hi"


# ---------------------------------------------------------------- the daemon under a fake service manager

CONFIG = """
[device]
id = "notify-kiosk"
fleet = "test"

[selection]
mode = "buttons"

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

[display]
type = "png"
dir = "{state}/frames"
width = 480
height = 320

[journal]
path = "{state}/journal.sqlite"

[outbox]
path = "{state}/outbox.sqlite"
"""


def test_daemon_sends_ready_watchdog_and_stopping(tmp_path: Path, notify_socket: Listener) -> None:
    sandbox = SandboxGateway(keys_dir=tmp_path / "keys")
    url = sandbox.start()
    runtime = tmp_path / "run"
    runtime.mkdir()
    config = tmp_path / "kiosk.toml"
    config.write_text(CONFIG.format(gateway=url + "/gateway.do", keys=tmp_path / "keys", state=tmp_path))
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "600000",
           "RUNTIME_DIRECTORY": str(runtime), "PYTHONUNBUFFERED": "1"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "kiosk", "run", "--config", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait(lambda: any(t.startswith("READY=1") for t in notify_socket.texts()) or proc.poll() is not None, 30)
        assert proc.poll() is None, proc.communicate()[0]
        wait(lambda: notify_socket.texts().count("WATCHDOG=1") >= 3, 10)
        state = read_state(runtime)
        assert state is not None and state.ready and state.healthy and state.self_test_ok
        assert state.pid == proc.pid and not state.sale_in_progress
        ready = next(t for t in notify_socket.texts() if t.startswith("READY=1"))
        assert f"MAINPID={proc.pid}" in ready and "STATUS=kiosk" in ready
        # A stopped process (a hung loop looks the same from outside) sends nothing.
        proc.send_signal(signal.SIGSTOP)
        count = len(notify_socket.messages)
        time.sleep(1.0)
        assert len(notify_socket.messages) == count
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        sandbox.stop()
    assert proc.returncode == 0, output
    assert any(t.startswith("STOPPING=1") for t in notify_socket.texts())
    final = json.loads((runtime / "state.json").read_text())
    assert final["stopping"] and not final["ready"]
