"""One signed Antom AMS round trip: sign the request, send it, verify the response, read `result`.

Nothing comes back from here unless the response's Signature header verifies with the Alipay
public key over the exact body bytes, under our own Client-Id. Anything else (transport errors,
HTTP errors, missing or bad signatures, bodies that are not the JSON Antom sends) raises
OutcomeUnknown: the request may have been carried out, so the caller must query, never guess.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from kiosk.payments import alipay_plus_signature as sig
from kiosk.payments.base import OutcomeUnknown, PaymentRejected

log = logging.getLogger(__name__)

API_PREFIX = "/ams/api/v1/payments/"
SANDBOX_PREFIX = "/ams/sandbox/api/v1/payments/"
CONTENT_TYPE = "application/json; charset=UTF-8"


@dataclass(frozen=True)
class AntomResult:
    """A verified response: `result` split out, the rest of the body in data."""

    status: str  # S, F or U: the CALL's result, not the payment's state
    code: str
    message: str
    data: dict[str, Any]

    def rejected(self) -> PaymentRejected:
        return PaymentRejected(self.code or "F", self.message[:200])

    def describe(self) -> str:
        return f"{self.status} {self.code} {self.message[:120]}".strip()


def request_time() -> str:
    """ISO 8601 to the second in UTC, as the official Python SDK sends it. Antom treats it as an
    opaque string inside the signature, so no other format is required of it."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def parse_result(body_text: str, what: str) -> AntomResult:
    """The JSON object of a verified body, with its `result` checked."""
    try:
        data = json.loads(body_text)
    except json.JSONDecodeError as exc:
        raise OutcomeUnknown(f"{what}: body is not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise OutcomeUnknown(f"{what}: body is not a JSON object")
    result = data.get("result")
    if not isinstance(result, dict):
        raise OutcomeUnknown(f"{what}: response has no result object")
    status = result.get("resultStatus")
    if status not in ("S", "F", "U"):
        raise OutcomeUnknown(f"{what}: unknown resultStatus {str(status)[:20]!r}")
    code, message = result.get("resultCode"), result.get("resultMessage")
    return AntomResult(
        status=status,
        code=code if isinstance(code, str) else "",
        message=message if isinstance(message, str) else "",
        data=data,
    )


class AntomClient:
    def __init__(
        self,
        *,
        api_url: str,
        sandbox: bool,
        client_id: str,
        private_key: rsa.RSAPrivateKey,
        alipay_public_key: rsa.RSAPublicKey,
        key_version: int,
        timeout_s: float,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        split = urlsplit(api_url)
        self._origin = f"{split.scheme}://{split.netloc}"
        # A gateway URL with a path (a proxy) puts that path in front of Antom's; the signed URI is
        # the whole path the server sees.
        self._path_prefix = split.path.rstrip("/") + (SANDBOX_PREFIX if sandbox else API_PREFIX)
        self.client_id = client_id
        self._private_key = private_key
        self.alipay_public_key = alipay_public_key
        self._key_version = key_version
        self._timeout_s = timeout_s
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout_s)

    def path(self, api: str) -> str:
        return self._path_prefix + api

    async def call(self, api: str, body: dict[str, Any]) -> AntomResult:
        """POST one API (pay, inquiryPayment, cancel, refund) and return its verified result."""
        path = self.path(api)
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        req_time = request_time()
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Client-Id": self.client_id,
            "Request-Time": req_time,
            "Signature": sig.signature_header(
                "POST", path, self.client_id, req_time, text, self._private_key, key_version=self._key_version
            ),
        }
        try:
            response = await self._client.post(
                self._origin + path, content=text.encode("utf-8"), headers=headers, timeout=self._timeout_s
            )
        except httpx.HTTPError as exc:
            raise OutcomeUnknown(f"{api}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise OutcomeUnknown(f"{api}: HTTP {response.status_code}")
        body_text = self._verified_text(api, path, response)
        result = parse_result(body_text, api)
        log.debug("%s %s -> %s", api, body.get("paymentRequestId") or body.get("refundRequestId"), result.describe())
        return result

    def _verified_text(self, api: str, path: str, response: httpx.Response) -> str:
        signature = response.headers.get("Signature")
        rsp_time = response.headers.get("Response-Time")
        client_id = response.headers.get("Client-Id")
        if not signature or not rsp_time or not client_id:
            # The SDKs accept unsigned F/U answers; we cannot tell those from a forgery, so they
            # only ever mean "ask again".
            raise OutcomeUnknown(f"{api}: unsigned response")
        if client_id != self.client_id:
            raise OutcomeUnknown(f"{api}: response is for another Client-Id")
        try:
            text = response.content.decode("utf-8")
        except UnicodeDecodeError:
            raise OutcomeUnknown(f"{api}: response is not UTF-8") from None
        if not sig.verify("POST", path, client_id, rsp_time, text, signature, self.alipay_public_key):
            raise OutcomeUnknown(f"{api}: response signature does not verify")
        return text

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
