"""`kiosk demo`: the newcomer's first command sells three times, refunds one, and shows it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from PIL import Image


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiosk", "demo", *args], capture_output=True, text=True, timeout=240, check=False
    )


def test_demo_sells_three_refunds_one_and_writes_the_frames(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    result = run_demo("--sales", "3", "--frames", str(frames))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "sales:     3" in out and "paid:      3" in out
    assert "delivered: 2" in out and "refunded:  1" in out
    # sale, sale, refund, plus the events derived for operators (delivery_failed for the jam)
    assert re.search(r"events:    \d+ queued in the outbox \(no broker configured", out)
    for kind in ("idle", "pay", "confirming", "delivering", "thank_you", "refunded"):
        assert list(frames.glob(f"*-{kind}.png")), f"no {kind} frame"
    with Image.open(next(frames.glob("*-pay.png"))) as frame:
        assert frame.size == (800, 480)


def test_demo_publishes_its_events_to_a_broker(tmp_path: Path, mosquitto: Any) -> None:
    result = run_demo("--sales", "2", "--frames", str(tmp_path / "frames"), "--mqtt", mosquitto.url)
    assert result.returncode == 0, result.stdout + result.stderr
    # the sales and refunds, plus telemetry and the events derived for operators
    assert re.search(rf"events:    \d+ delivered to {re.escape(mosquitto.url)}, 0 queued", result.stdout)
