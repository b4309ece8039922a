"""The sale state machine: pure, no I/O and no clock reads.

Events come in (with the time, as the engine saw it on its monotonic clock), commands come out.
The engine journals the new state *before* it carries out the commands, so every side effect
(a provider call, the relay moving, a refund) is preceded by a durable record that allows it.

    idle -> selected -> awaiting_payment -> paid -> delivering -> done
                                              |          \\-> refunding -> refunded
                                              \\-> closing -> cancelled | expired | refunded
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class SaleState(enum.StrEnum):
    IDLE = "idle"
    SELECTED = "selected"  # order id journaled; the provider has not answered yet
    AWAITING_PAYMENT = "awaiting_payment"
    CLOSING = "closing"  # closing the order at the provider (cancel, timeout, error)
    PAID = "paid"  # a verified payment; nothing delivered yet
    DELIVERING = "delivering"  # the relay may have moved
    REFUNDING = "refunding"
    DONE = "done"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


FINAL_STATES = frozenset({SaleState.DONE, SaleState.REFUNDED, SaleState.CANCELLED, SaleState.EXPIRED})
# States in which a verified payment exists and the money is still the customer's claim.
MONEY_TAKEN_STATES = frozenset({SaleState.PAID, SaleState.DELIVERING, SaleState.REFUNDING})


class CloseReason(enum.StrEnum):
    CANCELLED_BY_CUSTOMER = "cancelled_by_customer"
    EXPIRED = "expired"
    PROVIDER_ERROR = "provider_error"
    SHUTDOWN = "shutdown"
    PROVIDER_CLOSED = "provider_closed"


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class Selected:
    slot_id: str
    order_id: str
    amount_minor: int
    currency: str
    now: float


@dataclass(frozen=True)
class QrReady:
    qr_content: str
    now: float
    timeout_s: float


@dataclass(frozen=True)
class OrderFailed:
    """The provider could not create the order (or we could not be sure it did)."""

    detail: str
    now: float


@dataclass(frozen=True)
class BuyerScanned:
    now: float


@dataclass(frozen=True)
class PaymentVerified:
    provider_txn_id: str | None
    now: float


@dataclass(frozen=True)
class ProviderClosed:
    """The provider says the order is closed without payment (e.g. it timed out there)."""

    now: float


@dataclass(frozen=True)
class Tick:
    now: float


@dataclass(frozen=True)
class CancelPressed:
    now: float


@dataclass(frozen=True)
class ShutdownRequested:
    now: float


@dataclass(frozen=True)
class OrderClosed:
    """The provider confirmed the close. refunded=True: it had been paid and was refunded by it."""

    refunded: bool
    now: float


@dataclass(frozen=True)
class DeliveryStarted:
    now: float


@dataclass(frozen=True)
class DeliveryConfirmed:
    now: float


@dataclass(frozen=True)
class DeliveryFailed:
    detail: str
    now: float


@dataclass(frozen=True)
class RefundConfirmed:
    now: float


Event = (
    Selected | QrReady | OrderFailed | BuyerScanned | PaymentVerified | ProviderClosed | Tick
    | CancelPressed | ShutdownRequested | OrderClosed | DeliveryStarted | DeliveryConfirmed
    | DeliveryFailed | RefundConfirmed
)


# ---------------------------------------------------------------- commands


@dataclass(frozen=True)
class CreateQr:
    pass


@dataclass(frozen=True)
class CloseOrder:
    reason: CloseReason


@dataclass(frozen=True)
class BeginDelivery:
    """Journal `delivering`, then move the relay."""


@dataclass(frozen=True)
class Deliver:
    slot_id: str


@dataclass(frozen=True)
class Refund:
    refund_id: str


@dataclass(frozen=True)
class Finished:
    state: SaleState


Command = CreateQr | CloseOrder | BeginDelivery | Deliver | Refund | Finished


class InvalidTransition(Exception):
    pass


# ---------------------------------------------------------------- the machine


@dataclass(frozen=True)
class Sale:
    state: SaleState = SaleState.IDLE
    order_id: str | None = None
    slot_id: str | None = None
    amount_minor: int = 0
    currency: str = ""
    qr_content: str | None = None
    deadline: float | None = None
    buyer_scanned: bool = False
    provider_txn_id: str | None = None
    close_reason: CloseReason | None = None
    refund_id: str | None = None
    detail: str | None = None
    history: tuple[SaleState, ...] = field(default=())

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def seconds_left(self, now: float) -> int:
        if self.deadline is None:
            return 0
        return max(0, int(self.deadline - now + 0.999))

    def _to(self, state: SaleState, **changes: object) -> Sale:
        return replace(self, state=state, history=(*self.history, state), **changes)  # type: ignore[arg-type]

    def handle(self, event: Event) -> tuple[Sale, list[Command]]:
        """Apply one event. Events that do not apply in the current state change nothing."""
        s = self.state
        match event:
            case Selected() if s is SaleState.IDLE:
                sale = self._to(
                    SaleState.SELECTED,
                    order_id=event.order_id,
                    slot_id=event.slot_id,
                    amount_minor=event.amount_minor,
                    currency=event.currency,
                )
                return sale, [CreateQr()]
            case QrReady() if s is SaleState.SELECTED:
                sale = self._to(
                    SaleState.AWAITING_PAYMENT,
                    qr_content=event.qr_content,
                    deadline=event.now + event.timeout_s,
                )
                return sale, []
            case OrderFailed() if s is SaleState.SELECTED:
                # We cannot know whether the provider created the order: close it to be sure.
                return self._closing(CloseReason.PROVIDER_ERROR, detail=event.detail)
            case BuyerScanned() if s is SaleState.AWAITING_PAYMENT and not self.buyer_scanned:
                return replace(self, buyer_scanned=True), []
            case PaymentVerified() if s in (SaleState.AWAITING_PAYMENT, SaleState.SELECTED):
                sale = self._to(SaleState.PAID, provider_txn_id=event.provider_txn_id)
                return sale, [BeginDelivery()]
            case ProviderClosed() if s is SaleState.AWAITING_PAYMENT:
                return self._closing(CloseReason.PROVIDER_CLOSED)
            case Tick() if s is SaleState.AWAITING_PAYMENT:
                if self.deadline is not None and event.now >= self.deadline:
                    return self._closing(CloseReason.EXPIRED)
                return self, []
            case CancelPressed() if s in (SaleState.SELECTED, SaleState.AWAITING_PAYMENT):
                return self._closing(CloseReason.CANCELLED_BY_CUSTOMER)
            case ShutdownRequested() if s in (SaleState.SELECTED, SaleState.AWAITING_PAYMENT):
                return self._closing(CloseReason.SHUTDOWN)
            case OrderClosed() if s is SaleState.CLOSING:
                if event.refunded:
                    sale = self._to(SaleState.REFUNDED)
                elif self.close_reason is CloseReason.EXPIRED:
                    sale = self._to(SaleState.EXPIRED)
                else:
                    sale = self._to(SaleState.CANCELLED)
                return sale, [Finished(sale.state)]
            case PaymentVerified() if s is SaleState.CLOSING:
                # Paid in the last moment before the close: the customer is owed the product,
                # but the close may still refund it; the engine resolves this through the
                # close outcome. Delivering here could take the money twice, so do nothing.
                return self, []
            case DeliveryStarted() if s is SaleState.PAID:
                assert self.slot_id is not None
                return self._to(SaleState.DELIVERING), [Deliver(self.slot_id)]
            case DeliveryConfirmed() if s is SaleState.DELIVERING:
                sale = self._to(SaleState.DONE)
                return sale, [Finished(sale.state)]
            case DeliveryFailed() if s in (SaleState.DELIVERING, SaleState.PAID):
                refund_id = f"{self.order_id}R1"
                sale = self._to(SaleState.REFUNDING, refund_id=refund_id, detail=event.detail)
                return sale, [Refund(refund_id)]
            case RefundConfirmed() if s is SaleState.REFUNDING:
                sale = self._to(SaleState.REFUNDED)
                return sale, [Finished(sale.state)]
        return self, []

    def _closing(self, reason: CloseReason, detail: str | None = None) -> tuple[Sale, list[Command]]:
        sale = self._to(SaleState.CLOSING, close_reason=reason, detail=detail or self.detail)
        return sale, [CloseOrder(reason)]
