"""Alipay RSA2: SHA256withRSA (PKCS#1 v1.5, base64) and the strings Alipay signs.

Error messages here describe what was wrong with a key, never its content, so they are safe to log.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# Alipay's RSA2 requires 2048-bit keys; a shorter one is a misconfiguration, not a variant.
MIN_KEY_BITS = 2048

_PEM_RE = re.compile(rb"-----BEGIN [A-Z ]+-----")
_WHITESPACE = re.compile(rb"\s+")


class KeyLoadError(ValueError):
    """A key that cannot be used. The message never contains key material."""


def _der_from_bare_base64(data: bytes) -> bytes:
    # Alipay's console and key tool hand out the base64 body alone, without PEM armour.
    try:
        return base64.b64decode(_WHITESPACE.sub(b"", data), validate=True)
    except (binascii.Error, ValueError):
        raise KeyLoadError("not PEM and not base64 DER") from None


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode("ascii", "replace") if isinstance(data, str) else data


def load_private_key(data: str | bytes) -> rsa.RSAPrivateKey:
    """PEM PKCS#8 (BEGIN PRIVATE KEY), PEM PKCS#1 (BEGIN RSA PRIVATE KEY) or bare base64 DER."""
    raw = _as_bytes(data).strip()
    try:
        if _PEM_RE.search(raw):
            key = serialization.load_pem_private_key(raw, password=None)
        else:
            key = serialization.load_der_private_key(_der_from_bare_base64(raw), password=None)
    except KeyLoadError:
        raise
    except (ValueError, TypeError):
        # `from None`: the library's message is harmless, but the chain is not ours to vouch for.
        raise KeyLoadError("not an unencrypted RSA private key (PKCS#8 or PKCS#1)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyLoadError("not an RSA private key")
    _check_size(key.key_size)
    return key


def load_public_key(data: str | bytes) -> rsa.RSAPublicKey:
    """PEM SubjectPublicKeyInfo (BEGIN PUBLIC KEY), PEM PKCS#1 or bare base64 DER."""
    raw = _as_bytes(data).strip()
    try:
        if _PEM_RE.search(raw):
            key = serialization.load_pem_public_key(raw)
        else:
            key = serialization.load_der_public_key(_der_from_bare_base64(raw))
    except KeyLoadError:
        raise
    except (ValueError, TypeError):
        raise KeyLoadError("not an RSA public key (SubjectPublicKeyInfo or PKCS#1)") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyLoadError("not an RSA public key")
    _check_size(key.key_size)
    return key


def _check_size(bits: int) -> None:
    if bits < MIN_KEY_BITS:
        raise KeyLoadError(f"RSA key is {bits} bits; RSA2 needs at least {MIN_KEY_BITS}")


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyLoadError(f"file {path} does not exist") from None
    except OSError as exc:
        raise KeyLoadError(f"cannot read {path}: {exc.strerror}") from None


def load_private_key_file(path: Path) -> rsa.RSAPrivateKey:
    data = _read_key_file(path)
    try:
        return load_private_key(data)
    except KeyLoadError as exc:
        raise KeyLoadError(f"{path}: {exc}") from None


def load_public_key_file(path: Path) -> rsa.RSAPublicKey:
    data = _read_key_file(path)
    try:
        return load_public_key(data)
    except KeyLoadError as exc:
        raise KeyLoadError(f"{path}: {exc}") from None


# ---------------------------------------------------------------- sign and verify


def sign(message: str, key: rsa.RSAPrivateKey) -> str:
    """SHA256withRSA over the UTF-8 bytes of message, base64 without line breaks."""
    signature = key.sign(message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify(message: str, signature: str, key: rsa.RSAPublicKey) -> bool:
    """True only for a well-formed base64 signature that verifies over message's UTF-8 bytes."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        key.verify(raw, message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


# ---------------------------------------------------------------- strings to sign


def _join_sorted(params: Mapping[str, str], drop: frozenset[str]) -> str:
    # sorted() on str compares code points, which for Alipay's ASCII keys is ASCII order.
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k not in drop and params[k] != "")


def request_string_to_sign(params: Mapping[str, str]) -> str:
    """Request: every parameter but `sign`, empty values dropped, `sign_type` kept."""
    return _join_sorted(params, frozenset({"sign"}))


def notify_string_to_sign(params: Mapping[str, str]) -> str:
    """Asynchronous notification: drops `sign` AND `sign_type` (unlike requests)."""
    return _join_sorted(params, frozenset({"sign", "sign_type"}))


def sign_request(params: Mapping[str, str], key: rsa.RSAPrivateKey) -> dict[str, str]:
    """A copy of params with `sign` added."""
    signed = dict(params)
    signed["sign"] = sign(request_string_to_sign(params), key)
    return signed


def verify_notify(params: Mapping[str, str], key: rsa.RSAPublicKey) -> bool:
    """Params must already be URL-decoded (as a form parser gives them)."""
    signature = params.get("sign")
    return bool(signature) and verify(notify_string_to_sign(params), signature or "", key)


# ---------------------------------------------------------------- synchronous responses


def response_key(method: str) -> str:
    """alipay.trade.query -> alipay_trade_query_response."""
    return method.replace(".", "_") + "_response"


class ResponseFormatError(ValueError):
    """A gateway body that is not the JSON object Alipay sends."""


@dataclass(frozen=True)
class SignedResponse:
    key: str  # which top-level key held the response object
    raw: str  # its exact text, as signed by the gateway
    data: dict[str, Any]
    sign: str | None


def extract_response(body: str, method: str) -> SignedResponse:
    """Find `<method>_response` (or Alipay's `error_response`) in a sync response body.

    The gateway signs the exact text of that object, so we walk the top-level object with
    JSONDecoder.raw_decode and slice the body at the offsets it reports: re-serialising the
    parsed dict would change spacing, escapes or key order and break the signature. Walking the
    top level (rather than searching for the key's text) means a key name quoted inside some value
    cannot be mistaken for the real one.
    """
    decoder = json.JSONDecoder()
    members: dict[str, tuple[int, int, Any]] = {}
    pos = _skip_ws(body, 0)
    if not body.startswith("{", pos):
        raise ResponseFormatError("body is not a JSON object")
    pos = _skip_ws(body, pos + 1)
    if body.startswith("}", pos):
        pos += 1
    else:
        while True:
            try:
                name, pos = decoder.raw_decode(body, pos)
                pos = _skip_ws(body, pos)
                if not isinstance(name, str) or not body.startswith(":", pos):
                    raise ResponseFormatError("malformed JSON object")
                start = _skip_ws(body, pos + 1)
                value, end = decoder.raw_decode(body, start)
            except json.JSONDecodeError as exc:
                raise ResponseFormatError(f"not JSON ({exc.msg} at {exc.pos})") from None
            if name in members:
                # json.loads would silently keep the last one; a duplicate is never legitimate.
                raise ResponseFormatError(f"key {name!r} appears twice")
            members[name] = (start, end, value)
            pos = _skip_ws(body, end)
            if body.startswith(",", pos):
                pos = _skip_ws(body, pos + 1)
                continue
            if body.startswith("}", pos):
                pos += 1
                break
            raise ResponseFormatError("malformed JSON object")
    if _skip_ws(body, pos) != len(body):
        raise ResponseFormatError("trailing data after the JSON object")

    for key in (response_key(method), "error_response"):
        if key in members:
            start, end, value = members[key]
            if not isinstance(value, dict):
                raise ResponseFormatError(f"{key} is not an object")
            sig = members.get("sign", (0, 0, None))[2]
            if sig is not None and not isinstance(sig, str):
                raise ResponseFormatError("sign is not a string")
            return SignedResponse(key=key, raw=body[start:end], data=value, sign=sig or None)
    raise ResponseFormatError(f"no {response_key(method)} in the body")


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos


# ---------------------------------------------------------------- key generation


def generate_key_pair(private_path: Path, public_path: Path, *, bits: int = 2048) -> rsa.RSAPrivateKey:
    """Write a new RSA key pair: PKCS#8 PEM private key with mode 0600, SPKI PEM public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_atomically(private_path, private_pem, 0o600)
    _write_atomically(public_path, public_pem, 0o644)
    return key


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    # Created with its final mode (never briefly world-readable), then renamed into place so a
    # crash leaves either the old file or the whole new one.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it; make the mode exact
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
