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
from datetime import datetime
from typing import Any

from kiosk.payments.sandbox.alipay_trade import (
    AUTH_CODE,
    BEIJING,
    REFUSALS,
    Response,
    SandboxOrder,
    amount_of,
    business_failed,
    id_ok,
    now_wall,
    ok,
)
from kiosk.payments.sandbox.tourist import BEHAVIOURS, Behaviour, Tourist

# Behaviour and BEHAVIOURS live in tourist.py (every protocol shares them); re-exported here.
__all__ = ["BEHAVIOURS", "Behaviour", "Ledger", "Response", "SandboxOrder", "business_failed"]


class Ledger:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._orders: dict[str, SandboxOrder] = {}
        self._codes: dict[str, str] = {}  # payment code -> the out_trade_no that consumed it
        self._default = Behaviour()
        self._queued: deque[Behaviour] = deque()
        self._serial = 0

    # ------------------------------------------------------------ control

    @property
    def default(self) -> Behaviour:
        with self._lock:
            return self._default

    def set_behaviour(self, behaviour: Behaviour, for_next: int | None) -> None:
        """for_next=None changes the default; N queues it for the next N new orders."""
        with self._lock:
            if for_next is None:
                self._default = behaviour
            else:
                self._queued.extend([behaviour] * for_next)

    def next_behaviour(self) -> Behaviour:
        """The simulated tourist for a new order of any protocol: the next queued one, or the default."""
        with self._lock:
            return self._next_behaviour()

    def _next_behaviour(self) -> Behaviour:
        return self._queued.popleft() if self._queued else self._default

    def reset(self) -> None:
        with self._lock:
            self._orders.clear()
            self._codes.clear()
            self._queued.clear()
            self._default = Behaviour()

    def views(self) -> list[dict[str, Any]]:
        with self._lock:
            now = self._clock()
            return [o.view(now) for o in self._orders.values()]

    def view(self, out_trade_no: str) -> dict[str, Any] | None:
        with self._lock:
            order = self._orders.get(out_trade_no)
            return None if order is None else order.view(self._clock())

    # ------------------------------------------------------------ alipay.trade.*

    def precreate(self, biz: dict[str, Any]) -> Response:
        checked = _check_order_fields(biz)
        if isinstance(checked, dict):
            return checked
        out_trade_no, subject, minor, currency = checked
        with self._lock:
            now = self._clock()
            existing = self._orders.get(out_trade_no)
            if existing is not None:
                # Precreate is idempotent per out_trade_no, as long as nothing changed.
                if existing.auth_code is not None or (
                    (existing.amount_minor, existing.currency, existing.subject) != (minor, currency, subject)
                ):
                    return business_failed("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
                refusal = _existing_refusal(existing, now)
                return refusal or ok(out_trade_no=out_trade_no, qr_code=existing.qr_code)
            order = self._new_order(out_trade_no, subject, minor, currency, Tourist(self._next_behaviour(), now))
            return ok(out_trade_no=out_trade_no, qr_code=order.qr_code)

    def pay(self, biz: dict[str, Any]) -> Response:
        """alipay.trade.pay: the tourist showed a payment code (scene bar_code or wave_code)."""
        checked = _check_order_fields(biz)
        if isinstance(checked, dict):
            return checked
        out_trade_no, subject, minor, currency = checked
        if biz.get("scene") not in ("bar_code", "wave_code"):
            return business_failed("ACQ.INVALID_PARAMETER", "参数无效: scene")
        if biz.get("product_code", "FACE_TO_FACE_PAYMENT") != "FACE_TO_FACE_PAYMENT":
            return business_failed("ACQ.INVALID_PARAMETER", "参数无效: product_code")
        code = biz.get("auth_code")
        if not isinstance(code, str) or not AUTH_CODE.fullmatch(code):
            return business_failed(*REFUSALS["code_expired"])  # not a code Alipay can read
        with self._lock:
            now = self._clock()
            existing = self._orders.get(out_trade_no)
            if existing is not None:
                # A retry of the same pay (its answer was lost) reports the trade as it is now.
                if (existing.auth_code, existing.amount_minor, existing.currency, existing.subject) != (
                    code, minor, currency, subject
                ):
                    return business_failed("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
                return _existing_refusal(existing, now) or existing.pay_reply(now)
            if code in self._codes:
                # Codes are single-use: one shown again for another trade is refused.
                return business_failed(*REFUSALS["code_used"])
            tourist = Tourist(self._next_behaviour(), now, presented_code=True)
            if tourist.refusal is not None:
                return business_failed(*REFUSALS[tourist.refusal])
            self._codes[code] = out_trade_no
            order = self._new_order(out_trade_no, subject, minor, currency, tourist, auth_code=code)
            return order.pay_reply(now)

    def query(self, biz: dict[str, Any]) -> Response:
        with self._lock:
            now = self._clock()
            order = self._find(biz)
            if order is not None:
                order.tourist.polled(now)
            if order is None or order.status(now) == "NOT_SCANNED":
                return business_failed("ACQ.TRADE_NOT_EXIST", "交易不存在")
            out = ok(
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
                out["send_pay_date"] = order.wall(order.tourist.pay_at or order.tourist.created)
                out["receipt_amount"] = out["total_amount"]
                out["buyer_user_id"] = "2088000000000001"
            return out

    def cancel(self, biz: dict[str, Any]) -> Response:
        with self._lock:
            now = self._clock()
            order = self._find(biz)
            if order is None:
                return business_failed("ACQ.TRADE_NOT_EXIST", "交易不存在", retry_flag="N")
            out = ok(out_trade_no=order.out_trade_no, retry_flag="N")
            if order.scanned(now):
                out["trade_no"] = order.trade_no
            if order.closed_at is None:
                if order.paid(now):
                    # Paid: cancel refunds in full. Only here, once, does cancel move money.
                    order.cancel_refund_minor = order.amount_minor - order.refunded_minor
                order.tourist.close(now)
            if order.refunded_minor:
                out["action"] = "refund"
                out["gmt_refund_pay"] = now_wall()
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
            if not id_ok(request_no):
                return business_failed("ACQ.INVALID_PARAMETER", "参数无效: out_request_no")
            if request_no in order.refunds:
                # A retry of a refund that already happened: success, but no money moves again.
                return self._refund_reply(order, fund_change="N")
            if order.status(now) != "TRADE_SUCCESS":
                return business_failed("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
            currency = biz.get("refund_currency") or order.currency
            minor = amount_of(biz.get("refund_amount"), order.currency)
            if currency != order.currency or minor is None or minor <= 0:
                return business_failed("ACQ.INVALID_PARAMETER", "参数无效: refund_amount/refund_currency")
            if minor != order.amount_minor - order.refunded_minor:
                return business_failed("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
            order.refunds[request_no] = minor
            order.tourist.close(now)  # refunded in full: Alipay closes the trade
            return self._refund_reply(order, fund_change="Y")

    @staticmethod
    def _refund_reply(order: SandboxOrder, *, fund_change: str) -> Response:
        out = ok(
            trade_no=order.trade_no,
            out_trade_no=order.out_trade_no,
            buyer_logon_id="tou***@example.com",
            fund_change=fund_change,
            refund_fee=order.text(order.refunded_minor),
            gmt_refund_pay=now_wall(),
        )
        if order.currency != "CNY":
            out["refund_currency"] = order.currency
        return out

    # ------------------------------------------------------------ helpers (lock held)

    def _new_order(
        self, out_trade_no: str, subject: str, minor: int, currency: str, tourist: Tourist,
        *, auth_code: str | None = None,
    ) -> SandboxOrder:
        self._serial += 1
        wall = datetime.now(BEIJING)
        order = SandboxOrder(
            out_trade_no=out_trade_no,
            subject=subject,
            amount_minor=minor,
            currency=currency,
            qr_code="https://qr.alipay.com/bax" + secrets.token_hex(10),
            tourist=tourist,
            created_wall=wall,
            trade_no=f"{wall:%Y%m%d}22001{self._serial:015d}",
            auth_code=auth_code,
        )
        self._orders[out_trade_no] = order
        return order

    def _find(self, biz: dict[str, Any]) -> SandboxOrder | None:
        out_trade_no = biz.get("out_trade_no")
        if isinstance(out_trade_no, str):
            return self._orders.get(out_trade_no)
        trade_no = biz.get("trade_no")
        return next((o for o in self._orders.values() if o.trade_no == trade_no), None)


def _check_order_fields(biz: dict[str, Any]) -> tuple[str, str, int, str] | Response:
    """out_trade_no, subject, amount and currency of a new trade, or the refusal."""
    out_trade_no = biz.get("out_trade_no")
    subject = biz.get("subject")
    currency = biz.get("trans_currency") or "CNY"
    if not id_ok(out_trade_no) or not isinstance(subject, str) or not subject:
        return business_failed("ACQ.INVALID_PARAMETER", "参数无效: out_trade_no/subject")
    minor = amount_of(biz.get("total_amount"), currency)
    if minor is None or minor <= 0:
        return business_failed("ACQ.INVALID_PARAMETER", "参数无效: total_amount/trans_currency")
    return out_trade_no, subject, minor, currency


def _existing_refusal(order: SandboxOrder, now: float) -> Response | None:
    """Creating a trade again under a paid or closed out_trade_no is refused."""
    status = order.status(now)
    if status == "TRADE_SUCCESS":
        return business_failed("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
    if status == "TRADE_CLOSED":
        return business_failed("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
    return None
