"""CitconProvider against the sandbox gateway's Citcon UPI: real HTTP on loopback, real tokens,
both scan directions, cancels and refunds."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from kiosk.payments.base import (
    Order,
    OutcomeUnknown,
    PaymentMode,
    PaymentRejected,
    PaymentState,
)
from kiosk.payments.citcon import CitconProvider
from kiosk.payments.sandbox import SandboxGateway
from kiosk.payments.sandbox.citcon import citcon_config
from tests.kiosk_harness import query_until as until


@pytest.fixture
async def provider(gateway: SandboxGateway) -> AsyncIterator[CitconProvider]:
    p = CitconProvider(citcon_config(gateway, timeout_s=0.5))
    yield p
    await p.aclose()


_counter = iter(range(1, 1_000_000))


def new_order(amount_minor: int = 350, currency: str = "USD", mode: PaymentMode = PaymentMode.QR) -> Order:
    return Order(f"C{os.getpid()}-{next(_counter)}", amount_minor, currency, "可乐 Cola", mode)


def code_order(amount_minor: int = 350, currency: str = "USD") -> Order:
    return new_order(amount_minor, currency, PaymentMode.CODE)


def alipay_code() -> str:
    return f"28{os.getpid() % 10_000:04d}{next(_counter):012d}"


PaidOrder = Callable[[SandboxGateway, CitconProvider], Awaitable[Order]]


async def paid_qr_order(gateway: SandboxGateway, provider: CitconProvider) -> Order:
    gateway.set_behaviour("pays", scan_delay_s=0.1, pay_delay_s=0.1, for_next=1)
    order = new_order()
    await provider.create_qr(order)
    await until(provider, order, PaymentState.PAID)
    return order


async def paid_code_order(gateway: SandboxGateway, provider: CitconProvider) -> Order:
    gateway.set_behaviour("pays", pay_delay_s=0, for_next=1)
    order = code_order()
    assert (await provider.charge_code(order, alipay_code())).state is PaymentState.PAID
    return order


def test_modes_and_poll_policy(gateway: SandboxGateway) -> None:
    p = CitconProvider(citcon_config(gateway))
    assert p.name == "citcon" and p.modes == {PaymentMode.QR, PaymentMode.CODE}
    assert (p.code_poll.interval_s, p.code_poll.give_up_after_s) == (3, 60)


# ---------------------------------------------------------------- merchant-presented QR


@pytest.mark.parametrize("currency,amount", [("USD", 350), ("CNY", 1), ("JPY", 500)])
async def test_qr_pending_then_paid(
    gateway: SandboxGateway, provider: CitconProvider, currency: str, amount: int
) -> None:
    gateway.set_behaviour("pays", scan_delay_s=0.2, pay_delay_s=0.2, for_next=1)
    order = new_order(amount, currency)
    qr = await provider.create_qr(order)
    assert qr.order_id == order.order_id and qr.qr_content.startswith("https://qr.alipay.com/bax")
    assert await provider.create_qr(order) == qr  # a replayed charge is the same transaction
    pending = await provider.query(order)
    assert pending.state is PaymentState.PENDING and pending.provider_txn_id
    paid = await until(provider, order, PaymentState.PAID)
    assert (paid.amount_minor, paid.currency, paid.provider_txn_id) == (amount, currency, pending.provider_txn_id)
    view = gateway.order(order.order_id)
    assert view is not None and view["protocol"] == "citcon" and view["paid"] and view["mode"] == "qr"


async def test_qr_for_another_wallet(gateway: SandboxGateway) -> None:
    p = CitconProvider(citcon_config(gateway, qr_method="wechatpay"))
    try:
        qr = await p.create_qr(new_order())
    finally:
        await p.aclose()
    assert qr.qr_content.startswith("weixin://wxpay/bizpayurl?pr=")


async def test_unknown_qr_method_is_rejected(gateway: SandboxGateway) -> None:
    p = CitconProvider(citcon_config(gateway, qr_method="carrier_pigeon"))
    try:
        with pytest.raises(PaymentRejected) as info:
            await p.create_qr(new_order())
    finally:
        await p.aclose()
    assert info.value.code == "method_not_supported"


async def test_qr_never_paid_then_close(gateway: SandboxGateway, provider: CitconProvider) -> None:
    gateway.set_behaviour("never_pays", for_next=1)
    order = new_order()
    await provider.create_qr(order)
    assert (await provider.query(order)).state is PaymentState.PENDING
    assert (await provider.cancel(order)).refunded is False
    assert (await provider.query(order)).state is PaymentState.CLOSED
    assert (await provider.cancel(order)).refunded is False  # safe to repeat


async def test_qr_closed_before_the_late_payment(gateway: SandboxGateway, provider: CitconProvider) -> None:
    gateway.set_behaviour("pays", scan_delay_s=0.2, pay_delay_s=0.2, for_next=1)
    order = new_order()
    await provider.create_qr(order)
    assert (await provider.cancel(order)).refunded is False
    await asyncio.sleep(0.5)  # the tourist would have paid by now
    assert (await provider.query(order)).state is PaymentState.CLOSED
    view = gateway.order(order.order_id)
    assert view is not None and not view["paid"]


async def test_qr_closed_after_payment_refunds_once(gateway: SandboxGateway, provider: CitconProvider) -> None:
    order = await paid_qr_order(gateway, provider)
    assert (await provider.cancel(order)).refunded is True
    assert (await provider.cancel(order)).refunded is True  # reports the refund, moves no money
    assert (await provider.query(order)).state is PaymentState.REFUNDED
    view = gateway.order(order.order_id)
    assert view is not None and (view["refunded_minor"], view["refund_count"]) == (350, 1)


async def test_cancel_of_an_order_never_created(provider: CitconProvider) -> None:
    assert (await provider.cancel(new_order())).refunded is False


# ---------------------------------------------------------------- refunds


@pytest.mark.parametrize("paid", [paid_qr_order, paid_code_order])
async def test_refund_with_the_same_id_refunds_once(
    gateway: SandboxGateway, provider: CitconProvider, paid: PaidOrder
) -> None:
    order = await paid(gateway, provider)
    first = await provider.refund(order, "R-1")
    assert first == await provider.refund(order, "R-1")
    assert (first.amount_minor, first.refund_id) == (350, "R-1")
    with pytest.raises(PaymentRejected) as info:
        await provider.refund(order, "R-2")  # nothing left to refund
    assert info.value.code == "transaction_not_refundable"
    assert (await provider.query(order)).state is PaymentState.REFUNDED
    view = gateway.order(order.order_id)
    assert view is not None and (view["refunded_minor"], view["refund_requests"]) == (350, ["R-1"])


async def test_refund_with_a_fresh_provider_finds_the_transaction(
    gateway: SandboxGateway, provider: CitconProvider
) -> None:
    order = await paid_qr_order(gateway, provider)
    after_restart = CitconProvider(citcon_config(gateway, timeout_s=0.5))  # knows no transaction ids
    try:
        assert (await after_restart.refund(order, "R-1")).amount_minor == 350
    finally:
        await after_restart.aclose()
    assert (await provider.refund(order, "R-1")).amount_minor == 350  # same id: still refunded once
    view = gateway.order(order.order_id)
    assert view is not None and view["refunded_minor"] == 350


async def test_refund_of_unpaid_or_unknown_orders_is_rejected(
    gateway: SandboxGateway, provider: CitconProvider
) -> None:
    gateway.set_behaviour("never_pays", for_next=1)
    order = new_order()
    await provider.create_qr(order)
    with pytest.raises(PaymentRejected) as info:
        await provider.refund(order, "R-1")
    assert info.value.code == "transaction_not_refundable"
    with pytest.raises(PaymentRejected) as info:
        await provider.refund(new_order(), "R-1")
    assert info.value.code == "transaction_not_found"


# ---------------------------------------------------------------- user-presented codes


@pytest.mark.parametrize("code,wallet", [
    ("281234567890123456", "alipay"), ("134567890123456789", "wechatpay"), ("6212345678901234567", "upop"),
])
async def test_code_pays_at_once_routed_by_citcon(
    gateway: SandboxGateway, provider: CitconProvider, code: str, wallet: str
) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0, for_next=1)
    order = code_order(500, "JPY")
    status = await provider.charge_code(order, code)
    assert (status.state, status.amount_minor, status.currency) == (PaymentState.PAID, 500, "JPY")
    view = gateway.order(order.order_id)
    assert view is not None and (view["mode"], view["method"]) == ("code", wallet)


async def test_code_pending_for_some_queries_then_paid(gateway: SandboxGateway, provider: CitconProvider) -> None:
    gateway.set_behaviour("pays", pending_polls=2, for_next=1)
    order = code_order()
    first = await provider.charge_code(order, alipay_code())
    assert (first.state, first.buyer_scanned) == (PaymentState.PENDING, True)
    for _ in range(2):
        status = await provider.query(order)
        assert (status.state, status.buyer_scanned) == (PaymentState.PENDING, True)
    assert (await provider.query(order)).state is PaymentState.PAID


async def test_code_pending_for_a_while_then_paid(gateway: SandboxGateway, provider: CitconProvider) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0.3, for_next=1)
    order = code_order()
    assert (await provider.charge_code(order, alipay_code())).state is PaymentState.PENDING
    assert (await until(provider, order, PaymentState.PAID)).amount_minor == 350


async def test_code_never_confirmed_then_cancelled(gateway: SandboxGateway, provider: CitconProvider) -> None:
    gateway.set_behaviour("never_pays", for_next=1)
    order = code_order()
    assert (await provider.charge_code(order, alipay_code())).state is PaymentState.PENDING
    assert (await provider.cancel(order)).refunded is False
    assert (await provider.query(order)).state is PaymentState.CLOSED


async def test_code_cancelled_after_payment_is_refunded(gateway: SandboxGateway, provider: CitconProvider) -> None:
    order = await paid_code_order(gateway, provider)
    assert (await provider.cancel(order)).refunded is True
    view = gateway.order(order.order_id)
    assert view is not None and view["refunded_minor"] == 350


@pytest.mark.parametrize("behaviour,code", [
    ("code_expired", "payment_code_expired"),
    ("code_used", "payment_code_used"),
    ("no_balance", "insufficient_balance"),
])
async def test_wallet_refusals_are_rejections(
    gateway: SandboxGateway, provider: CitconProvider, behaviour: str, code: str
) -> None:
    gateway.set_behaviour(behaviour, for_next=1)
    order = code_order()
    with pytest.raises(PaymentRejected) as info:
        await provider.charge_code(order, alipay_code())
    assert info.value.code == code and info.value.message
    assert (await provider.query(order)).state is PaymentState.CLOSED  # Citcon keeps the failed attempt


async def test_a_code_shown_again_for_another_order_is_refused(
    gateway: SandboxGateway, provider: CitconProvider
) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0, for_next=2)
    code = alipay_code()
    await provider.charge_code(code_order(), code)
    with pytest.raises(PaymentRejected) as info:
        await provider.charge_code(code_order(), code)
    assert info.value.code == "payment_code_used"


async def test_codes_no_wallet_owns_are_refused(gateway: SandboxGateway, provider: CitconProvider) -> None:
    with pytest.raises(PaymentRejected) as info:
        await provider.charge_code(code_order(), "99123456789012345")
    assert info.value.code == "invalid_payment_code"
    for junk in ("https://example.com/pay", "28-1234-5678", ""):
        with pytest.raises(PaymentRejected):
            await provider.charge_code(code_order(), junk)
    assert gateway.orders() == []  # junk never left the kiosk; the unroutable code made no transaction


async def test_replayed_charge_is_the_same_transaction(gateway: SandboxGateway, provider: CitconProvider) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0, for_next=1)
    order, code = code_order(), alipay_code()
    gateway.add_fault("citcon.charges", "drop_connection")
    with pytest.raises(OutcomeUnknown):
        await provider.charge_code(order, code)
    assert (await provider.charge_code(order, code)).state is PaymentState.PAID
    with pytest.raises(OutcomeUnknown, match="duplicate_reference"):
        await provider.charge_code(order, alipay_code())  # another code under the same reference
    assert len(gateway.orders()) == 1
