"""Antom / Alipay+ amounts: `{"currency": "USD", "value": "599"}`, the value in ISO 4217 minor units.

The rules follow the amount conversion cases Alipay publishes with its SDKs
(tests/vectors/alipay_plus_amounts.json): the currency must be three upper-case letters and one
with a numeric minor unit; values are plain ASCII digits, at most 16 of them; an amount sent to
Antom must be positive and obey Antom's own per-currency constraints (IDR in whole rupiah).

Every failure is an AntomAmountError whose `category` is the SDKs' error name, so tests compare
categories, and callers can still catch the kiosk's generic AmountError.
"""

from __future__ import annotations

import re

from kiosk.money import CURRENCY_EXPONENTS, AmountError

MAX_VALUE_DIGITS = 16

# ISO 4217 currencies the kiosk's price list (kiosk/money.py) does not carry but Antom's rules do;
# only those the published cases exercise. A kiosk can never be priced in them (the config rejects
# them), so they matter only for reading amounts back.
_MORE_MINOR_UNITS: dict[str, int] = {"PEN": 2, "UYW": 4}
# ISO 4217 codes whose minor unit is "N.A." (metals, funds, test and no-currency codes): there is
# no way to write them in minor units, so they are refused rather than guessed.
_NO_MINOR_UNIT = frozenset(
    {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"}
)
# Antom's constraints beyond ISO: the value must be a multiple of this many minor units.
# IDR has 2 decimals in ISO 4217, but Antom only takes whole rupiah.
_MINOR_VALUE_MULTIPLE: dict[str, int] = {"IDR": 100}

_CURRENCY = re.compile(r"[A-Z]{3}")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() would take "１" (fullwidth) too
_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?")


class AntomAmountError(AmountError):
    def __init__(self, category: str, detail: str) -> None:
        super().__init__(f"{category}: {detail}")
        self.category = category


def minor_unit(currency: str) -> int:
    """Decimal places of currency's minor unit, by ISO 4217 (with Antom's currency checks)."""
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise AntomAmountError("INVALID_CURRENCY", f"{currency!r} is not three upper-case letters")
    if currency in _NO_MINOR_UNIT:
        raise AntomAmountError("UNSUPPORTED_MINOR_UNIT", f"{currency} has no numeric minor unit")
    exp = CURRENCY_EXPONENTS.get(currency, _MORE_MINOR_UNITS.get(currency))
    if exp is None:
        raise AntomAmountError("UNKNOWN_CURRENCY", f"{currency} is not a known ISO 4217 currency")
    return exp


def _check_value_format(value: str) -> None:
    if not isinstance(value, str) or not _DIGITS.fullmatch(value):
        raise AntomAmountError("INVALID_VALUE_FORMAT", "value must be ASCII digits only")
    if len(value) > MAX_VALUE_DIGITS:
        raise AntomAmountError("VALUE_TOO_LONG", f"value has more than {MAX_VALUE_DIGITS} digits")


def _check_payable(value: str, currency: str) -> None:
    """What Antom requires of an amount we send: positive, <= 16 digits, its currency's rules."""
    if not value.strip("0"):
        raise AntomAmountError("AMOUNT_NOT_POSITIVE", "amount must be greater than zero")
    if len(value) > MAX_VALUE_DIGITS:
        raise AntomAmountError("VALUE_TOO_LONG", f"value has more than {MAX_VALUE_DIGITS} digits")
    multiple = _MINOR_VALUE_MULTIPLE.get(currency)
    if multiple is not None and int(value) % multiple:
        raise AntomAmountError("RULE_VIOLATION", f"{currency} amounts must be multiples of {multiple} minor units")


def validate(value: str, currency: str) -> None:
    """An amount value we are about to send: raises AntomAmountError unless Antom would take it."""
    minor_unit(currency)
    _check_value_format(value)
    _check_payable(value, currency)


def value_from_major(amount: str, currency: str) -> str:
    """"10.25" USD -> "1025". Extra trailing zeros are fine ("1.2300"); other extra digits are not."""
    exp = minor_unit(currency)
    match = _DECIMAL.fullmatch(amount) if isinstance(amount, str) else None
    if match is None:
        raise AntomAmountError("INVALID_AMOUNT_FORMAT", "amount must be an unsigned ASCII decimal")
    whole, fraction = match.group(1), match.group(2) or ""
    if fraction[exp:].strip("0"):
        raise AntomAmountError("EXCESS_PRECISION", f"{currency} has {exp} decimal places")
    value = (whole + fraction[:exp].ljust(exp, "0")).lstrip("0") or "0"
    _check_payable(value, currency)
    return value


def major_from_value(value: str, currency: str) -> str:
    """"1025" USD -> "10.25"; "500" JPY -> "500". Reading only: zero and IDR cents pass."""
    exp = minor_unit(currency)
    _check_value_format(value)
    digits = value.lstrip("0") or "0"
    if exp == 0:
        return digits
    padded = digits.rjust(exp + 1, "0")
    return f"{padded[:-exp]}.{padded[-exp:]}"


# ---------------------------------------------------------------- the kiosk's minor-unit integers


def to_amount(minor: int, currency: str) -> dict[str, str]:
    """The Amount object for a price in minor units (raises AntomAmountError if Antom refuses it)."""
    if isinstance(minor, bool) or not isinstance(minor, int) or minor < 0:
        raise AntomAmountError("INVALID_AMOUNT_FORMAT", "amount must be a non-negative integer")
    value = str(minor)
    validate(value, currency)
    return {"currency": currency, "value": value}


def from_amount(data: object) -> tuple[int, str]:
    """An Amount object read from Antom -> (minor units, currency); AntomAmountError if malformed."""
    if not isinstance(data, dict):
        raise AntomAmountError("INVALID_AMOUNT", "amount is not an object")
    currency, value = data.get("currency"), data.get("value")
    if not isinstance(currency, str):
        raise AntomAmountError("INVALID_CURRENCY", "amount has no currency")
    minor_unit(currency)
    if not isinstance(value, str):
        # JSON numbers are not allowed: Antom sends every field as a string.
        raise AntomAmountError("INVALID_VALUE_FORMAT", "amount value is not a string")
    _check_value_format(value)
    return int(value), currency
