"""Desired config: operators publish a versioned document, retained, to `<base>/config/desired`;
the kiosk applies all of it or none of it and answers with a retained `<base>/config/reported`.

    {"version": 7, "prices": {"A1": 300}, "maintenance": false, "exchange_rates": {"CNY": 7.12}}

A version at or below the applied one is not applied again (the retained document comes back on
every connection, and what it set was kept across restarts); an older one is reported as such.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kiosk.fleet.commands import CommandFailed
from kiosk.fleet.outbox import Outbox, utc_now_iso
from kiosk.fleet.topics import Topics

log = logging.getLogger(__name__)

Publish = Callable[..., Awaitable[bool]]
Emit = Callable[[str, dict[str, object], bool], object]


class DesiredConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    maintenance: bool | None = None
    maintenance_reason: str | None = Field(default=None, max_length=200)
    prices: dict[str, int] | None = None
    catalog: list[dict[str, Any]] | None = Field(default=None, min_length=1, max_length=100)
    exchange_rates: dict[str, float] | None = None  # CNY per one unit of each price currency
    telemetry_interval_s: float | None = Field(default=None, ge=1, le=86400)


class DesiredTarget(Protocol):
    async def apply_desired(self, desired: DesiredConfig) -> dict[str, Any]:
        """Apply every part or none (raise CommandFailed); return what was applied."""
        ...


class DesiredConfigApplier:
    def __init__(self, topics: Topics, store: Outbox, target: DesiredTarget, publish: Publish, emit: Emit) -> None:
        self._topics = topics
        self._store = store
        self._target = target
        self._publish = publish
        self._emit = emit
        saved = json.loads(store.get_state("desired") or "{}")
        self.applied_version: int = int(saved.get("version", 0))
        self._reported: dict[str, Any] = saved.get("reported") or {"version": self.applied_version, "status": "none"}

    async def handle(self, payload: bytes) -> None:
        if not payload:
            return  # the operator deleted the retained document: nothing to apply
        try:
            desired = DesiredConfig.model_validate_json(payload)
        except ValidationError as exc:
            version = _version_of(payload)
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(doc)'}: {e['msg']}" for e in exc.errors())
            await self._reject(version, f"invalid desired config: {problems}")
            return
        if desired.version == self.applied_version:
            await self.publish_reported()
            return
        if desired.version < self.applied_version:
            older = f"version {desired.version} is older than the applied {self.applied_version}"
            await self._reject(desired.version, older)
            return
        try:
            applied = await self._target.apply_desired(desired)
        except CommandFailed as exc:
            await self._reject(desired.version, exc.message)
            return
        self.applied_version = desired.version
        self._reported = {"version": desired.version, "status": "applied", "applied": applied, "ts": utc_now_iso()}
        self._save()
        self._emit("config_applied", {"version": desired.version, "ok": True, "applied": applied}, False)
        log.info("desired config version %d applied", desired.version)
        await self.publish_reported()

    async def _reject(self, version: int | None, error: str) -> None:
        log.warning("desired config version %s rejected: %s", version, error)
        self._reported = {
            "version": self.applied_version,
            "status": "rejected",
            "rejected_version": version,
            "error": error,
            "ts": utc_now_iso(),
        }
        self._save()
        self._emit("config_applied", {"version": version, "ok": False, "error": error}, False)
        await self.publish_reported()

    def _save(self) -> None:
        self._store.set_state("desired", json.dumps({"version": self.applied_version, "reported": self._reported}))

    async def publish_reported(self) -> bool:
        body = json.dumps(self._reported, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        return await self._publish(self._topics.reported_config, body, retain=True)


def _version_of(payload: bytes) -> int | None:
    try:
        value = json.loads(payload).get("version")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
