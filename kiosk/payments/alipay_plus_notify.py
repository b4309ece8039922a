"""Antom notifyPayment: verify the POST Antom sends to paymentNotifyUrl, and read it.

The message is signed like a request, over "POST <our notify path>\n<Client-Id>.<Request-Time>.<body>",
with Alipay's key. Reading is pure, so a resent (duplicate) notification reads exactly the same.
A receiver answers NOTIFY_ACK to what verified; anything else makes Antom send it again.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric import rsa

from kiosk.payments import alipay_plus_signature as sig
from kiosk.payments.alipay_plus_amounts import AntomAmountError, from_amount
from kiosk.payments.alipay_plus_client import parse_result
from kiosk.payments.base import OutcomeUnknown, PaymentState, PaymentStatus

NOTIFY_ACK = b'{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}'


class InvalidNotification(OutcomeUnknown):
    """A notifyPayment message that does not verify or cannot be read: ignore it and query."""


def verify_notification(
    headers: Mapping[str, str], body: bytes | str, path: str, *, client_id: str, alipay_public_key: rsa.RSAPublicKey
) -> PaymentStatus:
    """The payment state a notifyPayment POST reports, after checking its signature.

    body is the raw request body and path the URI it was posted to (both are signed). PAID
    carries the notified amount and currency; the caller must still match them and the order id
    against its sale, as runner.verified_paid does."""
    sender = sig.header(headers, "Client-Id")
    req_time = sig.header(headers, "Request-Time")
    signature = sig.header(headers, "Signature")
    if not sender or not req_time or not signature:
        raise InvalidNotification("notifyPayment: unsigned")
    if sender != client_id:
        raise InvalidNotification("notifyPayment: for another Client-Id")
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise InvalidNotification("notifyPayment: body is not UTF-8") from None
    if not sig.verify("POST", path, sender, req_time, text, signature, alipay_public_key):
        raise InvalidNotification("notifyPayment: signature does not verify")
    try:
        result = parse_result(text, "notifyPayment")
    except OutcomeUnknown as exc:
        raise InvalidNotification(str(exc)) from None
    data = result.data
    order_id = data.get("paymentRequestId")
    if not isinstance(order_id, str) or not order_id:
        raise InvalidNotification("notifyPayment: no paymentRequestId")
    payment_id = data.get("paymentId") if isinstance(data.get("paymentId"), str) else None
    notify_type = data.get("notifyType")
    if notify_type == "PAYMENT_PENDING":
        # "The user has completed the payment; wait for the final result."
        return PaymentStatus(order_id, PaymentState.PENDING, payment_id, buyer_scanned=True)
    if notify_type != "PAYMENT_RESULT":
        raise InvalidNotification(f"notifyPayment: unknown notifyType {str(notify_type)[:30]!r}")
    if result.status == "F":
        return PaymentStatus(order_id, PaymentState.CLOSED, payment_id)
    if result.status != "S":
        raise InvalidNotification("notifyPayment: a PAYMENT_RESULT that is not final")
    try:
        minor, currency = from_amount(data.get("paymentAmount"))
    except AntomAmountError as exc:
        raise InvalidNotification(f"notifyPayment: paymentAmount {exc}") from None
    return PaymentStatus(order_id, PaymentState.PAID, payment_id, amount_minor=minor, currency=currency,
                         buyer_scanned=True)
