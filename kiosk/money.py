"""Amounts in ISO 4217 minor units, and their decimal text as wallets expect it."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# ISO 4217 currencies a kiosk may price in, with their minor-unit exponent. Currencies not listed
# are rejected by the config, so a typo such as "USB" never reaches a provider.
CURRENCY_EXPONENTS: dict[str, int] = {
    **{c: 2 for c in (
        "AED", "AUD", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EGP", "EUR", "GBP", "HKD", "IDR",
        "ILS", "INR", "MOP", "MXN", "MYR", "NOK", "NZD", "PHP", "PLN", "QAR", "RUB", "SAR", "SEK",
        "SGD", "THB", "TRY", "TWD", "USD", "ZAR", "LKR", "PKR", "BDT", "NPR", "MNT", "KZT",
    )},
    **{c: 0 for c in ("JPY", "KRW", "VND", "CLP", "ISK", "PYG", "UGX", "XAF", "XOF")},
    **{c: 3 for c in ("BHD", "KWD", "JOD", "OMR", "TND", "IQD", "LYD")},
    "CLF": 4,
}


class AmountError(ValueError):
    """An amount or currency that cannot be expressed."""


def exponent(currency: str) -> int:
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise AmountError(f"unknown ISO 4217 currency {currency!r}") from None


def to_decimal_text(minor: int, currency: str) -> str:
    """350 USD -> "3.50"; 350 JPY -> "350"."""
    exp = exponent(currency)
    if minor < 0:
        raise AmountError("amount must not be negative")
    if exp == 0:
        return str(minor)
    whole, frac = divmod(minor, 10**exp)
    return f"{whole}.{frac:0{exp}d}"


def from_decimal_text(text: str, currency: str) -> int:
    """"3.50" USD -> 350. Rejects more decimals than the currency has, signs and exponents."""
    exp = exponent(currency)
    if not text or any(ch not in "0123456789." for ch in text):
        raise AmountError(f"not a plain decimal amount: {text!r}")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise AmountError(f"not a decimal amount: {text!r}") from None
    scaled = value.scaleb(exp)
    if scaled != scaled.to_integral_value():
        raise AmountError(f"{text!r} has more than {exp} decimals for {currency}")
    return int(scaled)


def format_amount(minor: int, currency: str) -> str:
    """Human text for screens and logs: "3.50 USD"."""
    return f"{to_decimal_text(minor, currency)} {currency}"
