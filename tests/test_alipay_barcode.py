"""Alipay user-presented payments (alipay.trade.pay, scene bar_code) against the sandbox gateway:
real RSA2 signatures both ways over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kiosk.payments import rsa2
from kiosk.payments.alipay import AlipayProvider, pay_result
from kiosk.payments.base import (
    Order,
    OutcomeUnknown,
    PaymentMode,
    PaymentRejected,
    PaymentState,
)
from kiosk.payments.sandbox import SandboxGateway
from tests.kiosk_harness import query_until as until

PAY = "alipay.trade.pay"
QUERY = "alipay.trade.query"
RESPONSE_FAULTS = [
    "bad_signature", "unsigned", "wrong_amount", "wrong_order_id", "wrong_currency",
    "http_500", "timeout", "drop_connection",
]


@pytest.fixture
async def provider(gateway: SandboxGateway) -> AsyncIterator[AlipayProvider]:
    p = AlipayProvider(gateway.alipay_config(timeout_s=0.5))
    yield p
    await p.aclose()


_counter = iter(range(1, 1_000_000))


def new_order(amount_minor: int = 350, currency: str = "USD") -> Order:
    return Order(order_id=f"B{os.getpid()}-{next(_counter)}", amount_minor=amount_minor, currency=currency,
                 subject="可乐 Cola", mode=PaymentMode.CODE)


def new_code() -> str:
    """A fresh Alipay payment code: 18 digits starting 28, never shown before in this run."""
    return f"28{os.getpid() % 10_000:04d}{next(_counter):012d}"


def paying_now(gateway: SandboxGateway) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0, for_next=1)


# ---------------------------------------------------------------- the contract's attributes


def test_modes_and_poll_policy(gateway: SandboxGateway) -> None:
    p = AlipayProvider(gateway.alipay_config())
    assert p.modes == {PaymentMode.QR, PaymentMode.CODE}
    # Reference section 1: query every 3-6 s for about 60 s, then cancel at once.
    assert (p.code_poll.interval_s, p.code_poll.give_up_after_s, p.code_poll.cancel_not_before_s) == (3, 60, 0)


# ---------------------------------------------------------------- the tourist's paths


@pytest.mark.parametrize("currency,amount", [("USD", 350), ("CNY", 1), ("JPY", 500)])
async def test_code_pays_at_once(
    gateway: SandboxGateway, provider: AlipayProvider, currency: str, amount: int
) -> None:
    paying_now(gateway)
    order = new_order(amount, currency)
    status = await provider.charge_code(order, new_code())
    assert (status.state, status.amount_minor, status.currency) == (PaymentState.PAID, amount, currency)
    assert status.provider_txn_id and status.buyer_scanned
    again = await provider.query(order)
    assert (again.state, again.provider_txn_id) == (PaymentState.PAID, status.provider_txn_id)
    view = gateway.order(order.order_id)
    assert view is not None and view["mode"] == "code" and view["paid"] and view["currency"] == currency


async def test_pending_for_some_queries_then_paid(gateway: SandboxGateway, provider: AlipayProvider) -> None:
    gateway.set_behaviour("pays", pending_polls=2, for_next=1)
    order = new_order()
    first = await provider.charge_code(order, new_code())
    assert (first.state, first.buyer_scanned) == (PaymentState.PENDING, True) and first.provider_txn_id
    assert (await provider.query(order)).state is PaymentState.PENDING
    assert (await provider.query(order)).state is PaymentState.PENDING
    paid = await provider.query(order)
    assert (paid.state, paid.amount_minor, paid.provider_txn_id) == (PaymentState.PAID, 350, first.provider_txn_id)


async def test_pending_for_a_while_then_paid(gateway: SandboxGateway, provider: AlipayProvider) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0.3, for_next=1)
    order = new_order()
    assert (await provider.charge_code(order, new_code())).state is PaymentState.PENDING
    assert (await until(provider, order, PaymentState.PAID)).amount_minor == 350


async def test_never_pays_then_cancel_closes(gateway: SandboxGateway, provider: AlipayProvider) -> None:
    gateway.set_behaviour("never_pays", for_next=1)
    order = new_order()
    assert (await provider.charge_code(order, new_code())).state is PaymentState.PENDING
    for _ in range(3):
        assert (await provider.query(order)).state is PaymentState.PENDING
    assert (await provider.cancel(order)).refunded is False
    assert (await provider.query(order)).state is PaymentState.CLOSED
    assert (await provider.cancel(order)).refunded is False  # safe to repeat
    view = gateway.order(order.order_id)
    assert view is not None and view["closed"] and not view["paid"]


async def test_cancel_while_confirming_stops_the_later_payment(
    gateway: SandboxGateway, provider: AlipayProvider
) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0.4, for_next=1)
    order = new_order()
    await provider.charge_code(order, new_code())
    assert (await provider.cancel(order)).refunded is False
    await asyncio.sleep(0.5)  # the tourist would have confirmed by now
    assert (await provider.query(order)).state is PaymentState.CLOSED
    view = gateway.order(order.order_id)
    assert view is not None and not view["paid"]


async def test_cancel_after_payment_refunds_once(gateway: SandboxGateway, provider: AlipayProvider) -> None:
    paying_now(gateway)
    order = new_order()
    await provider.charge_code(order, new_code())
    assert (await provider.cancel(order)).refunded is True
    assert (await provider.cancel(order)).refunded is True  # reports the refund, moves no money
    assert (await provider.query(order)).state is PaymentState.CLOSED
    view = gateway.order(order.order_id)
    assert view is not None and (view["refunded_minor"], view["refund_count"]) == (350, 1)


async def test_refund_with_the_same_id_refunds_once(gateway: SandboxGateway, provider: AlipayProvider) -> None:
    paying_now(gateway)
    order = new_order()
    await provider.charge_code(order, new_code())
    first = await provider.refund(order, "R-1")
    assert first == await provider.refund(order, "R-1")
    assert first.amount_minor == 350
    view = gateway.order(order.order_id)
    assert view is not None and (view["refunded_minor"], view["refund_requests"]) == (350, ["R-1"])


# ---------------------------------------------------------------- refused codes


@pytest.mark.parametrize("behaviour,sub_code", [
    ("code_expired", "ACQ.PAYMENT_AUTH_CODE_INVALID"),
    ("code_used", "ACQ.PAYMENT_AUTH_CODE_INVALID"),
    ("no_balance", "ACQ.BUYER_BALANCE_NOT_ENOUGH"),
])
async def test_wallet_refusals_are_rejections(
    gateway: SandboxGateway, provider: AlipayProvider, behaviour: str, sub_code: str
) -> None:
    gateway.set_behaviour(behaviour, for_next=1)
    order = new_order()
    with pytest.raises(PaymentRejected) as info:
        await provider.charge_code(order, new_code())
    assert info.value.code == sub_code and info.value.message
    assert (await provider.query(order)).state is PaymentState.NOT_FOUND  # no trade, no money


async def test_a_code_shown_for_a_second_trade_is_refused(
    gateway: SandboxGateway, provider: AlipayProvider
) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0, for_next=2)
    code = new_code()
    first = new_order()
    assert (await provider.charge_code(first, code)).state is PaymentState.PAID
    second = new_order()
    with pytest.raises(PaymentRejected) as info:
        await provider.charge_code(second, code)
    assert info.value.code == "ACQ.PAYMENT_AUTH_CODE_INVALID"
    assert (await provider.query(second)).state is PaymentState.NOT_FOUND
    assert (await provider.query(first)).state is PaymentState.PAID


async def test_gibberish_is_refused_before_sending(gateway: SandboxGateway, provider: AlipayProvider) -> None:
    for junk in ("https://qr.alipay.com/bax123", "28 1234 5678 9012 345", "２８１２３４５６７８９０１２３４５６", ""):
        with pytest.raises(PaymentRejected):
            await provider.charge_code(new_order(), junk)
    assert gateway.orders() == []


async def test_the_gateway_refuses_codes_that_are_not_alipay_codes(
    gateway: SandboxGateway, provider: AlipayProvider
) -> None:
    with pytest.raises(PaymentRejected) as info:
        await provider.charge_code(new_order(), "134567890123456789")  # a WeChat Pay code
    assert info.value.code == "ACQ.PAYMENT_AUTH_CODE_INVALID"


# ---------------------------------------------------------------- retries with the same order


async def test_retry_after_a_lost_answer_of_a_paid_charge_is_unknown_then_query_finds_it(
    gateway: SandboxGateway, provider: AlipayProvider
) -> None:
    paying_now(gateway)
    order, code = new_order(), new_code()
    gateway.add_fault(PAY, "drop_connection")
    with pytest.raises(OutcomeUnknown):
        await provider.charge_code(order, code)
    with pytest.raises(OutcomeUnknown, match="TRADE_HAS_SUCCESS"):
        await provider.charge_code(order, code)  # the money is real: never a rejection
    assert (await provider.query(order)).state is PaymentState.PAID
    view = gateway.order(order.order_id)
    assert view is not None and view["refunded_minor"] == 0


async def test_retry_of_a_pending_charge_reports_it_pending(
    gateway: SandboxGateway, provider: AlipayProvider
) -> None:
    gateway.set_behaviour("never_pays", for_next=1)
    order, code = new_order(), new_code()
    assert (await provider.charge_code(order, code)).state is PaymentState.PENDING
    assert (await provider.charge_code(order, code)).state is PaymentState.PENDING
    with pytest.raises(OutcomeUnknown, match="CONTEXT_INCONSISTENT"):
        await provider.charge_code(order, new_code())  # another code for the same trade
    assert len(gateway.orders()) == 1


# ---------------------------------------------------------------- faults: never a false PAID


@pytest.mark.parametrize("fault", RESPONSE_FAULTS)
async def test_pay_fault_on_a_paid_charge_is_unknown_then_query_tells(
    gateway: SandboxGateway, provider: AlipayProvider, fault: str
) -> None:
    paying_now(gateway)
    order = new_order()
    gateway.add_fault(PAY, fault, delay_s=1.0 if fault == "timeout" else None)
    with pytest.raises(OutcomeUnknown) as info:
        await provider.charge_code(order, new_code())
    assert "PRIVATE" not in str(info.value)
    status = await provider.query(order)
    assert (status.state, status.amount_minor, status.currency) == (PaymentState.PAID, 350, "USD")


@pytest.mark.parametrize("fault", RESPONSE_FAULTS)
async def test_pay_fault_on_a_pending_charge_is_unknown_then_query_tells(
    gateway: SandboxGateway, provider: AlipayProvider, fault: str
) -> None:
    gateway.set_behaviour("never_pays", for_next=1)
    order = new_order(500, "CNY")
    gateway.add_fault(PAY, fault, delay_s=1.0 if fault == "timeout" else None)
    with pytest.raises(OutcomeUnknown):
        await provider.charge_code(order, new_code())
    assert (await provider.query(order)).state is PaymentState.PENDING


@pytest.mark.parametrize("fault", ["wrong_amount", "wrong_order_id", "wrong_currency", "bad_signature"])
async def test_query_fault_after_a_code_payment_is_never_paid(
    gateway: SandboxGateway, provider: AlipayProvider, fault: str
) -> None:
    paying_now(gateway)
    order = new_order()
    await provider.charge_code(order, new_code())
    gateway.add_fault(QUERY, fault)
    with pytest.raises(OutcomeUnknown):
        await provider.query(order)
    assert (await provider.query(order)).state is PaymentState.PAID


async def test_delay_within_the_timeout_still_pays(gateway: SandboxGateway, provider: AlipayProvider) -> None:
    paying_now(gateway)
    gateway.add_fault(PAY, "delay", delay_s=0.2)
    assert (await provider.charge_code(new_order(), new_code())).state is PaymentState.PAID


# ---------------------------------------------------------------- what the gateway's codes mean


def _answer(code: str, sub_code: str | None = None, **fields: str) -> dict[str, str]:
    data = {"code": code, "msg": "x", **fields}
    if sub_code:
        data["sub_code"] = sub_code
    return data


@pytest.mark.parametrize("answer", [
    _answer("20000", "isp.unknow-error"),
    _answer("40004", "ACQ.SYSTEM_ERROR"),
    _answer("40004", "ACQ.TRADE_HAS_SUCCESS"),
    _answer("40004", "ACQ.CONTEXT_INCONSISTENT"),
    _answer("10000", out_trade_no="O1", total_amount="3.50", trans_currency="USD"),  # no trade_no
    _answer("10000", out_trade_no="O1", total_amount="3.50", trans_currency="USD", trade_no="T",
            trade_status="WAIT_BUYER_PAY"),
    _answer("10003", out_trade_no="O2", total_amount="3.50", trans_currency="USD"),
    _answer("99999"),
])
def test_uncertain_answers_are_outcome_unknown(answer: dict[str, str]) -> None:
    order = Order("O1", 350, "USD", "s", PaymentMode.CODE)
    with pytest.raises(OutcomeUnknown):
        pay_result(answer, order)


@pytest.mark.parametrize("sub_code", [
    "ACQ.PAYMENT_AUTH_CODE_INVALID", "ACQ.BUYER_BALANCE_NOT_ENOUGH", "ACQ.PAYMENT_FAIL", "ACQ.TRADE_HAS_CLOSE",
])
def test_definitive_refusals_are_rejections(sub_code: str) -> None:
    with pytest.raises(PaymentRejected) as info:
        pay_result(_answer("40004", sub_code, sub_msg="no"), Order("O1", 350, "USD", "s", PaymentMode.CODE))
    assert (info.value.code, info.value.message) == (sub_code, "no")


# ---------------------------------------------------------------- secrets and codes stay out of text


async def test_payment_code_and_keys_stay_out_of_logs_and_errors(
    gateway: SandboxGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    code = new_code()
    # Signed with a key the gateway does not know: its refusal quotes the whole signed request.
    rsa2.generate_key_pair(tmp_path / "other.pem", tmp_path / "other.pub.pem")
    impostor = AlipayProvider(gateway.alipay_config(app_private_key_file=tmp_path / "other.pem"))
    try:
        with pytest.raises(PaymentRejected) as info:
            await impostor.charge_code(new_order(), code)
    finally:
        await impostor.aclose()
    assert info.value.code == "isv.invalid-signature"
    assert code not in str(info.value) and code not in info.value.message
    paying_now(gateway)
    provider = AlipayProvider(gateway.alipay_config())
    try:
        await provider.charge_code(new_order(), code)
    finally:
        await provider.aclose()
    assert code not in caplog.text
    for path in (gateway.app_private_key_file, gateway.gateway_private_key_file, tmp_path / "other.pem"):
        for line in path.read_text().splitlines()[1:-1]:
            assert line not in caplog.text
