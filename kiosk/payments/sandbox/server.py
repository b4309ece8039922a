"""The sandbox gateway's HTTP side: Alipay's wire protocol at POST /gateway.do plus a JSON control API.

Requests are checked like the real gateway checks them (RSA2 signature with the app public key,
common parameters) and answered like it answers: the `<method>_response` object signed, over its
exact text, with the gateway's own key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from kiosk.money import AmountError, from_decimal_text, to_decimal_text
from kiosk.payments import rsa2
from kiosk.payments.sandbox.faults import Fault
from kiosk.payments.sandbox.ledger import Ledger, Response
from kiosk.payments.sandbox.wire import WireRequest, WireResponse

if TYPE_CHECKING:
    from kiosk.payments.sandbox.gateway import SandboxGateway

log = logging.getLogger(__name__)

GATEWAY_PATH = "/gateway.do"
METHODS: dict[str, Callable[[Ledger, dict[str, Any]], Response]] = {
    "alipay.trade.precreate": Ledger.precreate,
    "alipay.trade.pay": Ledger.pay,
    "alipay.trade.query": Ledger.query,
    "alipay.trade.cancel": Ledger.cancel,
    "alipay.trade.refund": Ledger.refund,
}
MAX_BODY = 1 << 20
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def _missing(sub_code: str, sub_msg: str) -> Response:
    return {"code": "40001", "msg": "Missing Required Arguments", "sub_code": sub_code, "sub_msg": sub_msg}


def _invalid(sub_code: str, sub_msg: str) -> Response:
    return {"code": "40002", "msg": "Invalid Arguments", "sub_code": sub_code, "sub_msg": sub_msg}


def check_request(params: dict[str, str], app_key: RSAPublicKey, app_id: str | None) -> Response | None:
    """The gateway's own checks, in roughly its order; None when the request may proceed."""
    method = params.get("method", "")
    if not method:
        return _missing("isv.missing-method", "缺少方法名参数")
    if method not in METHODS:
        return _invalid("isv.invalid-method", "不存在的方法名")
    if not params.get("app_id"):
        return _missing("isv.missing-app-id", "缺少AppID参数")
    if app_id is not None and params["app_id"] != app_id:
        return _invalid("isv.invalid-app-id", "无效的AppID参数")
    if not params.get("sign_type"):
        return _missing("isv.missing-signature-type", "缺少签名类型参数")
    if params["sign_type"] != "RSA2":
        return _invalid("isv.invalid-signature-type", "无效的签名类型参数 (sandbox speaks RSA2 only)")
    if not params.get("sign"):
        return _missing("isv.missing-signature", "缺少签名参数")
    if params.get("charset", "").lower() != "utf-8":
        return _invalid("isv.invalid-charset", "字符集错误 (sandbox speaks utf-8 only)")
    if not _TIMESTAMP.match(params.get("timestamp", "")):
        return _invalid("isv.invalid-timestamp", "非法的时间戳参数")
    if params.get("format", "JSON").upper() != "JSON" or params.get("version") != "1.0":
        return _invalid("isv.invalid-parameter", "format must be JSON and version 1.0")
    string_to_sign = rsa2.request_string_to_sign(params)
    if not rsa2.verify(string_to_sign, params["sign"], app_key):
        # Like the real gateway, echo the string it verified so a developer can diff it with theirs.
        return _invalid(
            "isv.invalid-signature",
            "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，网关生成的验签字符串为：" + string_to_sign,
        )
    try:
        biz = json.loads(params.get("biz_content", ""))
    except json.JSONDecodeError:
        biz = None
    if not isinstance(biz, dict):
        return _invalid("isv.invalid-parameter", "biz_content must be a JSON object")
    return None


def form_params(query: str, body: bytes) -> dict[str, str] | None:
    """Query string and form body merged (Alipay SDKs split them); None on conflicting repeats."""
    out: dict[str, str] = {}
    text = body.decode("utf-8", errors="replace")
    for name, value in parse_qsl(query, keep_blank_values=True) + parse_qsl(text, keep_blank_values=True):
        if out.setdefault(name, value) != value:
            return None
    return out


def _shifted_amount(text: Any, currency: str) -> Any:
    try:
        return to_decimal_text(from_decimal_text(text, currency) + 1, currency)
    except (AmountError, TypeError):
        return text


def apply_content_fault(response: Response, fault: str) -> Response:
    """wrong_amount / wrong_order_id / wrong_currency: a well-signed answer about something else."""
    out = dict(response)
    currency_key = "refund_currency" if "refund_fee" in out else "trans_currency"
    currency = str(out.get(currency_key) or "CNY")
    if fault == "wrong_amount":
        for key in ("total_amount", "refund_fee"):
            if key in out:
                out[key] = _shifted_amount(out[key], currency)
    elif fault == "wrong_order_id":
        out["out_trade_no"] = str(out.get("out_trade_no", "")) + "X"
    elif fault == "wrong_currency" and out.get("code") in ("10000", "10003"):
        # Same figures, another currency: an absent field means CNY, so name one that is not ours.
        out[currency_key] = "HKD" if currency != "HKD" else "USD"
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK holds the
    # body back ~40 ms per request.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("sandbox %s " + format, self.client_address[0], *args)

    # ------------------------------------------------------------ routing

    def _wire(self) -> bool:
        """Hand the request to a mounted wallet protocol if one owns the path."""
        split = urlsplit(self.path)
        protocol = self.server.gateway.protocol_for(split.path)
        if protocol is None:
            return False
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._json(413, {"error": "body too large"})
            return True
        body = self.rfile.read(length)
        headers = {k: v for k, v in self.headers.items()}
        response: WireResponse = protocol.handle(WireRequest(self.command, split.path, split.query, headers, body))
        if response.delay_s:
            self.server.gateway.stopping.wait(response.delay_s)
        if response.drop:
            self.close_connection = True
            return True
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)
        return True

    def do_GET(self) -> None:
        if self._wire():
            return
        gw = self.server.gateway
        path = urlsplit(self.path).path
        if path == "/sandbox/orders":
            self._json(200, {"orders": gw.orders()})
        elif path.startswith("/sandbox/orders/"):
            view = gw.order(unquote(path.removeprefix("/sandbox/orders/")))
            if view is None:
                self._json(404, {"error": "no such order"})
            else:
                self._json(200, view)
        elif path == "/sandbox/faults":
            self._json(200, {"faults": gw.faults.pending()})
        elif path in ("/", "/sandbox"):
            self._json(200, gw.info())
        else:
            self._json(404, {"error": "not found"})

    def do_PUT(self) -> None:
        if not self._wire():
            self._json(404, {"error": "not found"})

    def do_DELETE(self) -> None:
        if not self._wire():
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self._wire():
            return
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._json(413, {"error": "body too large"})
            return
        body = self.rfile.read(length)
        if split.path == GATEWAY_PATH:
            self._gateway(split.query, body)
            return
        control: dict[str, Callable[[dict[str, Any]], None]] = {
            "/sandbox/behaviour": self.server.gateway.control_behaviour,
            "/sandbox/faults": self.server.gateway.control_fault,
            "/sandbox/reset": lambda _data: self.server.gateway.reset(),
        }
        handler = control.get(split.path)
        if handler is None:
            self._json(404, {"error": "not found"})
            return
        try:
            data = json.loads(body or b"{}")
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            handler(data)
        except (ValueError, TypeError) as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(200, {"ok": True})

    # ------------------------------------------------------------ the Alipay gateway

    def _gateway(self, query: str, body: bytes) -> None:
        gw = self.server.gateway
        params = form_params(query, body)
        method = (params or {}).get("method", "")
        key = rsa2.response_key(method) if method in METHODS else "error_response"
        if params is None:
            self._alipay(key, _invalid("isv.invalid-parameter", "parameter given twice"))
            return
        problem = check_request(params, gw.app_public_key, gw.app_id)
        if problem is not None:
            log.info("sandbox rejected %s: %s", method or "(no method)", problem["sub_code"])
            self._alipay(key, problem)
            return
        response = METHODS[method](gw.ledger, json.loads(params["biz_content"]))
        fault = gw.faults.take(method)
        if fault is None:
            self._alipay(key, response)
        else:
            log.info("sandbox fault %s on %s", fault.fault, method)
            self._faulty(key, response, fault)

    def _faulty(self, key: str, response: Response, fault: Fault) -> None:
        stopping = self.server.gateway.stopping
        if fault.fault in ("delay", "timeout"):
            stopping.wait(fault.delay_s)
        if fault.fault in ("drop_connection", "timeout"):
            self.close_connection = True  # nothing written: the client sees the socket close
        elif fault.fault == "http_500":
            page = b"<html><body><h1>500 Internal Server Error</h1></body></html>"
            self._send(500, "text/html;charset=utf-8", page)
        elif fault.fault in ("wrong_amount", "wrong_order_id", "wrong_currency"):
            self._alipay(key, apply_content_fault(response, fault.fault))
        elif fault.fault in ("bad_signature", "unsigned"):
            self._alipay(key, response, signature=fault.fault)
        else:
            self._alipay(key, response)

    def _alipay(self, key: str, response: Response, *, signature: str = "good") -> None:
        text = json.dumps(response, ensure_ascii=False, separators=(",", ":"))
        body = '{"' + key + '":' + text
        if signature != "unsigned":
            # bad_signature: a real signature, but over other text, so only verification catches it.
            signed = text if signature == "good" else text + " "
            body += ',"sign":"' + rsa2.sign(signed, self.server.gateway.gateway_private_key) + '"'
        self._send(200, "application/json;charset=utf-8", (body + "}").encode("utf-8"))

    # ------------------------------------------------------------ plumbing

    def _json(self, status: int, data: Any) -> None:
        payload = json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8")
        self._send(status, "application/json;charset=utf-8", payload)

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], gateway: SandboxGateway) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.gateway = gateway
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads parked on keep-alive sockets so stop() leaves nothing behind."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def make_server(host: str, port: int, gateway: SandboxGateway) -> _Server:
    return _Server((host, port), gateway)
