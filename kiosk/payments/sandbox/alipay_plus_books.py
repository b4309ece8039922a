"""The sandbox's Antom books: payments, refunds, and a simulated tourist per payment.

Business rules only (pay, inquiryPayment, cancel, refund answers as Antom gives them); the
signing, fault injection and HTTP side live in alipay_plus.py. State is computed from monotonic
timestamps when asked, never by a timer. The caller holds the lock.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from kiosk.payments.alipay_plus_amounts import AntomAmountError, from_amount, to_amount, validate
from kiosk.payments.sandbox.ledger import Behaviour

Answer = dict[str, Any]
PAYING = frozenset({"pays", "pays_then_jam"})
# The wallet's refusal of a presented code, as Antom reports it.
REFUSALS: dict[str, tuple[str, str]] = {
    "code_expired": ("EXPIRED_CODE", "The payment code is expired."),
    "code_used": ("INVALID_PAYMENT_CODE", "The payment code is invalid."),
    "no_balance": ("USER_BALANCE_NOT_ENOUGH", "The user balance is not enough for the payment."),
}
# Alipay+ payment codes: digits, 25-30 first, 16-32 long (reference section 4).
PAYMENT_CODE = re.compile(r"(2[5-9]|30)[0-9]{14,30}")
SCENARIOS = ("PaymentCode", "OrderCode")


def result(status: str, code: str, message: str) -> Answer:
    return {"result": {"resultStatus": status, "resultCode": code, "resultMessage": message}}


def failed(code: str, message: str, **fields: Any) -> Answer:
    return {**result("F", code, message), **fields}


def iso(at: datetime) -> str:
    return at.replace(microsecond=0).isoformat()


@dataclass
class Refund:
    refund_id: str
    payment_id: str
    amount_minor: int
    at: datetime


@dataclass
class Payment:
    request_id: str
    payment_id: str
    scenario: str
    code: str | None  # the tourist's payment code (PaymentCode); never logged or shown whole
    amount_minor: int
    currency: str
    client_id: str
    notify_url: str | None
    behaviour: Behaviour
    created: float  # monotonic
    created_wall: datetime
    code_value: str | None = None  # the order code's QR content
    refusal: tuple[str, str] | None = None  # (resultCode, message) when the wallet said no
    closed_at: float | None = None
    cancel_refunded: bool = False
    refunds: dict[str, Refund] = field(default_factory=dict)  # by refundRequestId
    polls_left: int | None = None
    paid_by_polls_at: float | None = None

    # ------------------------------------------------------------ the tourist

    @property
    def scan_at(self) -> float | None:
        if self.scenario == "PaymentCode":
            return self.created  # the code was shown to the kiosk's scanner
        if self.behaviour.name not in PAYING and self.behaviour.name != "no_balance":
            return None  # with a QR, an expired or used code means they never manage to scan
        return self.created + self.behaviour.scan_delay_s

    @property
    def pay_at(self) -> float | None:
        scan = self.scan_at
        if scan is None or self.refusal is not None or self.behaviour.name not in PAYING:
            return None
        if self.scenario == "PaymentCode" and self.behaviour.pending_polls is not None:
            return self.paid_by_polls_at  # counted in inquiries, not seconds
        return scan + self.behaviour.pay_delay_s  # confirming in the wallet

    def _happened(self, at: float | None, now: float) -> bool:
        # Once cancelled, the tourist's later scan or payment fails, as on a closed real payment.
        horizon = now if self.closed_at is None else min(now, self.closed_at)
        return at is not None and at <= horizon

    def scanned(self, now: float) -> bool:
        return self._happened(self.scan_at, now)

    def paid(self, now: float) -> bool:
        """Money was taken at some point (stays true after a refund or a refunding cancel)."""
        return self._happened(self.pay_at, now)

    def polled(self, now: float) -> None:
        """An inquiry arrived: one fewer "still confirming" answer before the tourist pays."""
        if self.polls_left is None or self.closed_at is not None:
            return
        if self.polls_left == 0:
            self.paid_by_polls_at, self.polls_left = now, None
        else:
            self.polls_left -= 1

    def status(self, now: float) -> str:
        if self.refusal is not None:
            return "FAIL"
        if self.closed_at is not None:
            return "CANCELLED"  # a paid payment that is cancelled is refunded in full
        return "SUCCESS" if self.paid(now) else "PROCESSING"

    # ------------------------------------------------------------ money

    @property
    def refunded_minor(self) -> int:
        return (self.amount_minor if self.cancel_refunded else 0) + sum(r.amount_minor for r in self.refunds.values())

    def amount(self, minor: int | None = None) -> dict[str, str]:
        return {"currency": self.currency, "value": str(self.amount_minor if minor is None else minor)}

    def wall(self, at: float) -> datetime:
        return self.created_wall + timedelta(seconds=at - self.created)

    def basics(self, now: float) -> Answer:
        out: Answer = {
            "paymentRequestId": self.request_id,
            "paymentId": self.payment_id,
            "paymentAmount": self.amount(),
            "paymentCreateTime": iso(self.created_wall),
        }
        if self.paid(now) and self.pay_at is not None:
            out["paymentTime"] = iso(self.wall(self.pay_at))
        return out


class Books:
    def __init__(self) -> None:
        self.payments: dict[str, Payment] = {}
        self.used_codes: set[str] = set()
        self._serial = 0

    def reset(self) -> None:
        self.payments.clear()
        self.used_codes.clear()

    def find(self, body: Answer) -> Payment | None:
        payment_id = body.get("paymentId")
        if isinstance(payment_id, str) and payment_id:
            return next((p for p in self.payments.values() if p.payment_id == payment_id), None)
        request_id = body.get("paymentRequestId")
        return self.payments.get(request_id) if isinstance(request_id, str) else None

    # ------------------------------------------------------------ pay

    def pay(self, body: Answer, client_id: str, behaviour: Behaviour, now: float) -> Answer:
        problem, fields = _pay_fields(body)
        if problem is not None:
            return failed("PARAM_ILLEGAL", problem)
        request_id, scenario, code, minor, currency = fields
        existing = self.payments.get(request_id)
        if existing is not None:
            if (existing.scenario, existing.code, existing.amount_minor, existing.currency) != (
                scenario, code, minor, currency,
            ):
                return failed("REPEAT_REQ_INCONSISTENT", "Repeated requests are inconsistent.")
            return self._pay_answer(existing, now)  # idempotent: the same payment, as it is now
        self._serial += 1
        wall = datetime.now(UTC)
        payment = Payment(
            request_id=request_id,
            payment_id=f"{wall:%Y%m%d%H%M%S}{self._serial:08d}" + secrets.token_hex(4),
            scenario=scenario,
            code=code,
            amount_minor=minor,
            currency=currency,
            client_id=client_id,
            notify_url=body.get("paymentNotifyUrl") if isinstance(body.get("paymentNotifyUrl"), str) else None,
            behaviour=behaviour,
            created=now,
            created_wall=wall,
        )
        if code is not None:
            if not PAYMENT_CODE.fullmatch(code) or code in self.used_codes:
                payment.refusal = ("INVALID_PAYMENT_CODE", "The payment code is invalid.")
            else:
                payment.refusal = REFUSALS.get(behaviour.name)
            self.used_codes.add(code)  # single use, whatever became of it
            if behaviour.pending_polls is not None:
                payment.polls_left = behaviour.pending_polls
        else:
            payment.code_value = "https://global.alipay.com/281666040092" + secrets.token_hex(10).upper()
        self.payments[request_id] = payment
        return self._pay_answer(payment, now)

    def _pay_answer(self, p: Payment, now: float) -> Answer:
        if p.refusal is not None:
            return {**failed(*p.refusal), **p.basics(now)}
        if p.closed_at is not None:
            return {**failed("ORDER_IS_CLOSED", "The order is closed."), **p.basics(now)}
        if p.paid(now):
            return {**result("S", "SUCCESS", "Success."), **p.basics(now)}
        out = {**result("U", "PAYMENT_IN_PROCESS", "The payment is being processed."), **p.basics(now)}
        if p.code_value is not None:
            expire = p.created_wall + timedelta(minutes=3)  # Antom's order-code default (zh docs)
            out["orderCodeForm"] = {
                "paymentMethodType": "CONNECT_WALLET",
                "expireTime": iso(expire),
                "codeDetails": [
                    {"codeValue": p.code_value, "displayType": "TEXT"},
                    {"codeValue": f"https://global.alipay.com/merchant/order/showQrImage.htm?code={p.payment_id}",
                     "displayType": "MIDDLEIMAGE"},
                ],
            }
        return out

    # ------------------------------------------------------------ inquiryPayment, cancel

    def inquiry(self, body: Answer, now: float) -> Answer:
        p = self.find(body)
        if p is None:
            return failed("ORDER_NOT_EXIST", "The order does not exist.")
        p.polled(now)
        status = p.status(now)
        code, message = {
            "SUCCESS": ("SUCCESS", "Success."),
            "PROCESSING": ("PAYMENT_IN_PROCESS", "The payment is being processed."),
            "CANCELLED": ("ORDER_IS_CANCELED", "The order is cancelled."),
        }.get(status, p.refusal or ("PROCESS_FAIL", "A general business failure occurred."))
        return {
            **result("S", "SUCCESS", "Success."),
            "paymentStatus": status,
            "paymentResultCode": code,
            "paymentResultMessage": message,
            **p.basics(now),
        }

    def cancel(self, body: Answer, now: float) -> Answer:
        p = self.find(body)
        if p is None:
            return failed("ORDER_NOT_EXIST", "The order does not exist.")
        if p.closed_at is None:
            if p.paid(now) and p.refusal is None:
                # A paid payment that is cancelled is refunded in full (whatever is left of it).
                p.cancel_refunded = p.refunded_minor < p.amount_minor
            p.closed_at = now
        return {
            **result("S", "SUCCESS", "Success."),
            "paymentRequestId": p.request_id,
            "paymentId": p.payment_id,
            "cancelTime": iso(p.wall(p.closed_at)),
        }

    # ------------------------------------------------------------ refund

    def refund(self, body: Answer, now: float) -> Answer:
        refund_request_id, payment_id = body.get("refundRequestId"), body.get("paymentId")
        if not _id_ok(refund_request_id) or not _id_ok(payment_id):
            return failed("PARAM_ILLEGAL", "refundRequestId and paymentId are required.")
        try:
            minor, currency = from_amount(body.get("refundAmount"))
            validate(str(minor), currency)
        except AntomAmountError as exc:
            return failed("PARAM_ILLEGAL", f"refundAmount: {exc.category}")
        p = next((x for x in self.payments.values() if x.payment_id == payment_id), None)
        if p is None:
            return failed("ORDER_NOT_EXIST", "The order does not exist.")
        done = p.refunds.get(refund_request_id)
        if done is not None:
            if (done.payment_id, done.amount_minor, p.currency) != (payment_id, minor, currency):
                return failed("REPEAT_REQ_INCONSISTENT", "Repeated requests are inconsistent.")
            return self._refund_answer(p, refund_request_id, done)  # a retry: no money moves again
        if not p.paid(now) or p.refusal is not None:
            return failed("ORDER_STATUS_INVALID", "The order status is invalid.")
        if currency != p.currency:
            return failed("CURRENCY_NOT_SUPPORT", "The currency is not supported.")
        if minor > p.amount_minor - p.refunded_minor:
            return failed("REFUND_AMOUNT_EXCEED", "The total refund amount exceeds the payment amount.")
        done = Refund(f"R{p.payment_id}{len(p.refunds) + 1:02d}", payment_id, minor, datetime.now(UTC))
        p.refunds[refund_request_id] = done
        return self._refund_answer(p, refund_request_id, done)

    @staticmethod
    def _refund_answer(p: Payment, refund_request_id: str, done: Refund) -> Answer:
        return {
            **result("S", "SUCCESS", "Success."),
            "refundRequestId": refund_request_id,
            "refundId": done.refund_id,
            "paymentId": p.payment_id,
            "refundAmount": p.amount(done.amount_minor),
            "refundTime": iso(done.at),
        }


def _id_ok(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= 64


def _pay_fields(body: Answer) -> tuple[str | None, tuple[str, str, str | None, int, str]]:
    """(problem, (paymentRequestId, scenario, code, minor, currency)); problem None when valid."""
    none = ("", "", None, 0, "")
    request_id = body.get("paymentRequestId")
    if body.get("productCode") != "IN_STORE_PAYMENT":
        return "productCode must be IN_STORE_PAYMENT", none
    if not _id_ok(request_id):
        return "paymentRequestId must be 1-64 characters", none
    try:
        minor, currency = from_amount(body.get("paymentAmount"))
        validate(str(minor), currency)
    except AntomAmountError as exc:
        return f"paymentAmount: {exc.category}", none
    order = body.get("order")
    if not isinstance(order, dict) or order.get("orderAmount") != to_amount(minor, currency):
        return "order.orderAmount must equal paymentAmount", none
    merchant = order.get("merchant")
    store = merchant.get("store") if isinstance(merchant, dict) else None
    if not isinstance(store, dict) or not store.get("referenceStoreId"):
        return "order.merchant.store.referenceStoreId is required in store", none
    method = body.get("paymentMethod")
    factor = body.get("paymentFactor")
    scenario = factor.get("inStorePaymentScenario") if isinstance(factor, dict) else None
    if not isinstance(method, dict) or method.get("paymentMethodType") != "CONNECT_WALLET":
        return "paymentMethod.paymentMethodType must be CONNECT_WALLET", none
    if scenario not in SCENARIOS:
        return "paymentFactor.inStorePaymentScenario must be PaymentCode or OrderCode", none
    code = method.get("paymentMethodId")
    if (scenario == "PaymentCode") != isinstance(code, str) or code == "":
        return "paymentMethodId is required for PaymentCode and not allowed for OrderCode", none
    return None, (request_id, scenario, code if isinstance(code, str) else None, minor, currency)
