"""Operator commands: parsed, checked, run once, answered.

A request is published to `<base>/cmd/<command>` as JSON:

    {"request_id": "r-1", "args": {...}, "issued_at": 1790000000.0, "nonce": "...", "sig": "...",
     "requester": "console-1"}

The reply goes to the MQTT 5 Response Topic with the request's Correlation Data when there is one
(it must lie under `<base>/reply/`, where the ACL lets this device publish), else to
`<base>/reply/<requester>/<request_id>` (MQTT 3.1.1). Every request gets a reply, and a request
that fails any check runs nothing: malformed JSON, an unknown command, bad arguments, a missing or
wrong signature where one is required, a stale `issued_at`, or a nonce already used. A request id
seen recently gets the first reply again (QoS 1 may deliver twice), without running again.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kiosk.fleet.outbox import Outbox, utc_now_iso
from kiosk.fleet.signing import SignatureError, verify_request
from kiosk.fleet.topics import Topics, is_topic_level

log = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# A kiosk clock a little ahead of the operator's must not refuse fresh commands.
FUTURE_SKEW_S = 60.0
REMEMBERED_REPLIES = 500

Publish = Callable[..., Awaitable[bool]]


class CommandFailed(Exception):
    """An action refused or failed; code is one of the reply codes (busy, not_found, conflict, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------- arguments


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(Args):
    pass


class MaintenanceArgs(Args):
    on: bool
    reason: str | None = Field(default=None, max_length=200)


class CatalogArgs(Args):
    slots: list[dict[str, Any]] = Field(min_length=1, max_length=100)


class PricesArgs(Args):
    prices: dict[str, int] = Field(min_length=1, description="slot id -> price in minor units")


class ExchangeRateArgs(Args):
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="the prices' currency")
    rate: float = Field(gt=0, lt=1_000_000, description="CNY per one unit of currency (the screens show ≈ CNY)")


class RefundArgs(Args):
    order_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    reason: str = Field(default="operator refund", max_length=200)


class TestRelayArgs(Args):
    slot: str = Field(min_length=1, max_length=16)
    ms: int = Field(default=300, ge=10, le=5000)


class LogsArgs(Args):
    lines: int = Field(default=50, ge=1, le=500)


class RaiseAlarmArgs(Args):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    severity: Literal["info", "warning", "critical"] = "warning"
    message: str = Field(min_length=1, max_length=300)


class ClearAlarmArgs(Args):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


class DeviceActions(Protocol):
    """What commands can do to the kiosk; kiosk/operator.py implements it against the app.
    Each returns a JSON-able result or raises CommandFailed."""

    async def ping(self) -> dict[str, Any]: ...
    async def reboot(self) -> dict[str, Any]: ...
    async def restart(self) -> dict[str, Any]: ...
    async def set_maintenance(self, on: bool, reason: str | None) -> dict[str, Any]: ...
    async def set_catalog(self, slots: list[dict[str, Any]]) -> dict[str, Any]: ...
    async def set_prices(self, prices: dict[str, int]) -> dict[str, Any]: ...
    async def set_exchange_rate(self, currency: str, rate: float) -> dict[str, Any]: ...
    async def refund(self, order_id: str, reason: str, request_id: str) -> dict[str, Any]: ...
    async def self_test(self) -> dict[str, Any]: ...
    async def test_relay(self, slot: str, ms: int) -> dict[str, Any]: ...
    async def logs(self, lines: int) -> dict[str, Any]: ...
    async def rebirth(self) -> dict[str, Any]: ...
    async def raise_alarm(self, alarm_id: str, severity: str, message: str) -> dict[str, Any]: ...
    async def clear_alarm(self, alarm_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CommandSpec:
    args: type[Args]
    run: Callable[[DeviceActions, Any, str], Awaitable[dict[str, Any]]]


COMMANDS: dict[str, CommandSpec] = {
    "ping": CommandSpec(NoArgs, lambda d, a, r: d.ping()),
    "reboot": CommandSpec(NoArgs, lambda d, a, r: d.reboot()),
    "restart": CommandSpec(NoArgs, lambda d, a, r: d.restart()),
    "maintenance": CommandSpec(MaintenanceArgs, lambda d, a, r: d.set_maintenance(a.on, a.reason)),
    "set_catalog": CommandSpec(CatalogArgs, lambda d, a, r: d.set_catalog(a.slots)),
    "set_prices": CommandSpec(PricesArgs, lambda d, a, r: d.set_prices(a.prices)),
    "set_exchange_rate": CommandSpec(ExchangeRateArgs, lambda d, a, r: d.set_exchange_rate(a.currency, a.rate)),
    "refund": CommandSpec(RefundArgs, lambda d, a, r: d.refund(a.order_id, a.reason, r)),
    "self_test": CommandSpec(NoArgs, lambda d, a, r: d.self_test()),
    "test_relay": CommandSpec(TestRelayArgs, lambda d, a, r: d.test_relay(a.slot, a.ms)),
    "logs": CommandSpec(LogsArgs, lambda d, a, r: d.logs(a.lines)),
    "rebirth": CommandSpec(NoArgs, lambda d, a, r: d.rebirth()),
    "raise_alarm": CommandSpec(RaiseAlarmArgs, lambda d, a, r: d.raise_alarm(a.id, a.severity, a.message)),
    "clear_alarm": CommandSpec(ClearAlarmArgs, lambda d, a, r: d.clear_alarm(a.id)),
}


@dataclass
class Reply:
    request_id: str
    command: str
    code: str
    message: str
    result: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.code == "ok"


class CommandDispatcher:
    def __init__(
        self,
        topics: Topics,
        actions: DeviceActions,
        publish: Publish,
        outbox: Outbox,
        *,
        public_key: Ed25519PublicKey | None,
        signed_commands: frozenset[str],
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._topics = topics
        self._actions = actions
        self._publish = publish
        self._outbox = outbox
        self._public_key = public_key
        self._signed = signed_commands
        self._max_age_s = max_age_s
        self._clock = clock
        self._replies: OrderedDict[str, bytes] = OrderedDict()
        self.handled = 0

    @property
    def capabilities(self) -> list[str]:
        return sorted(COMMANDS)

    async def handle(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        if not topic.startswith(self._topics.base + "/cmd/"):
            return
        command = topic.rsplit("/", 1)[1]
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        request: dict[str, Any] = {}
        try:
            payload = message.payload
            raw = payload if isinstance(payload, (bytes, bytearray)) else str(payload).encode()
            parsed = json.loads(raw)
            if isinstance(parsed, dict):
                request = parsed
        except (ValueError, UnicodeDecodeError):
            pass
        request_id = request.get("request_id")
        if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
            request_id = None
        requester = request.get("requester")
        if not isinstance(requester, str) or not is_topic_level(requester) or len(requester) > 64:
            requester = "any"
        reply_topic = self._reply_topic(response_topic, requester, request_id)
        if reply_topic is None:
            log.warning("command %s: response topic %r is outside %s; not answered", command, response_topic,
                        self._topics.reply_prefix)
            return
        cache_key = f"{requester}/{request_id}" if request_id else None
        if cache_key is not None and cache_key in self._replies:
            await self._send(reply_topic, correlation, self._replies[cache_key])
            return
        reply = await self._run(command, request, request_id)
        body = self._encode(reply)
        if cache_key is not None:
            self._replies[cache_key] = body
            while len(self._replies) > REMEMBERED_REPLIES:
                self._replies.popitem(last=False)
        self.handled += 1
        log.info("command %s (%s): %s %s", command, reply.request_id, reply.code, reply.message)
        await self._send(reply_topic, correlation, body)

    def _reply_topic(self, response_topic: str | None, requester: str, request_id: str | None) -> str | None:
        if response_topic:
            # Only under our reply subtree: a device must not be made to publish elsewhere.
            inside = response_topic.startswith(self._topics.reply_prefix)
            if not inside or "+" in response_topic or "#" in response_topic:
                return None
            return response_topic
        return self._topics.reply(requester, request_id or "invalid")

    async def _run(self, command: str, request: dict[str, Any], request_id: str | None) -> Reply:
        rid = request_id or "invalid"
        if not request:
            return Reply(rid, command, "bad_request", "the payload is not a JSON object")
        if request_id is None:
            return Reply(rid, command, "bad_request", "request_id must be 1-64 of A-Z a-z 0-9 _ . : -")
        spec = COMMANDS.get(command)
        if spec is None:
            return Reply(rid, command, "unknown_command", f"unknown command {command!r}; known: {self.capabilities}")
        refusal = self._check_signature(command, request)
        if refusal is not None:
            return Reply(rid, command, *refusal)
        raw_args = request.get("args", {})
        try:
            args = spec.args.model_validate(raw_args)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors())
            return Reply(rid, command, "bad_request", f"invalid args: {problems}")
        if "sig" in request and not self._use_nonce(request):
            return Reply(rid, command, "replayed", "this signed command was already run (nonce seen before)")
        try:
            result = await spec.run(self._actions, args, rid)
        except CommandFailed as exc:
            return Reply(rid, command, exc.code, exc.message)
        except Exception as exc:
            log.exception("command %s failed", command)
            return Reply(rid, command, "failed", f"{type(exc).__name__}: {exc}")
        return Reply(rid, command, "ok", "done", result)

    def _check_signature(self, command: str, request: dict[str, Any]) -> tuple[str, str] | None:
        """None when the request may run; else (code, message)."""
        needs = command in self._signed
        if not needs and "sig" not in request:
            return self._check_age(request, required=False)
        if self._public_key is None:
            return "unauthorized", "signed commands are refused: no fleet.public_key_file is configured"
        if "sig" not in request:
            return "unauthorized", f"{command} must be signed with the fleet key (sig, issued_at, nonce)"
        try:
            verify_request(
                self._public_key, fleet=self._topics.fleet, device=self._topics.device, command=command, request=request
            )
        except SignatureError as exc:
            return "unauthorized", str(exc)
        return self._check_age(request, required=True)

    def _check_age(self, request: dict[str, Any], *, required: bool) -> tuple[str, str] | None:
        issued_at = request.get("issued_at")
        if issued_at is None and not required:
            return None
        if not isinstance(issued_at, (int, float)) or isinstance(issued_at, bool):
            return "bad_request", "issued_at must be seconds since the epoch"
        now = self._clock()
        if issued_at < now - self._max_age_s:
            age = now - issued_at
            return "expired", f"issued {age:.0f} s ago; commands older than {self._max_age_s:g} s are refused"
        if issued_at > now + FUTURE_SKEW_S:
            return "expired", "issued_at is in the future (check the operator's and the kiosk's clocks)"
        return None

    def _use_nonce(self, request: dict[str, Any]) -> bool:
        nonce = str(request["nonce"])
        issued_at = float(request["issued_at"])
        return self._outbox.use_nonce(nonce, expires=issued_at + self._max_age_s + FUTURE_SKEW_S, now=self._clock())

    def _encode(self, reply: Reply) -> bytes:
        body: dict[str, Any] = {
            "request_id": reply.request_id,
            "command": reply.command,
            "device": self._topics.device,
            "fleet": self._topics.fleet,
            "ok": reply.ok,
            "code": reply.code,
            "message": reply.message,
            "ts": utc_now_iso(),
        }
        if reply.result is not None:
            body["result"] = reply.result
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()

    async def _send(self, topic: str, correlation: bytes | None, body: bytes) -> None:
        properties = None
        if correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation
        if not await self._publish(topic, body, properties=properties):
            log.warning("command reply to %s not delivered (not connected)", topic)
