"""Alipay+ / Antom AMS in-store payments as a Provider: order code (QR) and user-presented codes.

Both are `pay` with productCode IN_STORE_PAYMENT and our order id as paymentRequestId, Antom's
idempotency key: the scenario "OrderCode" returns a code for the screen, "PaymentCode" charges the
code our scanner read. `result.resultStatus` is the call's outcome, not the payment's: S done,
F refused (verified, definitive), U unknown, so we ask inquiryPayment. PAID is reported only from
a verified response naming our paymentRequestId with our amount and currency.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx

from kiosk.config import AlipayPlusConfig, KioskConfig
from kiosk.payments import rsa2
from kiosk.payments.alipay_plus_amounts import AntomAmountError, from_amount, to_amount
from kiosk.payments.alipay_plus_client import AntomClient, AntomResult
from kiosk.payments.alipay_plus_notify import NOTIFY_ACK, InvalidNotification, verify_notification
from kiosk.payments.base import (
    CancelOutcome,
    CodePollPolicy,
    Order,
    OutcomeUnknown,
    PaymentMode,
    PaymentRejected,
    PaymentState,
    PaymentStatus,
    QrCode,
    RefundOutcome,
)

log = logging.getLogger(__name__)

ORDER_NOT_EXIST = "ORDER_NOT_EXIST"
PAYMENT_IN_PROCESS = "PAYMENT_IN_PROCESS"


class AlipayPlusKeyError(ValueError):
    """A configured key file is missing or unusable. Names the config key, never the key."""


class AlipayPlusProvider:
    name = "alipay_plus"
    modes = frozenset({PaymentMode.QR, PaymentMode.CODE})
    # Antom: on U or no answer, inquire every 3 s, 10-20 times; a user-presented payment expires
    # after 1-3 minutes, and cancel works any time that day, so no minimum age before cancelling.
    code_poll = CodePollPolicy(interval_s=3, give_up_after_s=60)

    def __init__(self, config: AlipayPlusConfig, *, client: httpx.AsyncClient | None = None) -> None:
        """Loads both keys now, so a bad key file fails at start-up rather than at the first sale.
        A client passed in stays the caller's to close."""
        self._config = config
        try:
            private_key = rsa2.load_private_key_file(config.private_key_file)
        except rsa2.KeyLoadError as exc:
            raise AlipayPlusKeyError(f"payments.alipay_plus.private_key_file: {exc}") from None
        try:
            alipay_key = rsa2.load_public_key_file(config.alipay_public_key_file)
        except rsa2.KeyLoadError as exc:
            raise AlipayPlusKeyError(f"payments.alipay_plus.alipay_public_key_file: {exc}") from None
        self._api = AntomClient(
            api_url=config.api_url,
            sandbox=config.sandbox,
            client_id=config.client_id,
            private_key=private_key,
            alipay_public_key=alipay_key,
            key_version=config.key_version,
            timeout_s=config.timeout_s,
            client=client,
        )
        # Antom's paymentId per order (refund needs it), and orders seen paid by this process.
        self._payment_ids: dict[str, str] = {}
        self._seen_paid: set[str] = set()

    # ------------------------------------------------------------ Provider

    async def create_qr(self, order: Order) -> QrCode:
        result = await self._api.call("pay", self._pay_body(order, "OrderCode"))
        if result.status == "F":
            raise result.rejected()
        self._check_payment(result, order)
        code = _order_code(result.data)
        if code is None:
            # S or U without a code: the payment may exist; only a query can say what it is.
            raise OutcomeUnknown(f"pay (OrderCode): no TEXT codeValue in {result.describe()}")
        return QrCode(order_id=order.order_id, qr_content=code)

    async def charge_code(self, order: Order, code: str) -> PaymentStatus:
        result = await self._api.call("pay", self._pay_body(order, "PaymentCode", code))
        if result.status == "F":
            raise result.rejected()  # expired, used or unknown code, no balance, ...
        if result.status == "U":
            if result.code != PAYMENT_IN_PROCESS:
                raise OutcomeUnknown(f"pay (PaymentCode): {result.describe()}")
            self._check_payment(result, order)
            # The wallet asks the tourist to confirm (password, limit check); inquire until final.
            return PaymentStatus(order.order_id, PaymentState.PENDING, self._payment_ids.get(order.order_id),
                                 buyer_scanned=True)
        return self._paid(order, result)

    async def query(self, order: Order) -> PaymentStatus:
        result = await self._api.call("inquiryPayment", {"paymentRequestId": order.order_id})
        if result.status == "F" and result.code == ORDER_NOT_EXIST:
            return PaymentStatus(order.order_id, PaymentState.NOT_FOUND)
        if result.status == "F":
            raise result.rejected()
        if result.status == "U":
            raise OutcomeUnknown(f"inquiryPayment: {result.describe()}")
        self._check_payment(result, order, require_id=True)
        status = result.data.get("paymentStatus")
        payment_id = self._payment_ids.get(order.order_id)
        if status == "SUCCESS":
            return self._paid(order, result)
        if status == "PROCESSING":
            # For a payment code the tourist is in the wallet; an order code may not be scanned yet.
            return PaymentStatus(order.order_id, PaymentState.PENDING, payment_id,
                                 buyer_scanned=order.mode is PaymentMode.CODE)
        if status == "PENDING":
            # Antom: "the payment is completed, wait for the final result".
            return PaymentStatus(order.order_id, PaymentState.PENDING, payment_id, buyer_scanned=True)
        if status in ("FAIL", "CANCELLED"):
            # Failed, or cancelled (a paid payment that is cancelled is refunded in full): either
            # way Antom holds none of the tourist's money.
            return PaymentStatus(order.order_id, PaymentState.CLOSED, payment_id)
        raise OutcomeUnknown(f"inquiryPayment: unknown paymentStatus {str(status)[:20]!r}")

    async def cancel(self, order: Order) -> CancelOutcome:
        # Antom's cancel refunds a paid payment but its answer does not say whether it did, and
        # afterwards every payment reads CANCELLED. So ask first. A tourist who pays between the
        # two calls is still refunded by the cancel; only our `refunded` flag misses it.
        was_paid = order.order_id in self._seen_paid
        if not was_paid:
            try:
                was_paid = (await self.query(order)).state is PaymentState.PAID
            except OutcomeUnknown as exc:
                log.info("cancel %s: status unknown before cancelling (%s)", order.order_id, exc)
        result = await self._api.call("cancel", {"paymentRequestId": order.order_id})
        if result.status == "F" and result.code == ORDER_NOT_EXIST:
            return CancelOutcome(order.order_id, refunded=False)  # never reached Antom
        if result.status == "F":
            raise result.rejected()  # e.g. outside the cancel window: refund instead
        if result.status == "U":
            raise OutcomeUnknown(f"cancel: {result.describe()}")
        if result.data.get("paymentRequestId", order.order_id) != order.order_id:
            raise OutcomeUnknown("cancel: response is for another paymentRequestId")
        return CancelOutcome(order.order_id, refunded=was_paid)

    async def refund(self, order: Order, refund_id: str) -> RefundOutcome:
        if not 0 < len(refund_id) <= 64:
            raise ValueError("refund_id must be 1..64 characters (Antom refundRequestId)")
        payment_id = self._payment_ids.get(order.order_id)
        if payment_id is None:
            # refund names the payment by Antom's paymentId, which only a verified answer gives.
            status = await self.query(order)
            if status.state is not PaymentState.PAID or not status.provider_txn_id:
                raise PaymentRejected("ORDER_STATUS_INVALID", f"payment is {status.state.value}, not paid")
            payment_id = status.provider_txn_id
        body = {
            # The same refundRequestId on every retry: Antom refunds it once.
            "refundRequestId": refund_id,
            "paymentId": payment_id,
            "refundAmount": self._amount(order),
        }
        result = await self._api.call("refund", body)
        if result.status == "F":
            raise result.rejected()
        if result.status == "U":
            raise OutcomeUnknown(f"refund: {result.describe()}")  # REFUND_IN_PROCESS and the like
        data = result.data
        if data.get("refundRequestId") != refund_id or data.get("paymentId", payment_id) != payment_id:
            raise OutcomeUnknown("refund: response is for another refund")
        _check_amount("refund", data.get("refundAmount"), order)
        return RefundOutcome(order.order_id, refund_id, order.amount_minor)

    async def aclose(self) -> None:
        await self._api.aclose()

    async def __aenter__(self) -> AlipayPlusProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ notifyPayment

    def verify_notification(self, headers: Mapping[str, str], body: bytes | str, path: str) -> PaymentStatus:
        """A notifyPayment POST (raw body, and the path it came to) checked and read: see
        alipay_plus_notify. Raises InvalidNotification (an OutcomeUnknown) if it does not verify."""
        return verify_notification(headers, body, path, client_id=self._api.client_id,
                                   alipay_public_key=self._api.alipay_public_key)

    # ------------------------------------------------------------ helpers

    def _amount(self, order: Order) -> dict[str, str]:
        try:
            return to_amount(order.amount_minor, order.currency)
        except AntomAmountError as exc:
            # Nothing was sent: this price can never be charged through Antom.
            raise PaymentRejected(exc.category, str(exc)) from None

    def _pay_body(self, order: Order, scenario: str, code: str | None = None) -> dict[str, Any]:
        c = self._config
        amount = self._amount(order)
        method: dict[str, str] = {"paymentMethodType": "CONNECT_WALLET"}
        if code is not None:
            method["paymentMethodId"] = code
        body: dict[str, Any] = {
            "productCode": "IN_STORE_PAYMENT",
            "paymentRequestId": order.order_id,
            "order": {
                "referenceOrderId": order.order_id,
                "orderDescription": order.subject,
                "orderAmount": amount,
                "merchant": {
                    "referenceMerchantId": c.reference_merchant_id,
                    "merchantMCC": c.merchant_mcc,
                    "merchantName": c.merchant_name,
                    "store": {"referenceStoreId": c.store_id, "storeName": c.store_name, "storeMCC": c.merchant_mcc},
                },
            },
            "paymentAmount": amount,
            "paymentMethod": method,
            "paymentFactor": {"inStorePaymentScenario": scenario},
            # Required with CONNECT_WALLET: the contract to settle under.
            "settlementStrategy": {"settlementCurrency": c.settlement_currency or order.currency},
        }
        if c.notify_url:
            body["paymentNotifyUrl"] = c.notify_url
        return body

    def _check_payment(self, result: AntomResult, order: Order, *, require_id: bool = False) -> None:
        """The response must be about our paymentRequestId (and our amount, where it has one)."""
        data = result.data
        got = data.get("paymentRequestId")
        if got != order.order_id and (require_id or got is not None):
            raise OutcomeUnknown(f"response is for paymentRequestId {str(got)[:70]!r}, not {order.order_id!r}")
        if "paymentAmount" in data:
            _check_amount("payment", data["paymentAmount"], order)
        payment_id = _opt_str(data.get("paymentId"))
        if payment_id:
            self._payment_ids[order.order_id] = payment_id

    def _paid(self, order: Order, result: AntomResult) -> PaymentStatus:
        """PAID, once the success names our paymentRequestId with our amount and currency."""
        if "paymentAmount" not in result.data:
            raise OutcomeUnknown("success without a paymentAmount to check")
        self._check_payment(result, order, require_id=True)
        self._seen_paid.add(order.order_id)
        return PaymentStatus(
            order.order_id,
            PaymentState.PAID,
            self._payment_ids.get(order.order_id),
            amount_minor=order.amount_minor,
            currency=order.currency,
            buyer_scanned=True,
        )


def _check_amount(what: str, data: object, order: Order) -> None:
    try:
        minor, currency = from_amount(data)
    except AntomAmountError as exc:
        raise OutcomeUnknown(f"{what} amount: {exc}") from None
    if (minor, currency) != (order.amount_minor, order.currency):
        raise OutcomeUnknown(
            f"{what} amount {minor} {currency} is not the order's {order.amount_minor} {order.currency}"
        )


def _order_code(data: dict[str, Any]) -> str | None:
    """The QR content: the TEXT entry of orderCodeForm.codeDetails (the others are image URLs)."""
    form = data.get("orderCodeForm")
    details = form.get("codeDetails") if isinstance(form, dict) else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and detail.get("displayType", "TEXT") == "TEXT":
            value = detail.get("codeValue")
            if isinstance(value, str) and value:
                return value
    return None


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def provider_from_config(config: KioskConfig, *, client: httpx.AsyncClient | None = None) -> AlipayPlusProvider:
    """The Alipay+ provider for a loaded kiosk config ([payments.alipay_plus] must be present)."""
    if config.payments.alipay_plus is None:
        raise ValueError("payments.alipay_plus: section is missing")
    return AlipayPlusProvider(config.payments.alipay_plus, client=client)


__all__ = [
    "NOTIFY_ACK",
    "AlipayPlusKeyError",
    "AlipayPlusProvider",
    "InvalidNotification",
    "provider_from_config",
]
