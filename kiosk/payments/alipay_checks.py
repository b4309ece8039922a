"""Checks on a verified Alipay response object: is it about our order, amount and currency, and
what does a trade.pay answer mean?

These run only after the RSA2 signature verified; each failure raises OutcomeUnknown (the engine
queries again), and their messages carry ids and amounts, never keys or payment codes.
"""

from __future__ import annotations

from typing import Any

from kiosk.money import AmountError, from_decimal_text, to_decimal_text
from kiosk.payments.base import Order, OutcomeUnknown, PaymentError, PaymentRejected, PaymentState, PaymentStatus

PAY = "alipay.trade.pay"
SUCCESS = "10000"
IN_PROGRESS = "10003"  # trade.pay: the wallet asks the tourist to confirm (password, large amount)
BUSINESS_FAILED = "40004"
# 40004 sub-codes that say "not now" rather than "no": the operation may still happen or may be
# retried with the same ids, so they are never reported as a definitive rejection.
RETRYABLE_SUB_CODES = frozenset({"ACQ.SYSTEM_ERROR", "ACQ.SELLER_BALANCE_NOT_ENOUGH"})
# 40004 sub-codes of trade.pay that mean a trade already exists under this out_trade_no (paid,
# waiting, or created with other details): not a refusal of the money, so the engine must query.
TRADE_EXISTS = frozenset({"ACQ.TRADE_HAS_SUCCESS", "ACQ.CONTEXT_INCONSISTENT", "ACQ.TRADE_BUYER_NOT_MATCH"})
PAID_STATUSES = frozenset({"TRADE_SUCCESS", "TRADE_FINISHED"})


def result_code(data: dict[str, Any]) -> str:
    value = data.get("code")
    return value if isinstance(value, str) else ""


def sub_code(data: dict[str, Any]) -> str:
    sub = data.get("sub_code")
    return sub if isinstance(sub, str) else ""


def opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def describe(data: dict[str, Any]) -> str:
    parts = [str(data.get(k))[:120] for k in ("code", "msg", "sub_code", "sub_msg") if data.get(k)]
    return " ".join(parts) or "empty response"


def rejected(data: dict[str, Any]) -> PaymentRejected:
    msg = data.get("sub_msg") or data.get("msg") or ""
    return PaymentRejected(sub_code(data) or result_code(data), str(msg)[:200])


def check_order_id(method: str, data: dict[str, Any], order: Order) -> None:
    got = data.get("out_trade_no")
    if got != order.order_id:
        raise OutcomeUnknown(f"{method}: response is for order {got!r}, not {order.order_id!r}")


def check_amount(method: str, data: dict[str, Any], field: str, order: Order) -> int:
    text = data.get(field)
    if not isinstance(text, str):
        raise OutcomeUnknown(f"{method}: response has no {field}")
    try:
        amount = from_decimal_text(text, order.currency)
    except AmountError as exc:
        raise OutcomeUnknown(f"{method}: {field} {exc}") from None
    if amount != order.amount_minor:
        raise OutcomeUnknown(
            f"{method}: {field} {text} does not match the order's "
            f"{to_decimal_text(order.amount_minor, order.currency)} {order.currency}"
        )
    return amount


def check_currency(method: str, data: dict[str, Any], fields: tuple[str, ...], order: Order) -> None:
    # Absent means the trade is in the currency we created it with (CNY unless we sent
    # trans_currency); present, it must be exactly ours.
    for field in fields:
        got = data.get(field)
        if got is not None and got != order.currency:
            raise OutcomeUnknown(f"{method}: {field} {got!r} is not the order's {order.currency}")


def masked(exc: PaymentError, secret: str) -> PaymentError:
    """exc with every occurrence of secret masked (the same exception when it has none)."""
    if secret not in str(exc):
        return exc
    if isinstance(exc, PaymentRejected):
        return PaymentRejected(exc.code, exc.message.replace(secret, "***"))
    return type(exc)(str(exc).replace(secret, "***"))


def pay_result(data: dict[str, Any], order: Order) -> PaymentStatus:
    """What a verified alipay.trade.pay answer means for the order (raises unless PAID/PENDING)."""
    method = PAY
    code = result_code(data)
    if code == SUCCESS:
        # trade.pay's 10000 carries no trade_status: the signed code itself means TRADE_SUCCESS.
        # Should a trade_status ever appear, it must agree.
        check_order_id(method, data, order)
        amount = check_amount(method, data, "total_amount", order)
        check_currency(method, data, ("trans_currency", "currency"), order)
        trade_no = opt_str(data.get("trade_no"))
        if trade_no is None or data.get("trade_status", "TRADE_SUCCESS") not in PAID_STATUSES:
            raise OutcomeUnknown(f"{method}: success without a trade_no or with an unpaid trade_status")
        return PaymentStatus(
            order_id=order.order_id,
            state=PaymentState.PAID,
            provider_txn_id=trade_no,
            amount_minor=amount,
            currency=order.currency,
            buyer_scanned=True,
        )
    if code == IN_PROGRESS:
        # Not money yet, but it must still be our trade before the engine starts polling it.
        check_order_id(method, data, order)
        check_amount(method, data, "total_amount", order)
        check_currency(method, data, ("trans_currency", "currency"), order)
        return PaymentStatus(
            order_id=order.order_id,
            state=PaymentState.PENDING,
            provider_txn_id=opt_str(data.get("trade_no")),
            buyer_scanned=True,
        )
    sub = sub_code(data)
    if code == BUSINESS_FAILED and sub in TRADE_EXISTS:
        raise OutcomeUnknown(f"{method}: a trade {order.order_id} already exists ({sub}); query it")
    if code.startswith("4000") and sub not in RETRYABLE_SUB_CODES:
        # Verified refusal (bad, expired or used code, no balance, ...): no money was taken.
        raise rejected(data)
    raise OutcomeUnknown(f"{method}: {describe(data)}")
