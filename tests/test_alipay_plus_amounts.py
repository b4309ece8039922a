"""Antom amounts against the conversion cases Alipay publishes with its SDKs, and the kiosk's prices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kiosk.payments.alipay_plus_amounts import (
    AntomAmountError,
    from_amount,
    major_from_value,
    to_amount,
    validate,
    value_from_major,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "alipay_plus_amounts.json").read_text(encoding="utf-8")
)["data"]


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


@pytest.mark.parametrize("case", VECTORS["toAmount"], ids=_ids(VECTORS["toAmount"]))
def test_to_amount_cases(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(AntomAmountError) as err:
            value_from_major(case["amount"], case["currency"])
        assert err.value.category == case["error"]
    else:
        assert value_from_major(case["amount"], case["currency"]) == case["result"]


@pytest.mark.parametrize("case", VECTORS["fromAmount"], ids=_ids(VECTORS["fromAmount"]))
def test_from_amount_cases(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(AntomAmountError) as err:
            major_from_value(case["value"], case["currency"])
        assert err.value.category == case["error"]
    else:
        assert major_from_value(case["value"], case["currency"]) == case["result"]


@pytest.mark.parametrize("case", VECTORS["validate"], ids=_ids(VECTORS["validate"]))
def test_validate_cases(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(AntomAmountError) as err:
            validate(case["value"], case["currency"])
        assert err.value.category == case["error"]
    else:
        validate(case["value"], case["currency"])


def test_the_vectors_cover_what_the_brief_names() -> None:
    names = {c["name"] for c in VECTORS["toAmount"]}
    assert {"antom-jpy", "antom-krw", "antom-vnd", "antom-clp", "bhd-three-decimals", "clf-four-decimals",
            "idr-rule-violation", "seventeen-digit-result", "lowercase-currency", "scientific-notation",
            "grouping-separator"} <= names
    assert len(VECTORS["toAmount"]) == 54 and len(VECTORS["fromAmount"]) == 16 and len(VECTORS["validate"]) == 10


@pytest.mark.parametrize(
    ("minor", "currency", "value"),
    [(599, "USD", "599"), (599, "JPY", "599"), (1250, "BHD", "1250"), (12345, "CLF", "12345"),
     (150000, "IDR", "150000")],
)
def test_kiosk_prices_become_amount_objects(minor: int, currency: str, value: str) -> None:
    assert to_amount(minor, currency) == {"currency": currency, "value": value}
    assert from_amount({"currency": currency, "value": value}) == (minor, currency)


@pytest.mark.parametrize(
    ("minor", "currency", "category"),
    [(0, "USD", "AMOUNT_NOT_POSITIVE"), (10**16, "USD", "VALUE_TOO_LONG"), (1050, "IDR", "RULE_VIOLATION"),
     (100, "usd", "INVALID_CURRENCY"), (-1, "USD", "INVALID_AMOUNT_FORMAT"), (100, "XAU", "UNSUPPORTED_MINOR_UNIT")],
)
def test_prices_antom_refuses_never_leave_the_kiosk(minor: int, currency: str, category: str) -> None:
    with pytest.raises(AntomAmountError) as err:
        to_amount(minor, currency)
    assert err.value.category == category


@pytest.mark.parametrize(
    "data",
    [None, [], {"currency": "USD"}, {"value": "1"}, {"currency": "USD", "value": 599},
     {"currency": "USD", "value": "5.99"}, {"currency": "usd", "value": "599"},
     {"currency": "USD", "value": "1e2"}, {"currency": "USD", "value": " 599"}],
)
def test_malformed_amounts_from_antom_are_refused(data: object) -> None:
    with pytest.raises(AntomAmountError):
        from_amount(data)

