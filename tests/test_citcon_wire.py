"""Citcon UPI: faults never read as money, access-token renewal, the envelope check, config and
secrets. Real HTTP against the sandbox gateway unless a test builds an httpx.Response itself."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiosk.config import CitconConfig, KioskConfig
from kiosk.payments.base import Order, OutcomeUnknown, PaymentMode, PaymentRejected, PaymentState
from kiosk.payments.citcon import CitconConfigError, CitconProvider
from kiosk.payments.citcon_client import CitconAuthError, CitconFailure, parse_envelope
from kiosk.payments.registry import build_provider
from kiosk.payments.sandbox import SandboxGateway
from kiosk.payments.sandbox.citcon import citcon_config, citcon_of

RESPONSE_FAULTS = [
    "bad_signature", "unsigned", "wrong_amount", "wrong_order_id", "wrong_currency",
    "http_500", "timeout", "drop_connection",
]
TRANSPORT_FAULTS = ["bad_signature", "unsigned", "http_500", "timeout", "drop_connection"]


@pytest.fixture
def gateway(running_gateway: SandboxGateway) -> SandboxGateway:
    running_gateway.reset()
    citcon_of(running_gateway).token_ttl_s = 24 * 3600.0
    return running_gateway


@pytest.fixture
async def provider(gateway: SandboxGateway) -> AsyncIterator[CitconProvider]:
    p = CitconProvider(citcon_config(gateway, timeout_s=0.5))
    yield p
    await p.aclose()


_counter = iter(range(1, 1_000_000))


def new_order(mode: PaymentMode = PaymentMode.QR) -> Order:
    return Order(f"W{os.getpid()}-{next(_counter)}", 350, "USD", "Cola", mode)


def alipay_code() -> str:
    return f"28{os.getpid() % 10_000:04d}{next(_counter):012d}"


def fault(gateway: SandboxGateway, method: str, name: str) -> None:
    gateway.add_fault(method, name, delay_s=1.0 if name == "timeout" else None)


async def paid_code_order(gateway: SandboxGateway, provider: CitconProvider) -> Order:
    gateway.set_behaviour("pays", pay_delay_s=0, for_next=1)
    order = new_order(PaymentMode.CODE)
    assert (await provider.charge_code(order, alipay_code())).state is PaymentState.PAID
    return order


# ---------------------------------------------------------------- faults: never a false PAID


@pytest.mark.parametrize("name", RESPONSE_FAULTS)
async def test_charge_fault_on_a_paid_code_is_unknown_then_query_tells(
    gateway: SandboxGateway, provider: CitconProvider, name: str
) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0, for_next=1)
    order = new_order(PaymentMode.CODE)
    fault(gateway, "citcon.charges", name)
    with pytest.raises(OutcomeUnknown):
        await provider.charge_code(order, alipay_code())
    status = await provider.query(order)
    assert (status.state, status.amount_minor, status.currency) == (PaymentState.PAID, 350, "USD")


@pytest.mark.parametrize("name", RESPONSE_FAULTS)
async def test_charge_fault_on_a_qr_is_unknown_then_the_retry_gets_the_same_qr(
    gateway: SandboxGateway, provider: CitconProvider, name: str
) -> None:
    gateway.set_behaviour("never_pays", for_next=1)
    order = new_order()
    fault(gateway, "citcon.charges", name)
    with pytest.raises(OutcomeUnknown):
        await provider.create_qr(order)
    assert (await provider.query(order)).state is PaymentState.PENDING
    qr = await provider.create_qr(order)
    assert [v["qr_code"] for v in gateway.orders()] == [qr.qr_content]


@pytest.mark.parametrize("name", RESPONSE_FAULTS)
async def test_inquiry_fault_is_unknown_then_the_truth(
    gateway: SandboxGateway, provider: CitconProvider, name: str
) -> None:
    order = await paid_code_order(gateway, provider)
    fault(gateway, "citcon.inquiry", name)
    with pytest.raises(OutcomeUnknown):
        await provider.query(order)
    assert (await provider.query(order)).state is PaymentState.PAID


@pytest.mark.parametrize("name", RESPONSE_FAULTS)
async def test_refund_fault_then_the_same_id_refunds_once(
    gateway: SandboxGateway, provider: CitconProvider, name: str
) -> None:
    order = await paid_code_order(gateway, provider)
    fault(gateway, "citcon.refunds", name)
    with pytest.raises(OutcomeUnknown):
        await provider.refund(order, "R-9")
    assert (await provider.refund(order, "R-9")).amount_minor == 350
    view = gateway.order(order.order_id)
    assert view is not None and (view["refunded_minor"], view["refund_requests"]) == (350, ["R-9"])


@pytest.mark.parametrize("name", RESPONSE_FAULTS)
async def test_cancel_fault_then_the_retry_refunds_once(
    gateway: SandboxGateway, provider: CitconProvider, name: str
) -> None:
    order = await paid_code_order(gateway, provider)
    fault(gateway, "citcon.cancels", name)
    with pytest.raises(OutcomeUnknown):
        await provider.cancel(order)
    assert (await provider.cancel(order)).refunded is True
    view = gateway.order(order.order_id)
    assert view is not None and (view["refunded_minor"], view["refund_count"]) == (350, 1)


@pytest.mark.parametrize("name", TRANSPORT_FAULTS)
async def test_token_fault_is_unknown_then_the_next_call_works(
    gateway: SandboxGateway, provider: CitconProvider, name: str
) -> None:
    order = await paid_code_order(gateway, provider)
    citcon_of(gateway).expire_tokens()
    fault(gateway, "citcon.access_tokens", name)
    with pytest.raises(OutcomeUnknown) as info:
        await provider.query(order)
    assert not isinstance(info.value, CitconAuthError)
    assert (await provider.query(order)).state is PaymentState.PAID


async def test_delay_within_the_timeout_still_answers(gateway: SandboxGateway, provider: CitconProvider) -> None:
    order = await paid_code_order(gateway, provider)
    gateway.add_fault("citcon.inquiry", "delay", delay_s=0.2)
    assert (await provider.query(order)).state is PaymentState.PAID


async def test_gateway_down_is_outcome_unknown(keys_dir: Path) -> None:
    gw = SandboxGateway(keys_dir=keys_dir)
    gw.start()
    config = citcon_config(gw, timeout_s=1)
    gw.stop()
    p = CitconProvider(config)
    try:
        with pytest.raises(OutcomeUnknown, match="ConnectError"):
            await p.query(new_order())
    finally:
        await p.aclose()


# ---------------------------------------------------------------- access tokens


async def test_the_token_is_cached(gateway: SandboxGateway, provider: CitconProvider) -> None:
    order = await paid_code_order(gateway, provider)
    for _ in range(3):
        await provider.query(order)
    assert citcon_of(gateway).tokens_issued == 1


async def test_an_expired_token_is_renewed_once_and_the_call_made_once(
    gateway: SandboxGateway, provider: CitconProvider
) -> None:
    await provider.query(new_order())  # gets a token
    citcon_of(gateway).expire_tokens()  # as if 24 h passed: the next call meets a 401
    gateway.set_behaviour("pays", pay_delay_s=0, for_next=1)
    order = new_order(PaymentMode.CODE)
    assert (await provider.charge_code(order, alipay_code())).state is PaymentState.PAID
    assert citcon_of(gateway).tokens_issued == 2
    assert len(gateway.orders()) == 1


async def test_a_token_near_its_expiry_is_renewed_before_use(
    gateway: SandboxGateway, provider: CitconProvider
) -> None:
    citcon_of(gateway).token_ttl_s = 30  # inside the provider's 60 s safety margin
    for _ in range(2):
        await provider.query(new_order())
    assert citcon_of(gateway).tokens_issued == 2


async def test_a_401_even_with_a_new_token_is_not_retried_forever(
    gateway: SandboxGateway, provider: CitconProvider
) -> None:
    citcon_of(gateway).token_ttl_s = 0  # every token is dead on arrival
    with pytest.raises(CitconAuthError, match="401 even with a new access token"):
        await provider.query(new_order())
    with pytest.raises(PaymentRejected) as info:
        await provider.create_qr(new_order())
    assert info.value.code == "unauthorized" and gateway.orders() == []
    assert citcon_of(gateway).tokens_issued == 4  # one renewal per call, no loop


async def test_a_wrong_api_key_is_refused_and_never_shown(
    gateway: SandboxGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = tmp_path / "wrong_key"
    key.write_text("sk_live_not_the_right_one\n")
    p = CitconProvider(citcon_config(gateway, api_key_file=key))
    try:
        with pytest.raises(PaymentRejected) as rejected:
            await p.create_qr(new_order())  # refused at the door: no charge was made
        with pytest.raises(CitconAuthError) as unknown:
            await p.query(new_order())
    finally:
        await p.aclose()
    assert rejected.value.code == "unauthorized" and gateway.orders() == []
    for text in (str(rejected.value), str(unknown.value), caplog.text):
        assert "not_the_right_one" not in text


async def test_secrets_and_codes_stay_out_of_logs_and_errors(
    gateway: SandboxGateway, provider: CitconProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    code = alipay_code()
    gateway.set_behaviour("pays", pay_delay_s=0, for_next=1)
    order = new_order(PaymentMode.CODE)
    await provider.charge_code(order, code)
    with pytest.raises(PaymentRejected) as info:
        await provider.charge_code(new_order(PaymentMode.CODE), code)  # used: refused
    citcon_of(gateway).expire_tokens()
    await provider.refund(order, "R-1")
    api_key = citcon_of(gateway).api_key_file.read_text().strip()
    for text in (caplog.text, str(info.value)):
        assert api_key not in text and code not in text and "tok_" not in text


# ---------------------------------------------------------------- the sandbox's wire, raw


async def test_sandbox_wire_envelopes_and_auth(gateway: SandboxGateway) -> None:
    base = citcon_config(gateway).api_url
    api_key = citcon_of(gateway).api_key_file.read_text().strip()
    async with httpx.AsyncClient(base_url=base) as client:
        bad = await client.post("/access-tokens", json={"token_type": "server"}, headers={"Authorization": "Bearer x"})
        assert bad.status_code == 401 and bad.json()["status"] == "fail" and bad.json()["app"] == "citcon-upi"
        unauthenticated = await client.post("/charges", json={})
        assert unauthenticated.status_code == 401
        token = (await client.post("/access-tokens", json={}, headers={"Authorization": f"Bearer {api_key}"})).json()
        assert token["status"] == "success" and isinstance(token["data"]["expiry"], int)
        auth = {"Authorization": "Bearer " + token["data"]["access_token"]}
        missing = await client.get("/transactions/nope", params={"id_type": "reference"}, headers=auth)
        assert (missing.status_code, missing.json()["data"]["code"]) == (404, "transaction_not_found")
        junk = await client.post("/charges", content=b"{", headers=auth)
        assert (junk.status_code, junk.json()["data"]["code"]) == (400, "invalid_request")
        float_amount = {"transaction": {"reference": "F1", "amount": 3.5, "currency": "USD"},
                        "payment": {"method": "alipay", "format": "qrcode"}}
        assert (await client.post("/charges", json=float_amount, headers=auth)).status_code == 400
    with pytest.raises(ValueError):
        gateway.add_fault("citcon.nope", "http_500")
    gateway.add_fault("citcon.charges", "http_500")  # the protocol's method names are known


# ---------------------------------------------------------------- the envelope check, offline


def _response(status: int, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content)


def _env(status: str, data: Any, **extra: Any) -> dict[str, Any]:
    return {"status": status, "data": data, "app": "citcon-upi", "version": "v1.0.0", **extra}


@pytest.mark.parametrize("status,body", [
    (200, b'{"status":"success","data":{"amount":350,"amount":1},"app":"citcon-upi","version":"v1"}'),
    (200, b'{"status":"success","data":{"amount":NaN},"app":"citcon-upi","version":"v1"}'),
    (200, {"status": "success", "data": {}, "app": "other", "version": "v1"}),
    (200, {"status": "success", "data": {}, "app": "citcon-upi"}),
    (200, {"status": "ok", "data": {}, "app": "citcon-upi", "version": "v1"}),
    (200, _env("success", [])),
    (400, _env("success", {})),
    (200, _env("fail", {"message": "no code"})),
    (302, _env("success", {})),
    (503, _env("fail", {"code": "system_error", "message": "busy"})),
    (200, b"<html>portal</html>"),
    (200, [_env("success", {})]),
])
def test_anything_but_a_well_formed_envelope_is_unknown(status: int, body: Any) -> None:
    with pytest.raises(OutcomeUnknown):
        parse_envelope("citcon.test", _response(status, body))


def test_fail_envelopes_carry_citcons_code() -> None:
    with pytest.raises(CitconFailure) as info:
        parse_envelope("citcon.test", _response(402, _env("fail", {"code": "insufficient_balance", "message": "m"})))
    assert (info.value.http_status, info.value.code, info.value.message) == (402, "insufficient_balance", "m")
    assert parse_envelope("citcon.test", _response(200, _env("success", {"a": 1}))) == {"a": 1}


# ---------------------------------------------------------------- configuration


def test_plain_http_only_to_loopback(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk_test_123\n")
    with pytest.raises(CitconConfigError, match="https"):
        CitconProvider(CitconConfig(api_url="http://api.citconpay.com/v1", api_key_file=key))
    CitconProvider(CitconConfig(api_url="https://api.sandbox.citconpay.com/v1", api_key_file=key))


def test_key_file_errors_name_the_key_never_its_content(tmp_path: Path) -> None:
    with pytest.raises(CitconConfigError, match=r"payments\.citcon\.api_key_file: .*does not exist"):
        CitconProvider(CitconConfig(api_key_file=tmp_path / "missing"))
    two = tmp_path / "two"
    two.write_text("sk_secret_one sk_secret_two\n")
    with pytest.raises(CitconConfigError) as info:
        CitconProvider(CitconConfig(api_key_file=two))
    assert "api_key_file" in str(info.value) and "secret" not in str(info.value)


def test_the_registry_builds_it_from_a_kiosk_config(gateway: SandboxGateway) -> None:
    config = KioskConfig.model_validate({
        "device": {"id": "kiosk-1"},
        "catalog": {"slots": [{"id": "A1", "names": {"en": "Cola", "zh-Hans": "可乐"}, "price": 350,
                               "currency": "USD", "relay": 17}]},
        "selection": {"mode": "single"},
        "payments": {"provider": "citcon", "citcon": citcon_config(gateway).model_dump()},
    })
    provider = build_provider("citcon", config)
    assert isinstance(provider, CitconProvider) and provider.name == "citcon"
