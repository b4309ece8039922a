"""Helpers for the fleet tests: a recording MQTT client, the JSON Schemas, kiosk configs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
from referencing import Registry, Resource

from kiosk.config import FleetConfig, KioskConfig, MqttConfig
from kiosk.fleet.topics import FleetTopics

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "schemas"


def _registry() -> Registry:
    resources = []
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


REGISTRY = _registry()


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return loaded


def validate(name: str, body: Any) -> None:
    validator = jsonschema.Draft202012Validator(schema(name), registry=REGISTRY)
    validator.validate(body)


def schema_for(topic: str, prefix: str = "kiosk/v1") -> str | None:
    """Which schema a published message must match (None: not a kiosk message)."""
    if topic.startswith("homeassistant/device/") and topic.endswith("/config"):
        return "ha-discovery"
    parsed = FleetTopics(prefix).parse(topic)
    if parsed is None:
        return None
    return {
        "status": "status",
        "birth": "birth",
        "counters": "counters",
        "telemetry": "event",
        "events": "event",
        "alarms": "alarm",
        "cmd": "command",
        "reply": "reply",
        "config": f"config-{parsed.rest[0]}" if parsed.rest else None,
    }.get(parsed.kind)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Seen:
    topic: str
    payload: bytes
    retain: bool

    @property
    def body(self) -> Any:
        return json.loads(self.payload) if self.payload else None


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Seen] = []

    def on(self, topic_suffix: str) -> list[Seen]:
        return [s for s in self.seen if s.topic.endswith(topic_suffix)]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [s.body for s in self.seen if "/events/" in s.topic and (kind is None or s.topic.endswith("/" + kind))]

    async def wait_for(self, predicate: Callable[[Seen], bool], timeout: float = 10.0, what: str = "a message") -> Seen:
        found: list[Seen] = []

        def check() -> bool:
            found[:] = [s for s in self.seen if predicate(s)]
            return bool(found)

        await wait_until(check, timeout, what)
        return found[-1]


@contextlib.asynccontextmanager
async def recording(host: str, port: int, *topics: str, **client: Any) -> AsyncIterator[Recorder]:
    recorder = Recorder()
    async with aiomqtt.Client(host, port, protocol=aiomqtt.ProtocolVersion.V5, **client) as mqtt:
        for topic in topics or ("#",):
            await mqtt.subscribe(topic, qos=1)

        async def collect() -> None:
            async for m in mqtt.messages:
                payload = m.payload if isinstance(m.payload, bytes) else b""
                recorder.seen.append(Seen(str(m.topic), payload, bool(m.retain)))

        task = asyncio.create_task(collect())
        try:
            yield recorder
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def with_fleet(config: KioskConfig, mqtt_url: str, **fleet: Any) -> KioskConfig:
    """The harness's kiosk config, on a broker, with short test timings."""
    mqtt = MqttConfig(url=mqtt_url, keepalive_s=5, will_delay_s=0, replay_rate_per_s=0)
    return config.model_copy(update={"mqtt": mqtt, "fleet": FleetConfig(**fleet)})
