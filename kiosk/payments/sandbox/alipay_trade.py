"""One Alipay trade in the sandbox's books, and the reply shapes alipay.trade.* answers with."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeGuard

from kiosk.money import AmountError, from_decimal_text, to_decimal_text
from kiosk.payments.sandbox.tourist import Behaviour, Tourist

BEIJING = timezone(timedelta(hours=8))
# Alipay payment codes: digits, 25-30 first, 16-24 long (reference section 4).
AUTH_CODE = re.compile(r"(2[5-9]|30)[0-9]{14,22}")
# The wallet refusing a presented code, as alipay.trade.pay reports it (40004 sub-codes).
REFUSALS: dict[str, tuple[str, str]] = {
    "code_expired": ("ACQ.PAYMENT_AUTH_CODE_INVALID", "支付失败，获取顾客账户信息失败，请顾客刷新付款码后重新收款"),
    "code_used": ("ACQ.PAYMENT_AUTH_CODE_INVALID", "付款码已被使用，请顾客刷新付款码后重新收款"),
    "no_balance": ("ACQ.BUYER_BALANCE_NOT_ENOUGH", "买家余额不足"),
}

Response = dict[str, Any]


@dataclass
class SandboxOrder:
    out_trade_no: str
    subject: str
    amount_minor: int
    currency: str
    qr_code: str
    tourist: Tourist
    created_wall: datetime
    trade_no: str
    auth_code: str | None = None  # set for alipay.trade.pay (user-presented) trades
    cancel_refund_minor: int = 0
    refunds: dict[str, int] = field(default_factory=dict)  # out_request_no -> minor units

    @property
    def behaviour(self) -> Behaviour:
        return self.tourist.behaviour

    @property
    def closed_at(self) -> float | None:
        return self.tourist.closed_at

    def scanned(self, now: float) -> bool:
        return self.tourist.scanned(now)

    def paid(self, now: float) -> bool:
        return self.tourist.paid(now)

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

    def wall(self, at: float) -> str:
        """A monotonic instant of this trade as Beijing wall-clock text."""
        return _wall(self.created_wall + timedelta(seconds=at - self.tourist.created))

    def view(self, now: float) -> dict[str, Any]:
        return {
            "out_trade_no": self.out_trade_no,
            "subject": self.subject,
            "mode": "qr" if self.auth_code is None else "code",
            "amount": self.text(self.amount_minor),
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "qr_code": self.qr_code,
            "trade_no": self.trade_no if self.scanned(now) else None,
            "behaviour": self.behaviour.name,
            "scan_delay_s": self.behaviour.scan_delay_s,
            "pay_delay_s": self.behaviour.pay_delay_s,
            # The kiosk-side simulator reads this to jam the vend after a good payment.
            "jam": self.behaviour.name == "pays_then_jam",
            "state": self.status(now),
            "scanned": self.scanned(now),
            "paid": self.paid(now),  # money was taken (stays true after a refund)
            "closed": self.closed_at is not None,
            "refunded_minor": self.refunded_minor,
            "refunded_amount": self.text(self.refunded_minor),
            "refund_count": len(self.refunds) + (1 if self.cancel_refund_minor else 0),
            "refund_requests": sorted(self.refunds),
        }

    def pay_reply(self, now: float) -> Response:
        """alipay.trade.pay's answer for this trade now: 10000 paid, or 10003 still confirming."""
        fields: Response = {
            "out_trade_no": self.out_trade_no,
            "trade_no": self.trade_no,
            "buyer_logon_id": "tou***@example.com",
            "total_amount": self.text(self.amount_minor),
        }
        if self.currency != "CNY":
            fields["trans_currency"] = self.currency
        if not self.paid(now):
            # Alipay's own text, leading space included; the amounts paid so far are zero.
            zero = self.text(0)
            return {"code": "10003", "msg": " order success pay inprocess", **fields,
                    "receipt_amount": zero, "buyer_pay_amount": zero}
        # Like the real trade.pay reply, a success carries no trade_status: 10000 itself says paid.
        return ok(
            **fields,
            receipt_amount=fields["total_amount"],
            buyer_pay_amount=fields["total_amount"],
            gmt_payment=self.wall(self.tourist.pay_at or self.tourist.created),
            fund_bill_list=[{"amount": fields["total_amount"], "fund_channel": "ALIPAYACCOUNT"}],
            buyer_user_id="2088000000000001",
        )


def ok(**fields: Any) -> Response:
    return {"code": "10000", "msg": "Success", **fields}


def business_failed(sub_code: str, sub_msg: str, **extra: Any) -> Response:
    return {"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg, **extra}


def _wall(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


def now_wall() -> str:
    return _wall(datetime.now(BEIJING))


def id_ok(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= 64


def amount_of(text: Any, currency: Any) -> int | None:
    if not isinstance(text, str) or not isinstance(currency, str):
        return None
    try:
        return from_decimal_text(text, currency)
    except AmountError:
        return None
