"""WeChat Pay API v3 in the sandbox gateway: Native and micropay orders, query, close, reverse and
refund, on both the cross-border (/v3/global/...) and the domestic paths, plus callbacks.

Requests must carry a valid WECHATPAY2-SHA256-RSA2048 Authorization (signed with the sandbox's
merchant key, its serial, a timestamp within 5 minutes), else 401 SIGN_ERROR, as WeChat answers.
Every answer, errors and 204s included, is signed with the sandbox's own "WeChat Pay" key and
named by its PUB_KEY_ID_ (or, after use_platform_certificate(), by its certificate's serial).
Faults ("wechat_v3.<operation>") spoil answers after the operation really happened.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kiosk.config import WechatV3Config
from kiosk.payments import rsa2
from kiosk.payments.sandbox.faults import Fault
from kiosk.payments.sandbox.wechat_v3_books import BEIJING, Reply, WechatBooks, error
from kiosk.payments.sandbox.wechat_v3_keys import WechatKeys, ensure_wechat_keys
from kiosk.payments.sandbox.wire import WireRequest, WireResponse

if TYPE_CHECKING:
    from kiosk.payments.sandbox.gateway import SandboxGateway

DEFAULT_MCHID = "1900000109"
DEFAULT_APPID = "wx8888888888888888"
MAX_SKEW_S = 300
_AUTH_FIELDS = frozenset({"mchid", "nonce_str", "signature", "timestamp", "serial_no"})
_NO = r"/out-trade-no/(?P<no>[^/]+)"
_Handler = Callable[["WechatV3Sandbox", dict[str, Any], str, str | None, bool], Reply]
# (method, path pattern, fault method name, handler(self, body, mchid, out_trade_no, cross_border))
ROUTES: list[tuple[str, re.Pattern[str], str, _Handler]] = []


def _route(method: str, pattern: str, name: str) -> Callable[[_Handler], _Handler]:
    def register(handler: _Handler) -> _Handler:
        ROUTES.append((method, re.compile(f"^{pattern}$"), name, handler))
        return handler

    return register


class WechatV3Sandbox:
    name = "wechat_v3"
    prefixes = ("/v3/",)
    methods = tuple(f"wechat_v3.{m}" for m in ("native", "query", "close", "micropay", "reverse", "refund", "notify"))

    def __init__(self, gateway: SandboxGateway) -> None:
        self._gateway = gateway
        self.keys: WechatKeys = ensure_wechat_keys(gateway.keys_dir)
        self._merchant_public = rsa2.load_public_key_file(self.keys.merchant_public_key_file)
        self._signing_key = rsa2.load_private_key_file(self.keys.wechatpay_private_key_file)
        self._apiv3_key = self.keys.apiv3_key_file.read_bytes().strip()
        self.books = WechatBooks(gateway.ledger)
        self.serial = self.keys.public_key_id  # what Wechatpay-Serial names
        self.clock_offset_s = 0.0  # skew the timestamps the sandbox signs (stale-answer tests)

    # ------------------------------------------------------------ WireProtocol

    def handle(self, request: WireRequest) -> WireResponse:
        found = next(
            ((m, route) for route in ROUTES if route[0] == request.method and (m := route[1].match(request.path))),
            None,
        )
        if found is None:
            return self._answer(error(404, "NOT_FOUND", "no such API"))
        match, (_, pattern, name, handler) = found
        mchid, problem = self._authenticate(request)
        if problem is not None:
            return self._answer(problem)
        body: dict[str, Any] = {}
        if request.method == "GET":
            if parse_qs(request.query).get("mchid") != [mchid]:
                return self._answer(error(400, "PARAM_ERROR", "query parameter mchid is required and must be yours"))
        else:
            try:
                parsed = json.loads(request.body.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                return self._answer(error(400, "PARAM_ERROR", "body is not JSON"))
            if not isinstance(parsed, dict):
                return self._answer(error(400, "PARAM_ERROR", "body is not a JSON object"))
            body = parsed
        no = unquote(match.group("no")) if "no" in pattern.groupindex else None
        reply = handler(self, body, mchid, no, "/global/" in request.path)
        return self._answer(reply, self._gateway.faults.take(name))

    def orders(self) -> list[dict[str, object]]:
        return list(self.books.views())

    def reset(self) -> None:
        self.books.reset()
        self.clock_offset_s = 0.0
        self.serial = self.keys.public_key_id

    # ------------------------------------------------------------ the API

    @_route("POST", "/v3/(?:global|pay)/transactions/native", "wechat_v3.native")
    def _native(self, body: dict[str, Any], mchid: str, no: str | None, cross_border: bool) -> Reply:
        return self.books.native(body, mchid=mchid, cross_border=cross_border)

    @_route("GET", "/v3/(?:global|pay)/transactions" + _NO, "wechat_v3.query")
    def _query(self, body: dict[str, Any], mchid: str, no: str | None, cross_border: bool) -> Reply:
        return self.books.query(no or "", mchid=mchid)

    @_route("POST", "/v3/(?:global|pay)/transactions" + _NO + "/close", "wechat_v3.close")
    def _close(self, body: dict[str, Any], mchid: str, no: str | None, cross_border: bool) -> Reply:
        if body.get("mchid") != mchid:
            return error(400, "PARAM_ERROR", "mchid is required")
        return self.books.close(no or "", mchid=mchid)

    @_route("POST", "/v3/global/micropay/transactions/pay", "wechat_v3.micropay")
    def _micropay(self, body: dict[str, Any], mchid: str, no: str | None, cross_border: bool) -> Reply:
        return self.books.micropay(body, mchid=mchid)

    @_route("POST", "/v3/global/micropay/transactions" + _NO + "/reverse", "wechat_v3.reverse")
    def _reverse(self, body: dict[str, Any], mchid: str, no: str | None, cross_border: bool) -> Reply:
        if body.get("mchid") != mchid or not body.get("appid"):
            return error(400, "PARAM_ERROR", "mchid and appid are required")
        return self.books.reverse(no or "", mchid=mchid)

    @_route("POST", "/v3/(?:global/refunds|refund/domestic/refunds)", "wechat_v3.refund")
    def _refund(self, body: dict[str, Any], mchid: str, no: str | None, cross_border: bool) -> Reply:
        return self.books.refund(body, mchid=mchid, cross_border=cross_border)

    # ------------------------------------------------------------ signatures

    def _authenticate(self, request: WireRequest) -> tuple[str, Reply | None]:
        auth = _header(request.headers, "Authorization") or ""
        scheme, _, params = auth.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if scheme != "WECHATPAY2-SHA256-RSA2048" or not set(fields) >= _AUTH_FIELDS:
            return "", error(401, "SIGN_ERROR", "Authorization is not WECHATPAY2-SHA256-RSA2048 with all five fields")
        if fields["serial_no"] != self.keys.merchant_serial_no:
            return "", error(401, "SIGN_ERROR", "serial_no is not the merchant certificate's serial")
        if not fields["timestamp"].isdigit() or abs(int(fields["timestamp"]) - time.time()) > MAX_SKEW_S:
            return "", error(401, "SIGN_ERROR", "timestamp is more than 5 minutes off")
        url = request.path + (f"?{request.query}" if request.query else "")
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return "", error(400, "PARAM_ERROR", "body is not UTF-8")
        message = f"{request.method}\n{url}\n{fields['timestamp']}\n{fields['nonce_str']}\n{text}\n"
        if not rsa2.verify(message, fields["signature"], self._merchant_public):
            # Like WeChat, say what was verified, so a developer can diff it with what they signed.
            return "", error(401, "SIGN_ERROR", f"签名错误: signature does not verify over {json.dumps(message)}")
        return fields["mchid"], None

    def signed_headers(self, body: bytes, *, spoil: str | None = None) -> dict[str, str]:
        """Wechatpay-* headers for body. spoil="unsigned" leaves them out; "bad_signature" signs
        other text, so only verification notices."""
        headers = {"Content-Type": "application/json;charset=utf-8", "Request-ID": uuid.uuid4().hex}
        if spoil == "unsigned":
            return headers
        timestamp = str(int(time.time() + self.clock_offset_s))
        nonce = secrets.token_hex(16)
        text = body.decode("utf-8") + (" " if spoil == "bad_signature" else "")
        headers.update(
            {
                "Wechatpay-Timestamp": timestamp,
                "Wechatpay-Nonce": nonce,
                "Wechatpay-Signature": rsa2.sign(f"{timestamp}\n{nonce}\n{text}\n", self._signing_key),
                "Wechatpay-Serial": self.serial,
            }
        )
        return headers

    def _answer(self, reply: Reply, fault: Fault | None = None) -> WireResponse:
        status, data = reply
        kind = fault.fault if fault is not None else None
        if kind in ("wrong_amount", "wrong_currency", "wrong_order_id") and data is not None:
            data = _spoil_content(data, kind)
        body = b"" if data is None else json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        response = WireResponse(status=status, body=body, headers=self.signed_headers(body, spoil=kind))
        if fault is None:
            return response
        if kind in ("delay", "timeout"):
            response.delay_s = fault.delay_s
        if kind in ("drop_connection", "timeout"):
            response.drop = True
        if kind == "http_500":
            response.status, response.body = 500, b"<html><body><h1>500 Internal Server Error</h1></body></html>"
            response.headers = {"Content-Type": "text/html;charset=utf-8"}
        return response

    # ------------------------------------------------------------ callbacks

    def use_platform_certificate(self, enabled: bool = True) -> None:
        """Sign as a platform-certificate merchant (Wechatpay-Serial = the certificate's serial)."""
        self.serial = self.keys.certificate_serial if enabled else self.keys.public_key_id

    def notifications(self, out_trade_no: str) -> list[tuple[dict[str, str], bytes]]:
        """The TRANSACTION.SUCCESS callback(s) WeChat Pay would POST for a paid order: one, or two
        identical ones (same id, fresh signature) under the fault duplicate_notification. The
        bad_signature and unsigned faults on "wechat_v3.notify" spoil them the same way."""
        found = self.books.transaction(out_trade_no)
        if found is None or found[0]["trade_state"] != "SUCCESS":
            raise ValueError(f"{out_trade_no}: no paid order (WeChat Pay calls back on success only)")
        plaintext = json.dumps(found[0], ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        envelope = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "wechat_v3/" + out_trade_no)),
            "create_time": datetime.now(BEIJING).isoformat(timespec="seconds"),
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": encrypt_resource(plaintext, self._apiv3_key, associated_data="transaction"),
        }
        body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        fault = self._gateway.faults.take("wechat_v3.notify")
        kind = fault.fault if fault is not None else None
        copies = 2 if kind == "duplicate_notification" else 1
        return [(self.signed_headers(body, spoil=kind), body) for _ in range(copies)]

    def post_notifications(self, out_trade_no: str, url: str | None = None) -> list[int]:
        """POST the callback(s) to url (default: the order's notify_url); the HTTP statuses."""
        found = self.books.transaction(out_trade_no)
        target = url or (found[1] if found else None)
        if not target or not target.startswith(("http://", "https://")):
            raise ValueError("no http(s) notify_url to call")
        statuses = []
        for headers, body in self.notifications(out_trade_no):
            request = urllib.request.Request(target, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=5) as reply:
                    statuses.append(reply.status)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
        return statuses

    def config(self, **overrides: Any) -> WechatV3Config:
        """A WechatV3Config pointing at this gateway, with the sandbox's merchant keys."""
        fields: dict[str, Any] = {
            "api_url": self._gateway.url,
            "mchid": DEFAULT_MCHID,
            "appid": DEFAULT_APPID,
            "merchant_serial_no": self.keys.merchant_serial_no,
            "merchant_private_key_file": self.keys.merchant_private_key_file,
            "apiv3_key_file": self.keys.apiv3_key_file,
            "wechatpay_public_key_file": self.keys.wechatpay_public_key_file,
            "wechatpay_key_id": self.keys.public_key_id,
        }
        fields.update(overrides)
        return WechatV3Config(**fields)


def encrypt_resource(plaintext: bytes, apiv3_key: bytes, *, associated_data: str) -> dict[str, str]:
    """A callback's resource object: AES-GCM under the APIv3 key, 12-character nonce, tag appended."""
    nonce = secrets.token_urlsafe(9)[:12]
    sealed = AESGCM(apiv3_key).encrypt(nonce.encode(), plaintext, associated_data.encode())
    return {
        "original_type": "transaction",
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(sealed).decode("ascii"),
        "associated_data": associated_data,
        "nonce": nonce,
    }


def _spoil_content(data: dict[str, Any], fault: str) -> dict[str, Any]:
    """wrong_amount / wrong_currency / wrong_order_id: a well-signed answer about something else."""
    out = copy.deepcopy(data)
    amount = out.get("amount")
    if fault == "wrong_amount" and isinstance(amount, dict):
        for key in ("total", "refund"):
            if isinstance(amount.get(key), int):
                amount[key] += 1
    elif fault == "wrong_currency" and isinstance(amount, dict) and "currency" in amount:
        amount["currency"] = "JPY" if amount["currency"] != "JPY" else "USD"
    elif fault == "wrong_order_id" and "out_trade_no" in out:
        out["out_trade_no"] = str(out["out_trade_no"]) + "X"
    return out


def _header(headers: Any, name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def mount(gateway: SandboxGateway) -> WechatV3Sandbox:
    return WechatV3Sandbox(gateway)


def wechat_v3(gateway: SandboxGateway) -> WechatV3Sandbox:
    """The mounted WeChat Pay v3 protocol of a gateway (for tests and the simulator)."""
    for protocol in gateway.protocols:
        if isinstance(protocol, WechatV3Sandbox):
            return protocol
    raise LookupError("wechat_v3 is not in wire.PROTOCOL_MODULES")
