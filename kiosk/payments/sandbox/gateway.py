"""SandboxGateway: a local Alipay gateway on loopback with simulated tourists and fault injection.

Use it from tests (start/stop in-process) or as a separate process (`kiosk sandbox`, see cli.py);
other processes steer it through the JSON control API under /sandbox/.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

from kiosk.config import AlipayConfig
from kiosk.payments import rsa2
from kiosk.payments.sandbox.faults import FaultQueue
from kiosk.payments.sandbox.keys import ensure_keys
from kiosk.payments.sandbox.ledger import Behaviour, Ledger
from kiosk.payments.sandbox.server import GATEWAY_PATH, METHODS, make_server
from kiosk.payments.sandbox.wire import WireProtocol, mount_all

DEFAULT_APP_ID = "2021000000000001"


class SandboxGateway:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        keys_dir: Path,
        app_id: str | None = None,
    ) -> None:
        """app_id=None accepts requests from any app id (the signature is still checked)."""
        self.keys_dir = Path(keys_dir)
        keys = ensure_keys(self.keys_dir)
        self.app_private_key_file = keys.app_private_key_file
        self.app_public_key_file = keys.app_public_key_file
        self.gateway_private_key_file = keys.gateway_private_key_file
        self.gateway_public_key_file = keys.gateway_public_key_file
        self.app_public_key = rsa2.load_public_key_file(self.app_public_key_file)
        self.gateway_private_key = rsa2.load_private_key_file(self.gateway_private_key_file)
        self.app_id = app_id
        self.ledger = Ledger()
        self.faults = FaultQueue()
        self.stopping = threading.Event()  # wakes handlers parked in delay/timeout faults
        self._address = (host, port)
        # Every other wallet protocol (WeChat Pay, Alipay+, Citcon, ...) mounted beside Alipay's.
        self.protocols: list[WireProtocol] = mount_all(self)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Start serving in a background thread; returns the base URL (gateway: + /gateway.do)."""
        if self._server is None:
            self.stopping.clear()
            self._server = make_server(*self._address, self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="alipay-sandbox",
                daemon=True,
            )
            self._thread.start()
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SandboxGateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sandbox gateway is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def gateway_url(self) -> str:
        return self.url + GATEWAY_PATH

    def alipay_config(self, **overrides: Any) -> AlipayConfig:
        """An AlipayConfig pointing at this gateway with the generated app key."""
        fields: dict[str, Any] = {
            "gateway_url": self.gateway_url,
            "app_id": self.app_id or DEFAULT_APP_ID,
            "app_private_key_file": self.app_private_key_file,
            "alipay_public_key_file": self.gateway_public_key_file,
        }
        fields.update(overrides)
        return AlipayConfig(**fields)

    # ------------------------------------------------------------ control

    def set_behaviour(
        self,
        behaviour: str,
        *,
        scan_delay_s: float | None = None,
        pay_delay_s: float | None = None,
        for_next: int | Literal["default"] = "default",
        pending_polls: int | None = None,
    ) -> None:
        """How the next N tourists (or, with "default", all later ones) treat their QR code.

        Delays not given keep the current default's."""
        if for_next != "default" and (isinstance(for_next, bool) or not isinstance(for_next, int) or for_next < 1):
            raise ValueError('for_next must be a positive integer or "default"')
        base = self.ledger.default
        new = Behaviour(
            name=behaviour,
            scan_delay_s=base.scan_delay_s if scan_delay_s is None else float(scan_delay_s),
            pay_delay_s=base.pay_delay_s if pay_delay_s is None else float(pay_delay_s),
            pending_polls=pending_polls,
        )
        self.ledger.set_behaviour(new, None if for_next == "default" else for_next)

    def add_fault(self, method: str, fault: str, *, count: int = 1, delay_s: float | None = None) -> None:
        """Spoil the next `count` answers to `method` ("*" = any method)."""
        known = [*METHODS, *(m for p in self.protocols for m in p.methods)]
        if method != "*" and method not in known:
            raise ValueError(f"method must be one of {', '.join(known)} or '*'")
        self.faults.add(method, fault, count, delay_s)

    def orders(self) -> list[dict[str, Any]]:
        """Every order of every protocol; each view has at least out_trade_no, amount_minor,
        currency, paid, closed, refunded_minor and refund_requests."""
        views: list[dict[str, Any]] = [{"protocol": "alipay", **v} for v in self.ledger.views()]
        for protocol in self.protocols:
            views.extend({"protocol": protocol.name, **v} for v in protocol.orders())
        return views

    def order(self, out_trade_no: str) -> dict[str, Any] | None:
        return next((v for v in self.orders() if v.get("out_trade_no") == out_trade_no), None)

    def protocol_for(self, path: str) -> WireProtocol | None:
        return next((p for p in self.protocols if path.startswith(p.prefixes)), None)

    def reset(self) -> None:
        """Forget all orders and pending faults; back to the default behaviour."""
        self.ledger.reset()
        self.faults.clear()
        for protocol in self.protocols:
            protocol.reset()

    def info(self) -> dict[str, Any]:
        return {
            "gateway_url": self.gateway_url,
            "app_id": self.app_id,
            "app_private_key_file": str(self.app_private_key_file),
            "app_public_key_file": str(self.app_public_key_file),
            "gateway_public_key_file": str(self.gateway_public_key_file),
        }

    # JSON control API bodies (see server.py); bad input raises ValueError -> HTTP 400.

    def control_behaviour(self, data: dict[str, Any]) -> None:
        name = data.get("behaviour")
        if not isinstance(name, str):
            raise ValueError("behaviour is required")
        self.set_behaviour(
            name,
            scan_delay_s=_number(data, "scan_delay_s"),
            pay_delay_s=_number(data, "pay_delay_s"),
            for_next=data.get("for_next", "default"),
            pending_polls=_int_or_none(data, "pending_polls"),
        )

    def control_fault(self, data: dict[str, Any]) -> None:
        method, fault, count = data.get("method"), data.get("fault"), data.get("count", 1)
        if not isinstance(method, str) or not isinstance(fault, str):
            raise ValueError("method and fault are required")
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError("count must be an integer")
        self.add_fault(method, fault, count=count, delay_s=_number(data, "delay_s"))


def _number(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    return float(value)


def _int_or_none(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer")
    return value
