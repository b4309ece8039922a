"""Antom / Alipay+ message signatures: the Signature header and the string it signs.

Requests, responses and notifyPayment messages are all signed the same way, SHA256withRSA
(rsa2.sign) over

    "<METHOD> <URI>\\n<Client-Id>.<Request-Time or Response-Time>.<Body>"

where URI is the path alone and Body the exact text on the wire. The base64 signature travels
URL-encoded in `Signature: algorithm=RSA256,keyVersion=<n>,signature=<...>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote_plus, unquote

from cryptography.hazmat.primitives.asymmetric import rsa

from kiosk.payments import rsa2

ALGORITHM = "RSA256"


class SignatureHeaderError(ValueError):
    """A Signature header that cannot be read. The message never quotes the header."""


@dataclass(frozen=True)
class SignatureHeader:
    algorithm: str
    key_version: str
    signature: str  # base64, already URL-decoded

    def render(self) -> str:
        # quote_plus, like the official SDKs: base64's + / = become %2B %2F %3D.
        return f"algorithm={self.algorithm},keyVersion={self.key_version},signature={quote_plus(self.signature)}"


def string_to_sign(method: str, path: str, client_id: str, time: str, body: str) -> str:
    """The SDKs' gen_sign_content. path must not carry a query string or the host."""
    return f"{method} {path}\n{client_id}.{time}.{body}"


def sign(method: str, path: str, client_id: str, time: str, body: str, key: rsa.RSAPrivateKey) -> str:
    """Base64 SHA256withRSA signature (not URL-encoded; SignatureHeader.render does that)."""
    return rsa2.sign(string_to_sign(method, path, client_id, time, body), key)


def signature_header(
    method: str, path: str, client_id: str, time: str, body: str, key: rsa.RSAPrivateKey, *, key_version: int | str = 1
) -> str:
    """The whole Signature header value for a message."""
    return SignatureHeader(ALGORITHM, str(key_version), sign(method, path, client_id, time, body, key)).render()


def parse_signature_header(value: str) -> SignatureHeader:
    """Read `algorithm=...,keyVersion=...,signature=...` (any order; unknown parts ignored)."""
    parts: dict[str, str] = {}
    for item in value.split(","):
        name, sep, text = item.strip().partition("=")
        if not sep:
            raise SignatureHeaderError("Signature header part without '='")
        if name in parts:
            raise SignatureHeaderError(f"Signature header repeats {name!r}")
        parts[name] = text
    signature = parts.get("signature", "")
    if not signature:
        raise SignatureHeaderError("Signature header has no signature")
    # unquote, not unquote_plus: a sender that skipped URL-encoding still sends '+' as '+', and
    # base64 never contains a space for '+' to stand for.
    return SignatureHeader(
        algorithm=parts.get("algorithm", ""),
        key_version=parts.get("keyVersion", ""),
        signature=unquote(signature),
    )


def verify(
    method: str, path: str, client_id: str, time: str, body: str, header: str, key: rsa.RSAPublicKey
) -> bool:
    """True only for a readable RSA256 Signature header that verifies over this message."""
    try:
        parsed = parse_signature_header(header)
    except SignatureHeaderError:
        return False
    if parsed.algorithm != ALGORITHM:
        return False  # ECC224 exists, but a kiosk configured with an RSA key can only check RSA
    return rsa2.verify(string_to_sign(method, path, client_id, time, body), parsed.signature, key)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup (HTTP header names are; servers and SDKs vary the case)."""
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)
