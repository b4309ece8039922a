"""The real `kiosk run` process on a real Mosquitto: the Last Will after SIGKILL, a clean offline on
SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker import Mosquitto
from fleet_helpers import recording, validate
from kiosk_harness import sandbox_gateway
from test_daemon_process import CONFIG, start_daemon

from kiosk.fleet.topics import Topics

TOPICS = Topics("kiosk/v1", "test", "proc-kiosk")


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Any]:
    with sandbox_gateway(tmp_path / "keys") as (gateway, url):
        yield gateway, url


def fleet_config(tmp_path: Path, gateway_url: str, broker: Mosquitto, *, will_delay_s: int = 1) -> Path:
    text = CONFIG.format(gateway=gateway_url, keys=tmp_path / "keys", state=tmp_path, hold_s=0.1)
    text += f"""
[mqtt]
url = "{broker.url}"
keepalive_s = 5
will_delay_s = {will_delay_s}
backoff_max_s = 2

[fleet]
telemetry_interval_s = 1
"""
    path = tmp_path / "kiosk.toml"
    path.write_text(text)
    return path


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=30)[0]


async def test_sigkill_leaves_lost_after_the_will_delay_and_sigterm_leaves_offline(
    tmp_path: Path, sandbox: Any, mosquitto: Mosquitto
) -> None:
    gateway, url = sandbox
    gateway.set_behaviour("never_pays", for_next="default")
    config = fleet_config(tmp_path, url, mosquitto)
    async with recording(mosquitto.host, mosquitto.port, TOPICS.status) as rec:
        proc = start_daemon(config)
        try:
            online = await rec.wait_for(lambda s: s.body["state"] == "online", timeout=30, what="online")
            proc.kill()  # a power cut: no DISCONNECT
            proc.wait(10)
            lost = await rec.wait_for(lambda s: s.body["state"] == "lost", timeout=15, what="the Will")
        finally:
            if proc.poll() is None:
                proc.kill()
        validate("status", lost.body)
        assert lost.body["session"] == online.body["session"]

        proc = start_daemon(config)
        try:
            session = lost.body["session"]
            again = await rec.wait_for(lambda s: s.body["state"] == "online" and s.body["session"] > session,
                                       timeout=30, what="online again")
            await asyncio.sleep(1.0)
        finally:
            output = await asyncio.to_thread(stop, proc)
        assert proc.returncode == 0, output
        offline = await rec.wait_for(lambda s: s.body["state"] == "offline", timeout=10, what="offline")
        assert offline.body["session"] == again.body["session"]
        await asyncio.sleep(1.5)  # past the Will Delay: a clean stop sends no Will
        states = [s.body["state"] for s in rec.seen if s.body["session"] == again.body["session"]]
        assert states == ["online", "offline"], states
    async with recording(mosquitto.host, mosquitto.port, TOPICS.status) as rec:
        retained = await rec.wait_for(lambda s: s.retain, what="the retained status")
    assert retained.body["state"] == "offline"
