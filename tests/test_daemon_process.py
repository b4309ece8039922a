"""The real `kiosk run` process: clean SIGTERM, and SIGKILL mid-delivery followed by recovery.

Single-product mode starts a sale by itself, so the daemon needs no button presses from outside.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kiosk.payments.sandbox import SandboxGateway

CONFIG = """
[device]
id = "proc-kiosk"
fleet = "test"

[selection]
mode = "single"
payment_timeout_s = 60
result_screen_s = 0.5

[[catalog.slots]]
id = "W1"
names = {{ en = "Car wash", "zh-Hans" = "洗车" }}
price = 500
currency = "USD"
relay = 23
delivery = {{ mode = "hold", s = {hold_s} }}

[payments]
provider = "alipay"

[payments.alipay]
gateway_url = "{gateway}"
app_id = "2021000000000001"
app_private_key_file = "{keys}/app_private_key.pem"
alipay_public_key_file = "{keys}/gateway_public_key.pem"
poll_interval_s = 0.3

[display]
dir = "{state}/frames"
width = 480
height = 320

[journal]
path = "{state}/journal.sqlite"

[outbox]
path = "{state}/outbox.sqlite"

[recovery]
paid_undelivered = "refund"
"""


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[SandboxGateway, str]]:
    sandbox = SandboxGateway(keys_dir=tmp_path / "keys")
    url = sandbox.start()
    yield sandbox, url + "/gateway.do"
    sandbox.stop()


def write_config(tmp_path: Path, gateway_url: str, hold_s: float) -> Path:
    path = tmp_path / "kiosk.toml"
    path.write_text(CONFIG.format(gateway=gateway_url, keys=tmp_path / "keys", state=tmp_path, hold_s=hold_s))
    return path


def start_daemon(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kiosk", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def journal_states(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "journal.sqlite"
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        try:
            return dict(db.execute("SELECT order_id, state FROM sales").fetchall())
        except sqlite3.OperationalError:
            return {}


def wait_until(condition: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen[str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited ({proc.returncode}) while waiting for {what}:\n{proc.stdout.read()}")  # type: ignore[union-attr]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}:\n{proc.communicate()[0]}")


def test_sigterm_closes_the_unpaid_order_and_exits_cleanly(tmp_path: Path, gateway: Any) -> None:
    sandbox, url = gateway
    sandbox.set_behaviour("never_pays", for_next="default")
    proc = start_daemon(write_config(tmp_path, url, hold_s=0.2))
    order_id = wait_until(lambda: next(iter(journal_states(tmp_path)), None), 20, "a sale to start", proc)
    wait_until(lambda: journal_states(tmp_path)[order_id] == "awaiting_payment", 20, "the QR", proc)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, output
    assert journal_states(tmp_path)[order_id] == "cancelled"
    view = next(o for o in sandbox.orders() if o["out_trade_no"] == order_id)
    assert view["closed"] and not view["paid"]


def test_sigkill_during_delivery_is_refunded_once_after_restart(tmp_path: Path, gateway: Any) -> None:
    sandbox, url = gateway
    sandbox.set_behaviour("pays", scan_delay_s=0.1, pay_delay_s=0.3, for_next=1)
    sandbox.set_behaviour("never_pays", for_next="default")
    config = write_config(tmp_path, url, hold_s=30)
    proc = start_daemon(config)
    order_id = wait_until(
        lambda: next((o for o, s in journal_states(tmp_path).items() if s == "delivering"), None),
        30, "the relay to be held", proc,
    )
    proc.kill()  # power cut while the relay is held: delivery unknown
    proc.wait(10)
    assert journal_states(tmp_path)[order_id] == "delivering"

    restarted = start_daemon(config)
    try:
        wait_until(lambda: journal_states(tmp_path).get(order_id) == "refunded", 30, "recovery to refund", restarted)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.communicate(timeout=20)
    view = next(o for o in sandbox.orders() if o["out_trade_no"] == order_id)
    assert view["paid"] and view["refunded_minor"] == 500
    assert view["refund_requests"] == [f"{order_id}R1"]
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        notes = [n for (n,) in db.execute("SELECT note FROM sale_events WHERE order_id=?", (order_id,)) if n]
    assert any('"policy": "refund"' in n for n in notes), "the recovery choice is journaled"
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM outbox")]
    assert "refund" in kinds and "recovery" in kinds
