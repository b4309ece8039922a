"""The Citcon UPI sandbox's books: transactions, their tourists, cancels and refunds.

Each method returns (HTTP status, "success" | "fail", data) for citcon.py to wrap in the envelope.
The field names follow kiosk/payments/citcon.py's module docstring (partly inferred; see there).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kiosk.money import CURRENCY_EXPONENTS
from kiosk.payments.sandbox.tourist import Behaviour, Tourist

Answer = tuple[int, str, dict[str, Any]]

# What a merchant-presented QR of each wallet looks like.
QR_PREFIXES = {
    "alipay": "https://qr.alipay.com/bax",
    "wechatpay": "weixin://wxpay/bizpayurl?pr=",
    "upop": "https://qr.95516.com/00010000/",
}
# The wallet refusing a scanned code, as a fail envelope's code.
REFUSALS = {
    "code_expired": ("payment_code_expired", "The payment code has expired; refresh it in the wallet."),
    "code_used": ("payment_code_used", "The payment code was already used; refresh it in the wallet."),
    "no_balance": ("insufficient_balance", "The wallet's balance is not enough."),
}


def route_code(code: str) -> str | None:
    """The wallet a scanned code belongs to, by prefix and length (reference section 4)."""
    if not code.isascii() or not code.isdigit():
        return None
    if len(code) == 18 and "10" <= code[:2] <= "15":
        return "wechatpay"
    if "25" <= code[:2] <= "30" and 16 <= len(code) <= 24:
        return "alipay"
    if code.startswith("62") and 16 <= len(code) <= 20:
        return "upop"
    return None


def fail(status: int, code: str, message: str) -> Answer:
    return status, "fail", {"code": code, "message": message}


@dataclass
class Txn:
    id: str
    reference: str
    amount: int
    currency: str
    method: str
    fmt: str  # "qrcode" or "barcode"
    tourist: Tourist
    created_wall: datetime
    barcode: str | None = None
    qr_content: str | None = None
    refusal: tuple[str, str] | None = None  # the wallet's (code, message) for a refused barcode
    cancel_refund: int = 0
    refunds: dict[str, tuple[str, int]] = field(default_factory=dict)  # reference -> (id, amount)

    @property
    def refunded(self) -> int:
        return self.cancel_refund + sum(amount for _, amount in self.refunds.values())

    def status(self, now: float) -> str:
        if self.refusal is not None:
            return "fail"
        if self.refunded >= self.amount:
            return "refunded"
        if self.tourist.closed_at is not None:
            return "cancelled"
        return "success" if self.tourist.paid(now) else "pending"

    def data(self, now: float) -> dict[str, Any]:
        payment: dict[str, Any] = {"method": self.method, "format": self.fmt}
        if self.qr_content is not None:
            payment["content"] = self.qr_content
        return {
            "id": self.id,
            "object": "transaction",
            "reference": self.reference,
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status(now),
            "method": self.method,
            "refunded_amount": self.refunded,
            "time_created": self.created_wall.isoformat(timespec="seconds"),
            "payment": payment,
        }

    def same_request(self, amount: int, currency: str, fmt: str, method: str, barcode: str | None) -> bool:
        wanted = self.method if self.fmt == "qrcode" else "auto"
        return (self.amount, self.currency, self.fmt, wanted, self.barcode) == (amount, currency, fmt, method, barcode)


class CitconBooks:
    def __init__(self, next_behaviour: Callable[[], Behaviour], clock: Callable[[], float] = time.monotonic) -> None:
        self._next_behaviour = next_behaviour
        self._clock = clock
        self._lock = threading.Lock()
        self._txns: dict[str, Txn] = {}  # reference -> transaction
        self._codes: set[str] = set()  # barcodes already spent
        self._refund_refs: dict[str, str] = {}  # refund reference -> transaction reference

    def reset(self) -> None:
        with self._lock:
            self._txns.clear()
            self._codes.clear()
            self._refund_refs.clear()

    # ------------------------------------------------------------ POST /v1/charges

    def charge(self, body: dict[str, Any]) -> Answer:
        txn_in, payment = body.get("transaction"), body.get("payment")
        if not isinstance(txn_in, dict) or not isinstance(payment, dict):
            return fail(400, "invalid_request", "transaction and payment are required")
        reference, amount, currency = txn_in.get("reference"), txn_in.get("amount"), txn_in.get("currency")
        if not isinstance(reference, str) or not 0 < len(reference) <= 64:
            return fail(400, "invalid_request", "transaction.reference must be 1-64 characters")
        if type(amount) is not int or amount <= 0:
            return fail(400, "invalid_request", "transaction.amount must be a positive integer in minor units")
        if currency not in CURRENCY_EXPONENTS:
            return fail(400, "currency_not_supported", f"currency {currency!r} is not supported")
        fmt, method, barcode = payment.get("format"), payment.get("method"), payment.get("barcode")
        if fmt == "qrcode":
            if method not in QR_PREFIXES:
                return fail(400, "method_not_supported", f"no QR for payment method {method!r}")
            barcode = None
        elif fmt == "barcode":
            if not isinstance(barcode, str) or method != "auto":
                return fail(400, "invalid_request", "a barcode payment needs payment.barcode and method auto")
        else:
            return fail(400, "invalid_request", "payment.format must be qrcode or barcode")
        assert isinstance(method, str)
        with self._lock:
            now = self._clock()
            existing = self._txns.get(reference)
            if existing is not None:
                # A replay of the same request (its answer was lost) gets the transaction as it is.
                if not existing.same_request(amount, currency, fmt, method, barcode):
                    return fail(409, "duplicate_reference", f"reference {reference} is already used")
                return self._charge_answer(existing, now)
            wallet = method if barcode is None else route_code(barcode)
            if wallet is None:
                return fail(400, "invalid_payment_code", "the code belongs to no wallet Citcon routes")
            if barcode is not None and barcode in self._codes:
                return fail(402, *REFUSALS["code_used"])
            tourist = Tourist(self._next_behaviour(), now, presented_code=barcode is not None)
            txn = Txn(
                id=f"ct_{secrets.token_hex(12)}", reference=reference, amount=amount, currency=currency,
                method=wallet, fmt=fmt, tourist=tourist, created_wall=datetime.now(UTC), barcode=barcode,
                qr_content=None if barcode is not None else QR_PREFIXES[wallet] + secrets.token_hex(10),
            )
            if tourist.refusal is not None:
                txn.refusal = REFUSALS[tourist.refusal]
            elif barcode is not None:
                self._codes.add(barcode)
            self._txns[reference] = txn
            return self._charge_answer(txn, now)

    @staticmethod
    def _charge_answer(txn: Txn, now: float) -> Answer:
        if txn.refusal is not None:
            return fail(402, *txn.refusal)
        return 200, "success", txn.data(now)

    # ------------------------------------------------------------ GET /v1/transactions/:id

    def inquire(self, key: str, by_reference: bool) -> Answer:
        with self._lock:
            now = self._clock()
            txn = self._txns.get(key) if by_reference else next((t for t in self._txns.values() if t.id == key), None)
            if txn is None:
                return fail(404, "transaction_not_found", "no such transaction")
            txn.tourist.polled(now)
            return 200, "success", txn.data(now)

    # ------------------------------------------------------------ POST /v1/cancels

    def cancel(self, body: dict[str, Any]) -> Answer:
        with self._lock:
            now = self._clock()
            txn = self._by_id(body.get("transaction_id"))
            if txn is None:
                return fail(404, "transaction_not_found", "no such transaction")
            status = txn.status(now)
            if status == "success":
                # Paid: the cancel gives all of it back (what is left after any partial refunds).
                txn.cancel_refund = txn.amount - txn.refunded
            if status in ("pending", "success"):
                txn.tourist.close(now)
            return 200, "success", txn.data(now)

    # ------------------------------------------------------------ POST /v1/refunds

    def refund(self, body: dict[str, Any]) -> Answer:
        reference, amount, currency = body.get("reference"), body.get("amount"), body.get("currency")
        if not isinstance(reference, str) or not 0 < len(reference) <= 64:
            return fail(400, "invalid_request", "reference must be 1-64 characters")
        with self._lock:
            now = self._clock()
            txn = self._by_id(body.get("transaction_id"))
            if txn is None:
                return fail(404, "transaction_not_found", "no such transaction")
            owner = self._refund_refs.get(reference)
            if owner is not None:
                if owner != txn.reference:
                    return fail(409, "invalid_request", f"refund reference {reference} belongs to another transaction")
                return 200, "success", self._refund_data(txn, reference)  # a retry: no money moves again
            if txn.status(now) != "success":
                return fail(409, "transaction_not_refundable", f"the transaction is {txn.status(now)}")
            if currency != txn.currency or type(amount) is not int or amount <= 0:
                return fail(400, "invalid_request", "amount must be a positive integer in the transaction's currency")
            if amount > txn.amount - txn.refunded:
                return fail(409, "refund_amount_exceeded", "more than what is left to refund")
            txn.refunds[reference] = (f"rf_{secrets.token_hex(12)}", amount)
            self._refund_refs[reference] = txn.reference
            return 200, "success", self._refund_data(txn, reference)

    @staticmethod
    def _refund_data(txn: Txn, reference: str) -> dict[str, Any]:
        refund_id, amount = txn.refunds[reference]
        return {
            "id": refund_id, "object": "refund", "reference": reference, "transaction_id": txn.id,
            "amount": amount, "currency": txn.currency, "status": "success",
        }

    # ------------------------------------------------------------ views

    def views(self) -> list[dict[str, Any]]:
        with self._lock:
            now = self._clock()
            return [_view(t, now) for t in self._txns.values()]

    def _by_id(self, txn_id: Any) -> Txn | None:
        return next((t for t in self._txns.values() if t.id == txn_id), None)


def _view(t: Txn, now: float) -> dict[str, Any]:
    behaviour = t.tourist.behaviour.name
    return {
        "out_trade_no": t.reference,
        "transaction_id": t.id,
        "mode": "qr" if t.barcode is None else "code",
        "method": t.method,
        "amount_minor": t.amount,
        "currency": t.currency,
        "qr_code": t.qr_content,
        "state": t.status(now),
        "behaviour": behaviour,
        "jam": behaviour == "pays_then_jam",
        "scanned": t.tourist.scanned(now),
        "paid": t.refusal is None and t.tourist.paid(now),  # money was taken (stays true after a refund)
        "closed": t.status(now) in ("fail", "cancelled", "refunded"),
        "refunded_minor": t.refunded,
        "refund_count": len(t.refunds) + (1 if t.cancel_refund else 0),
        "refund_requests": sorted(t.refunds),
    }
