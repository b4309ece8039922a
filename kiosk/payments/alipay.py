"""Alipay open platform (alipay.trade.*) as a Provider: precreate QR or charge a payment code
(trade.pay), query, cancel, refund.

Nothing here returns PAID, a refund or a cancel result unless the gateway's RSA2 signature over the
exact response text verifies and the response names our order (and, where it carries them, our
amount and currency). Anything else raises OutcomeUnknown so the engine asks again.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from kiosk.config import AlipayConfig, KioskConfig
from kiosk.money import to_decimal_text
from kiosk.payments import alipay_checks as chk
from kiosk.payments import rsa2
from kiosk.payments.alipay_checks import (
    BUSINESS_FAILED,
    PAID_STATUSES,
    PAY,
    RETRYABLE_SUB_CODES,
    SUCCESS,
    pay_result,
)
from kiosk.payments.base import (
    CancelOutcome,
    CodePollPolicy,
    Order,
    OutcomeUnknown,
    PaymentError,
    PaymentMode,
    PaymentRejected,
    PaymentState,
    PaymentStatus,
    QrCode,
    RefundOutcome,
)

log = logging.getLogger(__name__)

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
TRADE_NOT_EXIST = "ACQ.TRADE_NOT_EXIST"
# Only digits ever go to the gateway as auth_code; which wallet a code belongs to is the code
# classifier's call, and Alipay says its length may vary, so the range is generous.
_PAYMENT_CODE = re.compile(r"[0-9]{10,32}")


class AlipayKeyError(ValueError):
    """A configured key file is missing or unusable. Names the config key, never the key."""


class AlipayProvider:
    name = "alipay"
    modes = frozenset({PaymentMode.QR, PaymentMode.CODE})
    # Reference section 1: on 10003 / WAIT_BUYER_PAY query every 3-6 s for about 60 s, then cancel
    # right after the last query (Alipay has no minimum age for a cancel).
    code_poll = CodePollPolicy(interval_s=3.0, give_up_after_s=60.0, cancel_not_before_s=0.0)

    def __init__(self, config: AlipayConfig, *, client: httpx.AsyncClient | None = None) -> None:
        """Loads both keys now, so a bad key file fails at start-up rather than at the first sale.

        A client passed in stays the caller's to close; config.timeout_s applies to every call
        either way."""
        self._config = config
        try:
            self._app_key = rsa2.load_private_key_file(config.app_private_key_file)
        except rsa2.KeyLoadError as exc:
            raise AlipayKeyError(f"payments.alipay.app_private_key_file: {exc}") from None
        try:
            self._alipay_key = rsa2.load_public_key_file(config.alipay_public_key_file)
        except rsa2.KeyLoadError as exc:
            raise AlipayKeyError(f"payments.alipay.alipay_public_key_file: {exc}") from None
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=config.timeout_s)

    # ------------------------------------------------------------ Provider

    async def create_qr(self, order: Order) -> QrCode:
        biz = self._order_biz(order)
        method = "alipay.trade.precreate"
        data = await self._call(method, biz)
        code = chk.result_code(data)
        if code == SUCCESS:
            chk.check_order_id(method, data, order)
            qr = data.get("qr_code")
            if not isinstance(qr, str) or not qr:
                raise OutcomeUnknown(f"{method}: success without a qr_code")
            return QrCode(order_id=order.order_id, qr_content=qr)
        sub = chk.sub_code(data)
        if sub == "ACQ.TRADE_HAS_SUCCESS":
            # This out_trade_no is already paid (an earlier attempt's reply was lost): the money is
            # real, so let the engine's query find it rather than report a failure.
            raise OutcomeUnknown(f"{method}: {order.order_id} is already paid; query it")
        if code.startswith("4000") and sub not in RETRYABLE_SUB_CODES:
            # Verified refusal: the gateway did not create the order.
            raise chk.rejected(data)
        raise OutcomeUnknown(f"{method}: {chk.describe(data)}")

    async def charge_code(self, order: Order, code: str) -> PaymentStatus:
        """alipay.trade.pay with the tourist's payment code (scene bar_code)."""
        if not _PAYMENT_CODE.fullmatch(code):
            raise PaymentRejected("ACQ.PAYMENT_AUTH_CODE_INVALID", "not a payment code (digits only); not sent")
        biz = self._order_biz(order)
        biz.update(scene="bar_code", auth_code=code, product_code="FACE_TO_FACE_PAYMENT")
        try:
            return pay_result(await self._call(PAY, biz), order)
        except PaymentError as exc:
            # The code is a bearer credential for a minute: keep it out of logs even when a gateway
            # echoes it (the signature-error text quotes the whole signed request).
            raise chk.masked(exc, code) from None

    async def query(self, order: Order) -> PaymentStatus:
        method = "alipay.trade.query"
        data = await self._call(method, {"out_trade_no": order.order_id})
        code = chk.result_code(data)
        if code == BUSINESS_FAILED and chk.sub_code(data) == TRADE_NOT_EXIST:
            # A precreated QR nobody scanned yet does not exist as a trade at Alipay.
            return PaymentStatus(order_id=order.order_id, state=PaymentState.NOT_FOUND)
        if code == BUSINESS_FAILED and chk.sub_code(data) not in RETRYABLE_SUB_CODES:
            raise chk.rejected(data)
        if code != SUCCESS:
            raise OutcomeUnknown(f"{method}: {chk.describe(data)}")
        chk.check_order_id(method, data, order)
        status = data.get("trade_status")
        trade_no = chk.opt_str(data.get("trade_no"))
        if status in PAID_STATUSES:
            amount = chk.check_amount(method, data, "total_amount", order)
            chk.check_currency(method, data, ("trans_currency", "currency"), order)
            return PaymentStatus(
                order_id=order.order_id,
                state=PaymentState.PAID,
                provider_txn_id=trade_no,
                amount_minor=amount,
                currency=order.currency,
                buyer_scanned=True,
            )
        if status == "WAIT_BUYER_PAY":
            return PaymentStatus(
                order_id=order.order_id,
                state=PaymentState.PENDING,
                provider_txn_id=trade_no,
                buyer_scanned=True,
            )
        if status == "TRADE_CLOSED":
            # Closed unpaid, or paid and then refunded in full: either way no money is held.
            return PaymentStatus(
                order_id=order.order_id, state=PaymentState.CLOSED, provider_txn_id=trade_no
            )
        raise OutcomeUnknown(f"{method}: unknown trade_status {status!r}")

    async def cancel(self, order: Order) -> CancelOutcome:
        method = "alipay.trade.cancel"
        data = await self._call(method, {"out_trade_no": order.order_id})
        code = chk.result_code(data)
        if data.get("retry_flag") == "Y":
            raise OutcomeUnknown(f"{method}: gateway asks to retry ({chk.describe(data)})")
        if code == BUSINESS_FAILED and chk.sub_code(data) == TRADE_NOT_EXIST:
            return CancelOutcome(order_id=order.order_id, refunded=False)
        if code == BUSINESS_FAILED and chk.sub_code(data) not in RETRYABLE_SUB_CODES:
            raise chk.rejected(data)
        if code != SUCCESS:
            raise OutcomeUnknown(f"{method}: {chk.describe(data)}")
        if "out_trade_no" in data:
            chk.check_order_id(method, data, order)
        action = data.get("action")
        if action == "refund":
            return CancelOutcome(order_id=order.order_id, refunded=True)
        # "close": it was unpaid. No action at all: the trade was never created (QR not scanned).
        if action in ("close", None, ""):
            return CancelOutcome(order_id=order.order_id, refunded=False)
        raise OutcomeUnknown(f"{method}: unknown action {action!r}")

    async def refund(self, order: Order, refund_id: str) -> RefundOutcome:
        if not 0 < len(refund_id) <= 64:
            raise ValueError("refund_id must be 1..64 characters (Alipay out_request_no)")
        method = "alipay.trade.refund"
        biz = {
            "out_trade_no": order.order_id,
            "refund_amount": to_decimal_text(order.amount_minor, order.currency),
            # The same out_request_no on every retry makes Alipay refund at most once.
            "out_request_no": refund_id,
        }
        if order.currency != "CNY":
            biz["refund_currency"] = order.currency
        data = await self._call(method, biz)
        code = chk.result_code(data)
        if code == BUSINESS_FAILED and chk.sub_code(data) not in RETRYABLE_SUB_CODES:
            raise chk.rejected(data)
        if code != SUCCESS:
            raise OutcomeUnknown(f"{method}: {chk.describe(data)}")
        chk.check_order_id(method, data, order)
        # refund_fee is the trade's total refunded so far; we only ever refund in full, so it must
        # equal the order amount whether this call moved money (fund_change Y) or a retry (N) did.
        chk.check_amount(method, data, "refund_fee", order)
        chk.check_currency(method, data, ("refund_currency",), order)
        return RefundOutcome(order_id=order.order_id, refund_id=refund_id, amount_minor=order.amount_minor)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # ------------------------------------------------------------ transport

    def _order_biz(self, order: Order) -> dict[str, str]:
        biz: dict[str, str] = {
            "out_trade_no": order.order_id,
            "total_amount": to_decimal_text(order.amount_minor, order.currency),
            "subject": order.subject,
        }
        if order.currency != "CNY":
            biz["trans_currency"] = order.currency  # overseas merchants price in their currency
        if self._config.seller_id:
            biz["seller_id"] = self._config.seller_id
        return biz

    def _request_params(self, method: str, biz: dict[str, str]) -> dict[str, str]:
        params = {
            "app_id": self._config.app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
            "version": "1.0",
            "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
        }
        return rsa2.sign_request(params, self._app_key)

    async def _call(self, method: str, biz: dict[str, str]) -> dict[str, Any]:
        """One signed round trip; returns the verified response object or raises OutcomeUnknown."""
        params = self._request_params(method, biz)
        # Like Alipay's own SDKs: common parameters in the query string (the gateway reads charset
        # there before decoding the body), biz_content form-encoded in the POST body.
        body_params = {"biz_content": params.pop("biz_content")}
        log.debug("%s %s", method, biz.get("out_trade_no"))
        try:
            response = await self._client.post(
                self._config.gateway_url, params=params, data=body_params, timeout=self._config.timeout_s
            )
        except httpx.HTTPError as exc:
            raise OutcomeUnknown(f"{method}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise OutcomeUnknown(f"{method}: HTTP {response.status_code} from the gateway")
        try:
            body = response.content.decode("utf-8")
            signed = rsa2.extract_response(body, method)
        except UnicodeDecodeError:
            raise OutcomeUnknown(f"{method}: response is not UTF-8") from None
        except rsa2.ResponseFormatError as exc:
            raise OutcomeUnknown(f"{method}: unexpected response: {exc}") from None
        if signed.sign is None:
            # Alipay leaves some gateway errors unsigned; report the code, but trust nothing.
            raise OutcomeUnknown(f"{method}: unsigned response ({chk.describe(signed.data)})")
        if not rsa2.verify(signed.raw, signed.sign, self._alipay_key):
            raise OutcomeUnknown(f"{method}: response signature does not verify")
        log.debug("%s %s -> %s", method, biz.get("out_trade_no"), chk.describe(signed.data))
        return signed.data


def provider_from_config(config: KioskConfig, *, client: httpx.AsyncClient | None = None) -> AlipayProvider:
    """The Alipay provider for a loaded kiosk config ([payments.alipay] must be present)."""
    if config.payments.alipay is None:
        raise ValueError("payments.alipay: section is missing")
    return AlipayProvider(config.payments.alipay, client=client)
