"""Screen descriptions: plain data the engine produces and the renderer draws.

Keeping the description separate from drawing lets the engine stay free of Pillow and lets
tests and `kiosk render` ask for any screen without a sale.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ScreenKind(enum.StrEnum):
    IDLE = "idle"
    PAY = "pay"
    CONFIRMING = "confirming"  # the wallet is asking the tourist to confirm
    DELIVERING = "delivering"
    THANK_YOU = "thank_you"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"  # cancelled by the tourist or expired unpaid
    OUT_OF_SERVICE = "out_of_service"


@dataclass(frozen=True)
class ProductLine:
    slot_id: str
    name_en: str
    name_zh: str
    price_text: str  # already formatted, e.g. "2.50 USD"


@dataclass(frozen=True)
class Screen:
    kind: ScreenKind
    # IDLE: what is on offer (one line in single-product mode)
    products: tuple[ProductLine, ...] = ()
    # IDLE: selection.mode = "single", so the hint is "scan to pay", not "press a button" (a
    # one-slot catalog with a button looks the same in `products`)
    single_product: bool = False
    # PAY, CONFIRMING, DELIVERING, THANK_YOU, REFUNDED, CANCELLED: the product of this sale
    product: ProductLine | None = None
    # PAY: the provider's QR content, shown as a QR code, and whole seconds left to pay
    qr_content: str | None = None
    seconds_left: int | None = None
    # CANCELLED, OUT_OF_SERVICE: why, in both languages. PAY, CONFIRMING, IDLE: a short notice
    # over the screen, e.g. why a scanned payment code was refused.
    reason_en: str | None = None
    reason_zh: str | None = None
    # PAY: the tourist can also show their wallet's payment code to the scanner
    scanner: bool = False
