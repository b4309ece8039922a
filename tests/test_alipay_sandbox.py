"""AlipayProvider against the sandbox gateway: real RSA2 signatures over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from kiosk.payments import rsa2
from kiosk.payments.alipay import AlipayKeyError, AlipayProvider
from kiosk.payments.base import (
    Order,
    OutcomeUnknown,
    PaymentRejected,
    PaymentState,
)
from kiosk.payments.sandbox import SandboxGateway, ensure_keys
from tests.kiosk_harness import query_until as until

QUERY = "alipay.trade.query"
FAST = {"scan_delay_s": 0.1, "pay_delay_s": 0.1}


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandbox-keys")


@pytest.fixture
def gateway(keys_dir: Path) -> Iterator[SandboxGateway]:
    gw = SandboxGateway(keys_dir=keys_dir)
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
async def provider(gateway: SandboxGateway) -> AsyncIterator[AlipayProvider]:
    p = AlipayProvider(gateway.alipay_config(timeout_s=2))
    yield p
    await p.aclose()


_counter = iter(range(1, 1_000_000))


def new_order(amount_minor: int = 350, currency: str = "USD") -> Order:
    return Order(order_id=f"K{os.getpid()}-{next(_counter)}", amount_minor=amount_minor,
                 currency=currency, subject="可乐 Cola")


async def paid_order(gateway: SandboxGateway, provider: AlipayProvider, **kw: int | str) -> Order:
    gateway.set_behaviour("pays", for_next=1, **FAST)
    order = new_order(**kw)  # type: ignore[arg-type]
    await provider.create_qr(order)
    await until(provider, order, PaymentState.PAID)
    return order


# ---------------------------------------------------------------- the tourist's paths


@pytest.mark.parametrize("currency,amount", [("USD", 350), ("CNY", 1), ("JPY", 500)])
async def test_precreate_not_found_scanned_paid(
    gateway: SandboxGateway, provider: AlipayProvider, currency: str, amount: int
) -> None:
    gateway.set_behaviour("pays", scan_delay_s=0.4, pay_delay_s=0.4, for_next=1)
    order = new_order(amount, currency)
    qr = await provider.create_qr(order)
    assert qr.order_id == order.order_id and qr.qr_content.startswith("https://qr.alipay.com/")
    assert (await provider.create_qr(order)) == qr  # retrying precreate is idempotent
    assert (await provider.query(order)).state is PaymentState.NOT_FOUND
    pending = await until(provider, order, PaymentState.PENDING)
    assert pending.buyer_scanned and pending.provider_txn_id
    paid = await until(provider, order, PaymentState.PAID)
    assert (paid.amount_minor, paid.currency) == (amount, currency)
    assert paid.provider_txn_id == pending.provider_txn_id
    view = gateway.order(order.order_id)
    assert view is not None and view["paid"] and not view["jam"] and view["currency"] == currency


async def test_never_pays_stays_not_found_and_cancel_closes(
    gateway: SandboxGateway, provider: AlipayProvider
) -> None:
    gateway.set_behaviour("never_pays", for_next=1)
    order = new_order()
    await provider.create_qr(order)
    await asyncio.sleep(0.2)
    assert (await provider.query(order)).state is PaymentState.NOT_FOUND
    outcome = await provider.cancel(order)
    assert not outcome.refunded
    assert (await provider.query(order)).state is PaymentState.CLOSED
    assert (await provider.cancel(order)).refunded is False  # cancel is safe to repeat
    view = gateway.order(order.order_id)
    assert view is not None and view["closed"] and not view["paid"] and view["refund_count"] == 0


async def test_late_scan_after_cancel_never_pays(gateway: SandboxGateway, provider: AlipayProvider) -> None:
    gateway.set_behaviour("pays", scan_delay_s=0.5, pay_delay_s=0.1, for_next=1)
    order = new_order()
    await provider.create_qr(order)
    assert not (await provider.cancel(order)).refunded
    await asyncio.sleep(0.8)  # the tourist would have scanned and paid by now
    assert (await provider.query(order)).state is PaymentState.CLOSED
    view = gateway.order(order.order_id)
    assert view is not None and not view["scanned"] and not view["paid"]
    with pytest.raises(PaymentRejected) as info:
        await provider.create_qr(order)  # a closed out_trade_no cannot be reused
    assert info.value.code == "ACQ.TRADE_HAS_CLOSE"


async def test_cancel_while_scanned_closes_without_payment(
    gateway: SandboxGateway, provider: AlipayProvider
) -> None:
    gateway.set_behaviour("pays", scan_delay_s=0.05, pay_delay_s=1.0, for_next=1)
    order = new_order()
    await provider.create_qr(order)
    await until(provider, order, PaymentState.PENDING)
    assert not (await provider.cancel(order)).refunded
    await asyncio.sleep(1.1)
    assert (await provider.query(order)).state is PaymentState.CLOSED
    view = gateway.order(order.order_id)
    assert view is not None and view["scanned"] and not view["paid"]


async def test_cancel_after_payment_refunds_once(gateway: SandboxGateway, provider: AlipayProvider) -> None:
    order = await paid_order(gateway, provider)
    assert (await provider.cancel(order)).refunded
    assert (await provider.cancel(order)).refunded  # repeat: reports the refund, moves no money
    assert (await provider.query(order)).state is PaymentState.CLOSED
    view = gateway.order(order.order_id)
    assert view is not None
    assert (view["refunded_minor"], view["refund_count"]) == (350, 1)


async def test_refund_twice_with_the_same_id_refunds_once(
    gateway: SandboxGateway, provider: AlipayProvider
) -> None:
    order = await paid_order(gateway, provider)
    first = await provider.refund(order, "R-1")
    again = await provider.refund(order, "R-1")
    assert first == again and first.amount_minor == 350 and first.refund_id == "R-1"
    with pytest.raises(PaymentRejected) as info:
        await provider.refund(order, "R-2")  # another id after a full refund: nothing left
    assert info.value.code == "ACQ.TRADE_STATUS_ERROR"
    assert (await provider.cancel(order)).refunded
    view = gateway.order(order.order_id)
    assert view is not None
    assert (view["refunded_minor"], view["refund_count"], view["refund_requests"]) == (350, 1, ["R-1"])


async def test_refund_of_an_unpaid_order_is_rejected(gateway: SandboxGateway, provider: AlipayProvider) -> None:
    gateway.set_behaviour("never_pays", for_next=1)
    order = new_order()
    await provider.create_qr(order)
    with pytest.raises(PaymentRejected) as info:
        await provider.refund(order, "R-1")
    assert info.value.code == "ACQ.TRADE_NOT_EXIST"


async def test_pays_then_jam_is_visible_to_the_kiosk_simulator(
    gateway: SandboxGateway, provider: AlipayProvider
) -> None:
    gateway.set_behaviour("pays_then_jam", for_next=1, **FAST)
    order = new_order()
    await provider.create_qr(order)
    await until(provider, order, PaymentState.PAID)
    async with httpx.AsyncClient() as client:
        view = (await client.get(f"{gateway.url}/sandbox/orders/{order.order_id}")).json()
    assert view["jam"] and view["paid"] and view["behaviour"] == "pays_then_jam"


# ---------------------------------------------------------------- faults: never a false PAID


@pytest.mark.parametrize("fault", [
    "bad_signature", "unsigned", "wrong_amount", "wrong_order_id", "http_500", "timeout", "drop_connection",
])
async def test_query_fault_is_outcome_unknown_then_truth(gateway: SandboxGateway, fault: str) -> None:
    provider = AlipayProvider(gateway.alipay_config(timeout_s=0.5))
    try:
        order = await paid_order(gateway, provider)
        gateway.add_fault(QUERY, fault)
        with pytest.raises(OutcomeUnknown) as info:
            await provider.query(order)
        assert "PRIVATE" not in str(info.value)
        status = await provider.query(order)
        assert (status.state, status.amount_minor, status.currency) == (PaymentState.PAID, 350, "USD")
    finally:
        await provider.aclose()


@pytest.mark.parametrize("fault", ["bad_signature", "unsigned", "wrong_order_id", "drop_connection"])
async def test_query_fault_on_a_pending_order_never_reads_as_paid(
    gateway: SandboxGateway, provider: AlipayProvider, fault: str
) -> None:
    gateway.set_behaviour("pays", scan_delay_s=0.05, pay_delay_s=30, for_next=1)
    order = new_order()
    await provider.create_qr(order)
    await until(provider, order, PaymentState.PENDING)
    gateway.add_fault(QUERY, fault, count=2)
    for _ in range(2):
        with pytest.raises(OutcomeUnknown):
            await provider.query(order)
    assert (await provider.query(order)).state is PaymentState.PENDING


async def test_delay_fault_within_the_timeout_still_answers(
    gateway: SandboxGateway, provider: AlipayProvider
) -> None:
    order = await paid_order(gateway, provider)
    gateway.add_fault(QUERY, "delay", delay_s=0.2)
    assert (await provider.query(order)).state is PaymentState.PAID


@pytest.mark.parametrize("fault", ["drop_connection", "http_500", "wrong_amount", "bad_signature"])
async def test_lost_refund_answer_then_retry_refunds_once(
    gateway: SandboxGateway, provider: AlipayProvider, fault: str
) -> None:
    order = await paid_order(gateway, provider)
    gateway.add_fault("alipay.trade.refund", fault)
    with pytest.raises(OutcomeUnknown):
        await provider.refund(order, "R-9")
    outcome = await provider.refund(order, "R-9")  # same id: Alipay answers fund_change N
    assert outcome.amount_minor == 350
    view = gateway.order(order.order_id)
    assert view is not None and (view["refunded_minor"], view["refund_count"]) == (350, 1)


async def test_lost_cancel_answer_then_retry(gateway: SandboxGateway, provider: AlipayProvider) -> None:
    order = await paid_order(gateway, provider)
    gateway.add_fault("alipay.trade.cancel", "drop_connection")
    with pytest.raises(OutcomeUnknown):
        await provider.cancel(order)
    assert (await provider.cancel(order)).refunded
    view = gateway.order(order.order_id)
    assert view is not None and view["refund_count"] == 1


async def test_lost_precreate_answer_then_retry_gets_the_same_order(
    gateway: SandboxGateway, provider: AlipayProvider
) -> None:
    order = new_order()
    gateway.add_fault("*", "wrong_order_id")
    with pytest.raises(OutcomeUnknown):
        await provider.create_qr(order)
    qr = await provider.create_qr(order)
    assert len(gateway.orders()) == 1 and gateway.orders()[0]["qr_code"] == qr.qr_content


async def test_gateway_down_is_outcome_unknown(keys_dir: Path) -> None:
    gw = SandboxGateway(keys_dir=keys_dir)
    gw.start()
    config = gw.alipay_config(timeout_s=1)
    gw.stop()
    provider = AlipayProvider(config)
    try:
        with pytest.raises(OutcomeUnknown, match="ConnectError"):
            await provider.query(new_order())
    finally:
        await provider.aclose()


# ---------------------------------------------------------------- keys and signatures


async def test_sandbox_rejects_a_request_signed_with_the_wrong_key(
    gateway: SandboxGateway, tmp_path: Path
) -> None:
    rsa2.generate_key_pair(tmp_path / "other.pem", tmp_path / "other.pub.pem")
    impostor = AlipayProvider(gateway.alipay_config(app_private_key_file=tmp_path / "other.pem"))
    try:
        with pytest.raises(PaymentRejected) as info:
            await impostor.create_qr(new_order())
        assert info.value.code == "isv.invalid-signature"
        with pytest.raises(OutcomeUnknown, match=r"isv\.invalid-signature"):
            await impostor.query(new_order())
    finally:
        await impostor.aclose()
    assert gateway.orders() == []


async def test_sandbox_rejects_tampered_params_with_a_signed_alipay_error(gateway: SandboxGateway) -> None:
    params = {
        "app_id": "2021000000000001", "method": QUERY, "format": "JSON", "charset": "utf-8",
        "sign_type": "RSA2", "timestamp": "2024-05-01 12:00:00", "version": "1.0",
        "biz_content": '{"out_trade_no":"K1"}',
    }
    signed = rsa2.sign_request(params, rsa2.load_private_key_file(gateway.app_private_key_file))
    signed["biz_content"] = '{"out_trade_no":"K2"}'
    async with httpx.AsyncClient() as client:
        response = await client.post(gateway.gateway_url, data=signed)
    body = rsa2.extract_response(response.text, QUERY)
    assert (body.data["code"], body.data["sub_code"]) == ("40002", "isv.invalid-signature")
    assert rsa2.verify(body.raw, body.sign or "", rsa2.load_public_key_file(gateway.gateway_public_key_file))
    async with httpx.AsyncClient() as client:
        response = await client.post(gateway.gateway_url, data={**signed, "method": "no.such"})
    assert rsa2.extract_response(response.text, "no.such").key == "error_response"


async def test_wrong_alipay_public_key_means_nothing_is_trusted(gateway: SandboxGateway) -> None:
    # The classic misconfiguration: our own public key where Alipay's belongs.
    provider = AlipayProvider(gateway.alipay_config(alipay_public_key_file=gateway.app_public_key_file))
    try:
        with pytest.raises(OutcomeUnknown, match="signature does not verify"):
            await provider.query(new_order())
    finally:
        await provider.aclose()


def test_key_file_errors_name_the_config_key_not_the_key(gateway: SandboxGateway, tmp_path: Path) -> None:
    with pytest.raises(AlipayKeyError, match=r"payments\.alipay\.app_private_key_file: .*does not exist"):
        AlipayProvider(gateway.alipay_config(app_private_key_file=tmp_path / "nope.pem"))
    secret_lines = gateway.app_private_key_file.read_text().splitlines()[1:-1]
    broken = tmp_path / "broken.pem"
    broken.write_text("\n".join(["-----BEGIN PRIVATE KEY-----", *secret_lines[:-3], "-----END PRIVATE KEY-----"]))
    with pytest.raises(AlipayKeyError) as info:
        AlipayProvider(gateway.alipay_config(app_private_key_file=broken))
    assert "payments.alipay.app_private_key_file" in str(info.value)
    assert not any(line in str(info.value) for line in secret_lines)
    with pytest.raises(AlipayKeyError, match="alipay_public_key_file"):
        AlipayProvider(gateway.alipay_config(alipay_public_key_file=gateway.app_private_key_file))


async def test_no_key_material_in_logs(
    gateway: SandboxGateway, provider: AlipayProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    order = await paid_order(gateway, provider)
    gateway.add_fault(QUERY, "bad_signature")
    with pytest.raises(OutcomeUnknown):
        await provider.query(order)
    await provider.refund(order, "R-1")
    for path in (gateway.app_private_key_file, gateway.gateway_private_key_file):
        for line in path.read_text().splitlines()[1:-1]:
            assert line not in caplog.text


# ---------------------------------------------------------------- control API and CLI


async def test_control_api_over_http(gateway: SandboxGateway, provider: AlipayProvider) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        r = await client.post("/sandbox/behaviour", json={"behaviour": "never_pays", "for_next": 1})
        assert r.status_code == 200
        assert (await client.post("/sandbox/behaviour", json={"behaviour": "flies"})).status_code == 400
        assert (await client.post("/sandbox/faults", json={"method": QUERY, "fault": "nope"})).status_code == 400
        r = await client.post("/sandbox/faults", json={"method": QUERY, "fault": "unsigned", "count": 1})
        assert r.status_code == 200
        assert (await client.get("/sandbox/faults")).json()["faults"][0]["fault"] == "unsigned"
        order = new_order()
        await provider.create_qr(order)
        with pytest.raises(OutcomeUnknown, match="unsigned"):
            await provider.query(order)
        views = (await client.get("/sandbox/orders")).json()["orders"]
        assert [v["behaviour"] for v in views] == ["never_pays"]
        assert (await client.get("/sandbox/orders/none")).status_code == 404
        assert (await client.post("/sandbox/reset")).status_code == 200
        assert (await client.get("/sandbox/orders")).json()["orders"] == []


def test_cli_runs_in_the_foreground_until_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiosk.payments.sandbox", "--port", "0", "--keys", str(tmp_path / "keys")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("sandbox gateway:") and first.rstrip().endswith("/gateway.do")
        base = first.split()[-1].removesuffix("/gateway.do")
        info = json.loads(httpx.get(base + "/sandbox").text)
        assert info["gateway_url"] == first.split()[-1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        out = proc.stdout.read()
        assert "app_private_key.pem" in out and "BEGIN" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
    # Other wallet protocols of the sandbox keep their keys in the same directory.
    assert {p.name for p in (tmp_path / "keys").iterdir()} >= {
        "app_private_key.pem", "app_public_key.pem", "gateway_private_key.pem", "gateway_public_key.pem",
    }
    assert (tmp_path / "keys" / "app_private_key.pem").stat().st_mode & 0o077 == 0


def test_keys_are_created_once_and_a_lost_public_half_is_restored(tmp_path: Path) -> None:
    first = ensure_keys(tmp_path)
    before = first.gateway_private_key_file.read_bytes()
    public = first.gateway_public_key_file.read_bytes()
    first.gateway_public_key_file.unlink()
    again = ensure_keys(tmp_path)
    assert again == first
    assert first.gateway_private_key_file.read_bytes() == before
    assert first.gateway_public_key_file.read_bytes() == public
    assert first.app_private_key_file.stat().st_mode & 0o077 == 0
