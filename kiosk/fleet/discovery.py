"""Home Assistant MQTT device discovery: one retained message per kiosk.

`<prefix>/device/<device>/config` with `dev`, `o` and `cmps` (the device-based form), so a Home
Assistant user sees each kiosk's state, today's sales and refunds, its open alarms and its health
without writing YAML. Every component reads the kiosk's own retained topics; availability follows
the retained status (and so the Last Will).
"""

from __future__ import annotations

import json
from typing import Any

from kiosk import __version__
from kiosk.fleet.topics import Topics


def discovery_topic(prefix: str, topics: Topics) -> str:
    # The object id is the device id alone: the broker ACL confines a device to
    # `<prefix>/device/%u/config`, and %u (the certificate CN) is the device id.
    return f"{prefix}/device/{topics.device}/config"


def discovery_payload(topics: Topics, *, model: str = "wallet-payment kiosk") -> dict[str, Any]:
    uid = f"kiosk_{topics.fleet}_{topics.device}"

    def sensor(key: str, name: str, topic: str, template: str, **extra: Any) -> tuple[str, dict[str, Any]]:
        return key, {
            "p": "sensor",
            "name": name,
            "unique_id": f"{uid}_{key}",
            "state_topic": topic,
            "value_template": template,
            **extra,
        }

    components = dict(
        [
            sensor("state", "State", topics.status, "{{ value_json.state }}"),
            sensor("sales_today", "Sales today", topics.counters, "{{ value_json.sales }}", state_class="total"),
            sensor("refunds_today", "Refunds today", topics.counters, "{{ value_json.refunds }}", state_class="total"),
            sensor("open_alarms", "Open alarms", topics.counters, "{{ value_json.open_alarms }}"),
            sensor("alarms", "Alarms", topics.counters, "{{ value_json.alarms | join(', ') }}"),
            sensor(
                "cpu_temp", "CPU temperature", topics.telemetry, "{{ value_json.data.cpu_temp_c }}",
                device_class="temperature", unit_of_measurement="°C",
            ),
            sensor("outbox", "Outbox depth", topics.telemetry, "{{ value_json.data.outbox.depth }}"),
        ]
    )
    return {
        "dev": {
            "identifiers": [uid],
            "name": f"Kiosk {topics.device}",
            "mf": "kiosk firmware",
            "mdl": model,
            "sw": __version__,
            "sn": topics.device,
        },
        "o": {"name": "kiosk", "sw": __version__},
        "availability": [
            {
                "topic": topics.status,
                "value_template": "{{ 'online' if value_json.state in ['online', 'maintenance'] else 'offline' }}",
            }
        ],
        "cmps": components,
        "qos": 1,
    }


def discovery_message(prefix: str, topics: Topics) -> tuple[str, bytes]:
    body = json.dumps(discovery_payload(topics), separators=(",", ":"), ensure_ascii=False).encode()
    return discovery_topic(prefix, topics), body
