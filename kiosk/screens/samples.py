"""Realistic sample screens, for documentation pictures, `kiosk render` and tests."""

from __future__ import annotations

from kiosk.screens.model import ProductLine, Screen, ScreenKind

# The format Alipay's trade.precreate returns (reference/peers-and-test-vectors.md); not a live order.
SAMPLE_QR_CONTENT = "https://qr.alipay.com/bax03190uxd47wbekffy6033"

SAMPLE_PRODUCTS = (
    ProductLine(slot_id="A1", name_en="Spring water", name_zh="矿泉水", price_text="2.50 USD"),
    ProductLine(slot_id="A2", name_en="Green tea", name_zh="绿茶", price_text="3.50 USD"),
    ProductLine(slot_id="B1", name_en="Car wash, 5 min", name_zh="洗车五分钟", price_text="5.00 USD"),
)

_SALE = SAMPLE_PRODUCTS[1]


def sample_screen(kind: ScreenKind) -> Screen:
    """A screen of `kind` filled the way the engine would fill it during a sale."""
    match kind:
        case ScreenKind.IDLE:
            return Screen(kind, products=SAMPLE_PRODUCTS)
        case ScreenKind.PAY:
            return Screen(kind, product=_SALE, qr_content=SAMPLE_QR_CONTENT, seconds_left=85)
        case ScreenKind.CONFIRMING:
            return Screen(kind, product=_SALE, qr_content=SAMPLE_QR_CONTENT, seconds_left=62)
        case ScreenKind.DELIVERING | ScreenKind.THANK_YOU | ScreenKind.REFUNDED:
            return Screen(kind, product=_SALE)
        case ScreenKind.CANCELLED:
            return Screen(
                kind,
                product=_SALE,
                reason_en="The time to pay ran out. You have not been charged.",
                reason_zh="付款超时，未扣款。",
            )
        case ScreenKind.OUT_OF_SERVICE:
            return Screen(
                kind,
                reason_en="The machine is being restocked.",
                reason_zh="正在补货。",
            )
    raise ValueError(f"no sample for screen kind {kind!r}")
