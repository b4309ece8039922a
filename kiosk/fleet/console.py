"""The operator console's MQTT side: the fleet table from retained topics, live watching, and
commands sent with MQTT 5 request/response (or the 3.1.1 reply topic) and answered.

The table is built from three retained topics per kiosk (status, counters, alarms), so it needs
no database and shows the truth of the broker; it is one dict update per message, and drawing is
throttled, so 2,000 kiosks stay cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kiosk.config import MqttConfig
from kiosk.fleet.link import parse_mqtt_url, tls_context
from kiosk.fleet.signing import sign_request
from kiosk.fleet.topics import FleetTopics, Topics
from kiosk.money import format_amount

DEFAULT_SIGNED = frozenset({"refund", "test_relay"})


@dataclass
class ConsoleOptions:
    url: str = "mqtt://127.0.0.1:1883"
    prefix: str = "kiosk/v1"
    fleet: str = "+"
    client_id: str = field(default_factory=lambda: f"console-{secrets.token_hex(4)}")
    mqtt: MqttConfig = field(default_factory=MqttConfig)

    def client(self, protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5, **kwargs: Any) -> aiomqtt.Client:
        address = parse_mqtt_url(self.url)
        return aiomqtt.Client(
            address.host, address.port, identifier=self.client_id, protocol=protocol, keepalive=30,
            tls_context=tls_context(self.mqtt) if address.tls else None, **kwargs,
        )


@dataclass
class KioskRow:
    fleet: str
    device: str
    state: str = "?"
    session: int | None = None
    last_seen: str = ""
    sales: int = 0
    refunds: int = 0
    amounts: dict[str, dict[str, int]] = field(default_factory=dict)
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)

    def seen(self, ts: Any) -> None:
        if isinstance(ts, str) and ts > self.last_seen:
            self.last_seen = ts


class FleetView:
    def __init__(self, prefix: str = "kiosk/v1", fleet: str = "+") -> None:
        self.topics = FleetTopics(prefix, fleet)
        self.rows: dict[tuple[str, str], KioskRow] = {}
        self.events: deque[str] = deque(maxlen=12)
        self.messages = 0

    def filters(self, events: bool = False) -> list[str]:
        out = [self.topics.filter("status"), self.topics.filter("counters"), self.topics.filter("alarms", "+")]
        if events:
            out.append(self.topics.filter("events", "+"))
        return out

    def update(self, topic: str, payload: bytes) -> None:
        parsed = self.topics.parse(topic)
        if parsed is None:
            return
        self.messages += 1
        key = (parsed.fleet, parsed.device)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = KioskRow(parsed.fleet, parsed.device)
        if parsed.kind == "alarms" and parsed.rest:
            if payload:
                with contextlib.suppress(ValueError):
                    row.alarms[parsed.rest[0]] = json.loads(payload)
            else:
                row.alarms.pop(parsed.rest[0], None)
            return
        try:
            body = json.loads(payload) if payload else {}
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        if parsed.kind == "status":
            row.state = str(body.get("state", "?"))
            row.session = body.get("session")
            row.seen(body.get("ts"))
        elif parsed.kind == "counters":
            row.sales = int(body.get("sales", 0))
            row.refunds = int(body.get("refunds", 0))
            row.amounts = body.get("amounts") or {}
            row.seen(body.get("ts"))
        elif parsed.kind == "events" and parsed.rest:
            row.seen(body.get("ts"))
            kind = parsed.rest[0]
            if kind in ("sale", "refund", "delivery_failed", "payment_error", "config_applied", "maintenance"):
                data = body.get("data") or {}
                amount = ""
                if "amount_minor" in data and "currency" in data:
                    amount = format_amount(int(data["amount_minor"]), str(data["currency"]))
                flag = " (historical)" if body.get("historical") else ""
                self.events.append(
                    f"{str(body.get('ts', ''))[11:19]}  {parsed.device:<16} {kind:<15} {amount:>12}  "
                    f"{data.get('order_id') or data.get('reason') or ''}{flag}"
                )

    def table(self, limit: int | None = None) -> str:
        rows = sorted(self.rows.values(), key=lambda r: (_rank(r), r.fleet, r.device))
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.state] = counts.get(r.state, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        lines = [
            f"{len(rows)} kiosk(s): {summary or 'none'}",
            f"{'FLEET':<10} {'DEVICE':<18} {'STATE':<12} {'LAST SEEN':<20} {'SALES':>5} {'REVENUE':>14} "
            f"{'REFUNDS':>7}  ALARMS",
        ]
        shown = rows if limit is None else rows[:limit]
        for r in shown:
            revenue = ", ".join(format_amount(v.get("sales", 0), c) for c, v in sorted(r.amounts.items())) or "-"
            alarms = ", ".join(f"{a}({b.get('severity', '?')})" for a, b in sorted(r.alarms.items())) or "-"
            lines.append(
                f"{r.fleet:<10} {r.device:<18} {r.state:<12} {_ago(r.last_seen):<20} {r.sales:>5} {revenue:>14} "
                f"{r.refunds:>7}  {alarms}"
            )
        if limit is not None and len(rows) > limit:
            lines.append(f"... {len(rows) - limit} more (problems first; --limit to see more)")
        return "\n".join(lines)

    def alarm_lines(self) -> list[str]:
        out = []
        for r in sorted(self.rows.values(), key=lambda r: (r.fleet, r.device)):
            for alarm_id, body in sorted(r.alarms.items()):
                out.append(
                    f"{r.fleet:<10} {r.device:<18} {alarm_id:<24} {body.get('severity', '?'):<8} "
                    f"{body.get('raised_at', '')}  {body.get('message', '')}"
                )
        return out


def _rank(row: KioskRow) -> int:
    """Problems first: lost, then alarms, then maintenance/offline, then the healthy."""
    if row.state == "lost":
        return 0
    if row.alarms:
        return 1
    if row.state in ("maintenance", "offline", "?"):
        return 2
    return 3


def _ago(ts: str) -> str:
    if not ts:
        return "-"
    try:
        then = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts
    seconds = int((datetime.now(UTC) - then).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return ts[:16].replace("T", " ")


async def snapshot(options: ConsoleOptions, *, quiet_s: float = 0.5, max_s: float = 10.0) -> FleetView:
    """Everything retained right now: collect until no retained message came for quiet_s (live
    updates from a busy fleet keep arriving, and are taken, but do not prolong the wait)."""
    view = FleetView(options.prefix, options.fleet)
    async with options.client() as client:
        for topic in view.filters():
            await client.subscribe(topic, qos=1)
        deadline = time.monotonic() + max_s
        quiet_until = time.monotonic() + quiet_s
        messages = client.messages
        while (now := time.monotonic()) < min(deadline, quiet_until):
            try:
                message = await asyncio.wait_for(messages.__anext__(), min(deadline, quiet_until) - now)
            except TimeoutError:
                break
            view.update(str(message.topic), _payload(message))
            if message.retain:
                quiet_until = time.monotonic() + quiet_s
    return view


async def watch(
    options: ConsoleOptions, out: TextIO = sys.stdout, *, refresh_s: float = 1.0, limit: int | None = 40,
    duration_s: float | None = None, clear: bool = True,
) -> FleetView:
    """The table, redrawn at most every refresh_s while messages change it, with recent events."""
    view = FleetView(options.prefix, options.fleet)
    async with options.client() as client:
        for topic in view.filters(events=True):
            await client.subscribe(topic, qos=0)
        end = None if duration_s is None else time.monotonic() + duration_s
        drawn_at = 0
        next_draw = time.monotonic() + 0.3
        messages = client.messages
        while end is None or time.monotonic() < end:
            timeout = max(0.01, next_draw - time.monotonic())
            with contextlib.suppress(TimeoutError):
                message = await asyncio.wait_for(messages.__anext__(), timeout)
                view.update(str(message.topic), _payload(message))
            if time.monotonic() >= next_draw:
                next_draw = time.monotonic() + refresh_s
                if view.messages != drawn_at:
                    drawn_at = view.messages
                    screen = view.table(limit) + "\n\nrecent events\n" + ("\n".join(view.events) or "(none yet)")
                    out.write(("\x1b[H\x1b[2J" if clear else "\n") + screen + "\n")
                    out.flush()
    return view


def _payload(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    if isinstance(payload, bytes):
        return payload
    return b"" if payload is None else str(payload).encode()


def build_request(
    topics: Topics, command: str, args: dict[str, Any], *, request_id: str, requester: str,
    key: Ed25519PrivateKey | None,
) -> dict[str, Any]:
    request: dict[str, Any] = {"request_id": request_id, "args": args, "requester": requester}
    if key is not None:
        request.update(sign_request(
            key, fleet=topics.fleet, device=topics.device, command=command, request_id=request_id, args=args
        ))
    return request


async def send(
    options: ConsoleOptions, fleet: str, device: str, command: str, args: dict[str, Any], *,
    key: Ed25519PrivateKey | None = None, timeout_s: float = 15.0, v311: bool = False,
    request: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish a command and wait for its reply; raises TimeoutError when none comes."""
    topics = Topics(options.prefix, fleet, device)
    request_id = (request or {}).get("request_id") or f"r{int(time.time())}{secrets.token_hex(4)}"
    requester = options.client_id
    reply_topic = topics.reply(requester, request_id)
    body = request or build_request(topics, command, args, request_id=request_id, requester=requester, key=key)
    protocol = aiomqtt.ProtocolVersion.V311 if v311 else aiomqtt.ProtocolVersion.V5
    properties = None
    if not v311:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = reply_topic
        properties.CorrelationData = request_id.encode()
        properties.MessageExpiryInterval = max(1, int(timeout_s))  # a late command must not run
    async with options.client(protocol) as client:
        await client.subscribe(reply_topic, qos=1)
        await client.publish(topics.command(command), json.dumps(body).encode(), qos=1, properties=properties)
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                if str(message.topic) != reply_topic:
                    continue
                reply: dict[str, Any] = json.loads(_payload(message))
                if not v311:
                    correlation = getattr(message.properties, "CorrelationData", None)
                    reply["correlation_matches"] = correlation == request_id.encode()
                return reply
    raise TimeoutError(f"no reply from {device} within {timeout_s:g} s")


async def publish_desired(
    options: ConsoleOptions, fleet: str, device: str, desired: dict[str, Any], *, timeout_s: float = 15.0
) -> dict[str, Any]:
    """Publish a retained desired config and wait for the kiosk's reported config to answer it."""
    topics = Topics(options.prefix, fleet, device)
    version = desired.get("version")
    async with options.client() as client:
        await client.subscribe(topics.reported_config, qos=1)
        await client.publish(topics.desired_config, json.dumps(desired).encode(), qos=1, retain=True)
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                reported: dict[str, Any] = json.loads(_payload(message))
                if reported.get("version") == version or reported.get("rejected_version") == version:
                    return reported
    raise TimeoutError(f"{device} did not report version {version} within {timeout_s:g} s")
