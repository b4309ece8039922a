"""Alipay open platform (alipay.trade.*) as a Provider: precreate QR, query, cancel, refund.

Nothing here returns PAID, a refund or a cancel result unless the gateway's RSA2 signature over the
exact response text verifies and the response names our order (and, where it carries them, our
amount and currency). Anything else raises OutcomeUnknown so the engine asks again.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from kiosk.config import AlipayConfig, KioskConfig
from kiosk.money import AmountError, from_decimal_text, to_decimal_text
from kiosk.payments import rsa2
from kiosk.payments.base import (
    CancelOutcome,
    Order,
    OutcomeUnknown,
    PaymentRejected,
    PaymentState,
    PaymentStatus,
    QrCode,
    RefundOutcome,
)

log = logging.getLogger(__name__)

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
SUCCESS = "10000"
BUSINESS_FAILED = "40004"
TRADE_NOT_EXIST = "ACQ.TRADE_NOT_EXIST"
# 40004 sub-codes that say "not now" rather than "no": the operation may still happen or may be
# retried with the same ids, so they are never reported as a definitive rejection.
RETRYABLE_SUB_CODES = frozenset({"ACQ.SYSTEM_ERROR", "ACQ.SELLER_BALANCE_NOT_ENOUGH"})
_PAID = frozenset({"TRADE_SUCCESS", "TRADE_FINISHED"})


class AlipayKeyError(ValueError):
    """A configured key file is missing or unusable. Names the config key, never the key."""


class AlipayProvider:
    name = "alipay"

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
        biz: dict[str, str] = {
            "out_trade_no": order.order_id,
            "total_amount": to_decimal_text(order.amount_minor, order.currency),
            "subject": order.subject,
        }
        if order.currency != "CNY":
            biz["trans_currency"] = order.currency  # overseas merchants price in their currency
        if self._config.seller_id:
            biz["seller_id"] = self._config.seller_id
        method = "alipay.trade.precreate"
        data = await self._call(method, biz)
        code = _code(data)
        if code == SUCCESS:
            _check_order_id(method, data, order)
            qr = data.get("qr_code")
            if not isinstance(qr, str) or not qr:
                raise OutcomeUnknown(f"{method}: success without a qr_code")
            return QrCode(order_id=order.order_id, qr_content=qr)
        sub = _sub_code(data)
        if sub == "ACQ.TRADE_HAS_SUCCESS":
            # This out_trade_no is already paid (an earlier attempt's reply was lost): the money is
            # real, so let the engine's query find it rather than report a failure.
            raise OutcomeUnknown(f"{method}: {order.order_id} is already paid; query it")
        if code.startswith("4000") and sub not in RETRYABLE_SUB_CODES:
            # Verified refusal: the gateway did not create the order.
            raise _rejected(data)
        raise OutcomeUnknown(f"{method}: {_describe(data)}")

    async def query(self, order: Order) -> PaymentStatus:
        method = "alipay.trade.query"
        data = await self._call(method, {"out_trade_no": order.order_id})
        code = _code(data)
        if code == BUSINESS_FAILED and _sub_code(data) == TRADE_NOT_EXIST:
            # A precreated QR nobody scanned yet does not exist as a trade at Alipay.
            return PaymentStatus(order_id=order.order_id, state=PaymentState.NOT_FOUND)
        if code == BUSINESS_FAILED and _sub_code(data) not in RETRYABLE_SUB_CODES:
            raise _rejected(data)
        if code != SUCCESS:
            raise OutcomeUnknown(f"{method}: {_describe(data)}")
        _check_order_id(method, data, order)
        status = data.get("trade_status")
        trade_no = _opt_str(data.get("trade_no"))
        if status in _PAID:
            amount = _check_amount(method, data, "total_amount", order)
            _check_currency(method, data, ("trans_currency", "currency"), order)
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
        code = _code(data)
        if data.get("retry_flag") == "Y":
            raise OutcomeUnknown(f"{method}: gateway asks to retry ({_describe(data)})")
        if code == BUSINESS_FAILED and _sub_code(data) == TRADE_NOT_EXIST:
            return CancelOutcome(order_id=order.order_id, refunded=False)
        if code == BUSINESS_FAILED and _sub_code(data) not in RETRYABLE_SUB_CODES:
            raise _rejected(data)
        if code != SUCCESS:
            raise OutcomeUnknown(f"{method}: {_describe(data)}")
        if "out_trade_no" in data:
            _check_order_id(method, data, order)
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
        code = _code(data)
        if code == BUSINESS_FAILED and _sub_code(data) not in RETRYABLE_SUB_CODES:
            raise _rejected(data)
        if code != SUCCESS:
            raise OutcomeUnknown(f"{method}: {_describe(data)}")
        _check_order_id(method, data, order)
        # refund_fee is the trade's total refunded so far; we only ever refund in full, so it must
        # equal the order amount whether this call moved money (fund_change Y) or a retry (N) did.
        _check_amount(method, data, "refund_fee", order)
        _check_currency(method, data, ("refund_currency",), order)
        return RefundOutcome(order_id=order.order_id, refund_id=refund_id, amount_minor=order.amount_minor)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # ------------------------------------------------------------ transport

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
            raise OutcomeUnknown(f"{method}: unsigned response ({_describe(signed.data)})")
        if not rsa2.verify(signed.raw, signed.sign, self._alipay_key):
            raise OutcomeUnknown(f"{method}: response signature does not verify")
        log.debug("%s %s -> %s", method, biz.get("out_trade_no"), _describe(signed.data))
        return signed.data


def _code(data: dict[str, Any]) -> str:
    code = data.get("code")
    return code if isinstance(code, str) else ""


def _sub_code(data: dict[str, Any]) -> str:
    sub = data.get("sub_code")
    return sub if isinstance(sub, str) else ""


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _describe(data: dict[str, Any]) -> str:
    parts = [str(data.get(k))[:120] for k in ("code", "msg", "sub_code", "sub_msg") if data.get(k)]
    return " ".join(parts) or "empty response"


def _rejected(data: dict[str, Any]) -> PaymentRejected:
    msg = data.get("sub_msg") or data.get("msg") or ""
    return PaymentRejected(_sub_code(data) or _code(data), str(msg)[:200])


def _check_order_id(method: str, data: dict[str, Any], order: Order) -> None:
    got = data.get("out_trade_no")
    if got != order.order_id:
        raise OutcomeUnknown(f"{method}: response is for order {got!r}, not {order.order_id!r}")


def _check_amount(method: str, data: dict[str, Any], field: str, order: Order) -> int:
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


def _check_currency(method: str, data: dict[str, Any], fields: tuple[str, ...], order: Order) -> None:
    # Absent means the trade is in the currency we created it with (CNY unless we sent
    # trans_currency); present, it must be exactly ours.
    for field in fields:
        got = data.get(field)
        if got is not None and got != order.currency:
            raise OutcomeUnknown(f"{method}: {field} {got!r} is not the order's {order.currency}")


def provider_from_config(config: KioskConfig, *, client: httpx.AsyncClient | None = None) -> AlipayProvider:
    """The Alipay provider for a loaded kiosk config ([payments.alipay] must be present)."""
    if config.payments.alipay is None:
        raise ValueError("payments.alipay: section is missing")
    return AlipayProvider(config.payments.alipay, client=client)
