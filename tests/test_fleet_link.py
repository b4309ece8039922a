"""FleetLink against a real Mosquitto: store-and-forward, lifecycle status, Will, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from broker import Mosquitto

from kiosk.config import MqttConfig
from kiosk.fleet import BrokerAddress, FleetConfigError, FleetLink, MessageClass, Outbox, Topics, parse_mqtt_url

REPO = Path(__file__).resolve().parents[1]
TOPICS = Topics("kiosk/v1", "fleet-a", "k-001")


def make_link(url: str | None, tmp_path: Path, **kwargs: float) -> tuple[FleetLink, Outbox]:
    outbox = Outbox(tmp_path / "outbox.sqlite", TOPICS)
    params: dict[str, float] = {"backoff_initial_s": 0.2, "backoff_max_s": 0.5, "timeout_s": 5.0}
    params.update(kwargs)
    config = MqttConfig(url=url, keepalive_s=5, will_delay_s=0)
    link = FleetLink(config, TOPICS, outbox, client_id="k-001", **params)
    return link, outbox


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Seen:
    topic: str
    body: dict[str, Any]
    retain: bool


class Watcher:
    """A second, independent MQTT client that records everything under the prefix."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    def events(self) -> list[dict[str, Any]]:
        return [s.body for s in self.seen if "/events/" in s.topic]

    def statuses(self) -> list[Seen]:
        return [s for s in self.seen if s.topic == TOPICS.status]

    async def wait_for(self, predicate: Callable[[Seen], bool], timeout: float = 10.0) -> Seen:
        found: list[Seen] = []

        def check() -> bool:
            found[:] = [s for s in self.seen if predicate(s)]
            return bool(found)

        await wait_until(check, timeout, "an MQTT message")
        return found[0]


@contextlib.asynccontextmanager
async def watching(broker: Mosquitto, topic: str = "kiosk/v1/#") -> AsyncIterator[Watcher]:
    watcher = Watcher()
    client = aiomqtt.Client(broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5)
    async with client:
        await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for m in client.messages:
                assert isinstance(m.payload, bytes)
                watcher.seen.append(Seen(str(m.topic), json.loads(m.payload), bool(m.retain)))

        task = asyncio.create_task(collect())
        try:
            yield watcher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def retained_status(broker: Mosquitto) -> dict[str, Any]:
    """What a backend that connects now learns about the device (the retained status)."""
    async with watching(broker, TOPICS.status) as w:
        seen = await w.wait_for(lambda s: s.retain, timeout=5)
    return seen.body


# ---------------------------------------------------------------- url and no-broker mode


def test_parse_mqtt_url() -> None:
    assert parse_mqtt_url("mqtt://broker.example") == parse_mqtt_url("mqtt://broker.example:1883/")
    address = parse_mqtt_url("mqtt://10.0.0.5:8883")
    assert (address.host, address.port, str(address)) == ("10.0.0.5", 8883, "10.0.0.5:8883")
    assert str(parse_mqtt_url("mqtt://[::1]:1884")) == "[::1]:1884"
    assert parse_mqtt_url("mqtts://broker.example") == BrokerAddress("broker.example", 8883, tls=True)
    assert not parse_mqtt_url("mqtt://broker.example").tls


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://broker", "scheme 'http' is not supported"),
        ("broker:1883", "is not supported"),
        ("mqtt://", "has no host"),
        ("mqtt://broker:99999", "not a valid URL"),
        ("mqtt://broker/topic", "no path"),
        ("mqtt://user:s3cret@broker", "must not contain credentials"),
    ],
)
def test_bad_urls_are_rejected_clearly(url: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(FleetConfigError, match=r"mqtt\.url") as info:
        make_link(url, tmp_path)
    assert message in str(info.value)
    assert "s3cret" not in str(info.value)


async def test_without_url_run_returns_and_events_stay_queued(tmp_path: Path) -> None:
    link, outbox = make_link(None, tmp_path)
    outbox.put_event("sale", {"amount": 1}, money=True)
    link.notify()
    await asyncio.wait_for(link.run(), 1)
    await link.aclose()
    assert (outbox.depth(), link.connected, link.delivered) == (1, False, 0)


# ---------------------------------------------------------------- against the broker


async def test_events_queued_while_broker_is_down_are_delivered_once(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory()  # a port number only: nothing listens yet
    # Backoff of 0.75-1.5 s after the first refusal leaves time to subscribe before the link is back.
    link, outbox = make_link(broker.url, tmp_path, backoff_initial_s=1.5, backoff_max_s=1.5)
    ids = [outbox.put_event("sale", {"n": n}, money=True) for n in range(4)]
    ids.append(outbox.put_event("telemetry", {"temp_c": 40}, money=False))
    ids.append(outbox.put_event("refund", {"n": 0}, money=True))
    run = asyncio.create_task(link.run())
    try:
        await wait_until(lambda: link.last_error is not None, what="the first refused connect")
        assert not link.connected
        await asyncio.to_thread(broker.start)
        async with watching(broker) as w:
            await wait_until(lambda: len(w.events()) >= len(ids), what="all queued events")
            await asyncio.sleep(0.5)  # room for a duplicate to show up
            got = w.events()
        assert [e["id"] for e in got] == ids  # each exactly once, oldest first
        assert [e["seq"] for e in got] == [1, 2, 3, 4, 5, 6]
        assert [e["type"] for e in got] == ["sale"] * 4 + ["telemetry", "refund"]
        assert (outbox.depth(), link.delivered, link.connected) == (0, 6, True)
    finally:
        await link.aclose()
        await asyncio.wait_for(run, 5)


async def test_online_status_is_retained(tmp_path: Path, mosquitto: Mosquitto) -> None:
    link, _ = make_link(mosquitto.url, tmp_path)
    run = asyncio.create_task(link.run())
    try:
        await wait_until(lambda: link.connected, what="connection")
        status = await retained_status(mosquitto)
        assert status["state"] == "online"
        assert status["session"] == link.session == 1
        assert status["ts"].endswith("Z")
    finally:
        await link.aclose()
        await asyncio.wait_for(run, 5)


async def test_aclose_leaves_offline_and_no_will(tmp_path: Path, mosquitto: Mosquitto) -> None:
    link, _ = make_link(mosquitto.url, tmp_path)
    run = asyncio.create_task(link.run())
    await wait_until(lambda: link.connected, what="connection")
    async with watching(mosquitto, TOPICS.status) as w:
        await link.aclose()
        await asyncio.wait_for(run, 1)  # run() returns by itself after aclose()
        assert run.exception() is None
        assert not link.connected
        await w.wait_for(lambda s: s.body["state"] == "offline")
        await asyncio.sleep(0.5)  # a clean DISCONNECT must not publish the Will
        assert [s.body["state"] for s in w.statuses()] == ["online", "offline"]
    status = await retained_status(mosquitto)
    assert (status["state"], status["session"]) == ("offline", 1)


async def test_new_events_are_sent_promptly_after_notify(tmp_path: Path, mosquitto: Mosquitto) -> None:
    link, outbox = make_link(mosquitto.url, tmp_path)
    run = asyncio.create_task(link.run())
    try:
        await wait_until(lambda: link.connected, what="connection")
        async with watching(mosquitto, TOPICS.events_filter) as w:
            await asyncio.sleep(0.2)  # the link is idle, waiting for work
            started = time.monotonic()
            event_id = outbox.put_event("sale", {"amount": 350}, money=True)
            link.notify()
            seen = await w.wait_for(lambda s: s.body["id"] == event_id, timeout=2)
            assert time.monotonic() - started < 1.0
            assert seen.topic == "kiosk/v1/fleet-a/k-001/events/sale" and not seen.retain
        await wait_until(lambda: outbox.depth() == 0, what="the ack")
        assert link.delivered == 1
    finally:
        await link.aclose()
        await asyncio.wait_for(run, 5)


async def test_reconnects_after_broker_restart(tmp_path: Path, mosquitto: Mosquitto) -> None:
    link, outbox = make_link(mosquitto.url, tmp_path)
    run = asyncio.create_task(link.run())
    try:
        await wait_until(lambda: link.connected, what="first connection")
        await asyncio.to_thread(mosquitto.stop)
        await wait_until(lambda: not link.connected, what="the link to notice the broker is gone")
        event_id = outbox.put_event("sale", {"amount": 5}, money=True)
        link.notify()
        await asyncio.sleep(0.3)
        assert outbox.depth() == 1  # nobody acknowledged it, so it stays
        await asyncio.to_thread(mosquitto.start)
        await wait_until(lambda: outbox.depth() == 0, what="delivery after restart")
        assert link.delivered == 1 and link.connected
        status = await retained_status(mosquitto)
        assert status["state"] == "online" and status["session"] >= 2
        assert event_id not in [r.id for r in outbox.pending(10)]
    finally:
        await link.aclose()
        await asyncio.wait_for(run, 5)


async def test_refused_publish_keeps_the_record(tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]) -> None:
    # The broker acks with "Not authorized" (MQTT 5 reason 0x87): a PUBACK, but not a delivery.
    acl = tmp_path / "acl"
    acl.write_text(f"topic readwrite {TOPICS.status}\ntopic read #\n")
    broker = mosquitto_factory(extra_config=f"acl_file {acl}")
    broker.start()
    link, outbox = make_link(broker.url, tmp_path)
    outbox.put_event("sale", {"amount": 350}, money=True)
    run = asyncio.create_task(link.run())
    try:
        await wait_until(lambda: "Not authorized" in (link.last_error or ""), what="the refusal")
        assert outbox.depth(MessageClass.MONEY) == 1
        assert link.delivered == 0
    finally:
        await link.aclose()
        await asyncio.wait_for(run, 5)


CHILD = """
import asyncio, sys
from pathlib import Path
from kiosk.config import MqttConfig
from kiosk.fleet import FleetLink, Outbox, Topics

url, db = sys.argv[1:3]
topics = Topics("kiosk/v1", "fleet-a", "k-001")

async def main() -> None:
    config = MqttConfig(url=url, keepalive_s=5, will_delay_s=int(sys.argv[3]))
    link = FleetLink(config, topics, Outbox(Path(db), topics), client_id="k-001")
    await link.run()

asyncio.run(main())
"""


async def start_child(mosquitto: Mosquitto, tmp_path: Path, will_delay_s: int) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, mosquitto.url, str(tmp_path / "child.sqlite"), str(will_delay_s), cwd=REPO, env=env
    )


async def test_killed_process_leaves_will_lost(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with watching(mosquitto, TOPICS.status) as w:
        child = await start_child(mosquitto, tmp_path, 0)
        try:
            online = await w.wait_for(lambda s: s.body["state"] == "online", timeout=15)
        finally:
            child.send_signal(signal.SIGKILL)  # no DISCONNECT, no aclose: a power cut
            await child.wait()
        lost = await w.wait_for(lambda s: s.body["state"] == "lost", timeout=10)
    assert lost.body["session"] == online.body["session"]
    status = await retained_status(mosquitto)
    assert status["state"] == "lost"


async def test_will_delay_waits_and_a_quick_reconnect_sends_no_lost(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with watching(mosquitto, TOPICS.status) as w:
        child = await start_child(mosquitto, tmp_path, 3)
        await w.wait_for(lambda s: s.body["state"] == "online", timeout=15)
        child.send_signal(signal.SIGKILL)
        await child.wait()
        killed = time.monotonic()
        # Back within the Will Delay (a Wi-Fi drop, a quick restart): no "lost" at all.
        child = await start_child(mosquitto, tmp_path, 3)
        try:
            await w.wait_for(lambda s: s.body["state"] == "online" and s.body["session"] == 2, timeout=15)
            await asyncio.sleep(max(0.0, killed + 4.0 - time.monotonic()))
            assert "lost" not in [s.body["state"] for s in w.statuses()]
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        killed = time.monotonic()
        lost = await w.wait_for(lambda s: s.body["state"] == "lost", timeout=10)
        assert time.monotonic() - killed >= 2.0, "the Will came before its delay"
        assert lost.body["session"] == 2


async def test_aclose_during_backoff_and_cancel(tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]) -> None:
    broker = mosquitto_factory()  # never started
    link, outbox = make_link(broker.url, tmp_path, backoff_initial_s=30, backoff_max_s=30)
    run = asyncio.create_task(link.run())
    await wait_until(lambda: link.last_error is not None, what="the first refused connect")
    started = time.monotonic()
    await link.aclose()  # must not sit out the 15-30 s backoff
    await asyncio.wait_for(run, 1)
    assert time.monotonic() - started < 1.0

    # Cancellation is the one exception run() lets out.
    link2 = FleetLink(MqttConfig(url=broker.url), TOPICS, outbox, client_id="k-001", backoff_initial_s=30)
    run2 = asyncio.create_task(link2.run())
    await wait_until(lambda: link2.last_error is not None, what="the first refused connect")
    run2.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run2


def test_missing_mosquitto_fails_instead_of_skipping(
    monkeypatch: pytest.MonkeyPatch, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    import broker

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(broker, "MOSQUITTO_FALLBACK", "/nonexistent/mosquitto")
    with pytest.raises(pytest.fail.Exception, match="mosquitto is not installed"):
        mosquitto_factory()
