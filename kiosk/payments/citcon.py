"""Citcon UPI (cross-border aggregator) as a Provider: a wallet QR, or a scanned payment code that
Citcon routes to the right wallet itself; inquiry, cancel, refund.

Citcon's answers carry no signature (see citcon_client.py): an answer counts only when it comes
over TLS in a well-formed envelope and its transaction names our reference, our amount in minor
units and our currency. Anything else raises OutcomeUnknown, so the engine asks again.

Wire shapes. Published (reference section 5): the endpoints `POST /v1/charges`, `POST /v1/cancels`,
`POST /v1/refunds`, `GET /v1/transactions/:id`, and in Citcon's SDK demos a charge's
`transaction{reference, amount (minor units), currency, auto_capture}` and `payment{method}`, its
answer's `data.id`. Inferred, and named in the spirit of those:
- charge `payment.format` "qrcode" (answer: `data.payment.content`, the text to show as a QR) or
  "barcode" with `payment.barcode` = the raw scanned code and `payment.method` "auto";
- a transaction object `{id, reference, amount, currency, status, method}` with status one of
  pending / success / fail / cancelled / refunded;
- inquiry by our reference: `GET /v1/transactions/<reference>?id_type=reference` (after a restart
  the kiosk knows only its order id); not found is a fail envelope with code transaction_not_found;
- cancels `{transaction_id}` and refunds `{transaction_id, amount, currency, reference}`, where the
  refund's own reference makes it idempotent (the same reference refunds once);
- the refusal codes in CHARGE_REFUSALS and friends.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from kiosk.config import CitconConfig, KioskConfig
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
from kiosk.payments.citcon_client import CitconAuthError, CitconClient, CitconFailure
from kiosk.payments.secret_files import read_secret_line

log = logging.getLogger(__name__)

# Definitive refusals: nothing was charged, cancelled or refunded, and retrying will not change it.
# Every other fail code (system_error, duplicate_reference, ...) is OutcomeUnknown.
CHARGE_REFUSALS = frozenset({
    "invalid_payment_code", "payment_code_expired", "payment_code_used", "insufficient_balance",
    "payment_declined", "invalid_request", "currency_not_supported", "method_not_supported",
})
CANCEL_REFUSALS = frozenset({"cancel_not_allowed"})
REFUND_REFUSALS = frozenset({"transaction_not_refundable", "refund_amount_exceeded", "invalid_request"})
NOT_FOUND = "transaction_not_found"
_STATES = {
    "pending": PaymentState.PENDING,
    "success": PaymentState.PAID,
    "fail": PaymentState.CLOSED,
    "cancelled": PaymentState.CLOSED,
    "refunded": PaymentState.REFUNDED,
}
# Only digits go to Citcon as a barcode: every wallet's payment code is numeric (reference section 4).
_PAYMENT_CODE = re.compile(r"[0-9]{10,32}")
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_KNOWN_IDS = 256  # transaction ids remembered, so cancel and refund skip an inquiry


class CitconConfigError(ValueError):
    """Unusable [payments.citcon] settings. Names the key, never the API key itself."""


@dataclass(frozen=True)
class Transaction:
    id: str
    status: str


class CitconProvider:
    name = "citcon"
    modes = frozenset({PaymentMode.QR, PaymentMode.CODE})
    # Query every 3 s for a minute, then cancel. Not before 15 s: Citcon may route the code to
    # WeChat Pay, which refuses to reverse a micropay younger than that (reference section 3).
    code_poll = CodePollPolicy(interval_s=3.0, give_up_after_s=60.0, cancel_not_before_s=15.0)

    def __init__(self, config: CitconConfig, *, client: httpx.AsyncClient | None = None) -> None:
        """Reads the API key now, so a bad file fails at start-up. A client passed in stays the
        caller's to close."""
        url = httpx.URL(config.api_url)
        if not (url.scheme == "https" or (url.scheme == "http" and url.host in _LOOPBACK)):
            # No signatures: TLS is what makes Citcon's answers Citcon's.
            raise CitconConfigError("payments.citcon.api_url: must be https (plain http only to a loopback sandbox)")
        self._config = config
        self._upi = CitconClient(
            config.api_url, load_api_key(config.api_key_file), timeout_s=config.timeout_s, client=client
        )
        self._known: OrderedDict[str, str] = OrderedDict()  # order id -> Citcon transaction id

    # ------------------------------------------------------------ Provider

    async def create_qr(self, order: Order) -> QrCode:
        op = "citcon.charges"
        data = await self._charge(order, {"method": self._config.qr_method, "format": "qrcode"})
        txn = self._verified(op, data, order)
        if txn.status != "pending":
            # A replayed reference that was already paid or closed: let the engine's query say which.
            raise OutcomeUnknown(f"{op}: the new QR charge is already {txn.status}; query it")
        payment = data.get("payment")
        content = payment.get("content") if isinstance(payment, dict) else None
        if not isinstance(content, str) or not content:
            raise OutcomeUnknown(f"{op}: a QR charge without payment.content")
        return QrCode(order_id=order.order_id, qr_content=content)

    async def charge_code(self, order: Order, code: str) -> PaymentStatus:
        if not _PAYMENT_CODE.fullmatch(code):
            raise PaymentRejected("invalid_payment_code", "not a payment code (digits only); not sent")
        op = "citcon.charges"
        try:
            data = await self._charge(order, {"method": "auto", "format": "barcode", "barcode": code})
            txn = self._verified(op, data, order)
        except PaymentError as exc:
            raise _masked(exc, code) from None  # a live payment code is a bearer credential
        if txn.status == "success":
            return self._paid(txn, order)
        if txn.status == "pending":
            # The wallet asks the tourist to confirm (password, large amount): the engine polls.
            return PaymentStatus(order.order_id, PaymentState.PENDING, provider_txn_id=txn.id, buyer_scanned=True)
        if txn.status == "fail":
            raise PaymentRejected("payment_failed", "the wallet refused the payment")
        raise OutcomeUnknown(f"{op}: the new charge is already {txn.status}; query it")

    async def query(self, order: Order) -> PaymentStatus:
        op = "citcon.inquiry"
        txn_and_data = await self._inquire(order)
        if txn_and_data is None:
            return PaymentStatus(order.order_id, PaymentState.NOT_FOUND)
        txn, _ = txn_and_data
        state = _STATES[txn.status]
        if state is PaymentState.PAID:
            return self._paid(txn, order)
        log.debug("%s %s: %s", op, order.order_id, txn.status)
        # A pending code payment is the tourist confirming in the wallet; a pending QR tells us
        # nothing about whether it was scanned.
        scanned = state is PaymentState.PENDING and order.mode is PaymentMode.CODE
        return PaymentStatus(order.order_id, state, provider_txn_id=txn.id, buyer_scanned=scanned)

    async def cancel(self, order: Order) -> CancelOutcome:
        op = "citcon.cancels"
        txn_id = await self._transaction_id(order)
        if txn_id is None:
            return CancelOutcome(order_id=order.order_id, refunded=False)  # nothing was created
        try:
            data = await self._upi.call(op, "POST", "/cancels", body={"transaction_id": txn_id})
        except CitconFailure as failure:
            if failure.code == NOT_FOUND:
                return CancelOutcome(order_id=order.order_id, refunded=False)
            raise _refusal_or_unknown(failure, CANCEL_REFUSALS) from None
        txn = self._verified(op, data, order)
        if txn.id != txn_id or txn.status in ("pending", "success"):
            raise OutcomeUnknown(f"{op}: after the cancel, transaction {txn.id} is {txn.status}")
        # refunded: it had been paid and the cancel gave the money back; fail/cancelled: it never was.
        return CancelOutcome(order_id=order.order_id, refunded=txn.status == "refunded")

    async def refund(self, order: Order, refund_id: str) -> RefundOutcome:
        if not 0 < len(refund_id) <= 64:
            raise ValueError("refund_id must be 1..64 characters (the Citcon refund reference)")
        op = "citcon.refunds"
        txn_id = await self._transaction_id(order)
        if txn_id is None:
            raise PaymentRejected(NOT_FOUND, f"no Citcon transaction for {order.order_id}")
        body = {
            "transaction_id": txn_id,
            "amount": order.amount_minor,
            "currency": order.currency,
            # The same reference on every retry: Citcon refunds it once and then reports that refund.
            "reference": refund_id,
        }
        try:
            data = await self._upi.call(op, "POST", "/refunds", body=body)
        except CitconFailure as failure:
            raise _refusal_or_unknown(failure, REFUND_REFUSALS | {NOT_FOUND}) from None
        if (data.get("reference"), data.get("transaction_id")) != (refund_id, txn_id):
            raise OutcomeUnknown(f"{op}: the answer is about refund {data.get('reference')!r}, not {refund_id!r}")
        _check_money(op, data, order)
        if data.get("status") != "success":
            raise OutcomeUnknown(f"{op}: refund {refund_id} is {data.get('status')!r}")
        return RefundOutcome(order_id=order.order_id, refund_id=refund_id, amount_minor=order.amount_minor)

    async def aclose(self) -> None:
        await self._upi.aclose()

    # ------------------------------------------------------------ helpers

    async def _charge(self, order: Order, payment: dict[str, str]) -> dict[str, Any]:
        op = "citcon.charges"
        body = {
            "transaction": {
                "reference": order.order_id,
                "amount": order.amount_minor,
                "currency": order.currency,
                "auto_capture": True,  # wallets cannot pre-authorise: capture at once (reference section 7)
                "note": order.subject,
            },
            "payment": payment,
        }
        log.debug("%s %s (%s)", op, order.order_id, payment["format"])
        try:
            return await self._upi.call(op, "POST", "/charges", body=body)
        except CitconAuthError as exc:
            raise PaymentRejected("unauthorized", str(exc)) from None  # refused at the door: no charge
        except CitconFailure as failure:
            raise _refusal_or_unknown(failure, CHARGE_REFUSALS) from None

    async def _inquire(self, order: Order) -> tuple[Transaction, dict[str, Any]] | None:
        op = "citcon.inquiry"
        path = "/transactions/" + quote(order.order_id, safe="")
        try:
            data = await self._upi.call(op, "GET", path, params={"id_type": "reference"})
        except CitconFailure as failure:
            if failure.code == NOT_FOUND:
                return None
            raise OutcomeUnknown(str(failure)) from None
        return self._verified(op, data, order), data

    async def _transaction_id(self, order: Order) -> str | None:
        known = self._known.get(order.order_id)
        if known is not None:
            return known
        found = await self._inquire(order)
        return None if found is None else found[0].id

    def _verified(self, op: str, data: dict[str, Any], order: Order) -> Transaction:
        """The transaction in a success envelope, once it is shown to be our order's."""
        if data.get("reference") != order.order_id:
            raise OutcomeUnknown(f"{op}: the answer is for reference {data.get('reference')!r}, not {order.order_id!r}")
        _check_money(op, data, order)
        txn_id, status = data.get("id"), data.get("status")
        if not isinstance(txn_id, str) or not txn_id or status not in _STATES:
            raise OutcomeUnknown(f"{op}: a transaction without an id or with status {status!r}")
        self._known[order.order_id] = txn_id
        self._known.move_to_end(order.order_id)
        while len(self._known) > _KNOWN_IDS:
            self._known.popitem(last=False)
        return Transaction(id=txn_id, status=status)

    @staticmethod
    def _paid(txn: Transaction, order: Order) -> PaymentStatus:
        return PaymentStatus(
            order_id=order.order_id,
            state=PaymentState.PAID,
            provider_txn_id=txn.id,
            amount_minor=order.amount_minor,  # _verified checked it equals the answer's
            currency=order.currency,
            buyer_scanned=True,
        )


def _check_money(op: str, data: dict[str, Any], order: Order) -> None:
    amount, currency = data.get("amount"), data.get("currency")
    # Minor units as a JSON integer: 3.5, "350" or true are never our 350.
    if type(amount) is not int or amount != order.amount_minor or currency != order.currency:
        raise OutcomeUnknown(
            f"{op}: the answer says {amount!r} {currency!r}, the order is {order.amount_minor} {order.currency}"
        )


def _refusal_or_unknown(failure: CitconFailure, definitive: frozenset[str]) -> PaymentError:
    if failure.code in definitive:
        return PaymentRejected(failure.code, failure.message)
    return OutcomeUnknown(str(failure))


def _masked(exc: PaymentError, secret: str) -> PaymentError:
    if secret not in str(exc):
        return exc
    if isinstance(exc, PaymentRejected):
        return PaymentRejected(exc.code, exc.message.replace(secret, "***"))
    return type(exc)(str(exc).replace(secret, "***"))


def load_api_key(path: Path) -> str:
    """The API key file's one line. Errors name the file and the config key, never the content."""
    return read_secret_line(path, "payments.citcon.api_key_file", CitconConfigError)


def provider_from_config(config: KioskConfig, *, client: httpx.AsyncClient | None = None) -> CitconProvider:
    """The Citcon provider for a loaded kiosk config ([payments.citcon] must be present)."""
    if config.payments.citcon is None:
        raise ValueError("payments.citcon: section is missing")
    return CitconProvider(config.payments.citcon, client=client)
