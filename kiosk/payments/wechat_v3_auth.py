"""WeChat Pay API v3 signatures: the Authorization header we send and the check of what comes back.

Requests: `Authorization: WECHATPAY2-SHA256-RSA2048 mchid=..,nonce_str=..,signature=..,timestamp=..,
serial_no=..`, the signature being SHA256withRSA (rsa2.sign) over `METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n`
with the merchant key. Responses and notifications: `Wechatpay-Timestamp\\nWechatpay-Nonce\\nBODY\\n` signed
with WeChat Pay's key, named by Wechatpay-Serial: a platform certificate serial, or PUB_KEY_ID_... for
merchants that only have a "WeChat Pay public key" (every new merchant since 2024).

Error messages describe what was wrong, never key material, so they are safe to log.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from kiosk.payments import rsa2

SCHEME = "WECHATPAY2-SHA256-RSA2048"
# WeChat Pay rejects requests whose timestamp is more than 5 minutes off, and tells merchants to
# reject responses and callbacks the same way; a replayed old answer then cannot pass as new.
MAX_CLOCK_SKEW_S = 300

_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----")
_WHITESPACE = re.compile(rb"\s+")


class SignatureError(ValueError):
    """A response or callback that cannot be trusted; the message says why (no secrets)."""


# ---------------------------------------------------------------- requests


def request_message(method: str, url: str, timestamp: int, nonce: str, body: str) -> str:
    """url is the path plus `?query` exactly as sent (no scheme or host); body "" for GET."""
    return f"{method}\n{url}\n{timestamp}\n{nonce}\n{body}\n"


def new_nonce() -> str:
    return secrets.token_hex(16).upper()  # 32 characters, the most WeChat accepts


def build_authorization(
    *,
    method: str,
    url: str,
    body: str,
    mchid: str,
    serial_no: str,
    key: rsa.RSAPrivateKey,
    timestamp: int,
    nonce: str,
) -> str:
    signature = rsa2.sign(request_message(method, url, timestamp, nonce, body), key)
    return (
        f'{SCHEME} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{timestamp}",serial_no="{serial_no}"'
    )


# ---------------------------------------------------------------- WeChat Pay's key


@dataclass(frozen=True)
class WechatPayKey:
    """The key WeChat Pay signs with, and the Wechatpay-Serial that names it."""

    key_id: str
    public_key: rsa.RSAPublicKey


def load_wechatpay_key(data: bytes, key_id: str) -> WechatPayKey:
    """A PEM public key (PUB_KEY_ID_ mode), or a platform certificate (PEM or DER) whose serial
    must be key_id: a certificate for another serial would make every response unverifiable."""
    raw = data.strip()
    cert: x509.Certificate | None = None
    try:
        if _CERT_RE.search(raw):
            cert = x509.load_pem_x509_certificate(raw)
        elif not raw.startswith(b"-----"):
            der = _maybe_der(raw)
            cert = _try_der_certificate(der) if der is not None else None
    except ValueError:
        raise rsa2.KeyLoadError("not a readable X.509 certificate") from None
    if cert is None:
        return WechatPayKey(key_id=key_id, public_key=rsa2.load_public_key(raw))
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise rsa2.KeyLoadError("the certificate's key is not RSA")
    if public.key_size < rsa2.MIN_KEY_BITS:
        raise rsa2.KeyLoadError(f"the certificate's RSA key is {public.key_size} bits; need {rsa2.MIN_KEY_BITS}")
    serial = f"{cert.serial_number:X}"
    if not _same_serial(serial, key_id):
        raise rsa2.KeyLoadError(f"the certificate's serial is {serial}, not the configured key id {key_id}")
    return WechatPayKey(key_id=key_id, public_key=public)


def load_wechatpay_key_file(path: Path, key_id: str) -> WechatPayKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise rsa2.KeyLoadError(f"file {path} does not exist") from None
    except OSError as exc:
        raise rsa2.KeyLoadError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return load_wechatpay_key(data, key_id)
    except rsa2.KeyLoadError as exc:
        raise rsa2.KeyLoadError(f"{path}: {exc}") from None


def _maybe_der(raw: bytes) -> bytes | None:
    if raw[:1] == b"\x30":  # binary DER: an ASN.1 SEQUENCE
        return raw
    try:
        return base64.b64decode(_WHITESPACE.sub(b"", raw), validate=True)
    except (binascii.Error, ValueError):
        return None


def _try_der_certificate(der: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None  # not a certificate: maybe a bare DER public key, which rsa2 reads


def _same_serial(serial_hex: str, key_id: str) -> bool:
    # Serials are hex; consoles show them with or without leading zeros, in either case.
    try:
        return int(key_id, 16) == int(serial_hex, 16)
    except ValueError:
        return False


# ---------------------------------------------------------------- responses and callbacks


def response_message(timestamp: str, nonce: str, body: str) -> str:
    return f"{timestamp}\n{nonce}\n{body}\n"


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup: frameworks and proxies change header case freely."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def verify_signed(
    headers: Mapping[str, str],
    body: bytes,
    key: WechatPayKey,
    *,
    now: float,
    max_skew_s: float = MAX_CLOCK_SKEW_S,
) -> None:
    """Raise SignatureError unless WeChat Pay's signature over this exact body verifies, with our
    key, and a timestamp within max_skew_s of now."""
    timestamp = header(headers, "Wechatpay-Timestamp")
    nonce = header(headers, "Wechatpay-Nonce")
    signature = header(headers, "Wechatpay-Signature")
    serial = header(headers, "Wechatpay-Serial")
    if not (timestamp and nonce and signature and serial):
        raise SignatureError("unsigned (no Wechatpay-Timestamp/Nonce/Signature/Serial)")
    sig_type = header(headers, "Wechatpay-Signature-Type")
    if sig_type and sig_type != SCHEME:
        raise SignatureError(f"unsupported Wechatpay-Signature-Type {sig_type[:40]!r}")
    if serial != key.key_id and not _same_serial(serial, key.key_id):
        # Another key (a rotated platform certificate, or the public key during the migration):
        # we cannot check it, so we cannot trust it. The operator must configure the new key.
        raise SignatureError(f"signed with key {serial[:64]!r}, but the configured key is {key.key_id!r}")
    if not timestamp.isascii() or not timestamp.isdigit():
        raise SignatureError("Wechatpay-Timestamp is not Unix seconds")
    skew = int(timestamp) - now
    if abs(skew) > max_skew_s:
        raise SignatureError(
            f"Wechatpay-Timestamp is {skew:+.0f} s from the local clock (limit {max_skew_s:.0f} s); "
            "a replay, or the kiosk clock is wrong (is NTP synchronised?)"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("body is not UTF-8") from None
    # WeChat Pay sends probes whose signature starts WECHATPAY/SIGNTEST/ to check that merchants
    # verify; they fail here like any other bad signature.
    if not rsa2.verify(response_message(timestamp, nonce, text), signature, key.public_key):
        raise SignatureError("signature does not verify with WeChat Pay's key")
