"""The one provider interface the engine sees: typed results, never HTTP, XML or signatures.

Every provider verifies what it returns: a result saying PAID means the response signature,
the order id, the amount and the currency were all checked. Anything the provider cannot
vouch for raises OutcomeUnknown, which the engine resolves by querying, never by guessing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class PaymentMode(enum.StrEnum):
    QR = "qr"  # merchant-presented: the tourist scans the provider's code on our screen
    CODE = "code"  # user-presented: our scanner reads the wallet's payment code


class PaymentState(enum.Enum):
    NOT_FOUND = "not_found"  # the provider has no such order (e.g. QR not scanned yet)
    PENDING = "pending"  # created or scanned, not paid yet
    PAID = "paid"  # verified success
    CLOSED = "closed"  # closed, cancelled or reversed without money taken
    REFUNDED = "refunded"  # money went back in full


@dataclass(frozen=True)
class Order:
    """What the kiosk asks to be paid. order_id is the idempotency key (<= 32 chars)."""

    order_id: str
    amount_minor: int
    currency: str
    subject: str
    # Closing differs by mode (WeChat closes a Native order but reverses a micropay).
    mode: PaymentMode = PaymentMode.QR


@dataclass(frozen=True)
class CodePollPolicy:
    """How the engine settles a code payment still in progress (USERPAYING, 10003, result U):
    query every interval_s until give_up_after_s after the charge, then cancel/reverse, but not
    before cancel_not_before_s after it (WeChat refuses to reverse a micropay younger than 15 s)."""

    interval_s: float = 3.0
    give_up_after_s: float = 60.0
    cancel_not_before_s: float = 0.0


@dataclass(frozen=True)
class QrCode:
    order_id: str
    qr_content: str


@dataclass(frozen=True)
class PaymentStatus:
    order_id: str
    state: PaymentState
    provider_txn_id: str | None = None
    # Set when state is PAID: the verified amount and currency.
    amount_minor: int | None = None
    currency: str | None = None
    # True once the buyer has scanned the QR (the wallet is asking for confirmation).
    buyer_scanned: bool = False


@dataclass(frozen=True)
class CancelOutcome:
    order_id: str
    # True when the order had been paid and the provider refunded it as part of the cancel.
    refunded: bool


@dataclass(frozen=True)
class RefundOutcome:
    order_id: str
    refund_id: str
    amount_minor: int


class PaymentError(Exception):
    """Base of everything a provider raises."""


class OutcomeUnknown(PaymentError):
    """Timeout, 5xx, connection reset, bad or missing signature, unparseable body, or a response
    for another order or amount. The operation may or may not have happened: query to find out."""


class PaymentRejected(PaymentError):
    """A definitive, verified refusal (for example an expired payment code or no balance)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Provider(Protocol):
    """A wallet provider. Implementations are async and safe to retry with the same ids.

    charge_code returns PAID (verified) or PENDING (the wallet asks the tourist to confirm), or
    raises PaymentRejected (bad, expired or used code, no balance) or OutcomeUnknown. cancel
    closes a QR order or cancels/reverses a code payment; either refunds it if it was paid."""

    name: str
    modes: frozenset[PaymentMode]
    code_poll: CodePollPolicy

    async def create_qr(self, order: Order) -> QrCode: ...

    async def charge_code(self, order: Order, code: str) -> PaymentStatus: ...

    async def query(self, order: Order) -> PaymentStatus: ...

    async def cancel(self, order: Order) -> CancelOutcome: ...

    async def refund(self, order: Order, refund_id: str) -> RefundOutcome: ...

    async def aclose(self) -> None: ...
