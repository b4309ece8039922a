"""The WeChat Pay v2 sandbox's books: orders, their simulated tourists, and WeChat's trade rules.

Like the Alipay ledger, state is worked out from monotonic timestamps when asked, never by a timer.
A micropay is paid at once, after pay_delay_s, or on the query after `pending_polls` queries; an
unpaid one is revoked auto_revoke_s after creation (WeChat: 45 s). A Native QR is paid
scan_delay_s + pay_delay_s after unifiedorder. Every method returns the business part of an answer
(result_code and its fields); the protocol adds return_code, the ids, the nonce and the sign.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from kiosk.payments.sandbox.ledger import Behaviour
from kiosk.payments.sandbox.wechat_v2_order import (
    AUTH_CODE,
    BEIJING,
    CODE_REFUSALS,
    MICROPAY,
    NATIVE,
    NEVER_PAYS_QR,
    USED_CODE,
    Answer,
    WxOrder,
    cash_fee,
    fail,
    fee_of,
    int_of,
    ok,
    view,
)


class WechatBooks:
    def __init__(self, next_behaviour: Callable[[], Behaviour], clock: Callable[[], float] = time.monotonic) -> None:
        self.auto_revoke_s = 45.0  # WeChat revokes an unpaid micropay this long after creation
        # WeChat tells callers to reverse no sooner than 15 s after creation; the sandbox enforces it.
        self.reverse_not_before_s = 15.0
        self._next_behaviour = next_behaviour
        self._clock = clock
        self._lock = threading.Lock()
        self._orders: dict[str, WxOrder] = {}
        self._used_codes: set[str] = set()
        self._serial = 0

    # ------------------------------------------------------------ time

    def _advance(self, order: WxOrder, now: float) -> None:
        """Let the tourist act up to `now`: pay when due, or be revoked first."""
        if order.paid_at is not None or order.ended is not None or order.refused is not None:
            return
        b = order.behaviour
        due: float | None = None
        if order.trade_type == NATIVE:
            if b.name not in NEVER_PAYS_QR:
                due = order.created + b.scan_delay_s + b.pay_delay_s
        elif b.name != "never_pays":
            if b.pending_polls is None:
                due = order.created + b.pay_delay_s
            elif b.pending_polls == 0:
                due = order.created
        revoke_at = order.created + self.auto_revoke_s if order.trade_type == MICROPAY else None
        if due is not None and due <= now and (revoke_at is None or due < revoke_at):
            order.paid_at = due
        elif revoke_at is not None and revoke_at <= now:
            order.ended = "REVOKED"

    def _new(self, out_trade_no: str, trade_type: str, params: dict[str, str], fee: int, now: float) -> WxOrder:
        self._serial += 1
        wall = datetime.now(BEIJING)
        order = WxOrder(
            out_trade_no=out_trade_no, trade_type=trade_type, body=params.get("body", ""), total_fee=fee,
            fee_type=params.get("fee_type") or "CNY", behaviour=self._next_behaviour(), created=now,
            created_wall=wall, transaction_id=f"4200{wall:%Y%m%d}{self._serial:014d}",
        )
        self._orders[out_trade_no] = order
        return order

    # ------------------------------------------------------------ the API

    def micropay(self, p: dict[str, str]) -> Answer:
        fee = fee_of(p)
        if fee is None:
            return fail("PARAM_ERROR", "total_fee/fee_type 参数错误")
        code = p["auth_code"]
        if not AUTH_CODE.match(code):
            return fail("AUTH_CODE_INVALID", "请扫描微信支付授权码(以10/11/12/13/14/15开头的18位数字)")
        with self._lock:
            now = self._clock()
            order = self._orders.get(p["out_trade_no"])
            if order is not None:
                self._advance(order, now)
                if (order.trade_type, order.auth_code, order.total_fee, order.fee_type) == (
                    MICROPAY, code, fee, p.get("fee_type") or "CNY"
                ):
                    return self._micropay_answer(order)  # a retry of the same charge
                return self._reused(order)
            order = self._new(p["out_trade_no"], MICROPAY, p, fee, now)
            order.auth_code = code
            if code in self._used_codes:
                order.refused = USED_CODE
            else:
                order.refused = CODE_REFUSALS.get(order.behaviour.name)
            self._used_codes.add(code)  # a payment code is good for one charge, whatever its fate
            self._advance(order, now)
            return self._micropay_answer(order)

    def orderquery(self, p: dict[str, str]) -> Answer:
        with self._lock:
            now = self._clock()
            order = self._find(p)
            if order is None:
                return fail("ORDERNOTEXIST", "此交易订单号不存在")
            self._advance(order, now)
            pending = order.behaviour.pending_polls
            if order.trade_state() == "USERPAYING" and pending is not None and order.behaviour.name != "never_pays":
                order.queries += 1
                if order.queries > pending:
                    order.paid_at = now  # the tourist confirms while we ask
            state = order.trade_state()
            out = ok(trade_state=state, trade_state_desc=state, **self._order_fields(order))
            if order.paid_at is not None:
                out.update(self._payment_fields(order))
            return out

    def unifiedorder(self, p: dict[str, str]) -> Answer:
        fee = fee_of(p)
        if fee is None:
            return fail("PARAM_ERROR", "total_fee/fee_type 参数错误")
        if p["trade_type"] != NATIVE or not p.get("product_id"):
            return fail("PARAM_ERROR", "sandbox: trade_type must be NATIVE, with a product_id")
        with self._lock:
            now = self._clock()
            order = self._orders.get(p["out_trade_no"])
            if order is None:
                # Answered before the tourist can act: they pay what this answer puts on screen.
                order = self._new(p["out_trade_no"], NATIVE, p, fee, now)
                order.code_url = "weixin://wxpay/bizpayurl?pr=" + secrets.token_urlsafe(6)
                order.prepay_id = "wx" + secrets.token_hex(14)
                return ok(trade_type=NATIVE, prepay_id=order.prepay_id, code_url=order.code_url)
            self._advance(order, now)
            if (order.trade_type, order.total_fee, order.fee_type) != (NATIVE, fee, p.get("fee_type") or "CNY"):
                return fail("OUT_TRADE_NO_USED", "商户订单号重复")
            if order.paid_at is not None:
                return fail("ORDERPAID", "该订单已支付")
            if order.ended is not None:
                return fail("ORDERCLOSED", "该订单已关闭")
            return ok(trade_type=NATIVE, prepay_id=order.prepay_id, code_url=order.code_url)

    def closeorder(self, p: dict[str, str]) -> Answer:
        with self._lock:
            order = self._find(p)
            if order is None:
                return fail("ORDERNOTEXIST", "订单不存在")
            self._advance(order, self._clock())
            state = order.trade_state()
            if state in ("SUCCESS", "REFUND"):
                return fail("ORDERPAID", "订单已支付，不能发起关单")
            if state in ("CLOSED", "REVOKED", "PAYERROR"):
                return fail("ORDERCLOSED", "订单已关闭，无法重复关闭")
            order.ended = "CLOSED"
            return ok(result_msg="OK")

    def reverse(self, p: dict[str, str]) -> Answer:
        with self._lock:
            now = self._clock()
            order = self._find(p)
            if order is None:
                return fail("ORDERNOTEXIST", "订单不存在", recall="N")
            if order.trade_type != MICROPAY:
                return fail("TRADE_ERROR", "Native 订单请调用关单接口", recall="N")
            if now - order.created < self.reverse_not_before_s:
                return fail(
                    "REVERSE_TOO_EARLY",
                    f"sandbox: reverse no sooner than {self.reverse_not_before_s:g} s after the order was created",
                    recall="Y",
                )
            self._advance(order, now)
            state = order.trade_state()
            if state == "REFUND":
                return fail("TRADE_STATE_ERROR", "订单已发生退款，请调用退款接口", recall="N")
            if state == "USERPAYING" and order.behaviour.name != "never_pays":
                # The tourist's confirmation lands as we try: WeChat refuses, and the retry finds it paid.
                order.paid_at = now
                return fail("USERPAYING", "正在支付中不能发起撤销", recall="Y")
            if state in ("SUCCESS", "USERPAYING"):
                order.ended = "REVOKED"  # a paid order's money goes back to the tourist
            return ok(recall="N")

    def refund(self, p: dict[str, str]) -> Answer:
        with self._lock:
            order = self._find(p)
            if order is None:
                return fail("ORDERNOTEXIST", "订单不存在")
            self._advance(order, self._clock())
            total, fee = int_of(p["total_fee"]), int_of(p["refund_fee"])
            if total != order.total_fee or fee is None or fee <= 0:
                return fail("PARAM_ERROR", "订单金额或退款金额与之前请求不一致")
            if (p.get("refund_fee_type") or order.fee_type) != order.fee_type:
                return fail("PARAM_ERROR", "refund_fee_type 与 fee_type 不一致")
            number = p["out_refund_no"]
            done = order.refunds.get(number)
            if done is not None:
                if done[0] != fee:
                    return fail("PARAM_ERROR", "同一退款单号的退款金额不一致")
                return self._refund_answer(order, number)  # a retry: same answer, no money moves
            if order.trade_state() not in ("SUCCESS", "REFUND"):
                return fail("TRADE_STATE_ERROR", "订单状态错误")
            if fee > order.total_fee - order.refunded:
                return fail("ERROR", "申请退款金额超过订单可退金额")
            self._serial += 1
            order.refunds[number] = (fee, f"5030{self._serial:024d}")
            return self._refund_answer(order, number)

    # ------------------------------------------------------------ answers and views

    def _micropay_answer(self, order: WxOrder) -> Answer:
        if order.refused is not None:
            return fail(*order.refused)
        if order.paid_at is not None:
            return ok(**self._order_fields(order), **self._payment_fields(order))
        if order.ended == "REVOKED":
            return fail("ORDERREVERSED", "订单已撤销")
        if order.ended == "CLOSED":
            return fail("ORDERCLOSED", "订单已关闭")
        return fail("USERPAYING", "需要用户输入支付密码")

    @staticmethod
    def _reused(order: WxOrder) -> Answer:
        state = order.trade_state()
        if state in ("SUCCESS", "REFUND"):
            return fail("ORDERPAID", "订单已支付")
        if state == "REVOKED":
            return fail("ORDERREVERSED", "订单已撤销")
        if state == "CLOSED":
            return fail("ORDERCLOSED", "订单已关闭")
        return fail("OUT_TRADE_NO_USED", "商户订单号重复")

    @staticmethod
    def _order_fields(order: WxOrder) -> dict[str, str]:
        return {
            "out_trade_no": order.out_trade_no, "total_fee": str(order.total_fee), "fee_type": order.fee_type,
            "trade_type": order.trade_type,
        }

    @staticmethod
    def _payment_fields(order: WxOrder) -> dict[str, str]:
        paid_wall = order.created_wall + timedelta(seconds=(order.paid_at or order.created) - order.created)
        return {
            "transaction_id": order.transaction_id, "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            "is_subscribe": "N", "bank_type": "CFT", "time_end": f"{paid_wall:%Y%m%d%H%M%S}",
            # What the tourist paid in CNY; differs from total_fee, so a client must not read it.
            "cash_fee": str(cash_fee(order.total_fee, order.fee_type)), "cash_fee_type": "CNY",
        }

    def _refund_answer(self, order: WxOrder, number: str) -> Answer:
        fee, refund_id = order.refunds[number]
        return ok(
            transaction_id=order.transaction_id, out_refund_no=number, refund_id=refund_id,
            refund_fee=str(fee), refund_fee_type=order.fee_type,
            cash_fee=str(cash_fee(order.total_fee, order.fee_type)),
            cash_refund_fee=str(cash_fee(fee, order.fee_type)),
            **self._order_fields(order),
        )

    def _find(self, p: dict[str, str]) -> WxOrder | None:
        if p.get("out_trade_no"):
            return self._orders.get(p["out_trade_no"])
        return next((o for o in self._orders.values() if o.transaction_id == p.get("transaction_id")), None)

    def money_of(self, out_trade_no: str) -> tuple[int, str] | None:
        """(total_fee, fee_type) of an order, for faults that misstate them."""
        with self._lock:
            order = self._orders.get(out_trade_no)
            return None if order is None else (order.total_fee, order.fee_type)

    def views(self) -> list[dict[str, Any]]:
        with self._lock:
            now = self._clock()
            for order in self._orders.values():
                self._advance(order, now)
            return [view(o, now) for o in self._orders.values()]

    def reset(self) -> None:
        with self._lock:
            self._orders.clear()
            self._used_codes.clear()
