"""Payment-code classification: the published formats, and hostile input that never gets through."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kiosk.payments.codes import CodeRejected, PaymentCode, WalletFamily, classify, route


def family(line: str) -> WalletFamily | None:
    result = classify(line)
    return result.family if isinstance(result, PaymentCode) else None


def test_the_reference_examples() -> None:
    assert family("134567890123456789") is WalletFamily.WECHAT
    assert family("286543210987654321") is WalletFamily.ALIPAY_CN
    assert family("2893612204263667830") is WalletFamily.ALIPAY_PLUS  # legacy 19-digit Alipay+
    assert family("251001020123456789012345") is WalletFamily.ALIPAY_PLUS  # code standard, 24 digits
    assert family("281001123456789012345678") is WalletFamily.ALIPAY_PLUS  # CGCP routing 001
    assert family("6212345678901234567") is WalletFamily.UNIONPAY
    assert family(" 134567890123456789\r\n") is WalletFamily.WECHAT  # terminators and spaces


def test_near_misses_are_refused() -> None:
    for line in (
        "16456789012345678",  # WeChat prefix 16
        "1345678901234567890",  # WeChat, 19 digits
        "2412345678901234567",  # prefix 24
        "251234567890123",  # Alipay, 15 digits
        "12345678901234567a",
        "１３４５６７８９０１２３４５６７８９",  # full-width digits
        "https://qr.alipay.com/bax03190",
        "",
    ):
        assert isinstance(classify(line), CodeRejected), line


def test_refusals_say_why_in_both_languages() -> None:
    refused = classify("hello")
    assert isinstance(refused, CodeRejected)
    assert refused.reason_en and refused.reason_zh and refused.why
    assert any("\u4e00" <= ch <= "\u9fff" for ch in refused.reason_zh)


def test_routing_by_wallet_family() -> None:
    routes: dict[str, str | None] = {"wechat": "wechat_v2", "alipay_cn": None, "alipay_plus": "alipay_plus",
                                     "unionpay": None}
    assert route(PaymentCode(WalletFamily.WECHAT, "1"), routes) == "wechat_v2"
    # Alipay+ acquires AlipayCN as well, so an Alipay code goes there when no Alipay direct is set.
    assert route(PaymentCode(WalletFamily.ALIPAY_CN, "2"), routes) == "alipay_plus"
    refused = route(PaymentCode(WalletFamily.UNIONPAY, "62"), routes)
    assert isinstance(refused, CodeRejected) and "UnionPay" in refused.reason_en
    everything_citcon = dict.fromkeys(routes, "citcon")
    assert route(PaymentCode(WalletFamily.UNIONPAY, "62"), everything_citcon) == "citcon"


@given(st.text(max_size=400))
def test_any_text_is_classified_without_raising(line: str) -> None:
    result = classify(line)
    if isinstance(result, PaymentCode):
        assert result.code.isascii() and result.code.isdigit() and len(result.code) <= 32


@given(st.binary(max_size=600))
def test_binary_garbage_never_classifies_as_a_code_unless_it_is_digits(raw: bytes) -> None:
    line = raw.decode("latin-1")
    result = classify(line)
    assert isinstance(result, CodeRejected) or line.strip().isdigit()


@given(st.integers(10, 15), st.integers(0, 10**16 - 1))
def test_every_wechat_shaped_code_is_wechat(prefix: int, rest: int) -> None:
    assert family(f"{prefix}{rest:016d}") is WalletFamily.WECHAT


@given(st.integers(25, 30), st.integers(14, 22), st.data())
def test_every_alipay_shaped_code_is_an_alipay_family(prefix: int, rest_len: int, data: st.DataObject) -> None:
    rest = data.draw(st.text("0123456789", min_size=rest_len, max_size=rest_len))
    assert family(f"{prefix}{rest}") in (WalletFamily.ALIPAY_CN, WalletFamily.ALIPAY_PLUS)


def test_masking_keeps_the_code_out_of_logs() -> None:
    code = PaymentCode(WalletFamily.WECHAT, "134567890123456789")
    assert code.masked == "1345**********6789"
