"""WeChat Pay API v3 as a Provider: Native QR, cross-border micropay (payment codes), query,
close/reverse, refund, and callbacks.

Every answer is verified before it is read: WeChat Pay's signature over the exact body, with the
configured key, and a timestamp within 5 minutes. An unsigned or unverifiable answer, 2xx or not,
raises OutcomeUnknown (an unsigned success is a forgery as far as we can tell). PAID additionally
needs out_trade_no, amount.total and amount.currency to be ours. Signed 4xx answers are definitive
refusals (PaymentRejected) unless their code says "try again" (wechat_v3_trade.UNCERTAIN_CODES).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from kiosk.config import KioskConfig, WechatV3Config
from kiosk.payments import rsa2
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
from kiosk.payments.wechat_v3_auth import (
    SignatureError,
    build_authorization,
    load_wechatpay_key_file,
    new_nonce,
    verify_signed,
)
from kiosk.payments.wechat_v3_notify import ApiV3KeyError, NotificationError, load_apiv3_key_file, open_notification
from kiosk.payments.wechat_v3_trade import NOT_FOUND_CODES, amount_of, error_code, failure, transaction_status

log = logging.getLogger(__name__)

USER_AGENT = "kiosk-wechatpay-v3/0.1"
# WeChat's global guide: query every 3-5 s, it revokes an unpaid Quick Pay order 45 s after
# creation, and a reverse younger than 15 s is refused (payments.md §3, §9).
CODE_POLL = CodePollPolicy(interval_s=4, give_up_after_s=45, cancel_not_before_s=15)


class WechatV3KeyError(ValueError):
    """A configured key file is missing or unusable. Names the config key, never the key."""


@dataclass(frozen=True)
class _Reply:
    status: int
    data: dict[str, Any]  # {} for an empty (204) body


class WechatV3Provider:
    name = "wechat_v3"
    code_poll = CODE_POLL

    def __init__(
        self,
        config: WechatV3Config,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Loads every key now, so a bad file fails at start-up rather than at the first sale.
        clock (Unix seconds) signs requests and judges response timestamps."""
        self._config = config
        section = "payments.wechat_v3"
        try:
            self._merchant_key = rsa2.load_private_key_file(config.merchant_private_key_file)
        except rsa2.KeyLoadError as exc:
            raise WechatV3KeyError(f"{section}.merchant_private_key_file: {exc}") from None
        try:
            self._wechatpay_key = load_wechatpay_key_file(config.wechatpay_public_key_file, config.wechatpay_key_id)
        except rsa2.KeyLoadError as exc:
            raise WechatV3KeyError(f"{section}.wechatpay_public_key_file: {exc}") from None
        try:
            self._apiv3_key = load_apiv3_key_file(config.apiv3_key_file)
        except ApiV3KeyError as exc:
            raise WechatV3KeyError(f"{section}.apiv3_key_file: {exc}") from None
        self._clock = clock
        self._base = config.api_url.rstrip("/")
        self._global = config.cross_border
        self.modes = frozenset({PaymentMode.QR, PaymentMode.CODE} if config.cross_border else {PaymentMode.QR})
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=config.timeout_s)

    # ------------------------------------------------------------ Provider

    async def create_qr(self, order: Order) -> QrCode:
        op = "wechat_v3.native"
        body = self._order_body(order)
        if self._global:
            body["trade_type"] = "NATIVE"
        body["notify_url"] = self._config.notify_url
        reply = await self._call(op, "POST", self._transactions("native"), body)
        if reply.status == 200:
            code_url = reply.data.get("code_url")
            if not isinstance(code_url, str) or not code_url:
                raise OutcomeUnknown(f"{op}: success without a code_url")
            return QrCode(order_id=order.order_id, qr_content=code_url)
        raise failure(op, reply.status, reply.data)

    async def charge_code(self, order: Order, code: str) -> PaymentStatus:
        op = "wechat_v3.micropay"
        if not self._global:
            raise PaymentRejected("CODE_NOT_SUPPORTED", "payment codes need cross_border = true (global micropay)")
        body = self._order_body(order)
        body.update(trade_type="MICROPAY", payer={"auth_code": code})
        reply = await self._call(op, "POST", "/v3/global/micropay/transactions/pay", body)
        if reply.status == 200:
            status = transaction_status(op, reply.data, mchid=self._config.mchid, order=order)
            if status.state in (PaymentState.PAID, PaymentState.PENDING):
                return status
            if status.state is PaymentState.CLOSED:
                desc = reply.data.get("trade_state_desc")
                raise PaymentRejected(str(reply.data.get("trade_state")), str(desc or "payment failed")[:200])
            raise OutcomeUnknown(f"{op}: unexpected {status.state.value} for a new payment")
        if reply.status == 202 or error_code(reply.data) == "USERPAYING":
            # Accepted, the wallet asks the tourist for a password: the engine polls (code_poll).
            other = reply.data.get("out_trade_no")
            if other is not None and other != order.order_id:
                raise OutcomeUnknown(f"{op}: answer is for order {str(other)[:40]!r}")
            return PaymentStatus(order_id=order.order_id, state=PaymentState.PENDING, buyer_scanned=True)
        raise failure(op, reply.status, reply.data)

    async def query(self, order: Order) -> PaymentStatus:
        op = "wechat_v3.query"
        path = self._transactions("out-trade-no", order.order_id)
        reply = await self._call(op, "GET", path + "?" + urlencode({"mchid": self._config.mchid}), None)
        if reply.status == 200:
            return transaction_status(op, reply.data, mchid=self._config.mchid, order=order)
        if reply.status == 404 and error_code(reply.data) in NOT_FOUND_CODES:
            return PaymentStatus(order_id=order.order_id, state=PaymentState.NOT_FOUND)
        raise failure(op, reply.status, reply.data)

    async def cancel(self, order: Order) -> CancelOutcome:
        if order.mode is PaymentMode.CODE:
            return await self._reverse(order)
        op = "wechat_v3.close"
        path = self._transactions("out-trade-no", order.order_id, "close")
        reply = await self._call(op, "POST", path, {"mchid": self._config.mchid})
        if reply.status in (200, 204):
            return CancelOutcome(order_id=order.order_id, refunded=False)  # closed unpaid: no money held
        if reply.status == 404 and error_code(reply.data) in NOT_FOUND_CODES:
            return CancelOutcome(order_id=order.order_id, refunded=False)  # never created
        return await self._settle_refused_cancel(op, order, reply)

    async def refund(self, order: Order, refund_id: str) -> RefundOutcome:
        if not 0 < len(refund_id) <= 64:
            raise ValueError("refund_id must be 1..64 characters (WeChat out_refund_no)")
        op = "wechat_v3.refund"
        amount = {"refund": order.amount_minor, "total": order.amount_minor, "currency": order.currency}
        body: dict[str, Any] = {"out_trade_no": order.order_id, "out_refund_no": refund_id, "amount": amount}
        if self._global:
            body = {"mchid": self._config.mchid, "appid": self._config.appid, **body}
        path = "/v3/global/refunds" if self._global else "/v3/refund/domestic/refunds"
        # The same out_refund_no on every retry makes WeChat refund at most once: a repeat returns
        # the refund that already exists.
        reply = await self._call(op, "POST", path, body)
        if reply.status != 200:
            raise failure(op, reply.status, reply.data)
        data = reply.data
        if data.get("out_refund_no") != refund_id:
            raise OutcomeUnknown(f"{op}: answer is for refund {str(data.get('out_refund_no'))[:64]!r}")
        if data.get("out_trade_no", order.order_id) != order.order_id:
            raise OutcomeUnknown(f"{op}: answer is for order {str(data.get('out_trade_no'))[:40]!r}")
        refunded, currency = amount_of(op, data, "refund")
        if (refunded, currency) != (order.amount_minor, order.currency):
            raise OutcomeUnknown(
                f"{op}: refunded {refunded} {currency}, the order is {order.amount_minor} {order.currency}"
            )
        status = data.get("status")
        if status in ("CLOSED", "ABNORMAL"):
            # ABNORMAL: the refund to the tourist's bank card failed; it needs a person.
            raise PaymentRejected(str(status), "refund did not complete; resolve it in the merchant console")
        # SUCCESS, or PROCESSING: accepted and committed at WeChat, the money is on its way back.
        return RefundOutcome(order_id=order.order_id, refund_id=refund_id, amount_minor=refunded)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # ------------------------------------------------------------ callbacks

    def parse_notification(self, headers: Mapping[str, str], body: bytes, order: Order | None = None) -> PaymentStatus:
        """A payment callback, verified (signature and timestamp, before anything is parsed) and
        decrypted, as a PaymentStatus. Duplicates give equal results. Without `order`, a PAID
        status carries the callback's own amount and currency: compare them with the order."""
        op = "wechat_v3.notify"
        try:
            note = open_notification(
                headers, body, key=self._wechatpay_key, apiv3_key=self._apiv3_key, now=self._clock()
            )
        except NotificationError as exc:
            raise OutcomeUnknown(f"{op}: {exc}") from None
        if note.original_type != "transaction" and not note.event_type.startswith("TRANSACTION."):
            raise OutcomeUnknown(f"{op}: not a payment callback ({note.event_type[:40]})")
        appid = note.data.get("appid")
        if appid is not None and appid != self._config.appid:
            raise OutcomeUnknown(f"{op}: callback is for appid {str(appid)[:32]!r}, not ours")
        return transaction_status(op, note.data, mchid=self._config.mchid, order=order)

    # ------------------------------------------------------------ helpers

    def _transactions(self, *parts: str) -> str:
        root = "/v3/global/transactions" if self._global else "/v3/pay/transactions"
        return "/".join([root, *(quote(p, safe="") for p in parts)])

    def _order_body(self, order: Order) -> dict[str, Any]:
        body: dict[str, Any] = {
            "appid": self._config.appid,
            "mchid": self._config.mchid,
            "description": order.subject[:127],
            "out_trade_no": order.order_id,
            "amount": {"total": order.amount_minor, "currency": order.currency},
        }
        if self._global:
            body["merchant_category_code"] = self._config.merchant_category_code
        return body

    async def _reverse(self, order: Order) -> CancelOutcome:
        """Micropay: reverse closes an unpaid payment and refunds a paid one, but its answer does not
        say which, so ask first. A payment that completes between the query and the reverse is
        refunded by WeChat yet reported as refunded=False: the tourist has the money either way."""
        before = await self.query(order)
        if before.state is PaymentState.REFUNDED:
            return CancelOutcome(order_id=order.order_id, refunded=True)
        if before.state is PaymentState.CLOSED:
            return CancelOutcome(order_id=order.order_id, refunded=False)
        op = "wechat_v3.reverse"
        path = f"/v3/global/micropay/transactions/out-trade-no/{quote(order.order_id, safe='')}/reverse"
        reply = await self._call(op, "POST", path, {"mchid": self._config.mchid, "appid": self._config.appid})
        if reply.status in (200, 204):
            return CancelOutcome(order_id=order.order_id, refunded=before.state is PaymentState.PAID)
        if reply.status == 404 and error_code(reply.data) in NOT_FOUND_CODES and before.state is PaymentState.NOT_FOUND:
            return CancelOutcome(order_id=order.order_id, refunded=False)
        return await self._settle_refused_cancel(op, order, reply)

    async def _settle_refused_cancel(self, op: str, order: Order, reply: _Reply) -> CancelOutcome:
        """Close/reverse said no (verified). Whatever the code, the order's state decides: paid
        orders are refunded (with an id derived from the order, so retries reuse it)."""
        refusal = failure(op, reply.status, reply.data)
        if isinstance(refusal, OutcomeUnknown) and error_code(reply.data) not in ("ORDERPAID", "ORDER_PAID"):
            raise refusal
        status = await self.query(order)
        if status.state is PaymentState.PAID:
            await self.refund(order, f"{order.order_id}-cancel")
            return CancelOutcome(order_id=order.order_id, refunded=True)
        if status.state is PaymentState.REFUNDED:
            return CancelOutcome(order_id=order.order_id, refunded=True)
        if status.state in (PaymentState.CLOSED, PaymentState.NOT_FOUND):
            return CancelOutcome(order_id=order.order_id, refunded=False)
        raise OutcomeUnknown(f"{op}: refused ({refusal}) while the order is still {status.state.value}")

    async def _call(self, op: str, method: str, path: str, body: dict[str, Any] | None) -> _Reply:
        """One signed round trip. Returns only verified answers; raises OutcomeUnknown otherwise."""
        url = httpx.URL(self._base + path)
        text = "" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        auth = build_authorization(
            method=method,
            url=url.raw_path.decode("ascii"),  # path + query exactly as they go on the wire
            body=text,
            mchid=self._config.mchid,
            serial_no=self._config.merchant_serial_no,
            key=self._merchant_key,
            timestamp=int(self._clock()),
            nonce=new_nonce(),
        )
        headers = {"Authorization": auth, "Accept": "application/json", "User-Agent": USER_AGENT}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = await self._client.request(
                method, url, content=text.encode("utf-8"), headers=headers, timeout=self._config.timeout_s
            )
        except httpx.HTTPError as exc:
            raise OutcomeUnknown(f"{op}: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        request_id = response.headers.get("Request-ID", "-")
        if status >= 500 or status < 200 or 300 <= status < 400:
            raise OutcomeUnknown(f"{op}: HTTP {status} (Request-ID {request_id})")
        try:
            verify_signed(response.headers, response.content, self._wechatpay_key, now=self._clock())
        except SignatureError as exc:
            raise OutcomeUnknown(f"{op}: HTTP {status} {exc} (Request-ID {request_id})") from None
        data = _json_object(op, response.content)
        log.debug("%s %s -> HTTP %s %s (Request-ID %s)", op, path.split("?")[0], status, error_code(data), request_id)
        return _Reply(status=status, data=data)


def _json_object(op: str, content: bytes) -> dict[str, Any]:
    if not content.strip():
        return {}
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OutcomeUnknown(f"{op}: signed body is not JSON") from None
    if not isinstance(data, dict):
        raise OutcomeUnknown(f"{op}: signed body is not a JSON object")
    return data


def provider_from_config(
    config: KioskConfig, *, client: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.time
) -> WechatV3Provider:
    """The WeChat Pay v3 provider for a loaded kiosk config ([payments.wechat_v3] must be present)."""
    if config.payments.wechat_v3 is None:
        raise ValueError("payments.wechat_v3: section is missing")
    return WechatV3Provider(config.payments.wechat_v3, client=client, clock=clock)
