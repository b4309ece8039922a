"""Every sandbox fault on every Antom API: the provider never reports what it cannot verify.

Faults spoil the answer AFTER the sandbox did the work (faults.py), so each test checks both
halves: the spoilt call raises OutcomeUnknown (never PAID), and a clean call afterwards finds the
truth, with no money moved twice.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kiosk.payments.alipay_plus import AlipayPlusProvider
from kiosk.payments.base import Order, OutcomeUnknown, PaymentMode, PaymentState
from kiosk.payments.sandbox import FAULTS, SandboxGateway
from kiosk.payments.sandbox.alipay_plus import wire_of

# Every fault that spoils an answer (faults.py also has faults for other protocols' callbacks).
SPOILERS = ("delay", "http_500", "bad_signature", "unsigned", "wrong_amount", "wrong_currency", "wrong_order_id",
            "drop_connection", "timeout")
TIMEOUT_S = 0.5
SLOW = 0.8  # longer than TIMEOUT_S: a "delay" fault this long is a timeout for the kiosk
_serial = itertools.count(1)


@pytest.fixture
def gateway(running_gateway: SandboxGateway) -> SandboxGateway:
    running_gateway.reset()  # no orders, no pending faults, default tourists
    running_gateway.set_behaviour("pays", scan_delay_s=0, pay_delay_s=0)
    return running_gateway


@pytest.fixture
async def provider(gateway: SandboxGateway) -> AsyncIterator[AlipayPlusProvider]:
    async with AlipayPlusProvider(wire_of(gateway).config(timeout_s=TIMEOUT_S)) as p:
        yield p


def test_the_sandbox_still_has_every_fault_tested_here() -> None:
    assert set(SPOILERS) <= set(FAULTS)


def order(mode: PaymentMode = PaymentMode.QR) -> Order:
    return Order(f"F{next(_serial):06d}", 599, "USD", "Cola", mode)


def code() -> str:
    return f"281001{next(_serial):018d}"


def spoil(gateway: SandboxGateway, method: str, fault: str) -> None:
    gateway.add_fault(method, fault, delay_s=SLOW if fault in ("delay", "timeout") else None)


def view(gateway: SandboxGateway, o: Order) -> dict[str, Any]:
    found = gateway.order(o.order_id)
    assert found is not None
    return found


@pytest.mark.parametrize("fault", SPOILERS)
async def test_pay_with_a_payment_code(gateway: SandboxGateway, provider: AlipayPlusProvider, fault: str) -> None:
    o = order(PaymentMode.CODE)
    spoil(gateway, "alipay_plus.pay", fault)
    with pytest.raises(OutcomeUnknown):
        await provider.charge_code(o, code())
    truth = await provider.query(o)  # the charge did happen
    assert truth.state is PaymentState.PAID and truth.amount_minor == 599


@pytest.mark.parametrize("fault", SPOILERS)
async def test_pay_for_an_order_code(gateway: SandboxGateway, provider: AlipayPlusProvider, fault: str) -> None:
    gateway.set_behaviour("never_pays")
    o = order()
    spoil(gateway, "alipay_plus.pay", fault)
    with pytest.raises(OutcomeUnknown):
        await provider.create_qr(o)
    assert (await provider.query(o)).state is PaymentState.PENDING
    qr = await provider.create_qr(o)  # retried with the same id: the same payment and code
    assert qr.qr_content == view(gateway, o)["qr_code"] and len(gateway.orders()) == 1


@pytest.mark.parametrize("fault", SPOILERS)
async def test_inquiry_of_a_paid_order(gateway: SandboxGateway, provider: AlipayPlusProvider, fault: str) -> None:
    o = order(PaymentMode.CODE)
    await provider.charge_code(o, code())
    spoil(gateway, "alipay_plus.inquiry", fault)
    with pytest.raises(OutcomeUnknown):
        await provider.query(o)  # wrong amount, currency or id: not a payment of ours
    assert (await provider.query(o)).state is PaymentState.PAID


@pytest.mark.parametrize("fault", SPOILERS)
async def test_cancel(gateway: SandboxGateway, provider: AlipayPlusProvider, fault: str) -> None:
    gateway.set_behaviour("never_pays")
    o = order()
    await provider.create_qr(o)
    spoil(gateway, "alipay_plus.cancel", fault)
    if fault in ("wrong_amount", "wrong_currency"):
        # cancel's answer carries no amount: these faults leave it intact, and it is believed.
        assert not (await provider.cancel(o)).refunded
    else:
        with pytest.raises(OutcomeUnknown):
            await provider.cancel(o)
    assert view(gateway, o)["closed"]  # it did happen
    assert (await provider.query(o)).state is PaymentState.CLOSED
    assert not (await provider.cancel(o)).refunded


@pytest.mark.parametrize("fault", SPOILERS)
async def test_refund(gateway: SandboxGateway, provider: AlipayPlusProvider, fault: str) -> None:
    o = order(PaymentMode.CODE)
    await provider.charge_code(o, code())
    spoil(gateway, "alipay_plus.refund", fault)
    with pytest.raises(OutcomeUnknown):
        await provider.refund(o, o.order_id + "R1")
    assert view(gateway, o)["refunded_minor"] == 599  # it did happen ...
    outcome = await provider.refund(o, o.order_id + "R1")  # ... and the retry does not repeat it
    assert outcome.amount_minor == 599 and view(gateway, o)["refund_count"] == 1


async def test_a_short_delay_is_only_slow(gateway: SandboxGateway, provider: AlipayPlusProvider) -> None:
    o = order(PaymentMode.CODE)
    gateway.add_fault("alipay_plus.pay", "delay", delay_s=0.1)
    assert (await provider.charge_code(o, code())).state is PaymentState.PAID


async def test_a_fault_for_any_method(gateway: SandboxGateway, provider: AlipayPlusProvider) -> None:
    o = order(PaymentMode.CODE)
    gateway.add_fault("*", "bad_signature", count=2)
    with pytest.raises(OutcomeUnknown):
        await provider.charge_code(o, code())
    with pytest.raises(OutcomeUnknown):
        await provider.query(o)
    assert (await provider.query(o)).state is PaymentState.PAID
