"""`kiosk fleet ingest`: the fleet-side service that keeps history.

It subscribes with MQTT 5 shared subscriptions (`$share/<group>/...`), so several instances split
the load (on one broker or a cluster), and stores every event, status change and alarm in the
Store, de-duplicated. Its session persists (clean_start off, a session expiry) and messages are
acknowledged only after the batch they came in is committed: an ingest that crashes or restarts
gets the unacknowledged ones again instead of losing them.

Retained messages are not sent to shared subscriptions (MQTT 5, 4.8.2), so ingest records status
changes from when it runs; `kiosk fleet status` reads the current state from the retained topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kiosk.config import MqttConfig
from kiosk.fleet.link import parse_mqtt_url, tls_context
from kiosk.fleet.outbox import utc_now_iso
from kiosk.fleet.store import AlarmRow, EventRow, Row, StatusRow, Store
from kiosk.fleet.topics import FleetTopics

log = logging.getLogger(__name__)

BATCH = 500


def parse_message(topics: FleetTopics, topic: str, payload: bytes) -> Row | None:
    parsed = topics.parse(topic)
    if parsed is None:
        return None
    try:
        if parsed.kind == "events" and parsed.rest:
            body = json.loads(payload)
            return EventRow(
                id=str(body["id"]), fleet=parsed.fleet, device=parsed.device, seq=int(body["seq"]),
                type=str(body["type"]), ts=str(body["ts"]), historical=bool(body.get("historical")),
                data=body.get("data") or {},
            )
        if parsed.kind == "status" and payload:
            body = json.loads(payload)
            return StatusRow(parsed.fleet, parsed.device, str(body["state"]), int(body.get("session") or 0),
                             str(body.get("ts") or utc_now_iso()))
        if parsed.kind == "alarms" and parsed.rest:
            if not payload:
                return AlarmRow(parsed.fleet, parsed.device, parsed.rest[0], None)
            body = json.loads(payload)
            return AlarmRow(parsed.fleet, parsed.device, parsed.rest[0], str(body["raised_at"]),
                            str(body.get("severity", "")), str(body.get("message", "")))
    except (ValueError, KeyError, TypeError):
        log.warning("ingest: malformed message on %s; skipped", topic)
    return None


@dataclass
class Ingest:
    url: str
    store: Store
    prefix: str = "kiosk/v1"
    fleet: str = "+"
    group: str | None = "kiosk-ingest"  # None: a plain (not shared) subscription
    client_id: str = "kiosk-ingest"
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    session_expiry_s: int = 3600
    stored: int = 0
    received: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    def filters(self) -> list[str]:
        topics = FleetTopics(self.prefix, self.fleet)
        plain = [topics.filter("events", "+"), topics.filter("status"), topics.filter("alarms", "+")]
        return plain if self.group is None else [f"$share/{self.group}/{f}" for f in plain]

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        failures = 0
        while not stop.is_set():
            try:
                await self._connect_once(stop)
                failures = 0
            except aiomqtt.MqttError as exc:
                failures += 1
                log.warning("ingest: %s", exc)
            self.connected.clear()
            if stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), random.uniform(0.5, 1.0) * min(30, 2 ** min(failures, 5)))

    async def _connect_once(self, stop: asyncio.Event) -> None:
        address = parse_mqtt_url(self.url)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.session_expiry_s
        client = aiomqtt.Client(
            address.host, address.port, identifier=self.client_id, protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False, properties=properties, keepalive=30,
            tls_context=tls_context(self.mqtt) if address.tls else None,
        )
        # Acknowledge after the commit, not on arrival (paho acks at once by default).
        client._client.manual_ack_set(True)
        async with client:
            for topic in self.filters():
                await client.subscribe(topic, qos=1)
            self.connected.set()
            log.info("ingest: subscribed to %s", self.filters())
            queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()

            async def receive() -> None:
                async for message in client.messages:
                    queue.put_nowait(message)

            receiver = asyncio.create_task(receive())
            stopper = asyncio.create_task(stop.wait())
            try:
                while True:
                    getter = asyncio.create_task(queue.get())
                    done, _ = await asyncio.wait({getter, receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    if getter not in done:
                        getter.cancel()
                        if receiver in done:
                            receiver.result()
                        return
                    # Whatever piled up while the last batch was committed goes in this one.
                    batch = [getter.result()]
                    while len(batch) < BATCH and not queue.empty():
                        batch.append(queue.get_nowait())
                    await self._store_batch(client, batch)
            finally:
                for task in (receiver, stopper):
                    task.cancel()
                await asyncio.gather(receiver, stopper, return_exceptions=True)

    async def _store_batch(self, client: aiomqtt.Client, batch: list[aiomqtt.Message]) -> None:
        topics = FleetTopics(self.prefix, self.fleet)
        rows: list[Row] = []
        for message in batch:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            row = parse_message(topics, str(message.topic), payload)
            if row is not None:
                rows.append(row)
        self.stored += await asyncio.to_thread(self.store.add, rows, utc_now_iso())
        self.received += len(batch)
        for message in batch:
            if message.qos > 0:
                client._client.ack(message.mid, message.qos)


def describe(ingest: Ingest) -> dict[str, Any]:
    return {"received": ingest.received, "stored": ingest.stored, "filters": ingest.filters()}
