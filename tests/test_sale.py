"""The pure sale state machine: transitions, and money invariants under random event orders."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kiosk.sale import (
    FINAL_STATES,
    BeginDelivery,
    BuyerScanned,
    CancelPressed,
    CloseOrder,
    CloseReason,
    Command,
    CreateQr,
    Deliver,
    DeliveryConfirmed,
    DeliveryFailed,
    DeliveryStarted,
    Event,
    Finished,
    OrderClosed,
    OrderFailed,
    PaymentVerified,
    ProviderClosed,
    QrReady,
    Refund,
    RefundConfirmed,
    Sale,
    SaleState,
    Selected,
    ShutdownRequested,
    Tick,
)


def drive(*events: Event) -> tuple[Sale, list[Command]]:
    sale, out = Sale(), []
    for event in events:
        sale, commands = sale.handle(event)
        out.extend(commands)
    return sale, out


SELECT = Selected("A1", "K1", 250, "USD", now=0.0)
QR = QrReady("https://qr.alipay.com/bax1", now=0.5, timeout_s=60)


def test_happy_path_goes_through_every_state_in_order() -> None:
    sale, commands = drive(
        SELECT, QR, BuyerScanned(3), PaymentVerified("T1", 5), DeliveryStarted(5.1), DeliveryConfirmed(6)
    )
    assert sale.state is SaleState.DONE
    assert sale.history == (
        SaleState.SELECTED, SaleState.AWAITING_PAYMENT, SaleState.PAID, SaleState.DELIVERING, SaleState.DONE
    )
    assert commands == [CreateQr(), BeginDelivery(), Deliver("A1"), Finished(SaleState.DONE)]
    assert sale.provider_txn_id == "T1"


def test_failed_delivery_refunds_with_a_stable_refund_id() -> None:
    sale, commands = drive(SELECT, QR, PaymentVerified("T1", 5), DeliveryStarted(5), DeliveryFailed("no drop", 9))
    assert sale.state is SaleState.REFUNDING
    assert commands[-1] == Refund("K1R1")
    sale, commands = sale.handle(RefundConfirmed(10))
    assert sale.state is SaleState.REFUNDED and commands == [Finished(SaleState.REFUNDED)]


def test_payment_timeout_closes_then_expires() -> None:
    sale, _ = drive(SELECT, QR, Tick(30))
    assert sale.state is SaleState.AWAITING_PAYMENT
    assert sale.seconds_left(30) == 31
    sale, commands = sale.handle(Tick(60.5))
    assert sale.state is SaleState.CLOSING and commands == [CloseOrder(CloseReason.EXPIRED)]
    sale, _ = sale.handle(OrderClosed(refunded=False, now=61))
    assert sale.state is SaleState.EXPIRED


def test_cancel_by_customer_and_shutdown_close_the_order() -> None:
    sale, commands = drive(SELECT, QR, CancelPressed(4))
    assert commands[-1] == CloseOrder(CloseReason.CANCELLED_BY_CUSTOMER)
    assert sale.handle(OrderClosed(False, 5))[0].state is SaleState.CANCELLED
    sale, commands = drive(SELECT, ShutdownRequested(1))
    assert commands[-1] == CloseOrder(CloseReason.SHUTDOWN)


def test_a_close_that_found_the_order_paid_ends_refunded() -> None:
    sale, _ = drive(SELECT, QR, Tick(61), PaymentVerified("T1", 61.1), OrderClosed(refunded=True, now=62))
    assert sale.state is SaleState.REFUNDED


def test_provider_failure_closes_the_order_to_be_sure() -> None:
    sale, commands = drive(SELECT, OrderFailed("timeout", 1))
    assert sale.state is SaleState.CLOSING and commands[-1] == CloseOrder(CloseReason.PROVIDER_ERROR)


def test_events_that_do_not_apply_change_nothing() -> None:
    sale, _ = drive(SELECT, QR)
    for event in (DeliveryConfirmed(1), RefundConfirmed(1), OrderClosed(False, 1), DeliveryStarted(1)):
        assert sale.handle(event) == (sale, [])
    done, _ = drive(SELECT, QR, PaymentVerified("T", 1), DeliveryStarted(1), DeliveryConfirmed(2))
    for event in (CancelPressed(3), Tick(999), DeliveryFailed("late", 4), PaymentVerified("T", 5)):
        assert done.handle(event) == (done, [])


class SaleMachine(RuleBasedStateMachine):
    """Random event orders: the money rules hold whatever the provider and hardware do."""

    def __init__(self) -> None:
        super().__init__()
        self.sale = Sale()
        self.commands: list[Command] = []
        self.now = 0.0

    def apply(self, event: Event) -> None:
        before = self.sale
        self.sale, commands = self.sale.handle(event)
        if before.is_final:
            assert self.sale is before and not commands, "a final sale never changes"
        self.commands.extend(commands)

    @rule(dt=st.floats(min_value=0, max_value=200))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.apply(Tick(self.now))

    @rule()
    def select(self) -> None:
        self.apply(Selected("A1", "K1", 250, "USD", self.now))

    @rule(timeout=st.floats(min_value=1, max_value=300))
    def qr_ready(self, timeout: float) -> None:
        self.apply(QrReady("qr", self.now, timeout))

    @rule()
    def order_failed(self) -> None:
        self.apply(OrderFailed("boom", self.now))

    @rule()
    def scanned(self) -> None:
        self.apply(BuyerScanned(self.now))

    @rule()
    def paid(self) -> None:
        self.apply(PaymentVerified("T", self.now))

    @rule()
    def provider_closed(self) -> None:
        self.apply(ProviderClosed(self.now))

    @rule()
    def cancel(self) -> None:
        self.apply(CancelPressed(self.now))

    @rule()
    def shutdown(self) -> None:
        self.apply(ShutdownRequested(self.now))

    @rule(refunded=st.booleans())
    def closed(self, refunded: bool) -> None:
        self.apply(OrderClosed(refunded, self.now))

    @rule()
    def delivery_started(self) -> None:
        self.apply(DeliveryStarted(self.now))

    @rule()
    def delivered(self) -> None:
        self.apply(DeliveryConfirmed(self.now))

    @rule()
    def delivery_failed(self) -> None:
        self.apply(DeliveryFailed("jam", self.now))

    @rule()
    def refund_confirmed(self) -> None:
        self.apply(RefundConfirmed(self.now))

    @invariant()
    def no_sale_ends_paid_but_neither_delivered_nor_refunded(self) -> None:
        if self.sale.state in FINAL_STATES and SaleState.PAID in self.sale.history:
            assert self.sale.state in (SaleState.DONE, SaleState.REFUNDED)

    @invariant()
    def no_refund_without_a_payment(self) -> None:
        if any(isinstance(c, Refund) for c in self.commands):
            assert SaleState.PAID in self.sale.history

    @invariant()
    def deliver_at_most_once_and_only_after_payment(self) -> None:
        delivers = [c for c in self.commands if isinstance(c, Deliver)]
        assert len(delivers) <= 1
        if delivers:
            assert SaleState.PAID in self.sale.history

    @invariant()
    def never_delivered_and_refunded(self) -> None:
        assert not (SaleState.DONE in self.sale.history and SaleState.REFUNDING in self.sale.history)


SaleMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestSaleMachine = SaleMachine.TestCase
