"""One order in the WeChat Pay v2 sandbox, and the small pieces of WeChat's answers about it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from kiosk.money import CURRENCY_EXPONENTS, to_decimal_text
from kiosk.payments.sandbox.ledger import Behaviour

Answer = dict[str, str]
MICROPAY, NATIVE = "MICROPAY", "NATIVE"
BEIJING = timezone(timedelta(hours=8))
AUTH_CODE = re.compile(r"^1[0-5]\d{16}$")  # a WeChat payment code: 18 digits, 10..15 first
CODE_REFUSALS = {
    "code_expired": ("AUTHCODEEXPIRE", "二维码已过期，请用户在微信上刷新后再试"),
    "code_used": ("AUTH_CODE_ERROR", "每个二维码仅限使用一次，请刷新再试"),
    "no_balance": ("NOTENOUGH", "用户余额不足"),
}
USED_CODE = CODE_REFUSALS["code_used"]
# With a Native QR there is no code to refuse (as in the sandbox's other protocols): an expired or
# used code means the tourist never manages to scan; no balance means they scan and never pay.
NEVER_SCANS_QR = frozenset({"never_pays", "code_expired", "code_used"})
NEVER_PAYS_QR = NEVER_SCANS_QR | {"no_balance"}


def ok(**fields: str) -> Answer:
    return {"result_code": "SUCCESS", **fields}


def fail(err_code: str, des: str, **fields: str) -> Answer:
    return {"result_code": "FAIL", "err_code": err_code, "err_code_des": des, **fields}


@dataclass
class WxOrder:
    out_trade_no: str
    trade_type: str
    body: str
    total_fee: int
    fee_type: str
    behaviour: Behaviour
    created: float
    created_wall: datetime
    transaction_id: str
    auth_code: str = ""
    code_url: str = ""
    prepay_id: str = ""
    refused: tuple[str, str] | None = None  # a micropay the wallet refused: PAYERROR
    queries: int = 0
    paid_at: float | None = None
    ended: str | None = None  # CLOSED (closeorder) or REVOKED (reverse, auto-revoke)
    refunds: dict[str, tuple[int, str]] = field(default_factory=dict)  # out_refund_no -> (fee, refund_id)

    @property
    def refunded(self) -> int:
        return sum(fee for fee, _ in self.refunds.values())

    def trade_state(self) -> str:
        if self.refused is not None:
            return "PAYERROR"
        if self.ended is not None:
            return self.ended
        if self.paid_at is not None:
            return "REFUND" if self.refunds else "SUCCESS"
        return "USERPAYING" if self.trade_type == MICROPAY else "NOTPAY"


def view(o: WxOrder, now: float) -> dict[str, Any]:
    """What tests and the kiosk simulator see of an order (the gateway's common fields and more)."""
    scanned = o.trade_type == MICROPAY or (
        o.behaviour.name not in NEVER_SCANS_QR
        and (o.paid_at is not None or (o.ended is None and now >= o.created + o.behaviour.scan_delay_s))
    )
    # A reverse of a paid order gives the money back just as a refund does.
    refunded = o.refunded + (o.total_fee if o.ended == "REVOKED" and o.paid_at is not None else 0)
    return {
        "out_trade_no": o.out_trade_no, "trade_type": o.trade_type, "trade_state": o.trade_state(),
        "amount_minor": o.total_fee, "currency": o.fee_type, "amount": to_decimal_text(o.total_fee, o.fee_type),
        "qr_code": o.code_url or None,
        "transaction_id": o.transaction_id if o.paid_at is not None else None,
        "behaviour": o.behaviour.name, "jam": o.behaviour.name == "pays_then_jam",
        "scanned": scanned, "paid": o.paid_at is not None, "closed": o.ended is not None,
        "reversed": o.ended == "REVOKED", "refunded_minor": refunded,
        "refund_count": len(o.refunds), "refund_requests": sorted(o.refunds), "queries": o.queries,
    }


def int_of(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdigit() and len(text) <= 12 else None


def fee_of(p: dict[str, str]) -> int | None:
    fee = int_of(p.get("total_fee"))
    currency = p.get("fee_type") or "CNY"
    return fee if fee and currency in CURRENCY_EXPONENTS else None


# Made-up but fixed rates (CNY per major unit), so cash_fee is plausible and deterministic.
_CNY_PER_UNIT = {"CNY": 1.0, "USD": 7.1, "HKD": 0.91, "EUR": 7.7, "GBP": 9.0, "JPY": 0.047, "SGD": 5.3}


def cash_fee(minor: int, currency: str) -> int:
    scale: int = 10 ** CURRENCY_EXPONENTS.get(currency, 2)
    return max(1, round(minor / scale * _CNY_PER_UNIT.get(currency, 1.0) * 100))
