"""The seam for more wallet protocols in the sandbox: each one is a module under this package
exposing `mount(gateway) -> WireProtocol`, listed in PROTOCOL_MODULES.

A protocol answers raw HTTP requests under its path prefixes. It shares the gateway's fault
queue (faults are keyed by the protocol's method names) and its simulated tourists
(`gateway.ledger.next_behaviour()`); the server carries out transport faults (delay, timeout,
dropped connection, HTTP 500) the protocol asks for in its WireResponse.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from kiosk.payments.sandbox.gateway import SandboxGateway

# One line per wallet protocol; the Alipay open platform is built into server.py.
PROTOCOL_MODULES: list[str] = ["kiosk.payments.sandbox.alipay_plus"]
PROTOCOL_MODULES.append("kiosk.payments.sandbox.wechat_v3")  # WeChat Pay v3 (JSON, RSA, /v3/)
PROTOCOL_MODULES.append("kiosk.payments.sandbox.wechat_v2")  # WeChat Pay v2 (XML, /pay/ and /secapi/)
PROTOCOL_MODULES.append("kiosk.payments.sandbox.citcon")  # Citcon UPI (JSON, /citcon/v1/)


@dataclass(frozen=True)
class WireRequest:
    method: str  # GET, POST, ...
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


@dataclass
class WireResponse:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json;charset=utf-8"})
    delay_s: float = 0.0  # wait before answering (delay / timeout faults)
    drop: bool = False  # close the connection without an answer (after any delay)


class WireProtocol(Protocol):
    name: str
    prefixes: tuple[str, ...]
    methods: tuple[str, ...]  # names accepted by add_fault, e.g. "wechat.micropay"

    def handle(self, request: WireRequest) -> WireResponse: ...

    def orders(self) -> list[dict[str, object]]: ...

    def reset(self) -> None: ...


def mount_all(gateway: SandboxGateway) -> list[WireProtocol]:
    protocols: list[WireProtocol] = []
    for name in PROTOCOL_MODULES:
        module = importlib.import_module(name)
        protocols.append(module.mount(gateway))
    return protocols
