"""Antom AMS (Alipay+) in the sandbox: POST /ams/api/v1/payments/{pay,inquiryPayment,cancel,refund}
and the same under /ams/sandbox/api/v1/payments/.

Requests are checked as Antom checks them (Client-Id, Request-Time and an RSA256 Signature over
"POST <path>\\n<Client-Id>.<Request-Time>.<body>" with the merchant's public key) and answered
with the same kind of Signature, made with the sandbox's own "Antom" key over Response-Time. Both
key pairs are generated into the gateway's keys_dir. Faults ("alipay_plus.pay", ...) spoil an
answer after the request was carried out, as faults.py describes. notifications() makes the signed
notifyPayment messages Antom would send, duplicates included.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kiosk.config import AlipayPlusConfig
from kiosk.payments import alipay_plus_signature as sig
from kiosk.payments import rsa2
from kiosk.payments.alipay_plus_client import request_time
from kiosk.payments.sandbox.alipay_plus_books import Answer, Books, Payment, failed, result
from kiosk.payments.sandbox.keys import ensure_key_pair
from kiosk.payments.sandbox.wire import WireRequest, WireResponse

if TYPE_CHECKING:
    from kiosk.payments.sandbox.gateway import SandboxGateway

log = logging.getLogger(__name__)

PREFIXES = ("/ams/api/v1/payments/", "/ams/sandbox/api/v1/payments/")
METHODS = {
    "pay": "alipay_plus.pay",
    "inquiryPayment": "alipay_plus.inquiry",
    "cancel": "alipay_plus.cancel",
    "refund": "alipay_plus.refund",
}
DEFAULT_CLIENT_ID = "SANDBOX_5YBB2B2Z0001"
DEFAULT_NOTIFY_PATH = "/alipay-plus/notify"
KEY_VERSION = "1"
MERCHANT_PRIVATE_KEY = "alipay_plus_merchant_private_key.pem"
MERCHANT_PUBLIC_KEY = "alipay_plus_merchant_public_key.pem"
ANTOM_PRIVATE_KEY = "alipay_plus_antom_private_key.pem"
ANTOM_PUBLIC_KEY = "alipay_plus_antom_public_key.pem"
_JSON = {"Content-Type": "application/json; charset=UTF-8"}


@dataclass(frozen=True)
class NotifyMessage:
    """One notifyPayment POST: where it goes and its exact headers and body."""

    url: str | None  # the paymentNotifyUrl of the pay request, if it had one
    path: str  # the URI that was signed
    headers: dict[str, str]
    body: bytes


class AlipayPlusWire:
    name = "alipay_plus"
    prefixes = PREFIXES
    methods = tuple(METHODS.values())

    def __init__(self, gateway: SandboxGateway, *, client_id: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """client_id=None accepts any Client-Id (the signature is still checked)."""
        self._gateway = gateway
        keys = Path(gateway.keys_dir)
        self.merchant_private_key_file = keys / MERCHANT_PRIVATE_KEY  # the kiosk signs with this
        self.merchant_public_key_file = keys / MERCHANT_PUBLIC_KEY
        self.antom_private_key_file = keys / ANTOM_PRIVATE_KEY
        self.antom_public_key_file = keys / ANTOM_PUBLIC_KEY  # the kiosk verifies with this
        ensure_key_pair(self.merchant_private_key_file, self.merchant_public_key_file)
        ensure_key_pair(self.antom_private_key_file, self.antom_public_key_file)
        self._merchant_key = rsa2.load_public_key_file(self.merchant_public_key_file)
        self._antom_key = rsa2.load_private_key_file(self.antom_private_key_file)
        self.client_id = client_id
        self._clock = clock
        self._lock = threading.Lock()
        self._books = Books()

    # ------------------------------------------------------------ WireProtocol

    def handle(self, request: WireRequest) -> WireResponse:
        api = request.path.removeprefix(next(p for p in PREFIXES if request.path.startswith(p)))
        client_id = sig.header(request.headers, "Client-Id") or ""
        answer = self._check(request, api, client_id)
        if answer is None:
            body: Answer = json.loads(request.body)
            with self._lock:
                now = self._clock()
                if api == "pay":
                    answer = self._books.pay(body, client_id, self._gateway.ledger.next_behaviour(), now)
                elif api == "inquiryPayment":
                    answer = self._books.inquiry(body, now)
                elif api == "cancel":
                    answer = self._books.cancel(body, now)
                else:
                    answer = self._books.refund(body, now)
            fault = self._gateway.faults.take(METHODS[api])
            if fault is not None:
                log.info("sandbox fault %s on alipay_plus %s", fault.fault, api)
                return self._faulty(request.path, client_id, answer, fault.fault, fault.delay_s)
        return self._signed(request.path, client_id, answer)

    def orders(self) -> list[dict[str, object]]:
        with self._lock:
            now = self._clock()
            return [_view(p, now) for p in self._books.payments.values()]

    def reset(self) -> None:
        with self._lock:
            self._books.reset()

    # ------------------------------------------------------------ checks, signing, faults

    def _check(self, request: WireRequest, api: str, client_id: str) -> Answer | None:
        """Antom's own checks, roughly in its order; None when the request may proceed."""
        if request.method != "POST":
            return failed("METHOD_NOT_SUPPORTED", "The server does not implement the requested HTTP method.")
        if api not in METHODS:
            return failed("NO_INTERFACE_DEF", "API is not defined.")
        if not client_id or (self.client_id is not None and client_id != self.client_id):
            return failed("INVALID_CLIENT", "The client is invalid.")
        req_time = sig.header(request.headers, "Request-Time")
        signature = sig.header(request.headers, "Signature")
        if not req_time or not signature:
            return failed("INVALID_SIGNATURE", "The signature is invalid: Request-Time or Signature is missing.")
        try:
            parsed = sig.parse_signature_header(signature)
        except sig.SignatureHeaderError as exc:
            return failed("INVALID_SIGNATURE", f"The signature is invalid: {exc}.")
        if parsed.key_version != KEY_VERSION:
            return failed("KEY_NOT_FOUND", "The key is not found.")
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return failed("PARAM_ILLEGAL", "The body is not UTF-8.")
        if not sig.verify("POST", request.path, client_id, req_time, text, signature, self._merchant_key):
            # Like the real gateway's message: name what was checked, so a developer can diff it.
            return failed("INVALID_SIGNATURE", "The signature is invalid. Content verified: "
                          + json.dumps(sig.string_to_sign("POST", request.path, client_id, req_time, "<body>")))
        try:
            body = json.loads(text)
        except json.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return failed("PARAM_ILLEGAL", "The body must be a JSON object.")
        return None

    def _signed(self, path: str, client_id: str, answer: Answer, *, spoil: bool = False,
                unsigned: bool = False) -> WireResponse:
        text = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
        rsp_time = request_time()
        headers = {**_JSON, "Client-Id": client_id, "Response-Time": rsp_time}
        if not unsigned:
            # bad_signature: a real signature, but over other text, so only verification catches it.
            signed = text + " " if spoil else text
            headers["Signature"] = sig.signature_header("POST", path, client_id, rsp_time, signed, self._antom_key,
                                                        key_version=KEY_VERSION)
        return WireResponse(status=200, body=text.encode("utf-8"), headers=headers)

    def _faulty(self, path: str, client_id: str, answer: Answer, fault: str, delay_s: float) -> WireResponse:
        if fault == "http_500":
            page = b"<html><body><h1>500 Internal Server Error</h1></body></html>"
            return WireResponse(status=500, body=page, headers={"Content-Type": "text/html;charset=utf-8"})
        if fault in ("wrong_amount", "wrong_currency", "wrong_order_id"):
            return self._signed(path, client_id, _content_fault(answer, fault))
        response = self._signed(path, client_id, answer, spoil=fault == "bad_signature", unsigned=fault == "unsigned")
        if fault in ("delay", "timeout"):
            response.delay_s = delay_s
        response.drop = fault in ("drop_connection", "timeout")
        return response

    # ------------------------------------------------------------ notifyPayment

    def notifications(self, payment_request_id: str, *, copies: int = 1) -> list[NotifyMessage]:
        """The signed notifyPayment Antom sends once a payment is final (copies > 1: its resends,
        byte for byte). Empty while the payment is still in process, or unknown."""
        with self._lock:
            now = self._clock()
            p = self._books.payments.get(payment_request_id)
            status = None if p is None else p.status(now)
            if p is None or status not in ("SUCCESS", "FAIL"):
                return []
            answer = {
                "notifyType": "PAYMENT_RESULT",
                **(result("S", "SUCCESS", "success") if status == "SUCCESS" else failed(*(p.refusal or ("", "")))),
                **p.basics(now),
            }
        path = urlsplit(p.notify_url).path if p.notify_url else DEFAULT_NOTIFY_PATH
        text = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
        messages = []
        for _ in range(copies):
            req_time = request_time()
            headers = {**_JSON, "Client-Id": p.client_id, "Request-Time": req_time,
                       "Signature": sig.signature_header("POST", path or "/", p.client_id, req_time, text,
                                                         self._antom_key, key_version=KEY_VERSION)}
            messages.append(NotifyMessage(p.notify_url, path or "/", headers, text.encode("utf-8")))
        return messages

    def deliver_notifications(self, payment_request_id: str, *, copies: int = 1, timeout_s: float = 5) -> list[int]:
        """POST notifications() to the payment's paymentNotifyUrl; the HTTP status of each (0: no
        answer). Blocking: call it from a thread."""
        statuses = []
        for message in self.notifications(payment_request_id, copies=copies):
            if message.url is None:
                raise ValueError(f"payment {payment_request_id} has no paymentNotifyUrl")
            req = urllib.request.Request(message.url, data=message.body, headers=message.headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=timeout_s) as answer:
                    statuses.append(answer.status)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
            except OSError:
                statuses.append(0)
        return statuses

    # ------------------------------------------------------------ for tests and demos

    def config(self, **overrides: Any) -> AlipayPlusConfig:
        """An AlipayPlusConfig pointing at this sandbox with the generated merchant key."""
        fields: dict[str, Any] = {
            "api_url": self._gateway.url,
            "sandbox": True,
            "client_id": self.client_id or DEFAULT_CLIENT_ID,
            "private_key_file": self.merchant_private_key_file,
            "alipay_public_key_file": self.antom_public_key_file,
            "reference_merchant_id": "SANDBOX_MERCHANT_0001",
            "merchant_name": "Sandbox Kiosk",
            "store_id": "KIOSK-0001",
            "store_name": "Sandbox kiosk 1",
        }
        fields.update(overrides)
        return AlipayPlusConfig(**fields)


def _content_fault(answer: Answer, fault: str) -> Answer:
    """wrong_amount / wrong_currency / wrong_order_id: a well-signed answer about something else."""
    out = dict(answer)
    for key in ("paymentAmount", "refundAmount"):
        amount = out.get(key)
        if isinstance(amount, dict):
            amount = dict(amount)
            if fault == "wrong_amount" and str(amount.get("value", "")).isdigit():
                amount["value"] = str(int(amount["value"]) + 1)
            elif fault == "wrong_currency":
                amount["currency"] = "EUR" if amount.get("currency") != "EUR" else "USD"
            out[key] = amount
    if fault == "wrong_order_id":
        for key in ("paymentRequestId", "refundRequestId"):
            if key in out:
                out[key] = str(out[key]) + "X"
    return out


def _view(p: Payment, now: float) -> dict[str, object]:
    return {
        "out_trade_no": p.request_id,
        "payment_id": p.payment_id,
        "mode": "code" if p.scenario == "PaymentCode" else "qr",
        "amount_minor": p.amount_minor,
        "currency": p.currency,
        "qr_code": p.code_value,
        "code": None if p.code is None else p.code[:4] + "*" * max(len(p.code) - 8, 0) + p.code[-4:],
        "behaviour": p.behaviour.name,
        "jam": p.behaviour.name == "pays_then_jam",  # the simulated machine jams after a good payment
        "state": p.status(now),
        "result_code": p.refusal[0] if p.refusal else None,
        "scanned": p.scanned(now),
        "paid": p.paid(now),  # money was taken (stays true after a refund)
        "closed": p.closed_at is not None,
        "refunded_minor": p.refunded_minor,
        "refund_count": len(p.refunds) + (1 if p.cancel_refunded else 0),
        "refund_requests": sorted(p.refunds),
        "notify_url": p.notify_url,
    }


def mount(gateway: SandboxGateway) -> AlipayPlusWire:
    return AlipayPlusWire(gateway)


def wire_of(gateway: SandboxGateway) -> AlipayPlusWire:
    """The mounted Alipay+ protocol of a gateway."""
    for protocol in gateway.protocols:
        if isinstance(protocol, AlipayPlusWire):
            return protocol
    raise LookupError("alipay_plus is not in wire.PROTOCOL_MODULES")
