"""WeChat Pay v3 signatures and callback decryption against Tencent's published vectors and the
wechatpayv3 SDK as an independent oracle (its signatures verify with ours and ours with theirs)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from wechatpayv3 import utils as oracle

from kiosk.payments import rsa2
from kiosk.payments.wechat_v3_auth import (
    MAX_CLOCK_SKEW_S,
    SignatureError,
    WechatPayKey,
    build_authorization,
    load_wechatpay_key,
    request_message,
    verify_signed,
)
from kiosk.payments.wechat_v3_notify import (
    ApiV3KeyError,
    NotificationError,
    decrypt_resource,
    load_apiv3_key,
    open_notification,
)

VECTORS = Path(__file__).parent / "vectors"


def vector(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


RSA = vector("sha256withrsa.json")
NOTIFY = vector("wechat_v3_notify.json")
AES = vector("wechat_v3_aes_gcm.json")


@pytest.fixture(scope="module")
def test_key() -> rsa.RSAPrivateKey:
    return rsa2.load_private_key(RSA["private_key_pem_pkcs8"])


@pytest.fixture(scope="module")
def go_cert_key() -> WechatPayKey:
    return load_wechatpay_key(NOTIFY["wechatpay_certificate_pem"].encode(), NOTIFY["certificate_serial"])


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# ---------------------------------------------------------------- request signatures


def test_sha256withrsa_vector_matches_ours_and_the_oracle(test_key: rsa.RSAPrivateKey) -> None:
    assert rsa2.sign(RSA["message"], test_key) == RSA["signature_base64"]
    assert oracle.rsa_sign(test_key, RSA["message"]) == RSA["signature_base64"]


def test_request_message_matches_the_worked_example_in_the_docs() -> None:
    # pay.weixin.qq.com wechatpay4_0 (payments.md §3): every line, the last included, ends with \n.
    message = request_message("GET", "/v3/global/certificates", 1554208460, "593BEC0C930BF1AFEB40B4A08C8FB242", "")
    assert message == "GET\n/v3/global/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "/v3/global/transactions/out-trade-no/K1?mchid=1900000109", ""),
        (
            "POST",
            "/v3/global/transactions/native",
            '{"description":"可乐 Cola","amount":{"total":350,"currency":"USD"}}',
        ),
    ],
)
def test_authorization_header_is_byte_identical_to_the_oracles(
    test_key: rsa.RSAPrivateKey, method: str, url: str, body: str
) -> None:
    nonce, timestamp = "593BEC0C930BF1AFEB40B4A08C8FB242", 1554208460
    ours = build_authorization(
        method=method,
        url=url,
        body=body,
        mchid="1234567890",
        serial_no="F5765756002FDD77",
        key=test_key,
        timestamp=timestamp,
        nonce=nonce,
    )
    with mock.patch("wechatpayv3.utils.time.time", return_value=float(timestamp)):
        theirs = oracle.build_authorization(
            url, method, "1234567890", "F5765756002FDD77", test_key, body or None, nonce
        )
    assert ours == theirs
    signature = ours.split('signature="')[1].split('"')[0]
    assert rsa2.verify(request_message(method, url, timestamp, nonce, body), signature, test_key.public_key())


# ---------------------------------------------------------------- response and callback signatures


def test_go_callback_vector_verifies(go_cert_key: WechatPayKey) -> None:
    verify_signed(NOTIFY["headers"], NOTIFY["body"].encode(), go_cert_key, now=NOTIFY["now"])
    # Header names in any case: proxies and frameworks lowercase them.
    lowered = {k.lower(): v for k, v in NOTIFY["headers"].items()}
    verify_signed(lowered, NOTIFY["body"].encode(), go_cert_key, now=NOTIFY["now"])
    h = NOTIFY["headers"]
    assert oracle.rsa_verify(
        h["Wechatpay-Timestamp"], h["Wechatpay-Nonce"], NOTIFY["body"], h["Wechatpay-Signature"], go_cert_key.public_key
    )


def test_go_certificate_holds_the_same_test_key_as_the_rsa_vector(
    go_cert_key: WechatPayKey, test_key: rsa.RSAPrivateKey
) -> None:
    assert go_cert_key.public_key.public_numbers() == test_key.public_key().public_numbers()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"Wechatpay-Signature": None}, "unsigned"),
        ({"Wechatpay-Timestamp": None}, "unsigned"),
        ({"Wechatpay-Serial": "PUB_KEY_ID_0114232134912410000000000000"}, "configured key"),
        ({"Wechatpay-Signature": "WECHATPAY/SIGNTEST/" + "A" * 40}, "does not verify"),
        ({"Wechatpay-Nonce": "EcZ9Cmy4Xyx1i6RlJQzLcCyEqDa26NBZ"}, "does not verify"),
        ({"Wechatpay-Signature-Type": "WECHATPAY2-SM2-WITH-SM3"}, "Signature-Type"),
    ],
)
def test_spoiled_headers_are_rejected(go_cert_key: WechatPayKey, change: dict[str, str | None], reason: str) -> None:
    headers = dict(NOTIFY["headers"])
    for name, value in change.items():
        if value is None:
            headers.pop(name)
        else:
            headers[name] = value
    with pytest.raises(SignatureError, match=reason):
        verify_signed(headers, NOTIFY["body"].encode(), go_cert_key, now=NOTIFY["now"])


def test_tampered_body_is_rejected(go_cert_key: WechatPayKey) -> None:
    body = NOTIFY["body"].replace("签约成功", "支付成功").encode()
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signed(NOTIFY["headers"], body, go_cert_key, now=NOTIFY["now"])


@pytest.mark.parametrize("skew", [MAX_CLOCK_SKEW_S + 1, -(MAX_CLOCK_SKEW_S + 1), 86_400])
def test_timestamps_more_than_five_minutes_off_are_rejected(go_cert_key: WechatPayKey, skew: int) -> None:
    with pytest.raises(SignatureError, match="NTP"):
        verify_signed(NOTIFY["headers"], NOTIFY["body"].encode(), go_cert_key, now=NOTIFY["now"] + skew)
    # Within the tolerance the same answer is fine.
    verify_signed(NOTIFY["headers"], NOTIFY["body"].encode(), go_cert_key, now=NOTIFY["now"] + MAX_CLOCK_SKEW_S)


def test_oracle_signature_verifies_with_ours(test_key: rsa.RSAPrivateKey) -> None:
    key = WechatPayKey(key_id="PUB_KEY_ID_0101", public_key=test_key.public_key())
    body = '{"code_url":"weixin://wxpay/bizpayurl?pr=abc"}'
    signature = oracle.rsa_sign(test_key, f"1700000000\nNONCE123\n{body}\n")
    headers = {
        "Wechatpay-Timestamp": "1700000000",
        "Wechatpay-Nonce": "NONCE123",
        "Wechatpay-Signature": signature,
        "Wechatpay-Serial": "PUB_KEY_ID_0101",
    }
    verify_signed(headers, body.encode(), key, now=1700000000)
    # A 204 is signed over an empty body: the last line is just "\n".
    headers["Wechatpay-Signature"] = oracle.rsa_sign(test_key, "1700000000\nNONCE123\n\n")
    verify_signed(headers, b"", key, now=1700000000)


# ---------------------------------------------------------------- loading WeChat Pay's key


def test_key_loads_from_pem_public_key_pem_or_der_certificate(test_key: rsa.RSAPrivateKey) -> None:
    pem_key = load_wechatpay_key(public_pem(test_key), "PUB_KEY_ID_0101")
    assert pem_key.key_id == "PUB_KEY_ID_0101"
    cert = x509.load_pem_x509_certificate(NOTIFY["wechatpay_certificate_pem"].encode())
    der = cert.public_bytes(serialization.Encoding.DER)
    for data in (der, base64.b64encode(der)):
        loaded = load_wechatpay_key(data, "d7ce59d1f522d701")  # serial case does not matter
        assert loaded.public_key.public_numbers() == pem_key.public_key.public_numbers()


def test_certificate_with_another_serial_is_refused() -> None:
    with pytest.raises(rsa2.KeyLoadError, match="serial is D7CE59D1F522D701"):
        load_wechatpay_key(NOTIFY["wechatpay_certificate_pem"].encode(), "PUB_KEY_ID_0101")


def test_garbage_key_is_refused_without_echoing_it() -> None:
    secretish = b"this-is-not-a-key-" * 5
    with pytest.raises(rsa2.KeyLoadError) as info:
        load_wechatpay_key(secretish, "PUB_KEY_ID_0101")
    assert "this-is-not" not in str(info.value)


# ---------------------------------------------------------------- AES-GCM callbacks


def test_aes_gcm_vector_decrypts_with_ours_and_the_oracle() -> None:
    resource = {
        "algorithm": "AEAD_AES_256_GCM",
        "nonce": AES["nonce"],
        "associated_data": AES["associated_data"],
        "ciphertext": AES["ciphertext"],
    }
    assert decrypt_resource(resource, AES["apiv3_key"].encode()) == AES["plaintext"].encode()
    assert (
        oracle.aes_decrypt(AES["nonce"], AES["ciphertext"], AES["associated_data"], AES["apiv3_key"])
        == AES["plaintext"]
    )


@pytest.mark.parametrize("case", AES["failures"], ids=lambda c: c["name"])
def test_aes_gcm_vector_failures_are_refused(case: dict[str, str]) -> None:
    resource = {
        "algorithm": "AEAD_AES_256_GCM",
        "nonce": AES["nonce"],
        "associated_data": AES["associated_data"],
        "ciphertext": case["ciphertext"],
    }
    with pytest.raises(NotificationError) as info:
        decrypt_resource(resource, case["apiv3_key"].encode())
    assert case["apiv3_key"] not in str(info.value)


def test_aes_gcm_refuses_other_algorithms_and_altered_associated_data() -> None:
    base = {"nonce": AES["nonce"], "associated_data": AES["associated_data"], "ciphertext": AES["ciphertext"]}
    with pytest.raises(NotificationError, match="algorithm"):
        decrypt_resource({**base, "algorithm": "AEAD_SM4_GCM"}, AES["apiv3_key"].encode())
    with pytest.raises(NotificationError, match="tampered"):
        decrypt_resource({**base, "algorithm": "AEAD_AES_256_GCM", "associated_data": "x"}, AES["apiv3_key"].encode())


def test_go_callback_vector_end_to_end(go_cert_key: WechatPayKey) -> None:
    note = open_notification(
        NOTIFY["headers"],
        NOTIFY["body"].encode(),
        key=go_cert_key,
        apiv3_key=NOTIFY["apiv3_key"].encode(),
        now=NOTIFY["now"],
    )
    expected = NOTIFY["expected"]
    assert note.event_id == expected["id"]
    assert note.event_type == expected["event_type"]
    assert note.summary == expected["summary"]
    assert note.original_type == expected["original_type"]
    assert note.plaintext.decode() == expected["plaintext"]
    assert note.data["mchid"] == "1234567890"
    resource = json.loads(NOTIFY["body"])["resource"]
    theirs = oracle.aes_decrypt(
        resource["nonce"], resource["ciphertext"], resource["associated_data"], NOTIFY["apiv3_key"]
    )
    assert theirs == expected["plaintext"]


def test_go_callback_is_refused_when_stale_or_with_the_wrong_apiv3_key(go_cert_key: WechatPayKey) -> None:
    body = NOTIFY["body"].encode()
    with pytest.raises(NotificationError, match="NTP"):
        open_notification(
            NOTIFY["headers"], body, key=go_cert_key, apiv3_key=NOTIFY["apiv3_key"].encode(), now=NOTIFY["now"] + 600
        )
    with pytest.raises(NotificationError, match="does not decrypt"):
        open_notification(NOTIFY["headers"], body, key=go_cert_key, apiv3_key=b"testMchAPIv3Key1", now=NOTIFY["now"])


def test_apiv3_key_must_be_32_ascii_characters() -> None:
    assert load_apiv3_key(b"0123456789abcdefABCDEF0123456789\n") == b"0123456789abcdefABCDEF0123456789"
    with pytest.raises(ApiV3KeyError, match="found 16 bytes") as info:
        load_apiv3_key(b"testMchAPIv3Key0")
    assert "testMch" not in str(info.value)
