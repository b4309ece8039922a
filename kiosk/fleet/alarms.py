"""Alarms: retained `<base>/alarms/<id>` while raised; an empty retained payload clears one.

The board is kept in the outbox database, so an alarm raised or cleared while the broker is away
(or across a reboot) reaches the broker on the next connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kiosk.fleet.outbox import Outbox, utc_now_iso
from kiosk.fleet.topics import Topics

log = logging.getLogger(__name__)

SEVERITIES = ("info", "warning", "critical")
Publish = Callable[..., Awaitable[bool]]


class AlarmBoard:
    def __init__(self, topics: Topics, store: Outbox, publish: Publish) -> None:
        self._topics = topics
        self._store = store
        self._publish = publish
        saved = json.loads(store.get_state("alarms") or "{}")
        self._active: dict[str, dict[str, Any]] = saved.get("active", {})
        self._unpublished_clears: set[str] = set(saved.get("clears", []))
        self.on_change: Callable[[], None] | None = None

    @property
    def active(self) -> dict[str, dict[str, Any]]:
        return dict(self._active)

    def is_raised(self, alarm_id: str) -> bool:
        return alarm_id in self._active

    async def raise_(self, alarm_id: str, severity: str, message: str, *, source: str = "device") -> bool:
        """Raise (or update) an alarm; False when it was already raised exactly so."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}")
        topic = self._topics.alarm(alarm_id)
        current = self._active.get(alarm_id)
        if current is not None and (current["severity"], current["message"]) == (severity, message):
            return False
        body = {
            "id": alarm_id,
            "severity": severity,
            "message": message,
            "raised_at": current["raised_at"] if current else utc_now_iso(),
            "source": source,
        }
        self._active[alarm_id] = body
        self._unpublished_clears.discard(alarm_id)
        self._save()
        log.warning("alarm %s (%s): %s", alarm_id, severity, message)
        await self._publish(topic, self._encode(body), retain=True)
        return True

    async def clear(self, alarm_id: str) -> bool:
        """Clear an alarm; False when it was not raised."""
        if self._active.pop(alarm_id, None) is None:
            return False
        self._unpublished_clears.add(alarm_id)
        self._save()
        log.info("alarm %s cleared", alarm_id)
        if await self._publish(self._topics.alarm(alarm_id), b"", retain=True):
            self._unpublished_clears.discard(alarm_id)
            self._save()
        return True

    async def republish(self) -> None:
        """On every connection: the raised alarms, and the clears the broker has not seen."""
        for body in list(self._active.values()):
            await self._publish(self._topics.alarm(body["id"]), self._encode(body), retain=True)
        for alarm_id in list(self._unpublished_clears):
            if await self._publish(self._topics.alarm(alarm_id), b"", retain=True):
                self._unpublished_clears.discard(alarm_id)
        self._save()

    @staticmethod
    def _encode(body: dict[str, Any]) -> bytes:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    def _save(self) -> None:
        state = {"active": self._active, "clears": sorted(self._unpublished_clears)}
        self._store.set_state("alarms", json.dumps(state, ensure_ascii=False))
        if self.on_change is not None:
            self.on_change()
