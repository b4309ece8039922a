"""WeChat Pay v2 signing and XML, checked against WeChat's published example and against wechatpy
(an independent implementation, used here only as an oracle)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import xmltodict  # wechatpy's own XML parser
from hypothesis import given
from hypothesis import strategies as st
from wechatpy.pay.utils import calculate_signature, calculate_signature_hmac, dict_to_xml

from kiosk.payments import wechat_v2_wire as wx

VECTOR = json.loads((Path(__file__).parent / "vectors" / "wechat_v2_sign.json").read_text(encoding="utf-8"))

field_names = st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True).filter(lambda k: k not in ("sign", "key"))
# Any text WeChat could carry (CJK, symbols, & and =), but no lone surrogates: those are not UTF-8.
values = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
api_keys = st.text("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=32, max_size=32)


def test_the_official_example() -> None:
    params, key = VECTOR["params"], VECTOR["api_key"]
    assert wx.canonical(params) == VECTOR["string_a"]
    assert wx.sign(params, key, wx.MD5) == VECTOR["md5"]
    assert wx.sign(params, key, wx.HMAC_SHA256) == VECTOR["hmac_sha256"]
    # The same with a sign field present and an empty field added: neither is signed.
    noisy = {**params, "sign": "whatever", "attach": ""}
    assert wx.sign(noisy, key, wx.HMAC_SHA256) == VECTOR["hmac_sha256"]
    assert wx.verify({**params, "sign": VECTOR["hmac_sha256"]}, key, wx.HMAC_SHA256)
    assert wx.verify({**params, "sign": VECTOR["hmac_sha256"].lower()}, key, wx.HMAC_SHA256)
    assert wx.verify({**params, "sign": VECTOR["md5"]}, key, wx.MD5)


def test_verify_refuses_tampering_other_keys_and_a_downgrade() -> None:
    params, key = VECTOR["params"], VECTOR["api_key"]
    good = {**params, "sign": VECTOR["hmac_sha256"]}
    assert not wx.verify({**good, "body": "test2"}, key)
    assert not wx.verify({**good, "extra": "1"}, key)  # a field added after signing
    assert not wx.verify(good, key[:-1] + "e")
    assert not wx.verify({**params, "sign": ""}, key)
    assert not wx.verify(params, key)
    # An MD5 sign does not pass where HMAC-SHA256 was asked for, even if it is right for MD5.
    assert not wx.verify({**params, "sign": VECTOR["md5"]}, key, wx.HMAC_SHA256)


def test_signed_adds_sign_type_and_sign() -> None:
    out = wx.signed(VECTOR["params"], VECTOR["api_key"])
    assert out["sign_type"] == "HMAC-SHA256"
    assert out["sign"] == calculate_signature_hmac({k: v for k, v in out.items() if k != "sign"}, VECTOR["api_key"])
    assert wx.signed(VECTOR["params"], VECTOR["api_key"], wx.MD5)["sign"] == VECTOR["md5"]


def test_wechatpy_agrees_on_the_official_example() -> None:
    assert calculate_signature(VECTOR["params"], VECTOR["api_key"]) == VECTOR["md5"]
    assert calculate_signature_hmac(VECTOR["params"], VECTOR["api_key"]) == VECTOR["hmac_sha256"]


@given(st.dictionaries(field_names, values, max_size=12), api_keys)
def test_sign_matches_wechatpy(params: dict[str, str], api_key: str) -> None:
    assert wx.sign(params, api_key, wx.HMAC_SHA256) == calculate_signature_hmac(params, api_key)
    assert wx.sign(params, api_key, wx.MD5) == calculate_signature(params, api_key)


# ---------------------------------------------------------------- XML


@given(st.dictionaries(field_names, values, max_size=12))
def test_xml_round_trip_and_wechatpy_reads_ours(params: dict[str, str]) -> None:
    # XML 1.0 cannot carry most control characters, and parsers normalise \r: WeChat never sends them.
    params = {k: "".join(c for c in v if c in "\t\n" or ord(c) >= 0x20) for k, v in params.items()}
    body = wx.to_xml(params)
    assert wx.from_xml(body) == params
    parsed = xmltodict.parse(body, strip_whitespace=False)["xml"] or {}
    assert {k: v or "" for k, v in parsed.items()} == params


def test_we_read_wechatpy_xml_and_wechat_style_xml() -> None:
    # (wechatpy writes "]]>" inside CDATA unsplit, which breaks its XML; ours splits it.)
    body = dict_to_xml({"return_code": "SUCCESS", "total_fee": 350, "body": "可乐 <Cola> & co"}, sign="ABC")
    assert wx.from_xml(body.encode()) == {
        "return_code": "SUCCESS", "total_fee": "350", "body": "可乐 <Cola> & co", "sign": "ABC",
    }
    wechat = b"<xml>\n  <return_code><![CDATA[SUCCESS]]></return_code>\n  <total_fee>1</total_fee>\n</xml>"
    assert wx.from_xml(wechat) == {"return_code": "SUCCESS", "total_fee": "1"}


@pytest.mark.parametrize("body", [
    # billion laughs: refused at the declaration, before anything expands
    b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
    b"<xml><x>&b;</x></xml>",
    # external entity (file disclosure)
    b'<!DOCTYPE xml [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><x>&e;</x></xml>',
    b"<xml><a><b>nested</b></a></xml>",
    b"<xml><a>1</a><a>2</a></xml>",
    b"<json>{}</json>",
    b"<xml><a>1</a>",
    b"not xml at all",
    b"",
    b"<xml>" + b"<a>1</a>" * 20_000 + b"</xml>",
])
def test_hostile_or_malformed_xml_is_refused(body: bytes) -> None:
    with pytest.raises(wx.XmlError):
        wx.from_xml(body)


def test_to_xml_refuses_a_bad_field_name() -> None:
    with pytest.raises(wx.XmlError):
        wx.to_xml({"a b": "1"})


def test_nonce_is_32_fresh_hex_characters() -> None:
    nonces = {wx.nonce() for _ in range(100)}
    assert len(nonces) == 100 and all(len(n) == 32 and int(n, 16) >= 0 for n in nonces)
