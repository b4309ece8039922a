"""WechatV2Provider against the sandbox gateway: real HMAC-SHA256 signatures in real XML over real
HTTP on loopback, /secapi/ over real TLS with the merchant's client certificate.

The fixtures and helpers here are imported by test_wechat_v2_trust.py too."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kiosk.config import KioskConfig
from kiosk.payments.base import (
    CancelOutcome,
    CodePollPolicy,
    Order,
    OutcomeUnknown,
    PaymentMode,
    PaymentRejected,
    PaymentState,
    PaymentStatus,
)
from kiosk.payments.registry import build_provider
from kiosk.payments.sandbox import SandboxGateway
from kiosk.payments.sandbox.wechat_v2 import WechatV2Protocol, protocol_of
from kiosk.payments.wechat_v2 import CODE_POLL, WechatV2Provider

NOT_BEFORE_S = 0.3  # the sandbox's "reverse no sooner than" age, shortened from WeChat's 15 s
FAST_POLICY = CodePollPolicy(interval_s=0.05, give_up_after_s=0.2, cancel_not_before_s=NOT_BEFORE_S)
QR, CODE = PaymentMode.QR, PaymentMode.CODE
PAID, PENDING, CLOSED = PaymentState.PAID, PaymentState.PENDING, PaymentState.CLOSED


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wechat-v2-keys") / "keys"


@pytest.fixture
def gateway(keys_dir: Path) -> Iterator[SandboxGateway]:
    gw = SandboxGateway(keys_dir=keys_dir)
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def sandbox(gateway: SandboxGateway) -> WechatV2Protocol:
    protocol = protocol_of(gateway)
    protocol.books.reverse_not_before_s = NOT_BEFORE_S
    return protocol


@pytest.fixture
async def provider(sandbox: WechatV2Protocol) -> AsyncIterator[WechatV2Provider]:
    p = WechatV2Provider(sandbox.config(timeout_s=2), code_poll=FAST_POLICY)
    yield p
    await p.aclose()


_orders = itertools.count(1)
_codes = itertools.count(1)


def new_order(mode: PaymentMode = CODE, amount: int = 350, currency: str = "USD") -> Order:
    return Order(f"W{os.getpid()}-{next(_orders)}", amount, currency, "可乐 Cola", mode)


def new_code() -> str:
    """A WeChat payment code: 18 digits starting 10..15; fresh, since each is good for one charge."""
    return f"13{os.getpid() % 10_000:04d}{next(_codes):012d}"


async def until(provider: WechatV2Provider, order: Order, state: PaymentState, timeout: float = 5.0) -> PaymentStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await provider.query(order)
        if status.state is state:
            return status
        assert status.state is not PAID, "paid before expected"
        assert asyncio.get_running_loop().time() < deadline, f"still {status.state} after {timeout}s"
        await asyncio.sleep(0.03)


async def paid_code_order(gateway: SandboxGateway, provider: WechatV2Provider, **kw: int | str) -> Order:
    gateway.set_behaviour("pays", pay_delay_s=0, for_next=1)
    order = new_order(CODE, **kw)  # type: ignore[arg-type]
    assert (await provider.charge_code(order, new_code())).state is PAID
    return order


async def settle_like_the_engine(
    provider: WechatV2Provider, order: Order, charged_at: float
) -> CancelOutcome | PaymentStatus:
    """The engine's rule for a code still pending: query every interval_s until give_up_after_s,
    then reverse, but not before cancel_not_before_s after the charge."""
    policy, loop = provider.code_poll, asyncio.get_running_loop()
    while loop.time() - charged_at < policy.give_up_after_s:
        status = await provider.query(order)
        if status.state is not PENDING:
            return status
        await asyncio.sleep(policy.interval_s)
    await asyncio.sleep(max(0.0, charged_at + policy.cancel_not_before_s - loop.time()))
    return await provider.cancel(order)


def view(gateway: SandboxGateway, order: Order) -> dict[str, object]:
    found = gateway.order(order.order_id)
    assert found is not None and found["protocol"] == "wechat_v2"
    return found


# ---------------------------------------------------------------- payment codes (micropay)


@pytest.mark.parametrize("currency,amount", [("USD", 350), ("CNY", 1), ("JPY", 500)])
async def test_code_pays_at_once(
    gateway: SandboxGateway, provider: WechatV2Provider, currency: str, amount: int
) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0, for_next=1)
    order = new_order(CODE, amount, currency)
    status = await provider.charge_code(order, new_code())
    assert (status.state, status.amount_minor, status.currency) == (PAID, amount, currency)
    assert status.provider_txn_id and status.order_id == order.order_id
    assert await provider.query(order) == status
    v = view(gateway, order)
    assert v["paid"] and v["trade_type"] == "MICROPAY" and (v["amount_minor"], v["currency"]) == (amount, currency)


async def test_code_userpaying_for_n_polls_then_paid(gateway: SandboxGateway, provider: WechatV2Provider) -> None:
    gateway.set_behaviour("pays", pending_polls=3, for_next=1)
    order = new_order()
    first = await provider.charge_code(order, new_code())
    assert first.state is PENDING and first.buyer_scanned
    for _ in range(3):
        assert (await provider.query(order)).state is PENDING
    paid = await provider.query(order)
    assert (paid.state, paid.amount_minor, paid.currency) == (PAID, 350, "USD")
    assert view(gateway, order)["queries"] == 4


async def test_code_paid_after_pay_delay(gateway: SandboxGateway, provider: WechatV2Provider) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0.3, for_next=1)
    order = new_order()
    assert (await provider.charge_code(order, new_code())).state is PENDING
    assert (await until(provider, order, PAID)).amount_minor == 350


async def test_charging_again_with_the_same_code_is_a_retry(
    gateway: SandboxGateway, provider: WechatV2Provider
) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0, for_next=1)
    order, code = new_order(), new_code()
    first = await provider.charge_code(order, code)
    assert await provider.charge_code(order, code) == first  # a lost answer, retried: one payment
    with pytest.raises(OutcomeUnknown, match="already paid"):
        await provider.charge_code(order, new_code())  # ORDERPAID: query, never fail
    assert len([o for o in gateway.orders() if o["protocol"] == "wechat_v2"]) == 1


async def test_never_pays_is_reversed_once_old_enough(gateway: SandboxGateway, provider: WechatV2Provider) -> None:
    gateway.set_behaviour("never_pays", for_next=1)
    order = new_order()
    assert (await provider.charge_code(order, new_code())).state is PENDING
    # Counted from the charge's answer: WeChat creates the order while handling the request.
    charged_at = asyncio.get_running_loop().time()
    with pytest.raises(OutcomeUnknown, match="REVERSE_TOO_EARLY"):
        await provider.cancel(order)  # younger than the not-before age: refused, recall=Y
    outcome = await settle_like_the_engine(provider, order, charged_at)
    assert outcome == CancelOutcome(order.order_id, refunded=False)
    assert (await provider.query(order)).state is CLOSED
    assert not (await provider.cancel(order)).refunded  # safe to repeat
    v = view(gateway, order)
    assert v["reversed"] and not v["paid"] and v["trade_state"] == "REVOKED"


async def test_unpaid_micropay_is_revoked_automatically(
    gateway: SandboxGateway, sandbox: WechatV2Protocol, provider: WechatV2Provider
) -> None:
    sandbox.books.auto_revoke_s = 0.3
    gateway.set_behaviour("never_pays", for_next=1)
    slow = new_order()
    await provider.charge_code(slow, new_code())
    gateway.set_behaviour("pays", pay_delay_s=0.6, for_next=1)  # would pay, but too late
    late = new_order()
    await provider.charge_code(late, new_code())
    await asyncio.sleep(0.7)
    for order in (slow, late):
        assert (await provider.query(order)).state is CLOSED
        assert not (await provider.cancel(order)).refunded
        assert view(gateway, order)["trade_state"] == "REVOKED" and not view(gateway, order)["paid"]


@pytest.mark.parametrize("behaviour,err_code", [
    ("code_expired", "AUTHCODEEXPIRE"), ("code_used", "AUTH_CODE_ERROR"), ("no_balance", "NOTENOUGH"),
])
async def test_refused_codes_are_rejected(
    gateway: SandboxGateway, provider: WechatV2Provider, behaviour: str, err_code: str
) -> None:
    gateway.set_behaviour(behaviour, for_next=1)
    order = new_order()
    with pytest.raises(PaymentRejected) as info:
        await provider.charge_code(order, new_code())
    assert info.value.code == err_code and info.value.message
    assert (await provider.query(order)).state is CLOSED  # PAYERROR
    assert not view(gateway, order)["paid"]


async def test_a_code_is_good_for_one_charge(gateway: SandboxGateway, provider: WechatV2Provider) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0, for_next=2)
    code = new_code()
    assert (await provider.charge_code(new_order(), code)).state is PAID
    with pytest.raises(PaymentRejected) as info:
        await provider.charge_code(new_order(), code)
    assert info.value.code == "AUTH_CODE_ERROR"


async def test_codes_that_are_not_wechat_codes(gateway: SandboxGateway, provider: WechatV2Provider) -> None:
    with pytest.raises(PaymentRejected) as info:
        await provider.charge_code(new_order(), "281234567890123456")  # an Alipay code: WeChat says no
    assert info.value.code == "AUTH_CODE_INVALID" and "18位" in info.value.message
    with pytest.raises(PaymentRejected, match="AUTH_CODE_INVALID"):
        await provider.charge_code(new_order(), "13<x>]]>")  # refused here; never sent
    assert gateway.orders() == []


async def test_reversing_a_paid_code_gives_the_money_back(gateway: SandboxGateway, provider: WechatV2Provider) -> None:
    order = await paid_code_order(gateway, provider)
    await asyncio.sleep(NOT_BEFORE_S)
    assert (await provider.cancel(order)).refunded
    assert (await provider.query(order)).state is CLOSED
    v = view(gateway, order)
    assert v["paid"] and v["reversed"] and v["refunded_minor"] == 350
    with pytest.raises(PaymentRejected) as info:
        await provider.refund(order, "R-1")  # nothing left to refund
    assert info.value.code == "TRADE_STATE_ERROR"


async def test_payment_landing_during_the_reverse(gateway: SandboxGateway, provider: WechatV2Provider) -> None:
    gateway.set_behaviour("pays", pay_delay_s=30, for_next=1)
    order = new_order()
    await provider.charge_code(order, new_code())
    await asyncio.sleep(NOT_BEFORE_S)
    with pytest.raises(OutcomeUnknown, match="USERPAYING"):
        await provider.cancel(order)  # the tourist confirms as we reverse: WeChat says retry
    assert (await provider.query(order)).state is PAID
    assert (await provider.cancel(order)).refunded
    v = view(gateway, order)
    assert v["paid"] and v["reversed"] and v["refunded_minor"] == 350


# ---------------------------------------------------------------- Native QR (unifiedorder)


async def test_qr_unpaid_then_paid(gateway: SandboxGateway, provider: WechatV2Provider) -> None:
    gateway.set_behaviour("pays", scan_delay_s=0.2, pay_delay_s=0.2, for_next=1)
    order = new_order(QR, 1200, "HKD")
    qr = await provider.create_qr(order)
    assert qr.order_id == order.order_id and qr.qr_content.startswith("weixin://wxpay/bizpayurl?pr=")
    assert await provider.create_qr(order) == qr  # unifiedorder again: the same code_url
    pending = await provider.query(order)
    assert pending.state is PENDING and not pending.buyer_scanned  # NOTPAY says nothing about scans
    paid = await until(provider, order, PAID)
    assert (paid.amount_minor, paid.currency) == (1200, "HKD")
    v = view(gateway, order)
    assert v["trade_type"] == "NATIVE" and v["qr_code"] == qr.qr_content and v["paid"]


async def test_qr_cancel_closes_an_unpaid_order(gateway: SandboxGateway, provider: WechatV2Provider) -> None:
    gateway.set_behaviour("pays", scan_delay_s=0.3, pay_delay_s=0.1, for_next=1)
    order = new_order(QR)
    await provider.create_qr(order)
    assert not (await provider.cancel(order)).refunded
    await asyncio.sleep(0.5)  # the tourist would have paid by now
    assert (await provider.query(order)).state is CLOSED
    assert not (await provider.cancel(order)).refunded  # ORDERCLOSED: already done
    with pytest.raises(PaymentRejected) as info:
        await provider.create_qr(order)
    assert info.value.code == "ORDERCLOSED"
    assert not view(gateway, order)["paid"]


async def test_qr_cancel_after_payment_refunds_once(gateway: SandboxGateway, provider: WechatV2Provider) -> None:
    gateway.set_behaviour("pays", scan_delay_s=0, pay_delay_s=0, for_next=1)
    order = new_order(QR)
    await provider.create_qr(order)
    await until(provider, order, PAID)
    assert (await provider.cancel(order)).refunded  # closeorder says ORDERPAID: refund
    assert (await provider.cancel(order)).refunded  # again: the same out_refund_no, no new money
    refund = await provider.refund(order, order.order_id + "R1")  # the engine's own first refund id
    assert refund.amount_minor == 350
    assert (await provider.query(order)).state is PaymentState.REFUNDED
    v = view(gateway, order)
    assert (v["refunded_minor"], v["refund_count"]) == (350, 1)


# ---------------------------------------------------------------- refunds


async def test_refund_is_idempotent_per_out_refund_no(gateway: SandboxGateway, provider: WechatV2Provider) -> None:
    order = await paid_code_order(gateway, provider, amount=990, currency="CNY")
    first = await provider.refund(order, "R-1")
    assert first == await provider.refund(order, "R-1")
    assert (first.refund_id, first.amount_minor) == ("R-1", 990)
    with pytest.raises(PaymentRejected) as info:
        await provider.refund(order, "R-2")  # another id after a full refund: nothing left
    assert info.value.code == "ERROR"
    assert (await provider.query(order)).state is PaymentState.REFUNDED
    v = view(gateway, order)
    assert (v["refunded_minor"], v["refund_count"], v["refund_requests"]) == (990, 1, ["R-1"])


async def test_refund_of_an_unpaid_or_unknown_order_is_rejected(
    gateway: SandboxGateway, provider: WechatV2Provider
) -> None:
    gateway.set_behaviour("never_pays", for_next=1)
    order = new_order(QR)
    await provider.create_qr(order)
    with pytest.raises(PaymentRejected, match="TRADE_STATE_ERROR"):
        await provider.refund(order, "R-1")
    with pytest.raises(PaymentRejected, match="ORDERNOTEXIST"):
        await provider.refund(new_order(), "R-1")
    with pytest.raises(ValueError):
        await provider.refund(order, "no spaces allowed")


# ---------------------------------------------------------------- the contract and the registry


async def test_contract_and_registry(sandbox: WechatV2Protocol) -> None:
    config = KioskConfig(
        device={"id": "k1"},
        catalog={"slots": [{"id": "A1", "names": {"en": "Cola", "zh-Hans": "可乐"}, "price": 350,
                            "currency": "USD", "relay": 17, "button": 5}]},
        payments={"provider": "wechat_v2", "wechat_v2": sandbox.config().model_dump()},
    )
    provider = build_provider("wechat_v2", config)
    try:
        assert isinstance(provider, WechatV2Provider)
        assert provider.name == "wechat_v2" and provider.modes == frozenset({QR, CODE})
        assert provider.code_poll == CODE_POLL == CodePollPolicy(4, 45, 15)
        assert (await provider.query(new_order())).state is PaymentState.NOT_FOUND
    finally:
        await provider.aclose()
