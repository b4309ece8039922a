"""Operator commands against a whole kiosk (sandbox gateway, mock pins) on a real Mosquitto.

Every refused command gets a reply and changes nothing: no journal row, no provider call, no relay
movement, no price change, no event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from broker import Mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_helpers import recording, validate, wait_until, with_fleet
from kiosk_harness import RunningKiosk, make_config, running_kiosk, sandbox_gateway

from kiosk.fleet.console import ConsoleOptions, build_request, publish_desired, send
from kiosk.fleet.signing import generate_keypair, load_private_key, sign_request
from kiosk.fleet.topics import Topics
from kiosk.payments.sandbox import SandboxGateway

FLEET, DEVICE = "demo", "demo-kiosk-1"
TOPICS = Topics("kiosk/v1", FLEET, DEVICE)


@dataclass
class Setup:
    kiosk: RunningKiosk
    gateway: SandboxGateway
    broker: Mosquitto
    key: Ed25519PrivateKey
    console: ConsoleOptions
    tmp: Path

    async def send(self, command: str, args: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        reply = await send(self.console, FLEET, DEVICE, command, args or {}, **kwargs)
        validate("reply", {k: v for k, v in reply.items() if k != "correlation_matches"})
        return reply

    def journal(self) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.tmp / "journal.sqlite") as db:
            return db.execute("SELECT * FROM sale_events ORDER BY id").fetchall()

    def outbox_kinds(self) -> list[str]:
        with sqlite3.connect(self.tmp / "outbox.sqlite") as db:
            return [k for (k,) in db.execute("SELECT kind FROM outbox ORDER BY pos")]


@pytest.fixture
async def setup(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[Setup]:
    private, public = generate_keypair(tmp_path / "fleet-keys")
    with sandbox_gateway(tmp_path / "keys") as (gateway, url):
        gateway.set_behaviour("pays", scan_delay_s=0.05, pay_delay_s=0.1, for_next="default")
        config = with_fleet(
            make_config(tmp_path, url, tmp_path / "keys", None, result_screen_s=0.1),
            mosquitto.url,
            public_key_file=public,
            command_max_age_s=60,
            reboot_command=["true"],
            ha_discovery=True,
        )
        async with running_kiosk(config) as kiosk:
            link = kiosk.app.link
            assert link is not None
            await wait_until(lambda: link.connected, what="the kiosk online")
            yield Setup(kiosk, gateway, mosquitto, load_private_key(private), ConsoleOptions(url=mosquitto.url),
                        tmp_path)


async def test_ping_with_mqtt5_response_topic_and_with_the_311_reply_topic(setup: Setup) -> None:
    reply = await setup.send("ping")
    assert reply["ok"] and reply["code"] == "ok" and reply["result"]["pong"] is True
    assert reply["correlation_matches"] is True
    old = await setup.send("ping", v311=True)
    assert old["ok"] and old["result"]["pong"] is True
    assert old["request_id"] != reply["request_id"]


async def test_signed_refund_is_journaled_refunded_once_and_reported(setup: Setup) -> None:
    sale = await setup.kiosk.buy("A1")
    assert sale.state.value == "done" and sale.order_id is not None
    async with recording(setup.broker.host, setup.broker.port, TOPICS.events_filter) as rec:
        reply = await setup.send("refund", {"order_id": sale.order_id, "reason": "customer says no drop"},
                                 key=setup.key)
        assert reply["ok"], reply
        refund_id = reply["result"]["refund_id"]
        assert refund_id == f"{sale.order_id}R1"
        event = await rec.wait_for(lambda s: s.topic.endswith("/refund"), what="the refund event")
    assert event.body["data"]["refund_id"] == refund_id and event.body["data"]["amount_minor"] == 250
    view = next(o for o in setup.gateway.orders() if o["out_trade_no"] == sale.order_id)
    assert view["refunded_minor"] == 250 and view["refund_requests"] == [refund_id]
    with sqlite3.connect(setup.tmp / "journal.sqlite") as db:
        (state,) = db.execute("SELECT state FROM sales WHERE order_id = ?", (sale.order_id,)).fetchone()
        notes = [json.loads(n) for (n,) in db.execute(
            "SELECT note FROM sale_events WHERE order_id = ? AND note IS NOT NULL", (sale.order_id,))]
    assert state == "refunded"
    assert any(n.get("operator_refund") == reply["request_id"] for n in notes), "journaled before the provider call"
    again = await setup.send("refund", {"order_id": sale.order_id}, key=setup.key)
    assert again["code"] == "conflict" and "already refunded" in again["message"]
    assert next(o for o in setup.gateway.orders() if o["out_trade_no"] == sale.order_id)["refund_requests"] == [
        refund_id
    ]


async def test_refused_commands_get_a_reply_and_change_nothing(setup: Setup) -> None:
    sale = await setup.kiosk.buy("A1")
    assert sale.order_id is not None
    await asyncio.sleep(0.5)  # let the sale's events settle
    journal_before, outbox_before = setup.journal(), setup.outbox_kinds()
    orders_before = setup.gateway.orders()
    refund = {"order_id": sale.order_id}
    replies: dict[str, dict[str, Any]] = {}

    # Malformed JSON, published by hand (with an MQTT 5 response topic).
    async with aiomqtt.Client(setup.broker.host, setup.broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        reply_topic = TOPICS.reply("tester", "malformed")
        await client.subscribe(reply_topic, qos=1)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_topic
        props.CorrelationData = b"c-1"
        await client.publish(TOPICS.command("refund"), b"{not json", qos=1, properties=props)
        # A response topic outside the device's reply subtree is not used (nor answered).
        props2 = Properties(PacketTypes.PUBLISH)
        props2.ResponseTopic = "kiosk/v1/demo/other-kiosk/cmd/reboot"
        await client.publish(TOPICS.command("reboot"), b'{"request_id":"evil"}', qos=1, properties=props2)
        async with asyncio.timeout(10):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                replies["malformed"] = json.loads(message.payload)
                assert message.properties is not None and message.properties.CorrelationData == b"c-1"
                break

    replies["unknown"] = await setup.send("dispense_everything", {})
    replies["bad_args"] = await setup.send("set_prices", {"prices": {"A1": -5}})
    replies["unknown_slot"] = await setup.send("set_prices", {"prices": {"Z9": 100}})
    replies["unsigned"] = await setup.send("refund", refund)
    replies["unsigned_relay"] = await setup.send("test_relay", {"slot": "A1"})
    other_key = Ed25519PrivateKey.generate()
    replies["wrong_key"] = await setup.send("refund", refund, key=other_key)
    # Signed for another kiosk: the signature covers the device id.
    request = {"request_id": "for-other", "args": refund, "requester": setup.console.client_id}
    request |= sign_request(setup.key, fleet=FLEET, device="other-kiosk", command="refund",
                            request_id="for-other", args=refund)
    replies["other_device"] = await setup.send("refund", refund, request=request)
    # Tampered: args changed after signing.
    request = build_request(TOPICS, "refund", refund, request_id="tampered", requester=setup.console.client_id,
                            key=setup.key)
    request["args"] = {"order_id": "K999"}
    replies["tampered"] = await setup.send("refund", refund, request=request)
    # Stale: signed ten minutes ago.
    request = {"request_id": "stale", "args": refund, "requester": setup.console.client_id}
    request |= sign_request(setup.key, fleet=FLEET, device=DEVICE, command="refund", request_id="stale",
                            args=refund, issued_at=time.time() - 600)
    replies["expired"] = await setup.send("refund", refund, request=request)
    # Replayed: a valid signed self-test-free command run once (relay test in maintenance) and sent
    # again by another client (a different requester, so not the idempotent-reply cache).
    assert (await setup.send("maintenance", {"on": True}))["ok"]
    relay = setup.kiosk.app.hardware.relays["A1"]  # type: ignore[union-attr]
    pulses: list[float] = []
    original = relay.pulse

    async def counting_pulse(ms: int) -> None:
        pulses.append(ms)
        await original(ms)

    relay.pulse = counting_pulse  # type: ignore[method-assign]
    request = build_request(TOPICS, "test_relay", {"slot": "A1", "ms": 20}, request_id="relay-1",
                            requester=setup.console.client_id, key=setup.key)
    first = await setup.send("test_relay", {}, request=request)
    assert first["ok"], first
    replayer = ConsoleOptions(url=setup.console.url)
    request["requester"] = replayer.client_id
    replies["replayed"] = await send(replayer, FLEET, DEVICE, "test_relay", {}, request=request)
    assert pulses == [20], "the replayed relay test did not move the relay"
    assert (await setup.send("maintenance", {"on": False}))["ok"]

    expected = {
        "malformed": "bad_request", "unknown": "unknown_command", "bad_args": "bad_request",
        "unknown_slot": "bad_request", "unsigned": "unauthorized", "unsigned_relay": "unauthorized",
        "wrong_key": "unauthorized", "other_device": "unauthorized", "tampered": "unauthorized",
        "expired": "expired", "replayed": "replayed",
    }
    assert {k: r["code"] for k, r in replies.items()} == expected
    assert not any(r["ok"] for r in replies.values())
    # Nothing moved: no journal rows, no provider calls, same prices; only the maintenance and
    # relay-test events of the commands that were accepted.
    assert setup.journal() == journal_before
    assert setup.gateway.orders() == orders_before
    assert setup.kiosk.app.operator is not None
    assert setup.kiosk.app.operator.catalog.slot("A1").price == 250
    new_kinds = setup.outbox_kinds()[len(outbox_before):] if setup.outbox_kinds()[: len(outbox_before)] == \
        outbox_before else setup.outbox_kinds()
    assert "refund" not in new_kinds and "config_applied" not in new_kinds


async def test_set_prices_answers_and_the_next_sale_charges_the_new_price(setup: Setup) -> None:
    reply = await setup.send("set_prices", {"prices": {"A1": 300}})
    assert reply["ok"] and reply["result"]["catalog"]["A1"]["price"] == 300
    sale = await setup.kiosk.buy("A1")
    assert sale.amount_minor == 300
    view = next(o for o in setup.gateway.orders() if o["out_trade_no"] == sale.order_id)
    assert view["amount_minor"] == 300


async def test_maintenance_pauses_selling_and_shows_in_the_status(setup: Setup) -> None:
    async with recording(setup.broker.host, setup.broker.port, TOPICS.status) as rec:
        assert (await setup.send("maintenance", {"on": True, "reason": "refill"}))["ok"]
        await rec.wait_for(lambda s: s.body["state"] == "maintenance", what="maintenance status")
        before = len(setup.kiosk.finished)
        slot = setup.kiosk.config.catalog.slot("A1")
        assert slot.button is not None
        setup.kiosk.machine.press(slot.button)
        await asyncio.sleep(1.0)
        assert len(setup.kiosk.finished) == before and not setup.kiosk.app.engine.selling  # type: ignore[union-attr]
        assert (await setup.send("maintenance", {"on": False}))["ok"]
        await rec.wait_for(lambda s: s.body["state"] == "online" and s.retain is False, what="online again")
    sale = await setup.kiosk.buy("A1")
    assert sale.state.value == "done"


async def test_alarm_raised_and_cleared_through_retained_topics(setup: Setup) -> None:
    reply = await setup.send("raise_alarm", {"id": "coin_jam", "severity": "critical", "message": "test"})
    assert reply["ok"]
    async with recording(setup.broker.host, setup.broker.port, TOPICS.alarms_filter) as rec:
        seen = await rec.wait_for(lambda s: s.retain and s.topic.endswith("/coin_jam"), what="retained alarm")
        validate("alarm", seen.body)
        assert seen.body["severity"] == "critical" and seen.body["source"] == "operator"
    assert (await setup.send("clear_alarm", {"id": "coin_jam"}))["ok"]
    async with recording(setup.broker.host, setup.broker.port, TOPICS.alarms_filter) as rec:
        await asyncio.sleep(0.5)
        assert not [s for s in rec.seen if s.topic.endswith("/coin_jam")], "cleared: nothing retained"
    assert (await setup.send("clear_alarm", {"id": "coin_jam"}))["code"] == "not_found"


async def test_desired_config_is_applied_atomically_and_reported(setup: Setup) -> None:
    reported = await publish_desired(setup.console, FLEET, DEVICE, {"version": 3, "prices": {"A2": 400},
                                                                    "exchange_rates": {"USD": 7.1}})
    validate("config-reported", reported)
    assert reported["status"] == "applied" and reported["version"] == 3
    operator = setup.kiosk.app.operator
    assert operator is not None and operator.catalog.slot("A2").price == 400
    # Invalid as a whole: a good price and an unknown slot; nothing of it is applied.
    bad = await publish_desired(setup.console, FLEET, DEVICE, {"version": 4, "prices": {"A1": 999, "Z9": 1}})
    assert bad["status"] == "rejected" and bad["version"] == 3 and bad["rejected_version"] == 4
    assert operator.catalog.slot("A1").price == 250
    older = await publish_desired(setup.console, FLEET, DEVICE, {"version": 2, "maintenance": True})
    assert older["status"] == "rejected" and not operator.maintenance


async def test_self_test_logs_and_rebirth(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # as `kiosk run` logs
    test = await setup.send("self_test")
    assert test["ok"] and {c["name"] for c in test["result"]["checks"]} >= {"journal", "outbox", "mqtt"}
    logs = await setup.send("logs", {"lines": 5})
    assert logs["ok"] and 0 < len(logs["result"]["lines"]) <= 5
    async with recording(setup.broker.host, setup.broker.port, TOPICS.birth) as rec:
        await rec.wait_for(lambda s: s.retain, what="the retained birth")
        assert (await setup.send("rebirth"))["ok"]
        birth = await rec.wait_for(lambda s: not s.retain, what="a fresh birth")
    validate("birth", birth.body)
    assert "refund" in birth.body["capabilities"]["signed_commands"]


async def test_home_assistant_discovery_is_retained(setup: Setup) -> None:
    # Discovery goes out at the end of the connect sequence; a subscriber already there gets it
    # live (retain flag off). Once it is out, a new subscriber must get the retained copy.
    async with recording(setup.broker.host, setup.broker.port, "homeassistant/#") as rec:
        await rec.wait_for(lambda s: True, what="the discovery message")
    async with recording(setup.broker.host, setup.broker.port, "homeassistant/#") as rec:
        seen = await rec.wait_for(lambda s: s.retain, what="the retained discovery message")
    assert seen.topic == f"homeassistant/device/{DEVICE}/config"
    validate("ha-discovery", seen.body)
    assert seen.body["cmps"]["sales_today"]["state_topic"] == TOPICS.counters
