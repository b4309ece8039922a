"""WeChat Pay API v3 answers read into the provider contract: a verified transaction object becomes
a PaymentStatus only when it names our order, merchant, amount and currency; error bodies become
PaymentRejected (a definitive "no") or OutcomeUnknown (ask again).

Everything here reads bodies whose signature was already verified; it never sees HTTP.
"""

from __future__ import annotations

from typing import Any

from kiosk.payments.base import Order, OutcomeUnknown, PaymentError, PaymentRejected, PaymentState, PaymentStatus

# trade_state -> the contract's state (payments.md §3 v3; micropay adds USERPAYING/REVOKED/PAYERROR).
_PENDING = frozenset({"NOTPAY", "USERPAYING", "ACCEPT"})
_CLOSED = frozenset({"CLOSED", "REVOKED", "PAYERROR"})
# Codes that mean "not now" or "maybe": the operation may have happened or may succeed if retried
# with the same ids, so they are never a definitive refusal. Both spellings WeChat has used.
UNCERTAIN_CODES = frozenset(
    {
        "SYSTEM_ERROR",
        "SYSTEMERROR",
        "BANK_ERROR",
        "BANKERROR",
        "USERPAYING",
        "FREQUENCY_LIMITED",
        "RATELIMIT_EXCEEDED",
        "ORDERPAID",  # a create or close that finds the order paid: the money is real, query it
        "ORDER_PAID",
    }
)
NOT_FOUND_CODES = frozenset({"ORDER_NOT_EXIST", "ORDERNOTEXIST", "RESOURCE_NOT_EXISTS"})


def error_code(data: dict[str, Any]) -> str:
    code = data.get("code")
    return code if isinstance(code, str) else ""


def describe(status: int, data: dict[str, Any]) -> str:
    parts = [f"HTTP {status}"] + [str(data[k])[:120] for k in ("code", "message") if data.get(k)]
    return " ".join(parts)


def failure(op: str, status: int, data: dict[str, Any]) -> PaymentError:
    """A verified non-2xx answer as the exception the engine acts on."""
    code = error_code(data)
    if status >= 500 or status == 429 or code in UNCERTAIN_CODES or not code:
        return OutcomeUnknown(f"{op}: {describe(status, data)}")
    message = data.get("message")
    return PaymentRejected(code, str(message)[:200] if message is not None else "")


def transaction_status(op: str, data: dict[str, Any], *, mchid: str, order: Order | None) -> PaymentStatus:
    """A verified transaction object (query, micropay, or a decrypted callback) as a PaymentStatus.

    With order=None (a callback read on its own) a PAID status reports the transaction's own amount
    and currency, and the caller must compare them with its order before calling it paid."""
    out_trade_no = data.get("out_trade_no")
    if not isinstance(out_trade_no, str) or not out_trade_no:
        raise OutcomeUnknown(f"{op}: no out_trade_no in the transaction")
    if order is not None and out_trade_no != order.order_id:
        raise OutcomeUnknown(f"{op}: transaction is for order {out_trade_no!r}, not {order.order_id!r}")
    got_mchid = data.get("mchid")
    if got_mchid is not None and got_mchid != mchid:
        raise OutcomeUnknown(f"{op}: transaction belongs to merchant {str(got_mchid)[:32]!r}, not ours")
    state = data.get("trade_state")
    txn_id = data.get("transaction_id") if isinstance(data.get("transaction_id"), str) else None
    if state == "SUCCESS":
        total, currency = amount_of(op, data, "total")
        if order is not None and (total, currency) != (order.amount_minor, order.currency):
            raise OutcomeUnknown(
                f"{op}: paid {total} {currency} (minor units), but the order is {order.amount_minor} {order.currency}"
            )
        return PaymentStatus(
            order_id=out_trade_no,
            state=PaymentState.PAID,
            provider_txn_id=txn_id,
            amount_minor=total,
            currency=currency,
            buyer_scanned=True,
        )
    if state in _PENDING:
        # NOTPAY: nobody has paid yet (WeChat does not report a scan of a Native QR).
        # USERPAYING/ACCEPT: the wallet is asking the tourist for a password or confirmation.
        return PaymentStatus(
            order_id=out_trade_no, state=PaymentState.PENDING, provider_txn_id=txn_id, buyer_scanned=state != "NOTPAY"
        )
    if state in _CLOSED:
        return PaymentStatus(order_id=out_trade_no, state=PaymentState.CLOSED, provider_txn_id=txn_id)
    if state == "REFUND":
        return PaymentStatus(order_id=out_trade_no, state=PaymentState.REFUNDED, provider_txn_id=txn_id)
    raise OutcomeUnknown(f"{op}: unknown trade_state {str(state)[:40]!r}")


def amount_of(op: str, data: dict[str, Any], field: str) -> tuple[int, str]:
    """(amount.<field>, amount.currency), both required: a payment in an unstated currency is not
    one we can accept (cross-border merchants price in several)."""
    amount = data.get("amount")
    if not isinstance(amount, dict):
        raise OutcomeUnknown(f"{op}: no amount object")
    value, currency = amount.get(field), amount.get("currency")
    if isinstance(value, bool) or not isinstance(value, int):
        raise OutcomeUnknown(f"{op}: amount.{field} is not an integer")
    if not isinstance(currency, str) or not currency:
        raise OutcomeUnknown(f"{op}: amount.currency is missing")
    return value, currency
