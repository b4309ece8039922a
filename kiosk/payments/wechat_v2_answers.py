"""Reading WeChat Pay v2 answers whose sign has already verified: which err_code means what, and
the checks (order id, amount, currency) that stand between an answer and a PAID.

err_code rules (WeChat's micropay page, reference payments.md §3): SYSTEMERROR, BANKERROR and
USERPAYING mean "not known yet" and are never a failure; a refusal is reported only for codes that
say no money was or will be taken. Any code not listed here is treated as unknown, so a new or
misread code makes the engine query instead of abandoning a charge that may have gone through.
"""

from __future__ import annotations

from collections.abc import Mapping

from kiosk.money import CURRENCY_EXPONENTS
from kiosk.payments.base import Order, OutcomeUnknown, PaymentRejected, PaymentState, PaymentStatus

# micropay: the code or the request was refused; nothing was charged.
MICROPAY_REFUSALS = frozenset({
    # the tourist's side
    "AUTHCODEEXPIRE", "AUTH_CODE_ERROR", "AUTH_CODE_INVALID", "NOTENOUGH", "NOTSUPORTCARD",
    "BUYER_MISMATCH", "TRADE_ERROR", "ORDERCLOSED", "ORDERREVERSED",
    # the merchant's configuration or request
    "NOAUTH", "PARAM_ERROR", "SIGNERROR", "LACK_PARAMS", "XML_FORMAT_ERROR", "NOT_UTF8",
    "APPID_NOT_EXIST", "MCHID_NOT_EXIST", "APPID_MCHID_NOT_MATCH", "INVALID_REQUEST",
    "REQUIRE_POST_METHOD", "POST_DATA_EMPTY",
})
# refund: try again later with the same out_refund_no (merchant balance, rate limits, outages).
REFUND_RETRYABLE = frozenset({
    "SYSTEMERROR", "BIZERR_NEED_RETRY", "NOTENOUGH", "FREQUENCY_LIMITED", "INVALID_REQ_TOO_MUCH", "",
})
_TRADE_STATES = {
    "NOTPAY": PaymentState.PENDING,
    "USERPAYING": PaymentState.PENDING,
    "CLOSED": PaymentState.CLOSED,
    "REVOKED": PaymentState.CLOSED,
    "PAYERROR": PaymentState.CLOSED,
    "REFUND": PaymentState.REFUNDED,
}


def describe(data: Mapping[str, str]) -> str:
    keys = ("result_code", "err_code", "err_code_des", "trade_state", "recall")
    return " ".join(f"{k}={data[k][:120]}" for k in keys if data.get(k)) or "empty answer"


def rejected(data: Mapping[str, str]) -> PaymentRejected:
    return PaymentRejected(data.get("err_code") or "FAIL", data.get("err_code_des", "")[:200])


def check_order_id(method: str, data: Mapping[str, str], order: Order) -> None:
    got = data.get("out_trade_no")
    if got != order.order_id:
        raise OutcomeUnknown(f"{method}: answer is for order {got!r}, not {order.order_id!r}")


def check_money(
    method: str, data: Mapping[str, str], order: Order, amount_field: str, currency_fields: tuple[str, ...]
) -> None:
    """The amount field equals the order's minor units, and the first currency field present
    equals its currency (absent altogether: WeChat's default, CNY)."""
    text = data.get(amount_field, "")
    if not text.isdigit() or not text.isascii() or int(text) != order.amount_minor:
        raise OutcomeUnknown(
            f"{method}: {amount_field} {text!r} is not the order's {order.amount_minor} {order.currency} minor units"
        )
    currency = next((data[f] for f in currency_fields if data.get(f)), "CNY")
    if currency != order.currency or currency not in CURRENCY_EXPONENTS:
        raise OutcomeUnknown(f"{method}: currency {currency!r} is not the order's {order.currency}")


def paid_status(method: str, data: Mapping[str, str], order: Order) -> PaymentStatus:
    check_order_id(method, data, order)
    check_money(method, data, order, "total_fee", ("fee_type",))
    return PaymentStatus(
        order_id=order.order_id,
        state=PaymentState.PAID,
        provider_txn_id=data.get("transaction_id") or None,
        amount_minor=order.amount_minor,
        currency=order.currency,
        buyer_scanned=True,
    )


def micropay_status(data: Mapping[str, str], order: Order) -> PaymentStatus:
    method = "micropay"
    if data.get("result_code") == "SUCCESS":
        return paid_status(method, data, order)
    err = data.get("err_code", "")
    if err == "USERPAYING":
        # The wallet asks the tourist for a password or confirmation: query until it settles.
        return PaymentStatus(order_id=order.order_id, state=PaymentState.PENDING, buyer_scanned=True)
    if err in MICROPAY_REFUSALS:
        raise rejected(data)
    if err == "ORDERPAID":
        raise OutcomeUnknown(f"{method}: {order.order_id} is already paid (an earlier answer was lost); query it")
    # SYSTEMERROR, BANKERROR, OUT_TRADE_NO_USED, anything new: maybe charged, so query.
    raise OutcomeUnknown(f"{method}: {describe(data)}")


def trade_status(method: str, data: Mapping[str, str], order: Order) -> PaymentStatus:
    """orderquery's answer as a PaymentStatus."""
    if data.get("result_code") != "SUCCESS":
        if data.get("err_code") == "ORDERNOTEXIST":
            return PaymentStatus(order_id=order.order_id, state=PaymentState.NOT_FOUND)
        raise OutcomeUnknown(f"{method}: {describe(data)}")
    check_order_id(method, data, order)
    trade_state = data.get("trade_state", "")
    txn = data.get("transaction_id") or None
    if trade_state == "SUCCESS":
        return paid_status(method, data, order)
    state = _TRADE_STATES.get(trade_state)
    if state is None:
        raise OutcomeUnknown(f"{method}: unknown trade_state {trade_state!r}")
    # Only a micropay reports USERPAYING; a Native order says NOTPAY whether scanned or not.
    return PaymentStatus(
        order_id=order.order_id, state=state, provider_txn_id=txn, buyer_scanned=trade_state == "USERPAYING"
    )
