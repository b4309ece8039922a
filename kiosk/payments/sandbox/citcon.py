"""Citcon UPI in the sandbox gateway, under /citcon/v1/ (Citcon's real host serves /v1/).

Access tokens are issued for the API key in `<keys_dir>/citcon_api_key` and expire after
token_ttl_s (24 h, as Citcon's; `expire_tokens()` ends them at once), after which every call
answers 401. Charges, inquiry, cancels and refunds are kept in citcon_books.py.

Faults (method names in METHODS) spoil the answer after the request was carried out, as everywhere
in the sandbox. Citcon signs nothing, so the signature faults become their nearest equivalents:
bad_signature = an HTML page with HTTP 200 (a captive portal or proxy in the way), unsigned = the
bare data without the UPI envelope. duplicate_notification does not apply (no callbacks here).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from kiosk.config import CitconConfig
from kiosk.payments.sandbox.citcon_books import Answer, CitconBooks, fail
from kiosk.payments.sandbox.wire import WireRequest, WireResponse

if TYPE_CHECKING:
    from kiosk.payments.sandbox.gateway import SandboxGateway

PREFIX = "/citcon"
API_KEY_FILE = "citcon_api_key"
METHODS = ("citcon.access_tokens", "citcon.charges", "citcon.inquiry", "citcon.cancels", "citcon.refunds")
VERSION = "v1.0.0"
_JSON = {"Content-Type": "application/json;charset=utf-8"}
_PORTAL = b"<html><head><title>Wi-Fi login</title></head><body>Please sign in</body></html>"


class CitconWire:
    name = "citcon"
    prefixes = (PREFIX + "/v1/",)
    methods = METHODS

    def __init__(self, gateway: SandboxGateway, clock: Callable[[], float] = time.monotonic) -> None:
        self._gateway = gateway
        self._clock = clock
        self.api_key_file = ensure_api_key(gateway.keys_dir / API_KEY_FILE)
        self._api_key = self.api_key_file.read_text(encoding="utf-8").strip()
        self.books = CitconBooks(gateway.ledger.next_behaviour, clock)
        self.token_ttl_s = 24 * 3600.0
        self.tokens_issued = 0
        self._tokens: dict[str, float] = {}  # access token -> monotonic expiry
        self._lock = threading.Lock()

    # ------------------------------------------------------------ WireProtocol

    def handle(self, request: WireRequest) -> WireResponse:
        path = request.path.removeprefix(PREFIX)
        route = self._route(request.method, path)
        if route is None:
            return _envelope(fail(404, "not_found", f"no route {request.method} {path}"))
        method, action = route
        bearer = _bearer(request.headers)
        if method == "citcon.access_tokens":
            if bearer != self._api_key:
                return _envelope(fail(401, "unauthorized", "the API key is not valid"))
        elif not self._token_valid(bearer):
            return _envelope(fail(401, "unauthorized", "the access token is missing, unknown or expired"))
        try:
            body: Any = json.loads(request.body) if request.body else {}
        except (ValueError, UnicodeDecodeError):
            return _envelope(fail(400, "invalid_request", "the body is not JSON"))
        if not isinstance(body, dict):
            return _envelope(fail(400, "invalid_request", "the body must be a JSON object"))
        answer = action(path, request.query, body)
        fault = self._gateway.faults.take(method)
        return _envelope(answer) if fault is None else _faulty(answer, fault.fault, fault.delay_s)

    def orders(self) -> list[dict[str, object]]:
        return list(self.books.views())

    def reset(self) -> None:
        self.books.reset()
        with self._lock:
            self._tokens.clear()
            self.tokens_issued = 0

    # ------------------------------------------------------------ control (tests, demos)

    def expire_tokens(self) -> None:
        """Every access token issued so far expires now (as if 24 h had passed)."""
        with self._lock:
            self._tokens.clear()

    # ------------------------------------------------------------ endpoints

    def _route(self, method: str, path: str) -> tuple[str, Callable[[str, str, dict[str, Any]], Answer]] | None:
        if method == "POST":
            return {
                "/v1/access-tokens": ("citcon.access_tokens", self._issue_token),
                "/v1/charges": ("citcon.charges", lambda _p, _q, body: self.books.charge(body)),
                "/v1/cancels": ("citcon.cancels", lambda _p, _q, body: self.books.cancel(body)),
                "/v1/refunds": ("citcon.refunds", lambda _p, _q, body: self.books.refund(body)),
            }.get(path)
        if method == "GET" and path.startswith("/v1/transactions/") and path.count("/") == 3:
            return "citcon.inquiry", self._inquire
        return None

    def _issue_token(self, _path: str, _query: str, _body: dict[str, Any]) -> Answer:
        token = "tok_" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = self._clock() + self.token_ttl_s
            self.tokens_issued += 1
        expiry = int(time.time() + self.token_ttl_s)
        return 200, "success", {"access_token": token, "expiry": expiry, "permission": ["charge", "refund"]}

    def _inquire(self, path: str, query: str, _body: dict[str, Any]) -> Answer:
        key = unquote(path.removeprefix("/v1/transactions/"))
        by_reference = parse_qs(query).get("id_type") == ["reference"]
        return self.books.inquire(key, by_reference)

    def _token_valid(self, token: str | None) -> bool:
        with self._lock:
            expiry = self._tokens.get(token or "")
            if expiry is not None and expiry <= self._clock():
                del self._tokens[token or ""]
                return False
            return expiry is not None


def _bearer(headers: Any) -> str | None:
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = str(value).partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _envelope(answer: Answer, *, app: str = "citcon-upi") -> WireResponse:
    status, outcome, data = answer
    body = {"status": outcome, "data": data, "app": app, "version": VERSION}
    return WireResponse(status=status, body=json.dumps(body, ensure_ascii=False).encode("utf-8"), headers=dict(_JSON))


def _faulty(answer: Answer, fault: str, delay_s: float) -> WireResponse:
    status, outcome, data = answer
    if fault == "delay":
        return dataclasses.replace(_envelope(answer), delay_s=delay_s)
    if fault in ("timeout", "drop_connection"):
        return WireResponse(delay_s=delay_s if fault == "timeout" else 0.0, drop=True)
    if fault == "http_500":
        page = b"<html><body><h1>500 Internal Server Error</h1></body></html>"
        return WireResponse(status=500, body=page, headers={"Content-Type": "text/html;charset=utf-8"})
    if fault == "bad_signature":
        return WireResponse(status=200, body=_PORTAL, headers={"Content-Type": "text/html;charset=utf-8"})
    if fault == "unsigned":
        return WireResponse(status=200, body=json.dumps(data).encode("utf-8"), headers=dict(_JSON))
    spoiled = dict(data)
    if fault == "wrong_amount" and type(spoiled.get("amount")) is int:
        spoiled["amount"] += 1
    elif fault == "wrong_order_id" and "reference" in spoiled:
        spoiled["reference"] = str(spoiled["reference"]) + "X"
    elif fault == "wrong_currency" and "currency" in spoiled:
        spoiled["currency"] = "HKD" if spoiled["currency"] != "HKD" else "USD"
    return _envelope((status, outcome, spoiled))


def ensure_api_key(path: Path) -> Path:
    """Create the sandbox's Citcon API key file (mode 0600) if it is missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("sk_sandbox_" + secrets.token_hex(24) + "\n")
    return path


def mount(gateway: SandboxGateway) -> CitconWire:
    return CitconWire(gateway)


def citcon_of(gateway: SandboxGateway) -> CitconWire:
    """The gateway's mounted Citcon protocol (its books, tokens and knobs)."""
    for protocol in gateway.protocols:
        if isinstance(protocol, CitconWire):
            return protocol
    raise LookupError("the Citcon protocol is not mounted (wire.PROTOCOL_MODULES)")


def citcon_config(gateway: SandboxGateway, **overrides: Any) -> CitconConfig:
    """A CitconConfig pointing at this running gateway, with its API key file."""
    fields: dict[str, Any] = {"api_url": gateway.url + PREFIX + "/v1", "api_key_file": citcon_of(gateway).api_key_file}
    fields.update(overrides)
    return CitconConfig(**fields)
