"""The sale state machine: pure, no I/O and no clock reads.

Events come in (with the time, as the engine saw it on its monotonic clock), commands come out.
The engine journals the new state *before* it carries out the commands, so every side effect
(a provider call, the relay moving, a refund) is preceded by a durable record that allows it.

    idle -> selected -> awaiting_payment -> paid -> delivering -> done
                                              |          \\-> refunding -> refunded
                                              \\-> closing -> cancelled | expired | refunded

A sale can have several payment attempts armed together: the provider's QR on screen and a
payment code the scanner read. The first verified payment wins; every other attempt is closed
at its provider, and a close that finds an attempt paid refunds it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from kiosk.payments.base import PaymentMode


class SaleState(enum.StrEnum):
    IDLE = "idle"
    SELECTED = "selected"  # sale journaled; the QR order is being created
    AWAITING_PAYMENT = "awaiting_payment"
    CLOSING = "closing"  # closing every attempt at its provider (cancel, timeout, error)
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


class AttemptState(enum.StrEnum):
    OPEN = "open"  # created (or being created) at the provider; may still be paid
    PAID = "paid"  # a verified payment
    CLOSED = "closed"  # closed, cancelled, reversed or refused without money taken
    REFUNDED = "refunded"  # its money went back (by the close, or by a refund)


@dataclass(frozen=True)
class Attempt:
    order_id: str
    provider: str
    mode: PaymentMode
    started: float  # engine monotonic time
    state: AttemptState = AttemptState.OPEN
    confirming: bool = False  # the wallet is asking the tourist to confirm

    @property
    def settled(self) -> bool:
        return self.state in (AttemptState.CLOSED, AttemptState.REFUNDED)


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class Selected:
    slot_id: str
    order_id: str  # the sale id, also the QR attempt's order id
    amount_minor: int
    currency: str
    now: float
    qr_provider: str | None = "alipay"
    timeout_s: float = 120.0  # the payment deadline when no QR is shown (scanner only)


@dataclass(frozen=True)
class QrReady:
    qr_content: str
    now: float
    timeout_s: float


@dataclass(frozen=True)
class OrderFailed:
    """The provider could not create the QR order (or we could not be sure it did)."""

    detail: str
    now: float


@dataclass(frozen=True)
class CodeScanned:
    """A classified, routed payment code: charge it at `provider` under `order_id`."""

    order_id: str
    provider: str
    code: str
    now: float


@dataclass(frozen=True)
class CodeRefused:
    """The provider refused the code for good (expired, used, no balance): no money moved."""

    order_id: str
    detail: str
    now: float


@dataclass(frozen=True)
class BuyerScanned:
    """The tourist scanned our QR, or the wallet asks them to confirm a code payment."""

    now: float
    order_id: str | None = None


@dataclass(frozen=True)
class PaymentVerified:
    provider_txn_id: str | None
    now: float
    order_id: str | None = None  # None: the sale's own (QR) order


@dataclass(frozen=True)
class ProviderClosed:
    """The provider says an order is closed without payment (e.g. it timed out there)."""

    now: float
    order_id: str | None = None


@dataclass(frozen=True)
class GiveUpAttempt:
    """A code payment stayed unconfirmed past its provider's polling window: cancel/reverse it."""

    order_id: str
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
    order_id: str | None = None


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
    Selected | QrReady | OrderFailed | CodeScanned | CodeRefused | BuyerScanned | PaymentVerified
    | ProviderClosed | GiveUpAttempt | Tick | CancelPressed | ShutdownRequested | OrderClosed
    | DeliveryStarted | DeliveryConfirmed | DeliveryFailed | RefundConfirmed
)


# ---------------------------------------------------------------- commands


@dataclass(frozen=True)
class CreateQr:
    order_id: str = ""


@dataclass(frozen=True)
class ChargeCode:
    order_id: str
    code: str  # carried to the provider, never stored in the sale or the journal


@dataclass(frozen=True)
class CloseOrder:
    reason: CloseReason
    order_id: str = ""


@dataclass(frozen=True)
class BeginDelivery:
    """Journal `delivering`, then move the relay."""


@dataclass(frozen=True)
class Deliver:
    slot_id: str


@dataclass(frozen=True)
class Refund:
    refund_id: str
    order_id: str = ""


@dataclass(frozen=True)
class Finished:
    state: SaleState


Command = CreateQr | ChargeCode | CloseOrder | BeginDelivery | Deliver | Refund | Finished


# ---------------------------------------------------------------- the machine


@dataclass(frozen=True)
class Sale:
    state: SaleState = SaleState.IDLE
    order_id: str | None = None  # the sale id
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
    attempts: tuple[Attempt, ...] = ()
    winner: str | None = None  # order id of the attempt whose payment the sale took
    history: tuple[SaleState, ...] = field(default=())

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def open_attempts(self) -> tuple[Attempt, ...]:
        return tuple(a for a in self.attempts if a.state is AttemptState.OPEN)

    @property
    def code_attempt_open(self) -> bool:
        return any(a.mode is PaymentMode.CODE for a in self.open_attempts)

    @property
    def needs_settling(self) -> bool:
        """Attempts other than the winner that may still hold money: close them."""
        return any(a.order_id != self.winner and not a.settled for a in self.attempts)

    def attempt(self, order_id: str | None) -> Attempt | None:
        key = order_id or self.order_id
        return next((a for a in self.attempts if a.order_id == key), None)

    def seconds_left(self, now: float) -> int:
        if self.deadline is None:
            return 0
        return max(0, int(self.deadline - now + 0.999))

    def _to(self, state: SaleState, **changes: object) -> Sale:
        return replace(self, state=state, history=(*self.history, state), **changes)  # type: ignore[arg-type]

    def _with_attempt(self, order_id: str, **changes: object) -> Sale:
        attempts = tuple(replace(a, **changes) if a.order_id == order_id else a for a in self.attempts)  # type: ignore[arg-type]
        return replace(self, attempts=attempts)

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
                if event.qr_provider is None:
                    # Scanner only: nothing to create; the tourist has until the deadline to scan.
                    return sale._to(SaleState.AWAITING_PAYMENT, deadline=event.now + event.timeout_s), []
                qr = Attempt(event.order_id, event.qr_provider, PaymentMode.QR, event.now)
                return replace(sale, attempts=(qr,)), [CreateQr(event.order_id)]
            case QrReady() if s is SaleState.SELECTED:
                sale = self._to(
                    SaleState.AWAITING_PAYMENT, qr_content=event.qr_content, deadline=event.now + event.timeout_s
                )
                return sale, []
            case OrderFailed() if s is SaleState.SELECTED:
                # We cannot know whether the provider created the order: close it to be sure.
                return self._closing(CloseReason.PROVIDER_ERROR, detail=event.detail)
            case CodeScanned() if s is SaleState.AWAITING_PAYMENT and not self.code_attempt_open:
                if self.attempt(event.order_id) is not None:
                    return self, []
                charge = Attempt(event.order_id, event.provider, PaymentMode.CODE, event.now)
                sale = replace(self, attempts=(*self.attempts, charge))
                return sale, [ChargeCode(event.order_id, event.code)]
            case CodeRefused():
                attempt = self.attempt(event.order_id)
                if attempt is None or attempt.state is not AttemptState.OPEN or attempt.mode is not PaymentMode.CODE:
                    return self, []
                return self._with_attempt(event.order_id, state=AttemptState.CLOSED), []
            case BuyerScanned() if s is SaleState.AWAITING_PAYMENT:
                attempt = self.attempt(event.order_id)
                if attempt is None or attempt.confirming:
                    return (replace(self, buyer_scanned=True), []) if not self.buyer_scanned else (self, [])
                sale = self._with_attempt(attempt.order_id, confirming=True)
                return replace(sale, buyer_scanned=True), []
            case PaymentVerified():
                return self._paid(event)
            case ProviderClosed():
                attempt = self.attempt(event.order_id)
                if attempt is None or attempt.state is not AttemptState.OPEN:
                    return self, []
                sale = self._with_attempt(attempt.order_id, state=AttemptState.CLOSED)
                if s is SaleState.AWAITING_PAYMENT and not sale.open_attempts:
                    return sale._closing(CloseReason.PROVIDER_CLOSED)
                return sale, []
            case GiveUpAttempt():
                attempt = self.attempt(event.order_id)
                if attempt is None or attempt.state is not AttemptState.OPEN or s is SaleState.CLOSING:
                    return self, []
                return self, [CloseOrder(CloseReason.EXPIRED, attempt.order_id)]
            case Tick() if s is SaleState.AWAITING_PAYMENT:
                if self.deadline is not None and event.now >= self.deadline:
                    return self._closing(CloseReason.EXPIRED)
                return self, []
            case CancelPressed() if s in (SaleState.SELECTED, SaleState.AWAITING_PAYMENT):
                return self._closing(CloseReason.CANCELLED_BY_CUSTOMER)
            case ShutdownRequested() if s in (SaleState.SELECTED, SaleState.AWAITING_PAYMENT):
                return self._closing(CloseReason.SHUTDOWN)
            case OrderClosed():
                return self._closed(event)
            case DeliveryStarted() if s is SaleState.PAID:
                assert self.slot_id is not None
                return self._to(SaleState.DELIVERING), [Deliver(self.slot_id)]
            case DeliveryConfirmed() if s is SaleState.DELIVERING:
                sale = self._to(SaleState.DONE)
                return sale, [Finished(sale.state)]
            case DeliveryFailed() if s in (SaleState.DELIVERING, SaleState.PAID):
                winner = self.winner or self.order_id
                refund_id = f"{winner}R1"
                sale = self._to(SaleState.REFUNDING, refund_id=refund_id, detail=event.detail)
                return sale, [Refund(refund_id, winner or "")]
            case RefundConfirmed() if s is SaleState.REFUNDING:
                sale = self._to(SaleState.REFUNDED)
                if self.winner is not None:
                    sale = sale._with_attempt(self.winner, state=AttemptState.REFUNDED)
                return sale, [Finished(sale.state)]
        return self, []

    def _paid(self, event: PaymentVerified) -> tuple[Sale, list[Command]]:
        attempt = self.attempt(event.order_id)
        if attempt is None or attempt.state is not AttemptState.OPEN:
            return self, []
        if self.state in (SaleState.SELECTED, SaleState.AWAITING_PAYMENT) and self.winner is None:
            sale = self._with_attempt(attempt.order_id, state=AttemptState.PAID)
            sale = sale._to(SaleState.PAID, provider_txn_id=event.provider_txn_id, winner=attempt.order_id)
            # Deliver first (the tourist is waiting), then close the losing attempts; a close
            # that finds one paid refunds it.
            losers = [CloseOrder(CloseReason.PROVIDER_CLOSED, a.order_id) for a in sale.open_attempts]
            return sale, [BeginDelivery(), *losers]
        if self.state is SaleState.CLOSING:
            # Paid in the last moment before the close: the close (cancel/reverse semantics)
            # refunds it. Delivering here could take the money twice, so only record it.
            return self, []
        # A second payment after the sale took one (both wallets paid): give it back.
        sale = self._with_attempt(attempt.order_id, state=AttemptState.PAID)
        return sale, [CloseOrder(CloseReason.PROVIDER_CLOSED, attempt.order_id)]

    def _closed(self, event: OrderClosed) -> tuple[Sale, list[Command]]:
        attempt = self.attempt(event.order_id)
        if attempt is None or attempt.settled:
            return self, []
        if attempt.order_id == self.winner:
            return self, []  # the winner is settled by delivery or refund, never by a close
        refunded = event.refunded or attempt.state is AttemptState.PAID
        new_state = AttemptState.REFUNDED if refunded else AttemptState.CLOSED
        sale = self._with_attempt(attempt.order_id, state=new_state)
        if self.state is SaleState.CLOSING and not sale.open_attempts:
            if any(a.state is AttemptState.REFUNDED for a in sale.attempts):
                final = sale._to(SaleState.REFUNDED)
            elif self.close_reason is CloseReason.EXPIRED:
                final = sale._to(SaleState.EXPIRED)
            else:
                final = sale._to(SaleState.CANCELLED)
            return final, [Finished(final.state)]
        return sale, []

    def _closing(self, reason: CloseReason, detail: str | None = None) -> tuple[Sale, list[Command]]:
        sale = self._to(SaleState.CLOSING, close_reason=reason, detail=detail or self.detail)
        if not sale.open_attempts:
            final = sale._to(SaleState.EXPIRED if reason is CloseReason.EXPIRED else SaleState.CANCELLED)
            return final, [Finished(final.state)]
        return sale, [CloseOrder(reason, a.order_id) for a in sale.open_attempts]
