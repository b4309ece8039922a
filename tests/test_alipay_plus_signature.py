"""Antom signatures: golden vectors, the Signature header, and the official SDK as an oracle.

The SDK (global-open-sdk-python) pins cryptography 44, so it lives in its own venv and runs as a
subprocess (tests/oracles/alipay_plus_sign.py). A missing oracle venv fails these tests: a
skipped cross-check would hide that nothing independent ever looked at our signatures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kiosk.payments import alipay_plus_signature as sig
from kiosk.payments import rsa2
from kiosk.payments.alipay_plus_client import request_time
from kiosk.payments.sandbox import SandboxGateway
from kiosk.payments.sandbox.alipay_plus import wire_of

ROOT = Path(__file__).resolve().parent.parent
ORACLE_PYTHON = ROOT / ".venv-oracles" / "alipay_plus" / "bin" / "python"
ORACLE_SCRIPT = ROOT / "tests" / "oracles" / "alipay_plus_sign.py"
VECTORS = json.loads((ROOT / "tests" / "vectors" / "alipay_plus_signature.json").read_text(encoding="utf-8"))
TEST_KEY = json.loads((ROOT / "tests" / "vectors" / "sha256withrsa.json").read_text())["private_key_pem_pkcs8"]


def oracle(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not ORACLE_PYTHON.exists():
        pytest.fail(
            f"the Antom SDK oracle is missing: {ORACLE_PYTHON} does not exist. Create it with\n"
            "  python3 -m venv .venv-oracles/alipay_plus && "
            ".venv-oracles/alipay_plus/bin/pip install -r tests/oracles/alipay_plus.txt",
            pytrace=False,
        )
    run = subprocess.run(
        [str(ORACLE_PYTHON), str(ORACLE_SCRIPT)], input=json.dumps(requests), capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert run.returncode == 0, f"oracle failed: {run.stderr[-2000:]}"
    answers: list[dict[str, Any]] = json.loads(run.stdout)
    return answers


def pkcs1_pem(key: rsa.RSAPrivateKey) -> str:
    # The SDK wraps whatever it is given in BEGIN RSA PRIVATE KEY, so it needs PKCS#1.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def spki_pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


MESSAGES = [
    ("POST", "/ams/api/v1/payments/pay", "SANDBOX_5YBB2B2Z0001", "2019-05-28T12:12:12+08:00",
     '{"paymentRequestId":"K1","order":{"orderDescription":"可乐 Cola"}}'),
    ("POST", "/ams/sandbox/api/v1/payments/inquiryPayment", "5J5Y3N0000000001", "1716357600000", "{}"),
    ("POST", "/alipay-plus/notify", "SANDBOX_5YBB2B2Z0001", "2026-11-21T12:15:04+00:00", ""),
    ("POST", "/ams/api/v1/payments/refund", "c.1", "t.2", '{"a":"line\\nbreak + plus / slash = eq"}'),
]


# ---------------------------------------------------------------- golden vectors (no oracle needed)


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["name"] for c in VECTORS["cases"]])
def test_golden_vectors(case: dict[str, Any]) -> None:
    key = rsa2.load_private_key(TEST_KEY)
    public = rsa2.load_public_key(VECTORS["public_key_pem"])
    args = (case["method"], case["path"], case["client_id"], case["time"], case["body"])
    assert sig.string_to_sign(*args) == case["string_to_sign"]
    assert sig.signature_header(*args, key) == case["signature_header"]
    assert sig.verify(*args, case["signature_header"], public)
    tampered = (*args[:4], case["body"].replace("599", "598"))
    assert not sig.verify(*tampered, case["signature_header"], public)
    assert not sig.verify(*args[:3], case["time"] + "0", case["body"], case["signature_header"], public)


def test_header_parsing_is_tolerant_of_order_spacing_and_encoding(key: rsa.RSAPrivateKey) -> None:
    args = MESSAGES[0]
    raw = sig.sign(*args, key)
    public = key.public_key()
    for header in (
        f"algorithm=RSA256,keyVersion=1,signature={raw}",  # not URL-encoded at all
        f"signature={quote_plus(raw)},algorithm=RSA256",  # reordered, no keyVersion
        sig.SignatureHeader("RSA256", "3", raw).render().replace(",", ", "),  # spaces after commas
    ):
        assert sig.verify(*args, header, public), header


@pytest.mark.parametrize(
    "header",
    ["", "garbage", "algorithm=RSA256,keyVersion=1", "algorithm=RSA256,keyVersion=1,signature=",
     "algorithm=ECC224,keyVersion=1,signature=AAAA", "algorithm=RSA256,signature=a,signature=b",
     "algorithm=RSA256,keyVersion=1,signature=%%%not-base64"],
)
def test_unreadable_headers_never_verify(header: str, key: rsa.RSAPrivateKey) -> None:
    assert not sig.verify(*MESSAGES[0], header, key.public_key())


def test_parse_reports_parts() -> None:
    parsed = sig.parse_signature_header("algorithm=RSA256,keyVersion=2,signature=ab%2Bc%2F%3D")
    assert parsed == sig.SignatureHeader("RSA256", "2", "ab+c/=")
    assert parsed.render() == "algorithm=RSA256,keyVersion=2,signature=ab%2Bc%2F%3D"
    with pytest.raises(sig.SignatureHeaderError):
        sig.parse_signature_header("algorithm=RSA256,keyVersion=2")


# ---------------------------------------------------------------- the official SDK as oracle


def test_string_to_sign_matches_the_sdks_gen_sign_content() -> None:
    answers = oracle([{"op": "sign_content", "method": m, "path": p, "client_id": c, "time": t, "body": b}
                      for m, p, c, t, b in MESSAGES])
    assert [a["content"] for a in answers] == [sig.string_to_sign(*m) for m in MESSAGES]


def test_our_signatures_verify_with_the_sdk(key: rsa.RSAPrivateKey) -> None:
    public = spki_pem(key.public_key())
    requests = []
    for m, p, c, t, b in MESSAGES:
        header = sig.signature_header(m, p, c, t, b, key)
        encoded = header.split("signature=", 1)[1]
        fields = {"method": m, "path": p, "client_id": c, "time": t, "body": b, "public_key": public}
        requests.append({"op": "verify", **fields, "signature": encoded})
        requests.append({"op": "check_header", **fields, "header": header})  # the SDK's webhook check
        requests.append({"op": "verify", **fields, "body": b + " ", "signature": encoded})  # must fail
    answers = oracle(requests)
    assert [a["valid"] for a in answers] == [True, True, False] * len(MESSAGES)


def test_sdk_signatures_verify_with_ours(key: rsa.RSAPrivateKey) -> None:
    answers = oracle([{"op": "sign", "method": m, "path": p, "client_id": c, "time": t, "body": b,
                       "private_key": pkcs1_pem(key)} for m, p, c, t, b in MESSAGES])
    for message, answer in zip(MESSAGES, answers, strict=True):
        header = f"algorithm=RSA256,keyVersion=1,signature={answer['signature']}"
        assert sig.verify(*message, header, key.public_key())
        # PKCS#1 v1.5 is deterministic: the very same bytes as ours.
        assert header == sig.signature_header(*message, key)


async def test_the_sandbox_answers_are_signed_the_sdks_way(tmp_path: Path) -> None:
    with SandboxGateway(keys_dir=tmp_path / "keys") as gateway:
        wire = wire_of(gateway)
        merchant = rsa2.load_private_key_file(wire.merchant_private_key_file)
        path = "/ams/sandbox/api/v1/payments/inquiryPayment"
        body = json.dumps({"paymentRequestId": "nobody"})
        now = request_time()
        headers = {"Client-Id": "SANDBOX_1", "Request-Time": now,
                   "Signature": sig.signature_header("POST", path, "SANDBOX_1", now, body, merchant),
                   "Content-Type": "application/json; charset=UTF-8"}
        async with httpx.AsyncClient() as client:
            response = await client.post(gateway.url + path, content=body.encode(), headers=headers)
    assert response.json()["result"]["resultCode"] == "ORDER_NOT_EXIST"
    [answer] = oracle([{
        "op": "check_header", "method": "POST", "path": path, "client_id": response.headers["Client-Id"],
        "time": response.headers["Response-Time"], "body": response.text, "header": response.headers["Signature"],
        "public_key": wire.antom_public_key_file.read_text(),
    }])
    assert answer["valid"]


def test_a_missing_oracle_fails_and_says_how_to_create_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ORACLE_PYTHON", tmp_path / "no-such-venv" / "bin" / "python")
    with pytest.raises(pytest.fail.Exception, match=r"pip install -r tests/oracles/alipay_plus\.txt"):
        oracle([])
