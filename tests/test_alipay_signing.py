"""RSA2 signing against published vectors and python-alipay-sdk as an independent oracle."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from alipay import AliPay
from alipay.exceptions import AliPayValidationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.payments import rsa2

VECTORS = Path(__file__).parent / "vectors"


def vector(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def rsa_vector() -> dict[str, Any]:
    return vector("sha256withrsa.json")


@pytest.fixture(scope="module")
def app_key(rsa_vector: dict[str, Any]) -> rsa.RSAPrivateKey:
    return rsa2.load_private_key(rsa_vector["private_key_pem_pkcs8"])


@pytest.fixture(scope="module")
def gateway_key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("gateway-keys")
    rsa2.generate_key_pair(d / "gw.pem", d / "gw.pub.pem")
    return d / "gw.pem", d / "gw.pub.pem"


def pem_public(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def pem_private(key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def sdk(private_pem: str, public_pem: str) -> Any:
    return AliPay("2021000000000001", None, app_private_key_string=private_pem,
                  alipay_public_key_string=public_pem, sign_type="RSA2")


# ---------------------------------------------------------------- published vectors


def test_sha256withrsa_vector_byte_for_byte(rsa_vector: dict[str, Any], app_key: rsa.RSAPrivateKey) -> None:
    assert rsa2.sign(rsa_vector["message"], app_key) == rsa_vector["signature_base64"]
    assert rsa2.verify(rsa_vector["message"], rsa_vector["signature_base64"], app_key.public_key())
    assert not rsa2.verify("Source", rsa_vector["signature_base64"], app_key.public_key())


def test_every_private_key_format_gives_the_same_signature(
    rsa_vector: dict[str, Any], app_key: rsa.RSAPrivateKey
) -> None:
    pkcs1_pem = pem_private(app_key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert "BEGIN RSA PRIVATE KEY" in pkcs1_pem

    def body(pem: str) -> str:  # what Alipay's console hands out: base64 without armour
        return "".join(line for line in pem.splitlines() if "-----" not in line)

    forms = [rsa_vector["private_key_pem_pkcs8"], pkcs1_pem, body(pkcs1_pem),
             body(rsa_vector["private_key_pem_pkcs8"]), rsa_vector["private_key_pem_pkcs8"].encode()]
    for form in forms:
        assert rsa2.sign("source", rsa2.load_private_key(form)) == rsa_vector["signature_base64"]


def test_public_key_formats(app_key: rsa.RSAPrivateKey) -> None:
    spki = pem_public(app_key)
    pkcs1 = app_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    ).decode()
    bare = "".join(line for line in spki.splitlines() if "-----" not in line)
    numbers = app_key.public_key().public_numbers()
    for form in (spki, pkcs1, bare, bare[:40] + "\n" + bare[40:]):
        assert rsa2.load_public_key(form).public_numbers() == numbers


def test_alipay_doc_canonical_string() -> None:
    doc = vector("alipay_sign_content.json")
    assert rsa2.request_string_to_sign(doc["params"]) == doc["string_to_sign"]


def test_request_and_notify_strings_differ_only_in_sign_type() -> None:
    params = {"b": "2", "a": "1", "sign": "x", "sign_type": "RSA2", "empty": "", "c": "a=b&c"}
    assert rsa2.request_string_to_sign(params) == "a=1&b=2&c=a=b&c&sign_type=RSA2"
    assert rsa2.notify_string_to_sign(params) == "a=1&b=2&c=a=b&c"


def test_real_alipay_notification_verifies() -> None:
    doc = vector("alipay_notify.json")
    alipay_public = rsa2.load_public_key(doc["alipay_public_key_base64"])
    params: dict[str, str] = doc["params"]
    assert rsa2.verify_notify(params, alipay_public)
    # The request rule (sign_type kept) would not verify it: the two rules really differ.
    assert not rsa2.verify(rsa2.request_string_to_sign(params), params["sign"], alipay_public)
    assert not rsa2.verify_notify({**params, "total_amount": "10.00"}, alipay_public)
    assert not rsa2.verify_notify({k: v for k, v in params.items() if k != "sign"}, alipay_public)


# ---------------------------------------------------------------- python-alipay-sdk as oracle


def test_sdk_reproduces_the_vector_too(rsa_vector: dict[str, Any], app_key: rsa.RSAPrivateKey) -> None:
    oracle = sdk(rsa_vector["private_key_pem_pkcs8"], pem_public(app_key))
    assert oracle._sign(rsa_vector["message"]) == rsa_vector["signature_base64"]


def test_our_request_signature_matches_and_verifies_with_sdk(
    rsa_vector: dict[str, Any], app_key: rsa.RSAPrivateKey
) -> None:
    params = {
        "app_id": "2021000000000001", "method": "alipay.trade.precreate", "format": "JSON",
        "charset": "utf-8", "sign_type": "RSA2", "timestamp": "2024-05-01 12:00:00", "version": "1.0",
        "biz_content": json.dumps({"out_trade_no": "K1", "total_amount": "3.50", "subject": "可乐",
                                   "trans_currency": "USD"}, ensure_ascii=False, separators=(",", ":")),
    }
    ours = rsa2.sign_request(params, app_key)
    oracle = sdk(rsa_vector["private_key_pem_pkcs8"], pem_public(app_key))
    assert oracle._verify(rsa2.request_string_to_sign(params), ours["sign"])
    sdk_sign = parse_qs(oracle.sign_data(dict(params)))["sign"][0]
    assert sdk_sign == ours["sign"]  # deterministic PKCS#1 v1.5: identical bytes
    assert rsa2.verify(rsa2.request_string_to_sign(params), sdk_sign, app_key.public_key())


@settings(max_examples=40, deadline=None, database=None)
@given(st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda k: k != "sign"),
                       st.text(min_size=1, max_size=30).filter(lambda v: "\x00" not in v), max_size=8))
def test_sdk_and_we_agree_on_arbitrary_params(params: dict[str, str]) -> None:
    key = _VECTOR_KEY
    oracle = _ORACLE
    ours = rsa2.sign(rsa2.request_string_to_sign(params), key)
    assert ours == oracle._sign("&".join(f"{k}={v}" for k, v in sorted(params.items())))


_VECTOR_KEY = rsa2.load_private_key(vector("sha256withrsa.json")["private_key_pem_pkcs8"])
_ORACLE = sdk(vector("sha256withrsa.json")["private_key_pem_pkcs8"], pem_public(_VECTOR_KEY))


def _gateway_body(text: str, sign: str, method: str = "alipay.trade.query") -> str:
    return '{"' + rsa2.response_key(method) + '":' + text + ',"sign":"' + sign + '"}'


def test_sync_response_signed_by_sdk_verifies_with_us_and_tampering_is_caught(
    gateway_key_files: tuple[Path, Path],
) -> None:
    priv, pub = gateway_key_files
    gateway = sdk(priv.read_text(), pub.read_text())  # the SDK plays Alipay's gateway here
    text = ('{"code":"10000","msg":"Success","out_trade_no":"K1","trade_status":"TRADE_SUCCESS",'
            '"total_amount":"3.50","sub_msg":"可乐 \\"q\\" \\u4e2d"}')
    body = _gateway_body(text, gateway._sign(text))
    signed = rsa2.extract_response(body, "alipay.trade.query")
    assert signed.raw == text
    assert signed.raw == gateway._get_string_to_be_signed(body, "alipay_trade_query_response")
    assert rsa2.verify(signed.raw, signed.sign or "", rsa2.load_public_key_file(pub))
    assert gateway._verify_and_return_sync_response(body, "alipay_trade_query_response")["total_amount"] == "3.50"

    tampered = body.replace('"3.50"', '"0.01"')
    t = rsa2.extract_response(tampered, "alipay.trade.query")
    assert not rsa2.verify(t.raw, t.sign or "", rsa2.load_public_key_file(pub))
    with pytest.raises(AliPayValidationError):
        gateway._verify_and_return_sync_response(tampered, "alipay_trade_query_response")


# ---------------------------------------------------------------- response extraction


def test_extract_keeps_exact_text_and_ignores_decoys() -> None:
    inner = '{ "code" : "10000",\n "sub_msg":"a } \\"alipay_trade_query_response\\": {x}", "n": [1, {"k": "}"}] }'
    body = '{"sign":"c2ln", "alipay_trade_query_response"  :  ' + inner + ' , "alipay_cert_sn":"x"}\n'
    signed = rsa2.extract_response(body, "alipay.trade.query")
    assert signed.raw == inner
    assert signed.sign == "c2ln"
    assert signed.data["code"] == "10000"


def test_extract_falls_back_to_error_response_and_reports_unsigned() -> None:
    body = '{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-method"}}'
    signed = rsa2.extract_response(body, "alipay.trade.query")
    assert signed.key == "error_response"
    assert signed.sign is None


@pytest.mark.parametrize("body", [
    "", "null", "[]", "<html>502</html>", '{"alipay_trade_query_response":{}',
    '{"alipay_trade_query_response":"x","sign":"s"}', '{"other_response":{},"sign":"s"}',
    '{"alipay_trade_query_response":{},"alipay_trade_query_response":{},"sign":"s"}',
    '{"alipay_trade_query_response":{},"sign":"s"} trailing', '{"alipay_trade_query_response":{},"sign":5}',
])
def test_extract_rejects_malformed_bodies(body: str) -> None:
    with pytest.raises(rsa2.ResponseFormatError):
        rsa2.extract_response(body, "alipay.trade.query")


def test_verify_rejects_garbage_signatures(app_key: rsa.RSAPrivateKey) -> None:
    public = app_key.public_key()
    for bad in ("", "not base64!", base64.b64encode(b"x" * 256).decode(), "QUJD"):
        assert not rsa2.verify("source", bad, public)


# ---------------------------------------------------------------- keys: errors and generation


def test_key_errors_never_contain_key_material(
    tmp_path: Path, rsa_vector: dict[str, Any], app_key: rsa.RSAPrivateKey
) -> None:
    pem: str = rsa_vector["private_key_pem_pkcs8"]
    lines = pem.splitlines()
    corrupted = "\n".join([*lines[:5], lines[5][::-1], *lines[6:]])
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    cases: list[str | bytes] = [
        corrupted, pem.replace("PRIVATE KEY", "PUBLIC KEY"), "".join(lines[1:-1])[:-8],
        pem_private(small, serialization.PrivateFormat.PKCS8),
        ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()),
    ]
    for case in cases:
        with pytest.raises(rsa2.KeyLoadError) as info:
            rsa2.load_private_key(case)
        text = str(info.value) + repr(info.value.__cause__) + repr(info.value.__context__)
        assert all(line not in text for line in lines[1:-1])
    with pytest.raises(rsa2.KeyLoadError, match="does not exist"):
        rsa2.load_private_key_file(tmp_path / "missing.pem")
    with pytest.raises(rsa2.KeyLoadError, match="public key"):
        rsa2.load_public_key(pem)


def test_generate_key_pair_writes_private_key_0600(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        key = rsa2.generate_key_pair(tmp_path / "k" / "app.pem", tmp_path / "k" / "app.pub.pem")
    finally:
        os.umask(old)
    priv, pub = tmp_path / "k" / "app.pem", tmp_path / "k" / "app.pub.pem"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert priv.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert key.key_size == 2048
    loaded = rsa2.load_private_key_file(priv)
    assert rsa2.verify("m", rsa2.sign("m", loaded), rsa2.load_public_key_file(pub))
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["app.pem", "app.pub.pem"]
