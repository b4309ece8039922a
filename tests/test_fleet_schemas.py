"""Every message a demo run publishes validates against its JSON Schema in schemas/."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from broker import Mosquitto
from fleet_helpers import SCHEMAS, recording, schema, schema_for, validate

from kiosk.fleet.discovery import discovery_message
from kiosk.fleet.topics import Topics


def test_every_schema_is_valid_draft_2020_12() -> None:
    names = sorted(p.name for p in SCHEMAS.glob("*.schema.json"))
    assert len(names) >= 11
    for name in names:
        jsonschema.Draft202012Validator.check_schema(json.loads((SCHEMAS / name).read_text()))


async def test_every_message_of_a_demo_run_validates(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with recording(mosquitto.host, mosquitto.port, "#") as rec:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kiosk", "demo", "--sales", "3", "--frames", str(tmp_path / "frames"),
            "--mqtt", mosquitto.url, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()
    kinds: dict[str, int] = {}
    for seen in rec.seen:
        name = schema_for(seen.topic)
        assert name is not None, f"no schema for {seen.topic}"
        if name == "alarm" and not seen.payload:
            continue  # a cleared alarm: the empty retained payload
        try:
            validate(name, seen.body)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{seen.topic}: {exc.message}\n{seen.payload.decode()}")
        kinds[name] = kinds.get(name, 0) + 1
    # The demo published its lifecycle, self-description, money events and health.
    assert {"status", "birth", "counters", "event", "config-reported"} <= set(kinds), kinds
    events = rec.events()
    types = {e["type"] for e in events}
    assert {"sale", "refund", "delivery_failed"} <= types, types
    assert any(s.topic.endswith("/telemetry") for s in rec.seen)
    assert len({e["id"] for e in events}) == len(events)


def test_home_assistant_discovery_validates() -> None:
    topic, payload = discovery_message("homeassistant", Topics("kiosk/v1", "f1", "k-1"))
    assert topic == "homeassistant/device/k-1/config"
    body = json.loads(payload)
    validate("ha-discovery", body)
    assert body["availability"][0]["topic"] == "kiosk/v1/f1/k-1/status"
    assert {"state", "sales_today", "open_alarms"} <= set(body["cmps"])


def test_schemas_refuse_what_they_should() -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate("status", {"state": "sleeping", "session": 1, "ts": "2026-01-01T00:00:00Z"})
    with pytest.raises(jsonschema.ValidationError):
        validate("event", {"id": "x", "seq": 0, "type": "sale", "device": "d", "fleet": "f",
                           "ts": "2026-01-01T00:00:00Z", "data": {}})
    assert schema("command")["dependentRequired"] == {"sig": ["issued_at", "nonce"]}
