"""WeChat Pay API v2 as a Provider: micropay (scanned payment codes), Native QR, query, reverse,
close and refund, in XML signed with the merchant's API key (HMAC-SHA256).

Nothing here reports PAID or a refund unless the answer's sign verifies with our API key and it
names our out_trade_no, total_fee and fee_type. An answer that cannot be trusted raises
OutcomeUnknown (the engine queries again); only a verified, final err_code raises PaymentRejected.
Reverse and refund go to /secapi/, which WeChat serves only to the merchant's client certificate.
"""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path

import certifi
import httpx

from kiosk.config import KioskConfig, WechatV2Config
from kiosk.payments import wechat_v2_wire as wire
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
from kiosk.payments.secret_files import read_secret_line
from kiosk.payments.wechat_v2_answers import (
    REFUND_RETRYABLE,
    check_money,
    check_order_id,
    describe,
    micropay_status,
    rejected,
    trade_status,
)

log = logging.getLogger(__name__)

# The Global guide: query every 3-5 s, WeChat revokes an unpaid micropay 45 s after creation, and a
# reverse must wait until 15 s after it (the QuickPay page's stricter 10 s / 30 s is for China).
CODE_POLL = CodePollPolicy(interval_s=4, give_up_after_s=45, cancel_not_before_s=15)
# The id the sale machine gives its first refund (sale.py): a closeorder that finds the QR paid
# refunds under it, so a later refund from the engine with that id moves no money twice.
CANCEL_REFUND_SUFFIX = "R1"
_REFUND_ID = re.compile(r"^[A-Za-z0-9_\-|*@]{1,64}$")  # WeChat's out_refund_no alphabet
_BODY_MAX_BYTES = 128


class WechatV2ConfigError(ValueError):
    """A configured file is missing or unusable. Names the config key, never the secret."""


class WechatV2Provider:
    name = "wechat_v2"
    modes = frozenset({PaymentMode.QR, PaymentMode.CODE})

    def __init__(
        self,
        config: WechatV2Config,
        *,
        code_poll: CodePollPolicy = CODE_POLL,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """Reads the API key and loads the client certificate now, so a bad file stops the kiosk at
        start-up, not at its first refund. A client passed in stays the caller's to close and must
        carry the client certificate itself."""
        self._config = config
        self.code_poll = code_poll
        self._api_key = _read_api_key(config.api_key_file)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(verify=_tls_context(config), timeout=config.timeout_s)

    def __repr__(self) -> str:  # names the merchant and endpoint for logs, never the key
        return f"WechatV2Provider(mch_id={self._config.mch_id!r}, api_url={self._config.api_url!r})"

    # ------------------------------------------------------------ Provider

    async def create_qr(self, order: Order) -> QrCode:
        method = "unifiedorder"
        data = await self._call(order, "/pay/unifiedorder", {
            **self._money(order),
            "body": _body(order.subject),
            "spbill_create_ip": self._config.spbill_create_ip,
            "notify_url": self._config.notify_url,
            "trade_type": "NATIVE",
            "product_id": order.order_id,
        })
        if data.get("result_code") != "SUCCESS":
            err = data.get("err_code", "")
            if err == "ORDERPAID":
                # An earlier attempt's answer was lost and the tourist paid: let the query find it.
                raise OutcomeUnknown(f"{method}: {order.order_id} is already paid; query it")
            if err in ("SYSTEMERROR", "BANKERROR", "FREQUENCY_LIMITED", ""):
                raise OutcomeUnknown(f"{method}: {describe(data)}")
            raise rejected(data)
        # unifiedorder's answer carries no out_trade_no; the sign is what ties it to our request.
        code_url = data.get("code_url", "")
        if not code_url.startswith("weixin://") or data.get("trade_type", "NATIVE") != "NATIVE":
            raise OutcomeUnknown(f"{method}: success without a Native code_url")
        return QrCode(order_id=order.order_id, qr_content=code_url)

    async def charge_code(self, order: Order, code: str) -> PaymentStatus:
        if not code.isdigit() or not 0 < len(code) <= 128 or not code.isascii():
            # Nothing was sent, so nothing can have been charged: a definitive refusal.
            raise PaymentRejected("AUTH_CODE_INVALID", "not a numeric payment code")
        data = await self._call(order, "/pay/micropay", {
            **self._money(order),
            "body": _body(order.subject),
            "spbill_create_ip": self._config.spbill_create_ip,
            "auth_code": code,
        })
        return micropay_status(data, order)

    async def query(self, order: Order) -> PaymentStatus:
        data = await self._call(order, "/pay/orderquery", {"out_trade_no": order.order_id})
        return trade_status("orderquery", data, order)

    async def cancel(self, order: Order) -> CancelOutcome:
        if order.mode is PaymentMode.CODE:
            return await self._reverse(order)
        return await self._close(order)

    async def refund(self, order: Order, refund_id: str) -> RefundOutcome:
        if not _REFUND_ID.match(refund_id):
            raise ValueError("refund_id must be 1..64 of A-Z a-z 0-9 _ - | * @ (WeChat out_refund_no)")
        method = "refund"
        money = self._money(order)
        data = await self._call(order, "/secapi/pay/refund", {
            "out_trade_no": order.order_id,
            # The same out_refund_no on every retry: WeChat refunds it once and repeats its answer.
            "out_refund_no": refund_id,
            "total_fee": money["total_fee"],
            "refund_fee": money["total_fee"],
            "refund_fee_type": order.currency,
        }, secure=True)
        if data.get("result_code") != "SUCCESS":
            if data.get("err_code", "") in REFUND_RETRYABLE:
                raise OutcomeUnknown(f"{method}: {describe(data)}")
            raise rejected(data)
        check_order_id(method, data, order)
        if data.get("out_refund_no") != refund_id:
            raise OutcomeUnknown(f"{method}: answer is for refund {data.get('out_refund_no')!r}, not {refund_id!r}")
        check_money(method, data, order, "refund_fee", ("refund_fee_type", "fee_type"))
        check_money(method, data, order, "total_fee", ("fee_type",))
        return RefundOutcome(order_id=order.order_id, refund_id=refund_id, amount_minor=order.amount_minor)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # ------------------------------------------------------------ cancel, by mode

    async def _reverse(self, order: Order) -> CancelOutcome:
        # Reverse answers the same whether or not money had been taken, so ask first: that is how
        # `refunded` can be told. A payment landing between the two calls makes WeChat answer
        # USERPAYING (retry), and the retry's query then sees it.
        status = await self.query(order)
        if status.state is PaymentState.REFUNDED:
            return CancelOutcome(order_id=order.order_id, refunded=True)
        if status.state in (PaymentState.CLOSED, PaymentState.NOT_FOUND):
            return CancelOutcome(order_id=order.order_id, refunded=False)
        method = "reverse"
        data = await self._call(order, "/secapi/pay/reverse", {"out_trade_no": order.order_id}, secure=True)
        if data.get("recall") == "Y":
            raise OutcomeUnknown(f"{method}: WeChat asks to call reverse again ({describe(data)})")
        if data.get("result_code") != "SUCCESS":
            err = data.get("err_code", "")
            if err == "ORDERNOTEXIST":
                return CancelOutcome(order_id=order.order_id, refunded=False)
            if err in ("USERPAYING", "SYSTEMERROR", "BANKERROR", ""):
                raise OutcomeUnknown(f"{method}: {describe(data)}")
            raise rejected(data)
        return CancelOutcome(order_id=order.order_id, refunded=status.state is PaymentState.PAID)

    async def _close(self, order: Order) -> CancelOutcome:
        method = "closeorder"
        data = await self._call(order, "/pay/closeorder", {"out_trade_no": order.order_id})
        if data.get("result_code") == "SUCCESS":
            return CancelOutcome(order_id=order.order_id, refunded=False)
        err = data.get("err_code", "")
        if err in ("ORDERCLOSED", "ORDERNOTEXIST", "ORDERREVERSED"):
            return CancelOutcome(order_id=order.order_id, refunded=False)
        if err == "ORDERPAID":
            # A paid Native order cannot be closed; refund it, under an id a retry will reuse.
            await self.refund(order, order.order_id + CANCEL_REFUND_SUFFIX)
            return CancelOutcome(order_id=order.order_id, refunded=True)
        if err in ("SYSTEMERROR", ""):
            raise OutcomeUnknown(f"{method}: {describe(data)}")
        raise rejected(data)

    # ------------------------------------------------------------ transport

    def _money(self, order: Order) -> dict[str, str]:
        if order.amount_minor <= 0:
            raise ValueError("amount_minor must be positive")
        # total_fee is an integer in the currency's minor units (fen, cents; yen for JPY).
        return {"out_trade_no": order.order_id, "total_fee": str(order.amount_minor), "fee_type": order.currency}

    def _common(self) -> dict[str, str]:
        fields = {"appid": self._config.appid, "mch_id": self._config.mch_id, "nonce_str": wire.nonce()}
        if self._config.sub_mch_id:
            fields["sub_mch_id"] = self._config.sub_mch_id
        return fields

    async def _call(self, order: Order, path: str, params: dict[str, str], *, secure: bool = False) -> dict[str, str]:
        """One signed round trip about `order`: its verified answer (return_code SUCCESS), or
        OutcomeUnknown. An answer naming another order, amount or currency is not trusted either,
        whatever the method; the methods then require the fields they rely on."""
        method = path.rsplit("/", 1)[-1]
        body = wire.to_xml(wire.signed({**self._common(), **params}, self._api_key, wire.HMAC_SHA256))
        url = self._config.api_url.rstrip("/") + path
        log.debug("wechat_v2 %s %s", method, params.get("out_trade_no"))
        try:
            response = await self._client.post(
                url, content=body, headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=self._config.timeout_s
            )
        except (httpx.HTTPError, OSError) as exc:  # OSError: httpx lets some TLS alerts through as ssl.SSLError
            hint = " (the client certificate was refused?)" if secure else ""
            raise OutcomeUnknown(f"{method}: {type(exc).__name__}: {exc}{hint}") from None
        if response.status_code != 200:
            raise OutcomeUnknown(f"{method}: HTTP {response.status_code}")
        try:
            data = wire.from_xml(response.content)
        except wire.XmlError as exc:
            raise OutcomeUnknown(f"{method}: unreadable answer: {exc}") from None
        if data.get("return_code") != "SUCCESS":
            # return_code FAIL is a communication-level refusal and comes unsigned: trust nothing.
            code, message = data.get("return_code"), data.get("return_msg", "")[:200]
            raise OutcomeUnknown(f"{method}: return_code {code!r}: {message}")
        if not data.get("sign"):
            raise OutcomeUnknown(f"{method}: unsigned answer ({describe(data)})")
        if not wire.verify(data, self._api_key, wire.HMAC_SHA256):
            raise OutcomeUnknown(f"{method}: answer signature does not verify")
        expected = {
            "appid": self._config.appid, "mch_id": self._config.mch_id, "out_trade_no": order.order_id,
            "total_fee": str(order.amount_minor), "fee_type": order.currency,
        }
        for key, value in expected.items():
            if key in data and data[key] != value:
                raise OutcomeUnknown(f"{method}: answer has {key} {data[key][:64]!r}, not {value!r}")
        log.debug("wechat_v2 %s %s -> %s", method, params.get("out_trade_no"), describe(data))
        return data


def _body(subject: str) -> str:
    # `body` is at most 128 bytes; cut on a character boundary so CJK names stay valid UTF-8.
    return subject.encode("utf-8")[:_BODY_MAX_BYTES].decode("utf-8", errors="ignore") or "Kiosk"


def _read_api_key(path: Path) -> str:
    return read_secret_line(path, "payments.wechat_v2.api_key_file", WechatV2ConfigError)


def _tls_context(config: WechatV2Config) -> ssl.SSLContext:
    """Server verification (WeChat's public CA, or ca_file for a sandbox) plus our client cert."""
    if config.client_cert_file is None:
        raise WechatV2ConfigError(
            "payments.wechat_v2.client_cert_file: required (reverse and refund need the merchant certificate)"
        )
    ca_file = config.ca_file or Path(certifi.where())
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise WechatV2ConfigError(f"payments.wechat_v2.ca_file: {ca_file} unusable ({type(exc).__name__})") from None
    key_file = config.client_key_file
    try:
        context.load_cert_chain(str(config.client_cert_file), None if key_file is None else str(key_file))
    except FileNotFoundError:
        raise WechatV2ConfigError(
            "payments.wechat_v2.client_cert_file / client_key_file: file does not exist"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        # The exception text of a bad key can quote the file's content: report only its kind.
        raise WechatV2ConfigError(
            f"payments.wechat_v2.client_cert_file / client_key_file: unusable ({type(exc).__name__})"
        ) from None
    return context


def provider_from_config(
    config: KioskConfig, *, client: httpx.AsyncClient | None = None, code_poll: CodePollPolicy = CODE_POLL
) -> WechatV2Provider:
    """The WeChat Pay v2 provider for a loaded kiosk config ([payments.wechat_v2] must be present)."""
    if config.payments.wechat_v2 is None:
        raise ValueError("payments.wechat_v2: section is missing")
    return WechatV2Provider(config.payments.wechat_v2, client=client, code_poll=code_poll)
