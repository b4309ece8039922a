"""The WeChat Pay v3 sandbox's key files, created in the gateway's keys_dir when missing.

- a merchant key pair (the kiosk signs with the private half; its "certificate serial" is derived
  from the public half, so it stays the same for a given keys_dir);
- a "WeChat Pay" key pair that signs every answer, named PUB_KEY_ID_<digits> (derived likewise),
  and a self-signed certificate of the same key for platform-certificate mode;
- an APIv3 key: 32 random ASCII letters and digits, mode 0600.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from kiosk.payments import rsa2
from kiosk.payments.sandbox.keys import ensure_key_pair


@dataclass(frozen=True)
class WechatKeys:
    merchant_private_key_file: Path  # payments.wechat_v3.merchant_private_key_file
    merchant_public_key_file: Path  # the sandbox checks requests with it
    merchant_serial_no: str  # payments.wechat_v3.merchant_serial_no
    wechatpay_private_key_file: Path  # the sandbox signs answers and callbacks with it
    wechatpay_public_key_file: Path  # payments.wechat_v3.wechatpay_public_key_file
    public_key_id: str  # payments.wechat_v3.wechatpay_key_id (public-key mode)
    wechatpay_certificate_file: Path  # the same key as a platform certificate
    certificate_serial: str  # its serial, hex: the key id in certificate mode
    apiv3_key_file: Path  # payments.wechat_v3.apiv3_key_file


def ensure_wechat_keys(keys_dir: Path) -> WechatKeys:
    keys_dir = Path(keys_dir)
    merchant_private = keys_dir / "wechat_v3_merchant_private_key.pem"
    merchant_public = keys_dir / "wechat_v3_merchant_public_key.pem"
    pay_private = keys_dir / "wechat_v3_wechatpay_private_key.pem"
    pay_public = keys_dir / "wechat_v3_wechatpay_public_key.pem"
    certificate = keys_dir / "wechat_v3_wechatpay_certificate.pem"
    apiv3 = keys_dir / "wechat_v3_apiv3_key.txt"
    ensure_key_pair(merchant_private, merchant_public)
    ensure_key_pair(pay_private, pay_public)
    if not certificate.exists():
        _write_certificate(pay_private, certificate)
    if not apiv3.exists():
        alphabet = string.ascii_letters + string.digits
        _write_private(apiv3, "".join(secrets.choice(alphabet) for _ in range(32)).encode("ascii"))
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    return WechatKeys(
        merchant_private_key_file=merchant_private,
        merchant_public_key_file=merchant_public,
        merchant_serial_no=hashlib.sha256(merchant_public.read_bytes()).hexdigest()[:40].upper(),
        wechatpay_private_key_file=pay_private,
        wechatpay_public_key_file=pay_public,
        public_key_id="PUB_KEY_ID_01"
        + str(int.from_bytes(hashlib.sha256(pay_public.read_bytes()).digest()[:10]))[:24].zfill(24),
        wechatpay_certificate_file=certificate,
        certificate_serial=f"{cert.serial_number:X}",
        apiv3_key_file=apiv3,
    )


def _write_certificate(private_path: Path, cert_path: Path) -> None:
    key = rsa2.load_private_key_file(private_path)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kiosk sandbox (not Tenpay)"),
            x509.NameAttribute(NameOID.COMMON_NAME, "WeChat Pay sandbox platform certificate"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start: never briefly readable by others.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
