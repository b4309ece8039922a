"""The WeChat Pay v3 sandbox's books: orders, the simulated tourist, and WeChat's trade rules.

Each method takes a parsed request and returns (HTTP status, JSON body or None for 204), as WeChat
Pay answers. Like the Alipay ledger, states come from monotonic timestamps when asked, except a
payment code's "user paying" phase, which lasts a number of queries (Behaviour.pending_polls).
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from kiosk.payments.sandbox.ledger import Behaviour, Ledger

Reply = tuple[int, dict[str, Any] | None]
BEIJING = timezone(timedelta(hours=8))
_PAYS = ("pays", "pays_then_jam")
# Wallet refusals of a payment code: behaviour -> (HTTP status, code, message).
_CODE_REFUSALS = {
    "code_expired": (400, "AUTHCODEEXPIRE", "二维码已过期，请用户在微信上刷新后再试"),
    "code_used": (400, "AUTH_CODE_ERROR", "授权码已使用，请刷新后再试"),
    "no_balance": (403, "NOTENOUGH", "用户余额不足"),
}


def error(status: int, code: str, message: str) -> Reply:
    return status, {"code": code, "message": message}


def _rfc3339(unix: float) -> str:
    return datetime.fromtimestamp(unix, BEIJING).isoformat(timespec="seconds")


@dataclass
class WxOrder:
    out_trade_no: str
    mchid: str
    appid: str
    description: str
    total: int
    currency: str
    trade_type: str  # NATIVE | MICROPAY
    behaviour: Behaviour
    created: float  # monotonic
    created_wall: float  # Unix seconds
    transaction_id: str
    code_url: str | None
    notify_url: str | None
    paid_at: float | None  # monotonic; None = not (yet) decided to pay
    failed: str | None = None  # a refused payment code: PAYERROR from the start
    closed_at: float | None = None
    closed_state: str = "CLOSED"  # REVOKED for a reversed micropay
    reverse_refunded: int = 0
    polls: int = 0
    refunds: dict[str, int] = field(default_factory=dict)  # out_refund_no -> minor units

    def paid(self, now: float) -> bool:
        # Once closed or reversed, a later payment by the tourist fails, as on a real closed order.
        horizon = now if self.closed_at is None else min(now, self.closed_at)
        return self.failed is None and self.paid_at is not None and self.paid_at <= horizon

    def trade_state(self, now: float) -> str:
        if self.refunds:
            return "REFUND"
        if self.closed_at is not None:
            return self.closed_state
        if self.failed is not None:
            return "PAYERROR"
        if self.paid(now):
            return "SUCCESS"
        return "USERPAYING" if self.trade_type == "MICROPAY" else "NOTPAY"

    @property
    def refunded_minor(self) -> int:
        return self.reverse_refunded + sum(self.refunds.values())


class WechatBooks:
    def __init__(self, ledger: Ledger, clock: Callable[[], float] = time.monotonic) -> None:
        self._ledger = ledger
        self._clock = clock
        self._lock = threading.Lock()
        self._orders: dict[str, WxOrder] = {}
        self._serial = 0

    def reset(self) -> None:
        with self._lock:
            self._orders.clear()

    # ------------------------------------------------------------ creating orders

    def native(self, body: dict[str, Any], *, mchid: str, cross_border: bool) -> Reply:
        problem = _check_order_body(body, mchid, cross_border, "NATIVE")
        if problem is not None:
            return problem
        with self._lock:
            now = self._clock()
            existing = self._orders.get(body["out_trade_no"])
            if existing is not None:
                return self._repeat(existing, body, now) or (200, {"code_url": existing.code_url})
            order = self._new(body, mchid, "NATIVE", now)
            b = order.behaviour
            order.paid_at = now + b.scan_delay_s + b.pay_delay_s if b.name in _PAYS else None
            order.code_url = "weixin://wxpay/bizpayurl?pr=" + secrets.token_urlsafe(6)
            return 200, {"code_url": order.code_url}

    def micropay(self, body: dict[str, Any], *, mchid: str) -> Reply:
        problem = _check_order_body(body, mchid, True, "MICROPAY")
        if problem is not None:
            return problem
        payer = body.get("payer")
        if not isinstance(payer, dict) or not isinstance(payer.get("auth_code"), str) or not payer["auth_code"]:
            return error(400, "PARAM_ERROR", "payer.auth_code is required")
        with self._lock:
            now = self._clock()
            existing = self._orders.get(body["out_trade_no"])
            if existing is not None:
                return self._repeat(existing, body, now) or self._micropay_answer(existing, now)
            order = self._new(body, mchid, "MICROPAY", now)
            b = order.behaviour
            if b.name in _CODE_REFUSALS:
                order.failed = b.name
                return error(*_CODE_REFUSALS[b.name])
            if b.name in _PAYS:
                if b.pending_polls is None:
                    order.paid_at = now + b.pay_delay_s
                elif b.pending_polls == 0:
                    order.paid_at = now
            return self._micropay_answer(order, now)

    def _micropay_answer(self, order: WxOrder, now: float) -> Reply:
        if order.failed is not None:
            return error(*_CODE_REFUSALS[order.failed])
        state = order.trade_state(now)
        if state == "USERPAYING":
            return error(202, "USERPAYING", "需要用户输入支付密码")
        if state in ("SUCCESS", "REFUND"):
            return 200, self._transaction(order, now)
        return error(400, "ORDERREVERSED", "订单已撤销")

    def _new(self, body: dict[str, Any], mchid: str, trade_type: str, now: float) -> WxOrder:
        self._serial += 1
        wall = time.time()
        order = WxOrder(
            out_trade_no=body["out_trade_no"],
            mchid=mchid,
            appid=body["appid"],
            description=body["description"],
            total=body["amount"]["total"],
            currency=body["amount"]["currency"],
            trade_type=trade_type,
            behaviour=self._ledger.next_behaviour(),
            created=now,
            created_wall=wall,
            transaction_id=f"42000{datetime.fromtimestamp(wall, BEIJING):%Y%m%d}{self._serial:013d}",
            code_url=None,
            notify_url=body.get("notify_url"),
            paid_at=None,
        )
        self._orders[order.out_trade_no] = order
        return order

    @staticmethod
    def _repeat(order: WxOrder, body: dict[str, Any], now: float) -> Reply | None:
        """A create repeated with the same out_trade_no: fine with identical parameters while
        unpaid; otherwise WeChat's refusal. None means "answer as for the original"."""
        amount = body["amount"]
        if (order.total, order.currency, order.description) != (
            amount["total"],
            amount["currency"],
            body["description"],
        ):
            return error(400, "INVALID_REQUEST", "商户订单号重复 (same out_trade_no, different order)")
        state = order.trade_state(now)
        if order.trade_type == "NATIVE" and state in ("SUCCESS", "REFUND"):
            return error(400, "ORDERPAID", "该订单已支付")
        if order.trade_type == "NATIVE" and state == "CLOSED":
            return error(400, "ORDER_CLOSED", "订单已关闭")
        return None

    # ------------------------------------------------------------ existing orders

    def query(self, out_trade_no: str, *, mchid: str) -> Reply:
        with self._lock:
            now = self._clock()
            order = self._find(out_trade_no, mchid)
            if order is None:
                return error(404, "ORDER_NOT_EXIST", "订单不存在")
            order.polls += 1
            b = order.behaviour
            if (
                order.trade_type == "MICROPAY"
                and b.name in _PAYS
                and b.pending_polls is not None
                and order.paid_at is None
                and order.polls > b.pending_polls
            ):
                order.paid_at = now
            return 200, self._transaction(order, now)

    def close(self, out_trade_no: str, *, mchid: str) -> Reply:
        with self._lock:
            now = self._clock()
            order = self._find(out_trade_no, mchid)
            if order is None:
                return error(404, "ORDER_NOT_EXIST", "订单不存在")
            if order.trade_state(now) in ("SUCCESS", "REFUND"):
                return error(400, "ORDERPAID", "订单已支付，不能关闭")
            if order.closed_at is None:
                order.closed_at = now
            return 204, None

    def reverse(self, out_trade_no: str, *, mchid: str) -> Reply:
        with self._lock:
            now = self._clock()
            order = self._find(out_trade_no, mchid)
            if order is None:
                return error(404, "ORDER_NOT_EXIST", "订单不存在")
            if order.trade_type != "MICROPAY":
                return error(400, "INVALID_REQUEST", "订单的支付场景不支持该请求 (reverse is for micropay)")
            if order.refunds:
                return error(400, "INVALID_REQUEST", "订单已退款，不能撤销")
            if order.closed_at is None:
                if order.paid(now):
                    order.reverse_refunded = order.total  # reversing a paid order refunds it in full
                order.closed_at = now
                order.closed_state = "REVOKED"
            return 204, None

    def refund(self, body: dict[str, Any], *, mchid: str, cross_border: bool) -> Reply:
        out_trade_no, out_refund_no, amount = body.get("out_trade_no"), body.get("out_refund_no"), body.get("amount")
        if not isinstance(out_refund_no, str) or not 0 < len(out_refund_no) <= 64 or not isinstance(amount, dict):
            return error(400, "PARAM_ERROR", "out_refund_no and amount are required")
        if cross_border and body.get("mchid") != mchid:
            return error(400, "PARAM_ERROR", "mchid does not match the Authorization header")
        with self._lock:
            now = self._clock()
            order = self._find(out_trade_no, mchid) if isinstance(out_trade_no, str) else None
            if order is None:
                return error(404, "ORDER_NOT_EXIST", "订单不存在")
            if out_refund_no in order.refunds:
                return 200, self._refund_reply(order, out_refund_no, cross_border)  # a retry: no money moves
            if any(out_refund_no in o.refunds for o in self._orders.values()):
                return error(400, "INVALID_REQUEST", "out_refund_no already used for another order")
            if not order.paid(now) or order.closed_at is not None:
                return error(400, "INVALID_REQUEST", "订单未支付或已撤销，不能退款")
            refund, total, currency = amount.get("refund"), amount.get("total"), amount.get("currency")
            if (total, currency) != (order.total, order.currency) or not isinstance(refund, int) or refund <= 0:
                return error(400, "PARAM_ERROR", "amount.total/currency must be the order's; refund > 0")
            if refund > order.total - order.refunded_minor:
                return error(403, "NOT_ENOUGH", "退款金额超过订单可退金额")
            order.refunds[out_refund_no] = refund
            return 200, self._refund_reply(order, out_refund_no, cross_border)

    def _refund_reply(self, order: WxOrder, out_refund_no: str, cross_border: bool) -> dict[str, Any]:
        refund = order.refunds[out_refund_no]
        return {
            (
                "id" if cross_border else "refund_id"
            ): f"5030{uuid.uuid5(uuid.NAMESPACE_OID, out_refund_no).int % 10**24:024d}",
            "out_refund_no": out_refund_no,
            "transaction_id": order.transaction_id,
            "out_trade_no": order.out_trade_no,
            "channel": "ORIGINAL",
            "status": "SUCCESS",
            "create_time": _rfc3339(time.time()),
            "amount": {
                "refund": refund,
                "total": order.total,
                "currency": order.currency,
                "payer_refund": _in_cny(refund, order.currency),
                "payer_currency": "CNY",
            },
        }

    # ------------------------------------------------------------ views

    def transaction(self, out_trade_no: str) -> tuple[dict[str, Any], str | None] | None:
        """The transaction object a callback would carry, and the order's notify_url."""
        with self._lock:
            order = self._orders.get(out_trade_no)
            return None if order is None else (self._transaction(order, self._clock()), order.notify_url)

    def _transaction(self, order: WxOrder, now: float) -> dict[str, Any]:
        state = order.trade_state(now)
        out: dict[str, Any] = {
            "appid": order.appid,
            "mchid": order.mchid,
            "out_trade_no": order.out_trade_no,
            "trade_type": order.trade_type,
            "trade_state": state,
            "trade_state_desc": _STATE_DESC.get(state, state),
            "amount": {"total": order.total, "currency": order.currency},
        }
        if order.paid(now):
            out["transaction_id"] = order.transaction_id
            out["bank_type"] = "OTHERS"
            out["success_time"] = _rfc3339(order.created_wall + ((order.paid_at or order.created) - order.created))
            out["payer"] = {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}
            out["amount"].update(payer_total=_in_cny(order.total, order.currency), payer_currency="CNY")
        return out

    def views(self) -> list[dict[str, Any]]:
        with self._lock:
            now = self._clock()
            return [self._view(o, now) for o in self._orders.values()]

    @staticmethod
    def _view(o: WxOrder, now: float) -> dict[str, Any]:
        return {
            "out_trade_no": o.out_trade_no,
            "trade_type": o.trade_type,
            "subject": o.description,
            "amount_minor": o.total,
            "currency": o.currency,
            "qr_code": o.code_url,
            "behaviour": o.behaviour.name,
            "jam": o.behaviour.name == "pays_then_jam",
            "state": o.trade_state(now),
            "scanned": o.trade_type == "MICROPAY"
            or (o.behaviour.name != "never_pays" and now >= o.created + o.behaviour.scan_delay_s),
            "paid": o.paid(now),  # money was taken (stays true after a refund)
            "closed": o.closed_at is not None,
            "refunded_minor": o.refunded_minor,
            "refund_count": len(o.refunds) + (1 if o.reverse_refunded else 0),
            "refund_requests": sorted(o.refunds),
            "polls": o.polls,
        }

    def _find(self, out_trade_no: str, mchid: str) -> WxOrder | None:
        order = self._orders.get(out_trade_no)
        return order if order is not None and order.mchid == mchid else None


_STATE_DESC = {
    "SUCCESS": "支付成功",
    "NOTPAY": "未支付",
    "USERPAYING": "用户支付中，需输入密码",
    "CLOSED": "已关闭",
    "REVOKED": "已撤销",
    "PAYERROR": "支付失败",
    "REFUND": "转入退款",
}


def _in_cny(minor: int, currency: str) -> int:
    # What the tourist's wallet was charged; a fixed illustrative rate, never checked by the kiosk.
    return minor if currency == "CNY" else minor * 7


def _check_order_body(body: dict[str, Any], mchid: str, cross_border: bool, trade_type: str) -> Reply | None:
    out_trade_no, amount = body.get("out_trade_no"), body.get("amount")
    if body.get("mchid") != mchid:
        return error(400, "PARAM_ERROR", "mchid does not match the Authorization header")
    if not isinstance(body.get("appid"), str) or not body["appid"]:
        return error(400, "PARAM_ERROR", "appid is required")
    if not isinstance(out_trade_no, str) or not 0 < len(out_trade_no) <= 32:
        return error(400, "PARAM_ERROR", "out_trade_no must be 1..32 characters")
    if not isinstance(body.get("description"), str) or not 0 < len(body["description"]) <= 127:
        return error(400, "PARAM_ERROR", "description must be 1..127 characters")
    if not isinstance(amount, dict):
        return error(400, "PARAM_ERROR", "amount is required")
    total, currency = amount.get("total"), amount.get("currency", "CNY")
    amount["currency"] = currency
    if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
        return error(400, "PARAM_ERROR", "amount.total must be a positive integer in minor units")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isupper():
        return error(400, "PARAM_ERROR", "amount.currency must be an ISO 4217 code")
    if not cross_border and currency != "CNY":
        return error(400, "PARAM_ERROR", "domestic orders are in CNY")
    if cross_border:
        if body.get("trade_type") != trade_type:
            return error(400, "PARAM_ERROR", f"trade_type must be {trade_type}")
        if not isinstance(body.get("merchant_category_code"), str):
            return error(400, "PARAM_ERROR", "merchant_category_code is required")
    if trade_type == "NATIVE" and not isinstance(body.get("notify_url"), str):
        return error(400, "PARAM_ERROR", "notify_url is required")
    return None
