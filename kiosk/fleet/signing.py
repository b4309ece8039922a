"""Ed25519 signatures on operator commands that move money or goods (refund, test relay).

The signature covers the fleet, the device, the command, its request id, its arguments, when it
was issued and a random nonce, as canonical JSON (sorted keys, no spaces, UTF-8). So a signed
refund for one kiosk cannot be replayed to another, re-pointed at another order, or run twice:
the kiosk refuses stale ones and remembers every nonce it ran until it would be stale anyway.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class SignatureError(Exception):
    """The signature is missing, malformed or does not verify."""


def signed_bytes(
    *, fleet: str, device: str, command: str, request_id: str, args: Any, issued_at: float, nonce: str
) -> bytes:
    body = {
        "fleet": fleet,
        "device": device,
        "command": command,
        "request_id": request_id,
        "args": args,
        "issued_at": issued_at,
        "nonce": nonce,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sign_request(
    key: Ed25519PrivateKey,
    *,
    fleet: str,
    device: str,
    command: str,
    request_id: str,
    args: dict[str, Any],
    issued_at: float | None = None,
    nonce: str | None = None,
) -> dict[str, Any]:
    """The signature fields to merge into a command payload: issued_at, nonce, sig."""
    issued = round(time.time() if issued_at is None else issued_at, 3)
    nonce = nonce or secrets.token_hex(16)
    message = signed_bytes(
        fleet=fleet, device=device, command=command, request_id=request_id, args=args, issued_at=issued, nonce=nonce
    )
    return {"issued_at": issued, "nonce": nonce, "sig": base64.b64encode(key.sign(message)).decode()}


def verify_request(
    key: Ed25519PublicKey, *, fleet: str, device: str, command: str, request: dict[str, Any]
) -> None:
    sig, issued_at, nonce = request.get("sig"), request.get("issued_at"), request.get("nonce")
    if not isinstance(sig, str) or not isinstance(nonce, str) or not nonce:
        raise SignatureError("a signed command needs sig and nonce strings")
    if not isinstance(issued_at, (int, float)) or isinstance(issued_at, bool):
        raise SignatureError("a signed command needs issued_at (seconds since the epoch)")
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("sig is not base64") from None
    try:
        message = signed_bytes(
            fleet=fleet,
            device=device,
            command=command,
            request_id=str(request.get("request_id")),
            args=request.get("args", {}),
            issued_at=issued_at,
            nonce=nonce,
        )
        key.verify(raw, message)
    except (InvalidSignature, ValueError, TypeError):
        raise SignatureError("the signature does not verify against the fleet key") from None


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def generate_keypair(directory: Path) -> tuple[Path, Path]:
    """fleet_ed25519.pem (private, mode 600) and fleet_ed25519.pub.pem in directory."""
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = directory / "fleet_ed25519.pem"
    public = directory / "fleet_ed25519.pub.pem"
    private.touch(mode=0o600, exist_ok=False)
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public
