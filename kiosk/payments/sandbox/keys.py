"""The sandbox's key files: an app key pair (the kiosk's side) and the gateway's own pair."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from kiosk.payments import rsa2

APP_PRIVATE_KEY = "app_private_key.pem"
APP_PUBLIC_KEY = "app_public_key.pem"
GATEWAY_PRIVATE_KEY = "gateway_private_key.pem"
GATEWAY_PUBLIC_KEY = "gateway_public_key.pem"


@dataclass(frozen=True)
class SandboxKeys:
    app_private_key_file: Path  # the kiosk signs with this: payments.alipay.app_private_key_file
    app_public_key_file: Path  # the sandbox verifies requests with this
    gateway_private_key_file: Path  # the sandbox signs responses with this
    gateway_public_key_file: Path  # the kiosk verifies with this: payments.alipay.alipay_public_key_file


def ensure_key_pair(private_path: Path, public_path: Path) -> None:
    """Generate the pair if the private key is missing; restore a missing public half from it."""
    if not private_path.exists():
        rsa2.generate_key_pair(private_path, public_path)
    elif not public_path.exists():
        key = rsa2.load_private_key_file(private_path)
        public_path.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def ensure_keys(keys_dir: Path) -> SandboxKeys:
    """Create whichever of the four key files are missing in keys_dir (private keys mode 0600)."""
    keys_dir = Path(keys_dir)
    keys = SandboxKeys(
        app_private_key_file=keys_dir / APP_PRIVATE_KEY,
        app_public_key_file=keys_dir / APP_PUBLIC_KEY,
        gateway_private_key_file=keys_dir / GATEWAY_PRIVATE_KEY,
        gateway_public_key_file=keys_dir / GATEWAY_PUBLIC_KEY,
    )
    ensure_key_pair(keys.app_private_key_file, keys.app_public_key_file)
    ensure_key_pair(keys.gateway_private_key_file, keys.gateway_public_key_file)
    return keys
