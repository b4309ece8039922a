"""The pure sale state machine: transitions, and money invariants under random event orders."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kiosk.sale import (
    FINAL_STATES,
    AttemptState,
    BeginDelivery,
    BuyerScanned,
    CancelPressed,
    ChargeCode,
    CloseOrder,
    CloseReason,
    CodeRefused,
    CodeScanned,
    Command,
    CreateQr,
    Deliver,
    DeliveryConfirmed,
    DeliveryFailed,
    DeliveryStarted,
    Event,
    Finished,
    GiveUpAttempt,
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
    assert commands == [CreateQr("K1"), BeginDelivery(), Deliver("A1"), Finished(SaleState.DONE)]
    assert sale.provider_txn_id == "T1"


def test_failed_delivery_refunds_with_a_stable_refund_id() -> None:
    sale, commands = drive(SELECT, QR, PaymentVerified("T1", 5), DeliveryStarted(5), DeliveryFailed("no drop", 9))
    assert sale.state is SaleState.REFUNDING
    assert commands[-1] == Refund("K1R1", "K1")
    sale, commands = sale.handle(RefundConfirmed(10))
    assert sale.state is SaleState.REFUNDED and commands == [Finished(SaleState.REFUNDED)]


def test_payment_timeout_closes_then_expires() -> None:
    sale, _ = drive(SELECT, QR, Tick(30))
    assert sale.state is SaleState.AWAITING_PAYMENT
    assert sale.seconds_left(30) == 31
    sale, commands = sale.handle(Tick(60.5))
    assert sale.state is SaleState.CLOSING and commands == [CloseOrder(CloseReason.EXPIRED, "K1")]
    sale, _ = sale.handle(OrderClosed(refunded=False, now=61))
    assert sale.state is SaleState.EXPIRED


def test_cancel_by_customer_and_shutdown_close_the_order() -> None:
    sale, commands = drive(SELECT, QR, CancelPressed(4))
    assert commands[-1] == CloseOrder(CloseReason.CANCELLED_BY_CUSTOMER, "K1")
    assert sale.handle(OrderClosed(False, 5))[0].state is SaleState.CANCELLED
    sale, commands = drive(SELECT, ShutdownRequested(1))
    assert commands[-1] == CloseOrder(CloseReason.SHUTDOWN, "K1")


def test_a_close_that_found_the_order_paid_ends_refunded() -> None:
    sale, _ = drive(SELECT, QR, Tick(61), PaymentVerified("T1", 61.1), OrderClosed(refunded=True, now=62))
    assert sale.state is SaleState.REFUNDED


def test_provider_failure_closes_the_order_to_be_sure() -> None:
    sale, commands = drive(SELECT, OrderFailed("timeout", 1))
    assert sale.state is SaleState.CLOSING and commands[-1] == CloseOrder(CloseReason.PROVIDER_ERROR, "K1")


def test_events_that_do_not_apply_change_nothing() -> None:
    sale, _ = drive(SELECT, QR)
    for event in (DeliveryConfirmed(1), RefundConfirmed(1), DeliveryStarted(1), CodeRefused("K1", "x", 1)):
        assert sale.handle(event) == (sale, [])
    done, _ = drive(SELECT, QR, PaymentVerified("T", 1), DeliveryStarted(1), DeliveryConfirmed(2))
    for event in (CancelPressed(3), Tick(999), DeliveryFailed("late", 4), PaymentVerified("T", 5)):
        assert done.handle(event) == (done, [])


def test_scanned_code_wins_and_the_qr_order_is_closed() -> None:
    sale, commands = drive(SELECT, QR, CodeScanned("K1C1", "wechat_v2", "134567890123456789", 2))
    assert commands[-1] == ChargeCode("K1C1", "134567890123456789")
    assert "134567890123456789" not in repr(sale), "the code itself is never kept in the sale"
    sale, commands = sale.handle(PaymentVerified("W1", 3, "K1C1"))
    assert sale.state is SaleState.PAID and sale.winner == "K1C1"
    assert commands == [BeginDelivery(), CloseOrder(CloseReason.PROVIDER_CLOSED, "K1")]


def test_qr_paid_while_a_code_is_pending_closes_the_code_payment() -> None:
    sale, _ = drive(SELECT, QR, CodeScanned("K1C1", "wechat_v2", "134567890123456789", 2), BuyerScanned(3, "K1C1"))
    assert sale.attempt("K1C1") is not None and sale.attempt("K1C1").confirming  # type: ignore[union-attr]
    sale, commands = sale.handle(PaymentVerified("A1", 4))
    assert sale.winner == "K1" and commands[-1] == CloseOrder(CloseReason.PROVIDER_CLOSED, "K1C1")


def test_a_second_payment_after_the_first_is_given_back() -> None:
    sale, _ = drive(SELECT, QR, CodeScanned("K1C1", "wechat_v2", "1", 2), PaymentVerified("A", 3),
                    DeliveryStarted(3), DeliveryConfirmed(4))
    assert sale.state is SaleState.DONE
    # The code payment went through after all, before its close landed.
    sale, commands = sale.handle(PaymentVerified("W", 5, "K1C1"))
    assert sale.state is SaleState.DONE and commands == [CloseOrder(CloseReason.PROVIDER_CLOSED, "K1C1")]
    sale, _ = sale.handle(OrderClosed(refunded=True, now=6, order_id="K1C1"))
    assert sale.attempt("K1C1").state is AttemptState.REFUNDED  # type: ignore[union-attr]
    assert not sale.needs_settling


def test_a_refused_code_leaves_the_sale_waiting_for_another_try() -> None:
    sale, _ = drive(SELECT, QR, CodeScanned("K1C1", "alipay", "28", 2), CodeRefused("K1C1", "expired", 3))
    assert sale.state is SaleState.AWAITING_PAYMENT and not sale.code_attempt_open
    sale, commands = sale.handle(CodeScanned("K1C2", "alipay", "29", 4))
    assert commands == [ChargeCode("K1C2", "29")]


def test_scanner_only_sale_waits_for_a_code_until_the_deadline() -> None:
    sale, commands = drive(Selected("A1", "K1", 250, "USD", 0.0, qr_provider=None, timeout_s=30))
    assert sale.state is SaleState.AWAITING_PAYMENT and commands == [] and sale.deadline == 30
    sale, commands = sale.handle(Tick(31))
    assert sale.state is SaleState.EXPIRED and commands == [Finished(SaleState.EXPIRED)]


def test_giving_up_a_code_payment_closes_only_that_attempt() -> None:
    sale, _ = drive(SELECT, QR, CodeScanned("K1C1", "wechat_v2", "1", 2))
    sale, commands = sale.handle(GiveUpAttempt("K1C1", 47))
    assert commands == [CloseOrder(CloseReason.EXPIRED, "K1C1")]
    sale, _ = sale.handle(OrderClosed(refunded=False, now=48, order_id="K1C1"))
    assert sale.state is SaleState.AWAITING_PAYMENT and sale.open_attempts == (sale.attempts[0],)


def test_expiry_closes_every_attempt_and_a_refunding_close_ends_refunded() -> None:
    sale, _ = drive(SELECT, QR, CodeScanned("K1C1", "wechat_v2", "1", 2))
    sale, commands = sale.handle(Tick(61))
    assert commands == [CloseOrder(CloseReason.EXPIRED, "K1"), CloseOrder(CloseReason.EXPIRED, "K1C1")]
    sale, _ = sale.handle(OrderClosed(False, 62, "K1"))
    assert sale.state is SaleState.CLOSING
    sale, _ = sale.handle(OrderClosed(True, 63, "K1C1"))
    assert sale.state is SaleState.REFUNDED


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
            assert self.sale.state is before.state, "a final sale never changes state"
            assert self.sale.winner == before.winner
        self.commands.extend(commands)

    def closes(self) -> set[str]:
        return {c.order_id for c in self.commands if isinstance(c, CloseOrder)}

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

    @rule(n=st.integers(1, 3))
    def code_scanned(self, n: int) -> None:
        self.apply(CodeScanned(f"K1C{n}", "wechat_v2", "134567890123456789", self.now))

    @rule(n=st.integers(1, 3))
    def code_paid(self, n: int) -> None:
        self.apply(PaymentVerified("W", self.now, f"K1C{n}"))

    @rule(n=st.integers(1, 3))
    def code_refused(self, n: int) -> None:
        self.apply(CodeRefused(f"K1C{n}", "expired", self.now))

    @rule(n=st.integers(1, 3), refunded=st.booleans())
    def code_closed(self, n: int, refunded: bool) -> None:
        self.apply(OrderClosed(refunded, self.now, f"K1C{n}"))

    @rule(n=st.integers(1, 3))
    def give_up_code(self, n: int) -> None:
        self.apply(GiveUpAttempt(f"K1C{n}", self.now))

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
    def every_paid_attempt_but_the_winner_is_closed(self) -> None:
        for attempt in self.sale.attempts:
            if attempt.state is AttemptState.PAID and attempt.order_id != self.sale.winner:
                assert attempt.order_id in self.closes()

    @invariant()
    def a_finished_sale_leaves_no_attempt_open_without_a_close(self) -> None:
        if self.sale.state in FINAL_STATES:
            for attempt in self.sale.open_attempts:
                assert attempt.order_id in self.closes()

    @invariant()
    def at_most_one_winner_and_it_was_paid(self) -> None:
        if self.sale.winner is not None:
            winner = self.sale.attempt(self.sale.winner)
            assert winner is not None and winner.state in (AttemptState.PAID, AttemptState.REFUNDED)

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
