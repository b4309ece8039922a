"""Faults the sandbox gateway injects into its next responses, for testing the kiosk's distrust.

Every fault is applied AFTER the request was processed: the order really was created, paid,
cancelled or refunded, and only the answer is late, lost or untrustworthy. That is the case where
a careless client loses or double-takes money, so it is the one worth simulating.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

FAULTS = (
    "delay",  # answer correctly after delay_s
    "http_500",  # HTTP 500 with an HTML body
    "bad_signature",  # signed, but the signature does not verify
    "unsigned",  # no sign field at all
    "wrong_amount",  # correctly signed, amount off by one minor unit
    "wrong_order_id",  # correctly signed, another out_trade_no
    "wrong_currency",  # correctly signed, amount in another currency (protocols that carry one)
    "drop_connection",  # close the connection without an answer
    "timeout",  # hold the connection for delay_s, then close it without an answer
    "duplicate_notification",  # deliver the next callback twice (WeChat Pay v3 repeats callbacks)
)
ANY_METHOD = "*"
DEFAULT_DELAY_S = {"delay": 1.0, "timeout": 600.0}


@dataclass
class Fault:
    method: str
    fault: str
    count: int
    delay_s: float

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}")
        if not isinstance(self.count, int) or self.count < 1:
            raise ValueError("count must be a positive integer")
        if not 0 <= self.delay_s <= 86_400:
            raise ValueError("delay_s must be between 0 and 86400")


class FaultQueue:
    """Pending faults, consumed in the order added by the requests whose method they match."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Fault] = []

    def add(self, method: str, fault: str, count: int = 1, delay_s: float | None = None) -> None:
        if not isinstance(method, str) or not method:
            raise ValueError("method must be an Alipay method name or '*'")
        delay = DEFAULT_DELAY_S.get(fault, 0.0) if delay_s is None else float(delay_s)
        entry = Fault(method=method, fault=fault, count=count, delay_s=delay)
        with self._lock:
            self._pending.append(entry)

    def take(self, method: str) -> Fault | None:
        """The fault for this request, if one is pending for its method (one use of it)."""
        with self._lock:
            for entry in self._pending:
                if entry.method in (method, ANY_METHOD):
                    entry.count -= 1
                    if entry.count == 0:
                        self._pending.remove(entry)
                    return Fault(method=method, fault=entry.fault, count=1, delay_s=entry.delay_s)
        return None

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._pending]
