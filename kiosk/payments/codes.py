"""Telling payment codes apart: what a scanner line is, before anything reaches the network.

Rules from the wallets' published formats (shared/reference/payments.md section 4):
- WeChat Pay: 18 digits, prefix 10-15.
- Alipay (China): 16-24 digits, prefix 25-30.
- Alipay+ wallets (AlipayHK, GCash, Kakao Pay, Touch 'n Go, TrueMoney, DANA, ...): prefix 25-30;
  the code standard's 24-digit form is CII(6) = prefix + agreement digit 1 + 3-digit MPP routing
  number, then BTI(2) "02" and a 16-digit UIN; the legacy 19-digit form is 289..., with the
  sixth digit from the end a 6. An Alipay+ acquirer also takes every other 25-30 code.
- UnionPay: prefix 62, 16-20 digits (third-party sources only).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

MAX_CODE_LENGTH = 32  # the Alipay+ code standard's longest


class WalletFamily(enum.StrEnum):
    WECHAT = "wechat"
    ALIPAY_CN = "alipay_cn"
    ALIPAY_PLUS = "alipay_plus"
    UNIONPAY = "unionpay"


WALLET_NAMES: dict[WalletFamily, tuple[str, str]] = {
    WalletFamily.WECHAT: ("WeChat Pay", "微信支付"),
    WalletFamily.ALIPAY_CN: ("Alipay", "支付宝"),
    WalletFamily.ALIPAY_PLUS: ("Alipay+ wallet", "Alipay+ 钱包"),
    WalletFamily.UNIONPAY: ("UnionPay", "银联"),
}

_WECHAT = re.compile(r"1[0-5]\d{16}")
_UNIONPAY = re.compile(r"62\d{14,18}")
_ALIPAY_PREFIX = re.compile(r"(2[5-9]|30)\d*")
# 24 digits whose CII has the agreement digit 1 (CGCP routing; BTI "02" in the code standard).
_ALIPAY_PLUS_STANDARD = re.compile(r"(2[5-9]|30)1\d{21}")
_ALIPAY_PLUS_LEGACY = re.compile(r"289\d{10}6\d{5}")


@dataclass(frozen=True)
class PaymentCode:
    family: WalletFamily
    code: str

    @property
    def masked(self) -> str:
        """For logs and journals: the code is single-use, but still the tourist's to keep."""
        return self.code[:4] + "*" * (len(self.code) - 8) + self.code[-4:]


@dataclass(frozen=True)
class CodeRejected:
    """Why a scanner line is not a code we can charge, for the log and (both languages) the screen."""

    why: str
    reason_en: str
    reason_zh: str


def classify(line: str) -> PaymentCode | CodeRejected:
    """Classify one scanner line. Pure and total: never raises, whatever the bytes."""
    code = line.strip()
    if not code:
        return CodeRejected("empty line", "Nothing was read - please scan again", "未读取到付款码，请重新扫描")
    if len(code) > MAX_CODE_LENGTH or not (code.isascii() and code.isdigit()):
        return CodeRejected(
            "not a numeric payment code",
            "This is not a payment code - open your wallet's Pay screen",
            "这不是付款码，请打开钱包的付款码页面",
        )
    if _WECHAT.fullmatch(code):
        return PaymentCode(WalletFamily.WECHAT, code)
    if _UNIONPAY.fullmatch(code):
        return PaymentCode(WalletFamily.UNIONPAY, code)
    if _ALIPAY_PREFIX.fullmatch(code):
        if _ALIPAY_PLUS_STANDARD.fullmatch(code) or _ALIPAY_PLUS_LEGACY.fullmatch(code):
            return PaymentCode(WalletFamily.ALIPAY_PLUS, code)
        if 16 <= len(code) <= 24:
            return PaymentCode(WalletFamily.ALIPAY_CN, code)
        if 17 <= len(code) <= MAX_CODE_LENGTH:
            return PaymentCode(WalletFamily.ALIPAY_PLUS, code)
    return CodeRejected(
        f"unknown wallet ({len(code)} digits, prefix {code[:2]})",
        "This wallet is not recognised",
        "无法识别此钱包",
    )


def not_accepted(family: WalletFamily) -> CodeRejected:
    en, zh = WALLET_NAMES[family]
    return CodeRejected(f"no provider for {family.value}", f"{en} is not accepted here", f"本机不支持{zh}")


def route(code: PaymentCode, routes: dict[str, str | None]) -> str | CodeRejected:
    """The provider name for a classified code, from the config's wallet routes.

    An Alipay (China) code may also go to the Alipay+ provider: Alipay+ acquires AlipayCN too."""
    provider = routes.get(code.family.value)
    if provider is None and code.family is WalletFamily.ALIPAY_CN:
        provider = routes.get(WalletFamily.ALIPAY_PLUS.value)
    return provider if provider is not None else not_accepted(code.family)
