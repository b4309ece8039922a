"""WeChat Pay API v2 in the sandbox gateway: micropay, orderquery, unifiedorder (NATIVE), closeorder,
and, over TLS with the merchant's client certificate, reverse and refund.

Requests are checked the way WeChat checks them (flat XML, the API-key sign in the sign_type the
request names, the merchant ids, the client certificate for /secapi/) and answered signed the same
way. Faults (faults.py) spoil an answer only after the books have acted on the request.

Plain HTTP on the gateway's port serves /pay/; /secapi/ there is dropped unanswered, as WeChat's
TLS refuses a client without its certificate. `protocol.tls_url` (also in GET /sandbox/wechat_v2)
is the HTTPS listener that serves both; POST /sandbox/wechat_v2 {"auto_revoke_s": ..,
"reverse_not_before_s": ..} changes the two timing rules.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kiosk.config import WechatV2Config
from kiosk.payments import wechat_v2_wire as wx
from kiosk.payments.sandbox.faults import Fault
from kiosk.payments.sandbox.wechat_v2_books import WechatBooks
from kiosk.payments.sandbox.wechat_v2_order import Answer, fail
from kiosk.payments.sandbox.wechat_v2_tls import TlsListener, WechatV2Files, ensure_files
from kiosk.payments.sandbox.wire import WireRequest, WireResponse

if TYPE_CHECKING:
    from kiosk.payments.sandbox.gateway import SandboxGateway

log = logging.getLogger(__name__)

DEFAULT_APPID = "wxd930ea5d5a258f4f"  # the ids of WeChat's own signing example
DEFAULT_MCH_ID = "10000100"
INFO_PATH = "/sandbox/wechat_v2"
XML = {"Content-Type": "text/xml;charset=utf-8"}


class _Route:
    def __init__(self, method: str, books: Callable[[WechatBooks, dict[str, str]], Answer],
                 required: tuple[str, ...], secure: bool = False) -> None:
        self.method, self.books, self.required, self.secure = method, books, required, secure


ROUTES = {
    "/pay/micropay": _Route("wechat.micropay", WechatBooks.micropay,
                            ("body", "out_trade_no", "total_fee", "spbill_create_ip", "auth_code")),
    "/pay/orderquery": _Route("wechat.orderquery", WechatBooks.orderquery, ()),
    "/pay/unifiedorder": _Route("wechat.unifiedorder", WechatBooks.unifiedorder,
                                ("body", "out_trade_no", "total_fee", "spbill_create_ip", "notify_url", "trade_type")),
    "/pay/closeorder": _Route("wechat.closeorder", WechatBooks.closeorder, ("out_trade_no",)),
    "/secapi/pay/reverse": _Route("wechat.reverse", WechatBooks.reverse, (), secure=True),
    "/secapi/pay/refund": _Route("wechat.refund", WechatBooks.refund,
                                 ("out_refund_no", "total_fee", "refund_fee"), secure=True),
}
# orderquery, closeorder, reverse and refund name the order either way.
_ORDER_KEYS = ("out_trade_no", "transaction_id")


def _returned_fail(message: str) -> WireResponse:
    """return_code FAIL: WeChat's unsigned answer to a request it would not even read."""
    return WireResponse(body=wx.to_xml({"return_code": "FAIL", "return_msg": message}), headers=dict(XML))


class WechatV2Protocol:
    name = "wechat_v2"
    prefixes = (*ROUTES, INFO_PATH)
    methods = tuple(r.method for r in ROUTES.values())

    def __init__(self, gateway: SandboxGateway, *, appid: str = DEFAULT_APPID, mch_id: str = DEFAULT_MCH_ID) -> None:
        self.gateway = gateway
        self.appid, self.mch_id = appid, mch_id
        self.files: WechatV2Files = ensure_files(gateway.keys_dir, mch_id)
        self._api_key = self.files.api_key_file.read_text(encoding="utf-8").strip()
        self.books = WechatBooks(gateway.ledger.next_behaviour)
        self._tls = TlsListener(self.files, self.handle_from, gateway.stopping)

    # ------------------------------------------------------------ WireProtocol

    def handle(self, request: WireRequest) -> WireResponse:
        """A request on the gateway's plain-HTTP port: no client certificate."""
        return self.handle_from(request, None)

    def orders(self) -> list[dict[str, object]]:
        return list(self.books.views())

    def reset(self) -> None:
        self.books.reset()

    # ------------------------------------------------------------ settings and config

    @property
    def tls_url(self) -> str:
        """Base URL of the HTTPS listener (started on first use, stopped with the gateway)."""
        try:
            host = urlsplit(self.gateway.url).hostname or "127.0.0.1"
        except RuntimeError:
            host = "127.0.0.1"
        return self._tls.url(host)

    def config(self, *, tls: bool = True, **overrides: Any) -> WechatV2Config:
        """A WechatV2Config for this sandbox: over HTTPS (tls=True, everything works) or over the
        gateway's plain HTTP port (tls=False: /secapi/ calls are refused, as without a certificate)."""
        fields: dict[str, Any] = {
            "api_url": self.tls_url if tls else self.gateway.url,
            "appid": self.appid,
            "mch_id": self.mch_id,
            "api_key_file": self.files.api_key_file,
            "client_cert_file": self.files.client_cert_file,
            "client_key_file": self.files.client_key_file,
            "ca_file": self.files.ca_file,
        }
        return WechatV2Config(**{**fields, **overrides})

    def info(self) -> dict[str, Any]:
        return {
            "api_url_plain": self.gateway.url, "api_url": self.tls_url, "appid": self.appid, "mch_id": self.mch_id,
            **{k: str(v) for k, v in vars(self.files).items()},
            "auto_revoke_s": self.books.auto_revoke_s, "reverse_not_before_s": self.books.reverse_not_before_s,
        }

    def _settings(self, request: WireRequest) -> WireResponse:
        if request.method == "POST":
            try:
                data = json.loads(request.body or b"{}")
                for key in ("auto_revoke_s", "reverse_not_before_s"):
                    if key in data:
                        value = data[key]
                        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86_400:
                            raise ValueError(f"{key} must be a number of seconds")
                        setattr(self.books, key, float(value))
            except (ValueError, TypeError, AttributeError) as exc:
                return WireResponse(400, json.dumps({"error": str(exc)}).encode())
        return WireResponse(body=json.dumps(self.info(), indent=1).encode())

    # ------------------------------------------------------------ the API

    def handle_from(self, request: WireRequest, client_cn: str | None) -> WireResponse:
        """client_cn: the CN of the client certificate the TLS listener verified, else None."""
        if request.path == INFO_PATH:
            return self._settings(request)
        route = ROUTES.get(request.path)
        if route is None:
            return WireResponse(404, b"not found", {"Content-Type": "text/plain"})
        if request.method != "POST":
            return _returned_fail("REQUIRE_POST_METHOD 请使用post方法")
        try:
            params = wx.from_xml(request.body)
        except wx.XmlError as exc:
            return _returned_fail(f"XML_FORMAT_ERROR XML格式错误 ({exc})")
        if params.get("mch_id") != self.mch_id:
            return _returned_fail("mch_id参数格式错误")
        if params.get("appid") != self.appid:
            return _returned_fail("appid和mch_id不匹配")
        sign_type = params.get("sign_type", wx.MD5)
        if sign_type not in wx.SIGN_TYPES:
            return _returned_fail("sign_type参数错误")
        if not 0 < len(params.get("nonce_str", "")) <= 32:
            return _returned_fail("nonce_str参数错误")
        if not wx.verify(params, self._api_key, sign_type):
            # Never echo the string to sign: it ends with the API key.
            log.info("sandbox wechat_v2 %s: SIGNERROR", route.method)
            return _returned_fail("签名错误")
        if route.secure and client_cn is None:
            # WeChat's TLS refuses such a client outright; the caller sees the connection end.
            log.warning("sandbox wechat_v2 %s: no client certificate; connection dropped", route.method)
            return WireResponse(drop=True)
        if route.secure and client_cn != self.mch_id:
            return _returned_fail(f"证书错误: certificate is for {client_cn}, not mch_id {self.mch_id}")
        missing = [k for k in route.required if not params.get(k)]
        if not route.required and not any(params.get(k) for k in _ORDER_KEYS):
            missing = ["out_trade_no"]
        answer = fail("LACK_PARAMS", f"缺少参数 {', '.join(missing)}") if missing else route.books(self.books, params)
        fault = self.gateway.faults.take(route.method)
        if fault is not None:
            log.info("sandbox fault %s on %s", fault.fault, route.method)
        return self._answer(answer, params, sign_type, fault)

    def _answer(
        self, answer: Answer, request: dict[str, str], sign_type: wx.SignType, fault: Fault | None
    ) -> WireResponse:
        full = {"return_code": "SUCCESS", "return_msg": "OK", "appid": self.appid, "mch_id": self.mch_id,
                "nonce_str": wx.nonce(), **answer}
        kind = fault.fault if fault else "none"
        delay = fault.delay_s if fault and kind in ("delay", "timeout") else 0.0
        if kind in ("drop_connection", "timeout"):
            return WireResponse(drop=True, delay_s=delay)
        if kind == "http_500":
            page = b"<html><body><h1>500 Internal Server Error</h1></body></html>"
            return WireResponse(500, page, {"Content-Type": "text/html;charset=utf-8"})
        if kind == "wrong_amount":
            self._shift_amounts(full, request)
        elif kind == "wrong_order_id":
            full["out_trade_no"] = request.get("out_trade_no", "") + "X"
        elif kind == "wrong_currency":
            other = "HKD" if self._money(request)[1] == "USD" else "USD"
            full.update({k: other for k in ("fee_type", "refund_fee_type") if k in full} or {"fee_type": other})
        body = dict(full)
        if kind != "unsigned":
            body["sign"] = wx.sign(full, self._api_key, sign_type)
        if kind == "bad_signature":
            # A genuine HMAC with the right key, but over other content: only verification notices.
            body["sign"] = wx.sign({**full, "sandbox": "tampered"}, self._api_key, sign_type)
        return WireResponse(body=wx.to_xml(body), headers=dict(XML), delay_s=delay)

    def _shift_amounts(self, full: dict[str, str], request: dict[str, str]) -> None:
        """A well-signed answer one minor unit off; answers with no amount get a wrong total_fee."""
        shifted = False
        for key in ("total_fee", "refund_fee"):
            if full.get(key, "").isdigit():
                full[key] = str(int(full[key]) + 1)
                shifted = True
        if not shifted:
            full["total_fee"] = str(self._money(request)[0] + 1)

    def _money(self, request: dict[str, str]) -> tuple[int, str]:
        known = self.books.money_of(request.get("out_trade_no", ""))
        if known is not None:
            return known
        total = request.get("total_fee", "")
        return int(total) if total.isdigit() else 0, request.get("fee_type") or "CNY"


def mount(gateway: SandboxGateway) -> WechatV2Protocol:
    return WechatV2Protocol(gateway)


def protocol_of(gateway: SandboxGateway) -> WechatV2Protocol:
    """The mounted WeChat Pay v2 protocol of a gateway (wire.PROTOCOL_MODULES must list this module)."""
    found = next((p for p in gateway.protocols if isinstance(p, WechatV2Protocol)), None)
    if found is None:
        raise LookupError("kiosk.payments.sandbox.wechat_v2 is not in wire.PROTOCOL_MODULES")
    return found
