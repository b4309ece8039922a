"""WeChat Pay API v3 callbacks: signature first, then AEAD_AES_256_GCM decryption of the resource.

A callback body is `{id, create_time, event_type, resource_type, summary, resource: {algorithm,
ciphertext, nonce, associated_data, original_type}}`; the ciphertext (base64, 16-byte GCM tag
appended) decrypts under the merchant's APIv3 key, with the nonce and associated_data used as their
UTF-8 bytes. WeChat Pay repeats a callback until it is acknowledged, so the same `id` can arrive
more than once: opening one is a pure function, and callers deduplicate on Notification.event_id.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kiosk.payments.wechat_v3_auth import SignatureError, WechatPayKey, verify_signed

ALGORITHM = "AEAD_AES_256_GCM"
APIV3_KEY_BYTES = 32


class NotificationError(ValueError):
    """A callback that cannot be trusted or read; the message never contains key material."""


class ApiV3KeyError(ValueError):
    """An unusable APIv3 key file; the message says what is wrong, never the key."""


def load_apiv3_key(data: bytes) -> bytes:
    """The APIv3 key as the merchant console sets it: 32 ASCII characters (a trailing newline from
    an editor is ignored). Its UTF-8 bytes are the AES-256 key."""
    key = data.strip()
    if not key.isascii() or len(key) != APIV3_KEY_BYTES:
        raise ApiV3KeyError(f"must be {APIV3_KEY_BYTES} ASCII characters; found {len(key)} bytes")
    return key


def load_apiv3_key_file(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ApiV3KeyError(f"file {path} does not exist") from None
    except OSError as exc:
        raise ApiV3KeyError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return load_apiv3_key(data)
    except ApiV3KeyError as exc:
        raise ApiV3KeyError(f"{path}: {exc}") from None


def decrypt_resource(resource: Mapping[str, Any], apiv3_key: bytes) -> bytes:
    """The plaintext of a callback's `resource` object; NotificationError if it does not decrypt.

    The key size is not checked here (AESGCM takes 16, 24 or 32 bytes) so that Tencent's published
    test vectors, which use 16-byte keys, can be checked against this exact code; the kiosk's own
    key comes through load_apiv3_key, which insists on 32."""
    algorithm = resource.get("algorithm")
    if algorithm != ALGORITHM:
        raise NotificationError(f"resource algorithm {str(algorithm)[:40]!r} is not {ALGORITHM}")
    nonce, ciphertext = resource.get("nonce"), resource.get("ciphertext")
    associated = resource.get("associated_data") or ""
    if not isinstance(nonce, str) or not isinstance(ciphertext, str) or not isinstance(associated, str):
        raise NotificationError("resource lacks nonce/ciphertext or has non-string fields")
    try:
        sealed = base64.b64decode(ciphertext, validate=True)
    except (binascii.Error, ValueError):
        raise NotificationError("resource ciphertext is not base64") from None
    try:
        aead = AESGCM(apiv3_key)
    except ValueError:
        raise NotificationError("the APIv3 key is not an AES key (16, 24 or 32 bytes)") from None
    try:
        return aead.decrypt(nonce.encode("utf-8"), sealed, associated.encode("utf-8"))
    except (InvalidTag, ValueError):
        # Wrong APIv3 key, or ciphertext/nonce/associated_data altered in transit.
        raise NotificationError("resource does not decrypt (wrong APIv3 key or tampered)") from None


@dataclass(frozen=True)
class Notification:
    event_id: str  # the same on every retry of one callback: the deduplication key
    event_type: str  # e.g. TRANSACTION.SUCCESS, REFUND.SUCCESS
    original_type: str  # what the resource holds: "transaction", "refund", ...
    summary: str
    plaintext: bytes
    data: dict[str, Any]  # the decrypted resource, parsed


def open_notification(
    headers: Mapping[str, str],
    body: bytes,
    *,
    key: WechatPayKey,
    apiv3_key: bytes,
    now: float,
) -> Notification:
    """Verify the callback's signature over the raw body (before parsing anything), then decrypt.

    body must be the bytes as received: a framework that re-serialises the JSON breaks the
    signature, which is the most common reason callbacks "fail to verify"."""
    try:
        verify_signed(headers, body, key, now=now)
    except SignatureError as exc:
        raise NotificationError(f"callback {exc}") from None
    envelope = _json_object(body, "callback body")
    resource = envelope.get("resource")
    if not isinstance(resource, dict):
        raise NotificationError("callback has no resource object")
    plaintext = decrypt_resource(resource, apiv3_key)
    return Notification(
        event_id=_text(envelope.get("id")),
        event_type=_text(envelope.get("event_type")),
        original_type=_text(resource.get("original_type")),
        summary=_text(envelope.get("summary")),
        plaintext=plaintext,
        data=_json_object(plaintext, "decrypted resource"),
    )


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise NotificationError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise NotificationError(f"{what} is not a JSON object")
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
