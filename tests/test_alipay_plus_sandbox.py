"""AlipayPlusProvider against the sandbox's Antom protocol: real RSA256 signatures both ways over
real HTTP on loopback. Both scan directions, the tourist's paths, cancel, refund, notifyPayment."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kiosk.config import load_config
from kiosk.payments import rsa2
from kiosk.payments.alipay_plus import NOTIFY_ACK, AlipayPlusKeyError, AlipayPlusProvider, InvalidNotification
from kiosk.payments.base import (
    Order,
    OutcomeUnknown,
    PaymentMode,
    PaymentRejected,
    PaymentState,
    PaymentStatus,
    Provider,
)
from kiosk.payments.registry import build_provider
from kiosk.payments.sandbox import SandboxGateway
from kiosk.payments.sandbox.alipay_plus import AlipayPlusWire, wire_of

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "kiosk.example.toml"
_serial = itertools.count(1)


@pytest.fixture
def wire(gateway: SandboxGateway) -> AlipayPlusWire:
    return wire_of(gateway)


@pytest.fixture
async def provider(wire: AlipayPlusWire) -> AsyncIterator[AlipayPlusProvider]:
    p = AlipayPlusProvider(wire.config(timeout_s=2))
    yield p
    await p.aclose()


def new_order(amount_minor: int = 599, currency: str = "USD", mode: PaymentMode = PaymentMode.QR) -> Order:
    return Order(f"K{next(_serial):06d}", amount_minor, currency, "可乐 Cola", mode)


def new_code() -> str:
    return f"281001{next(_serial):018d}"  # an Alipay+ code-standard payment code, 24 digits


async def until(provider: Provider, order: Order, state: PaymentState, timeout: float = 5) -> PaymentStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await provider.query(order)
        if status.state is state:
            return status
        assert status.state is not PaymentState.PAID, "paid before expected"
        assert asyncio.get_running_loop().time() < deadline, f"still {status.state} after {timeout}s"
        await asyncio.sleep(0.02)


async def paid_qr_order(gateway: SandboxGateway, provider: Provider, **kw: Any) -> Order:
    gateway.set_behaviour("pays", for_next=1, scan_delay_s=0.05, pay_delay_s=0.05)
    order = new_order(**kw)
    await provider.create_qr(order)
    await until(provider, order, PaymentState.PAID)
    return order


def view(gateway: SandboxGateway, order: Order) -> dict[str, Any]:
    found = gateway.order(order.order_id)
    assert found is not None and found["protocol"] == "alipay_plus"
    return found


# ---------------------------------------------------------------- order code (the kiosk shows a QR)


async def test_order_code_scanned_then_paid(gateway: SandboxGateway, provider: AlipayPlusProvider) -> None:
    gateway.set_behaviour("pays", scan_delay_s=0.1, pay_delay_s=0.2)
    order = new_order()
    qr = await provider.create_qr(order)
    assert qr.order_id == order.order_id and qr.qr_content == view(gateway, order)["qr_code"]
    pending = await provider.query(order)
    assert pending.state is PaymentState.PENDING and not pending.buyer_scanned
    paid = await until(provider, order, PaymentState.PAID)
    assert (paid.amount_minor, paid.currency) == (599, "USD")
    assert paid.provider_txn_id == view(gateway, order)["payment_id"]
    assert view(gateway, order)["paid"] and view(gateway, order)["mode"] == "qr"


async def test_creating_the_same_order_code_twice_is_one_payment(
    gateway: SandboxGateway, provider: AlipayPlusProvider
) -> None:
    gateway.set_behaviour("never_pays")
    order = new_order()
    first, again = await provider.create_qr(order), await provider.create_qr(order)
    assert first == again and len(gateway.orders()) == 1


@pytest.mark.parametrize(("minor", "currency"), [(599, "JPY"), (1250, "BHD"), (12345, "CLF"), (150000, "IDR")])
async def test_amounts_travel_in_minor_units(
    gateway: SandboxGateway, provider: AlipayPlusProvider, minor: int, currency: str
) -> None:
    order = await paid_qr_order(gateway, provider, amount_minor=minor, currency=currency)
    assert (view(gateway, order)["amount_minor"], view(gateway, order)["currency"]) == (minor, currency)


async def test_a_price_antom_cannot_take_is_refused_before_any_request(
    gateway: SandboxGateway, provider: AlipayPlusProvider
) -> None:
    with pytest.raises(PaymentRejected) as err:
        await provider.create_qr(new_order(1050, "IDR"))  # 10.50 IDR: Antom takes whole rupiah only
    assert err.value.code == "RULE_VIOLATION" and gateway.orders() == []


# ---------------------------------------------------------------- payment codes (the kiosk scans)


async def test_payment_code_paid_at_once(gateway: SandboxGateway, provider: AlipayPlusProvider) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0)
    order, code = new_order(mode=PaymentMode.CODE), new_code()
    status = await provider.charge_code(order, code)
    assert status.state is PaymentState.PAID and (status.amount_minor, status.currency) == (599, "USD")
    seen = view(gateway, order)
    assert seen["mode"] == "code" and seen["code"] == code[:4] + "*" * 16 + code[-4:]
    assert (await provider.query(order)).state is PaymentState.PAID


async def test_payment_code_processing_for_some_inquiries_then_paid(
    gateway: SandboxGateway, provider: AlipayPlusProvider
) -> None:
    gateway.set_behaviour("pays", pending_polls=2)
    order = new_order(mode=PaymentMode.CODE)
    first = await provider.charge_code(order, new_code())
    assert first.state is PaymentState.PENDING and first.buyer_scanned
    states = [(await provider.query(order)).state for _ in range(3)]
    assert states == [PaymentState.PENDING, PaymentState.PENDING, PaymentState.PAID]


async def test_payment_code_confirmed_in_the_wallet_after_a_while(
    gateway: SandboxGateway, provider: AlipayPlusProvider
) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0.2)
    order = new_order(mode=PaymentMode.CODE)
    assert (await provider.charge_code(order, new_code())).state is PaymentState.PENDING
    paid = await until(provider, order, PaymentState.PAID)
    assert paid.amount_minor == 599


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [("code_expired", "EXPIRED_CODE"), ("code_used", "INVALID_PAYMENT_CODE"),
     ("no_balance", "USER_BALANCE_NOT_ENOUGH")],
)
async def test_wallet_refusals_are_definitive(
    gateway: SandboxGateway, provider: AlipayPlusProvider, behaviour: str, code: str
) -> None:
    gateway.set_behaviour(behaviour)
    order, scanned = new_order(mode=PaymentMode.CODE), new_code()
    with pytest.raises(PaymentRejected) as err:
        await provider.charge_code(order, scanned)
    assert err.value.code == code
    assert (await provider.query(order)).state is PaymentState.CLOSED
    with pytest.raises(PaymentRejected) as again:  # idempotent: the same answer for the same request
        await provider.charge_code(order, scanned)
    assert again.value.code == code


async def test_a_code_is_single_use_and_must_look_like_one(
    gateway: SandboxGateway, provider: AlipayPlusProvider
) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0)
    code = new_code()
    assert (await provider.charge_code(new_order(mode=PaymentMode.CODE), code)).state is PaymentState.PAID
    for bad in (code, "1234567890123456789"):
        with pytest.raises(PaymentRejected) as err:
            await provider.charge_code(new_order(mode=PaymentMode.CODE), bad)
        assert err.value.code == "INVALID_PAYMENT_CODE"


async def test_charging_the_same_order_again_gives_the_same_payment(
    gateway: SandboxGateway, provider: AlipayPlusProvider
) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0)
    order, code = new_order(mode=PaymentMode.CODE), new_code()
    first = await provider.charge_code(order, code)
    again = await provider.charge_code(order, code)
    assert first == again and view(gateway, order)["refunded_minor"] == 0 and len(gateway.orders()) == 1
    with pytest.raises(PaymentRejected) as err:
        await provider.charge_code(Order(order.order_id, 600, "USD", "x", PaymentMode.CODE), code)
    assert err.value.code == "REPEAT_REQ_INCONSISTENT"


async def test_secrets_stay_out_of_logs_and_errors(
    gateway: SandboxGateway, provider: AlipayPlusProvider, wire: AlipayPlusWire, caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway.set_behaviour("no_balance")
    code = new_code()
    with pytest.raises(PaymentRejected) as err:
        await provider.charge_code(new_order(mode=PaymentMode.CODE), code)
    assert code not in str(err.value) and code not in caplog.text
    key_text = wire.merchant_private_key_file.read_text()
    bad = tmp_path / "bad.pem"
    bad.write_text(key_text[:200])
    with pytest.raises(AlipayPlusKeyError) as key_err:
        AlipayPlusProvider(wire.config(private_key_file=bad))
    assert "private_key_file" in str(key_err.value) and key_text[40:80] not in str(key_err.value)


# ---------------------------------------------------------------- query, cancel, refund


async def test_an_order_antom_never_saw_is_not_found(provider: AlipayPlusProvider) -> None:
    order = new_order()
    assert (await provider.query(order)).state is PaymentState.NOT_FOUND
    assert not (await provider.cancel(order)).refunded


async def test_cancel_before_payment_closes_it_for_good(gateway: SandboxGateway, provider: AlipayPlusProvider) -> None:
    gateway.set_behaviour("pays", scan_delay_s=0.15, pay_delay_s=0.05)
    order = new_order()
    await provider.create_qr(order)
    assert not (await provider.cancel(order)).refunded
    await asyncio.sleep(0.3)  # the tourist's later payment fails on a closed order
    assert (await provider.query(order)).state is PaymentState.CLOSED
    seen = view(gateway, order)
    assert seen["closed"] and not seen["paid"] and seen["refunded_minor"] == 0
    assert not (await provider.cancel(order)).refunded  # idempotent


async def test_cancel_of_a_pending_payment_code(gateway: SandboxGateway, provider: AlipayPlusProvider) -> None:
    gateway.set_behaviour("never_pays")
    order = new_order(mode=PaymentMode.CODE)
    assert (await provider.charge_code(order, new_code())).state is PaymentState.PENDING
    assert (await provider.query(order)).state is PaymentState.PENDING
    assert not (await provider.cancel(order)).refunded
    assert (await provider.query(order)).state is PaymentState.CLOSED


async def test_cancel_after_payment_refunds_it(gateway: SandboxGateway, provider: AlipayPlusProvider,
                                               wire: AlipayPlusWire) -> None:
    order = await paid_qr_order(gateway, provider)
    assert (await provider.cancel(order)).refunded
    assert view(gateway, order)["refunded_minor"] == 599 and view(gateway, order)["paid"]
    assert (await provider.query(order)).state is PaymentState.CLOSED
    # A kiosk restarted since (nothing remembered) still learns it was paid before cancelling.
    gateway.set_behaviour("pays", pay_delay_s=0)
    code_order = new_order(mode=PaymentMode.CODE)
    await provider.charge_code(code_order, new_code())
    async with AlipayPlusProvider(wire.config()) as fresh:
        assert (await fresh.cancel(code_order)).refunded


async def test_refund_is_idempotent_per_refund_id(gateway: SandboxGateway, provider: AlipayPlusProvider,
                                                  wire: AlipayPlusWire) -> None:
    order = await paid_qr_order(gateway, provider, amount_minor=500, currency="JPY")
    first = await provider.refund(order, order.order_id + "R1")
    again = await provider.refund(order, order.order_id + "R1")
    async with AlipayPlusProvider(wire.config()) as fresh:  # after a restart: paymentId by inquiry
        after_restart = await fresh.refund(order, order.order_id + "R1")
    assert first == again == after_restart and first.amount_minor == 500
    seen = view(gateway, order)
    assert seen["refund_count"] == 1 and seen["refunded_minor"] == 500
    assert seen["refund_requests"] == [f"{order.order_id}R1"]
    with pytest.raises(PaymentRejected) as err:  # a second refund id would refund twice
        await provider.refund(order, order.order_id + "R2")
    assert err.value.code == "REFUND_AMOUNT_EXCEED" and view(gateway, order)["refunded_minor"] == 500


async def test_refund_of_an_unpaid_order_is_refused(gateway: SandboxGateway, provider: AlipayPlusProvider) -> None:
    gateway.set_behaviour("never_pays")
    order = new_order()
    await provider.create_qr(order)
    with pytest.raises(PaymentRejected):
        await provider.refund(order, order.order_id + "R1")
    assert view(gateway, order)["refund_count"] == 0


async def test_production_paths_and_the_registry(gateway: SandboxGateway, wire: AlipayPlusWire) -> None:
    payments = {"provider": "alipay_plus", "alipay_plus": wire.config(sandbox=False).model_dump(mode="json")}
    provider = build_provider("alipay_plus", load_config(EXAMPLE, payments=payments))
    try:
        order = await paid_qr_order(gateway, provider)
        assert view(gateway, order)["paid"]
    finally:
        await provider.aclose()


# ---------------------------------------------------------------- notifyPayment


class _Receiver(ThreadingHTTPServer):
    """The merchant's notify endpoint: records each POST, acks only what verifies."""

    def __init__(self, provider: AlipayPlusProvider) -> None:
        self.provider = provider
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.statuses: list[PaymentStatus | str] = []
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = dict(self.headers.items())
        self.server.received.append((self.path, headers, body))
        try:
            self.server.statuses.append(self.server.provider.verify_notification(headers, body, self.path))
            status, answer = 200, NOTIFY_ACK
        except InvalidNotification as exc:
            self.server.statuses.append(str(exc))
            status, answer = 400, b"{}"
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def receiver(provider: AlipayPlusProvider) -> Iterator[_Receiver]:
    server = _Receiver(provider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_notifications_verify_and_duplicates_read_the_same(
    gateway: SandboxGateway, wire: AlipayPlusWire, receiver: _Receiver
) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/kiosk/antom/notify"
    async with AlipayPlusProvider(wire.config(notify_url=url)) as provider:
        gateway.set_behaviour("pays", pay_delay_s=0)
        order = new_order(mode=PaymentMode.CODE)
        await provider.charge_code(order, new_code())
        assert await asyncio.to_thread(wire.deliver_notifications, order.order_id, copies=2) == [200, 200]
    first, second = receiver.statuses
    assert isinstance(first, PaymentStatus) and first == second
    assert (first.order_id, first.state, first.amount_minor, first.currency) == (order.order_id, PaymentState.PAID,
                                                                                  599, "USD")
    assert receiver.received[0][0] == "/kiosk/antom/notify"


async def test_tampered_or_misdirected_notifications_are_rejected(
    gateway: SandboxGateway, provider: AlipayPlusProvider, wire: AlipayPlusWire
) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0)
    order = new_order(mode=PaymentMode.CODE)
    await provider.charge_code(order, new_code())
    [message] = wire.notifications(order.order_id)
    assert provider.verify_notification(message.headers, message.body, message.path).state is PaymentState.PAID
    body = json.loads(message.body)
    body["paymentAmount"]["value"] = "1"
    forged = json.dumps(body, separators=(",", ":")).encode()
    other_client = {**message.headers, "Client-Id": "SANDBOX_SOMEONE_ELSE"}
    unsigned = {k: v for k, v in message.headers.items() if k != "Signature"}
    for headers, raw, path in [
        (message.headers, forged, message.path),  # amount changed after signing
        (message.headers, message.body, "/another/path"),  # signed for another endpoint
        (other_client, message.body, message.path),
        (unsigned, message.body, message.path),
        (message.headers, message.body + b" ", message.path),
    ]:
        with pytest.raises(InvalidNotification):
            provider.verify_notification(headers, raw, path)
    with pytest.raises(OutcomeUnknown):  # InvalidNotification is an OutcomeUnknown: query instead
        provider.verify_notification(unsigned, message.body, message.path)


async def test_a_failed_payment_notifies_closed(gateway: SandboxGateway, provider: AlipayPlusProvider,
                                               wire: AlipayPlusWire) -> None:
    gateway.set_behaviour("code_expired")
    order = new_order(mode=PaymentMode.CODE)
    with pytest.raises(PaymentRejected):
        await provider.charge_code(order, new_code())
    [message] = wire.notifications(order.order_id)
    assert provider.verify_notification(message.headers, message.body, message.path).state is PaymentState.CLOSED
    gateway.set_behaviour("never_pays")
    pending = new_order()
    await provider.create_qr(pending)
    assert wire.notifications(pending.order_id) == []  # nothing final to tell yet


async def test_a_wrong_key_is_refused_by_the_sandbox(
    gateway: SandboxGateway, wire: AlipayPlusWire, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    rsa2.generate_key_pair(other, tmp_path / "other.pub")
    async with AlipayPlusProvider(wire.config(private_key_file=other)) as provider:
        with pytest.raises(PaymentRejected) as err:
            await provider.create_qr(new_order())
    assert err.value.code == "INVALID_SIGNATURE" and gateway.orders() == []
    async with AlipayPlusProvider(wire.config(key_version=2)) as provider:
        with pytest.raises(PaymentRejected) as err:
            await provider.create_qr(new_order())
    assert err.value.code == "KEY_NOT_FOUND"
    # Our own public key where Alipay's belongs: nothing Antom says can be verified.
    async with AlipayPlusProvider(wire.config(alipay_public_key_file=wire.merchant_public_key_file)) as provider:
        with pytest.raises(OutcomeUnknown):
            await provider.create_qr(new_order())
