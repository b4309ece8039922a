"""The sandbox gateway's books: orders, a simulated tourist per order, and Alipay's trade rules.

State is computed from monotonic timestamps when asked (never by a timer), so a given sequence of
calls at given times always gives the same answers. One lock guards everything; the HTTP server
calls in from many threads.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeGuard

from kiosk.money import AmountError, from_decimal_text, to_decimal_text

# pays / never_pays / pays_then_jam: what the tourist does with a QR, or with a payment code
# (pay_delay_s or pending_polls of "confirm in the wallet" first). The code_* and no_balance
# behaviours are the wallet refusing a scanned payment code.
BEHAVIOURS = ("pays", "never_pays", "pays_then_jam", "code_expired", "code_used", "no_balance")
BEIJING = timezone(timedelta(hours=8))

Response = dict[str, Any]


@dataclass(frozen=True)
class Behaviour:
    """What the simulated tourist does with the QR code of one order."""

    name: str = "pays"
    scan_delay_s: float = 2.0  # after precreate: scans (the trade appears as WAIT_BUYER_PAY)
    pay_delay_s: float = 3.0  # after the scan: confirms (TRADE_SUCCESS)
    # Payment codes: stay "user paying" (USERPAYING / 10003 / PROCESSING) for this many status
    # queries, then pay; None = use pay_delay_s.
    pending_polls: int | None = None

    def __post_init__(self) -> None:
        if self.name not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {', '.join(BEHAVIOURS)}")
        if not (0 <= self.scan_delay_s <= 86_400 and 0 <= self.pay_delay_s <= 86_400):
            raise ValueError("delays must be between 0 and 86400 seconds")
        if self.pending_polls is not None and not 0 <= self.pending_polls <= 10_000:
            raise ValueError("pending_polls must be between 0 and 10000")


@dataclass
class SandboxOrder:
    out_trade_no: str
    subject: str
    amount_minor: int
    currency: str
    qr_code: str
    behaviour: Behaviour
    created: float  # time.monotonic()
    created_wall: datetime
    trade_no: str
    closed_at: float | None = None
    cancel_refund_minor: int = 0
    refunds: dict[str, int] = field(default_factory=dict)  # out_request_no -> minor units

    @property
    def scan_at(self) -> float | None:
        return None if self.behaviour.name == "never_pays" else self.created + self.behaviour.scan_delay_s

    @property
    def pay_at(self) -> float | None:
        scan = self.scan_at
        return None if scan is None else scan + self.behaviour.pay_delay_s

    def _happened(self, at: float | None, now: float) -> bool:
        # Once closed, the tourist's later scan or payment fails, as on a closed real trade.
        horizon = now if self.closed_at is None else min(now, self.closed_at)
        return at is not None and at <= horizon

    def scanned(self, now: float) -> bool:
        return self._happened(self.scan_at, now)

    def paid(self, now: float) -> bool:
        return self._happened(self.pay_at, now)

    def status(self, now: float) -> str:
        if self.closed_at is not None:
            return "TRADE_CLOSED"
        if self.paid(now):
            return "TRADE_SUCCESS"
        if self.scanned(now):
            return "WAIT_BUYER_PAY"
        return "NOT_SCANNED"  # Alipay has no trade yet: query says ACQ.TRADE_NOT_EXIST

    @property
    def refunded_minor(self) -> int:
        return self.cancel_refund_minor + sum(self.refunds.values())

    def text(self, minor: int) -> str:
        return to_decimal_text(minor, self.currency)


def _ok(**fields: Any) -> Response:
    return {"code": "10000", "msg": "Success", **fields}


def business_failed(sub_code: str, sub_msg: str, **extra: Any) -> Response:
    return {"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg, **extra}


def _wall(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


class Ledger:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._orders: dict[str, SandboxOrder] = {}
        self._default = Behaviour()
        self._queued: deque[Behaviour] = deque()
        self._serial = 0

    # ------------------------------------------------------------ control

    @property
    def default(self) -> Behaviour:
        with self._lock:
            return self._default

    def set_behaviour(self, behaviour: Behaviour, for_next: int | None) -> None:
        """for_next=None changes the default; N queues it for the next N precreated orders."""
        with self._lock:
            if for_next is None:
                self._default = behaviour
            else:
                self._queued.extend([behaviour] * for_next)

    def next_behaviour(self) -> Behaviour:
        """The simulated tourist for a new order of any protocol: the next queued one, or the default."""
        with self._lock:
            return self._queued.popleft() if self._queued else self._default

    def reset(self) -> None:
        with self._lock:
            self._orders.clear()
            self._queued.clear()
            self._default = Behaviour()

    def views(self) -> list[dict[str, Any]]:
        with self._lock:
            now = self._clock()
            return [self._view(o, now) for o in self._orders.values()]

    def view(self, out_trade_no: str) -> dict[str, Any] | None:
        with self._lock:
            order = self._orders.get(out_trade_no)
            return None if order is None else self._view(order, self._clock())

    @staticmethod
    def _view(o: SandboxOrder, now: float) -> dict[str, Any]:
        return {
            "out_trade_no": o.out_trade_no,
            "subject": o.subject,
            "amount": o.text(o.amount_minor),
            "amount_minor": o.amount_minor,
            "currency": o.currency,
            "qr_code": o.qr_code,
            "trade_no": o.trade_no if o.scanned(now) else None,
            "behaviour": o.behaviour.name,
            "scan_delay_s": o.behaviour.scan_delay_s,
            "pay_delay_s": o.behaviour.pay_delay_s,
            # The kiosk-side simulator reads this to jam the vend after a good payment.
            "jam": o.behaviour.name == "pays_then_jam",
            "state": o.status(now),
            "scanned": o.scanned(now),
            "paid": o.paid(now),  # money was taken (stays true after a refund)
            "closed": o.closed_at is not None,
            "refunded_minor": o.refunded_minor,
            "refunded_amount": o.text(o.refunded_minor),
            "refund_count": len(o.refunds) + (1 if o.cancel_refund_minor else 0),
            "refund_requests": sorted(o.refunds),
        }

    # ------------------------------------------------------------ alipay.trade.*

    def precreate(self, biz: dict[str, Any]) -> Response:
        out_trade_no = biz.get("out_trade_no")
        subject = biz.get("subject")
        currency = biz.get("trans_currency") or "CNY"
        if not _id_ok(out_trade_no) or not isinstance(subject, str) or not subject:
            return business_failed("ACQ.INVALID_PARAMETER", "参数无效: out_trade_no/subject")
        minor = _amount(biz.get("total_amount"), currency)
        if minor is None or minor <= 0:
            return business_failed("ACQ.INVALID_PARAMETER", "参数无效: total_amount/trans_currency")
        with self._lock:
            now = self._clock()
            existing = self._orders.get(out_trade_no)
            if existing is not None:
                # Precreate is idempotent per out_trade_no, as long as nothing changed.
                if (existing.amount_minor, existing.currency, existing.subject) != (minor, currency, subject):
                    return business_failed("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
                status = existing.status(now)
                if status == "TRADE_SUCCESS":
                    return business_failed("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
                if status == "TRADE_CLOSED":
                    return business_failed("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
                return _ok(out_trade_no=out_trade_no, qr_code=existing.qr_code)
            behaviour = self._queued.popleft() if self._queued else self._default
            self._serial += 1
            wall = datetime.now(BEIJING)
            order = SandboxOrder(
                out_trade_no=out_trade_no,
                subject=subject,
                amount_minor=minor,
                currency=currency,
                qr_code="https://qr.alipay.com/bax" + secrets.token_hex(10),
                behaviour=behaviour,
                created=now,
                created_wall=wall,
                trade_no=f"{wall:%Y%m%d}22001{self._serial:015d}",
            )
            self._orders[out_trade_no] = order
            return _ok(out_trade_no=out_trade_no, qr_code=order.qr_code)

    def query(self, biz: dict[str, Any]) -> Response:
        with self._lock:
            now = self._clock()
            order = self._find(biz)
            if order is None or order.status(now) == "NOT_SCANNED":
                return business_failed("ACQ.TRADE_NOT_EXIST", "交易不存在")
            out = _ok(
                out_trade_no=order.out_trade_no,
                trade_status=order.status(now),
                total_amount=order.text(order.amount_minor),
            )
            if order.scanned(now):
                out["trade_no"] = order.trade_no
                out["buyer_logon_id"] = "tou***@example.com"
            if order.currency != "CNY":
                out["trans_currency"] = order.currency
            if order.paid(now):
                pay_at = order.pay_at or order.created
                out["send_pay_date"] = _wall(order.created_wall + timedelta(seconds=pay_at - order.created))
                out["receipt_amount"] = out["total_amount"]
                out["buyer_user_id"] = "2088000000000001"
            return out

    def cancel(self, biz: dict[str, Any]) -> Response:
        with self._lock:
            now = self._clock()
            order = self._find(biz)
            if order is None:
                return business_failed("ACQ.TRADE_NOT_EXIST", "交易不存在", retry_flag="N")
            out = _ok(out_trade_no=order.out_trade_no, retry_flag="N")
            if order.scanned(now):
                out["trade_no"] = order.trade_no
            if order.closed_at is None:
                if order.paid(now):
                    # Paid: cancel refunds in full. Only here, once, does cancel move money.
                    order.cancel_refund_minor = order.amount_minor - order.refunded_minor
                order.closed_at = now
            if order.refunded_minor:
                out["action"] = "refund"
                out["gmt_refund_pay"] = _wall(datetime.now(BEIJING))
            else:
                out["action"] = "close"
            return out

    def refund(self, biz: dict[str, Any]) -> Response:
        with self._lock:
            now = self._clock()
            order = self._find(biz)
            if order is None or not order.scanned(now):
                return business_failed("ACQ.TRADE_NOT_EXIST", "交易不存在")
            request_no = biz.get("out_request_no") or order.out_trade_no
            if not _id_ok(request_no):
                return business_failed("ACQ.INVALID_PARAMETER", "参数无效: out_request_no")
            if request_no in order.refunds:
                # A retry of a refund that already happened: success, but no money moves again.
                return self._refund_reply(order, fund_change="N")
            if order.status(now) != "TRADE_SUCCESS":
                return business_failed("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
            currency = biz.get("refund_currency") or order.currency
            minor = _amount(biz.get("refund_amount"), order.currency)
            if currency != order.currency or minor is None or minor <= 0:
                return business_failed("ACQ.INVALID_PARAMETER", "参数无效: refund_amount/refund_currency")
            if minor != order.amount_minor - order.refunded_minor:
                return business_failed("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
            order.refunds[request_no] = minor
            order.closed_at = now  # refunded in full: Alipay closes the trade
            return self._refund_reply(order, fund_change="Y")

    @staticmethod
    def _refund_reply(order: SandboxOrder, *, fund_change: str) -> Response:
        out = _ok(
            trade_no=order.trade_no,
            out_trade_no=order.out_trade_no,
            buyer_logon_id="tou***@example.com",
            fund_change=fund_change,
            refund_fee=order.text(order.refunded_minor),
            gmt_refund_pay=_wall(datetime.now(BEIJING)),
        )
        if order.currency != "CNY":
            out["refund_currency"] = order.currency
        return out

    def _find(self, biz: dict[str, Any]) -> SandboxOrder | None:
        out_trade_no = biz.get("out_trade_no")
        if isinstance(out_trade_no, str):
            return self._orders.get(out_trade_no)
        trade_no = biz.get("trade_no")
        return next((o for o in self._orders.values() if o.trade_no == trade_no), None)


def _id_ok(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= 64


def _amount(text: Any, currency: Any) -> int | None:
    if not isinstance(text, str) or not isinstance(currency, str):
        return None
    try:
        return from_decimal_text(text, currency)
    except AmountError:
        return None

