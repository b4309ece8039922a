"""What the WeChat Pay v2 provider refuses to believe: every fault the sandbox can inject, answers
signed with another key or downgraded to MD5, /secapi/ without the right client certificate, and
secrets that must stay out of logs and exceptions."""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_wechat_v2_sandbox import (  # fixtures and helpers shared with the path tests
    CODE,
    NOT_BEFORE_S,
    PAID,
    PENDING,
    QR,
    gateway,
    keys_dir,
    new_code,
    new_order,
    paid_code_order,
    provider,
    sandbox,
    until,
    view,
)

from kiosk.payments import wechat_v2_wire as wx
from kiosk.payments.base import OutcomeUnknown, PaymentState
from kiosk.payments.sandbox import SandboxGateway
from kiosk.payments.sandbox.faults import FAULTS
from kiosk.payments.sandbox.wechat_v2 import WechatV2Protocol
from kiosk.payments.sandbox.wechat_v2_tls import ensure_files
from kiosk.payments.wechat_v2 import WechatV2ConfigError, WechatV2Provider

__all__ = ["gateway", "keys_dir", "provider", "sandbox"]  # fixtures, imported for pytest
TIMEOUT_S = 0.5
# Every fault that spoils an answer (delay within the timeout does not; callbacks are v3's).
SPOILING = [f for f in FAULTS if f not in ("delay", "duplicate_notification")] + ["slow"]


def add_fault(gateway: SandboxGateway, method: str, fault: str, count: int = 1) -> None:
    """"slow" is a delay fault longer than the client's timeout."""
    if fault == "slow":
        gateway.add_fault(method, "delay", count=count, delay_s=TIMEOUT_S * 2)
    else:
        gateway.add_fault(method, fault, count=count, delay_s=TIMEOUT_S * 2 if fault == "timeout" else None)


@pytest.fixture
async def impatient(sandbox: WechatV2Protocol) -> Any:
    p = WechatV2Provider(sandbox.config(timeout_s=TIMEOUT_S))
    yield p
    await p.aclose()


def api_key(sandbox: WechatV2Protocol) -> str:
    return sandbox.files.api_key_file.read_text().strip()


# ---------------------------------------------------------------- faults: never a false PAID


@pytest.mark.parametrize("fault", SPOILING)
async def test_query_fault_is_unknown_then_the_truth(
    gateway: SandboxGateway, sandbox: WechatV2Protocol, impatient: WechatV2Provider, fault: str
) -> None:
    order = await paid_code_order(gateway, impatient)
    add_fault(gateway, "wechat.orderquery", fault)
    with pytest.raises(OutcomeUnknown) as info:
        await impatient.query(order)
    assert api_key(sandbox) not in str(info.value)
    status = await impatient.query(order)
    assert (status.state, status.amount_minor, status.currency) == (PAID, 350, "USD")


@pytest.mark.parametrize("fault", SPOILING)
async def test_micropay_fault_is_never_paid_and_the_query_finds_the_payment(
    gateway: SandboxGateway, impatient: WechatV2Provider, fault: str
) -> None:
    gateway.set_behaviour("pays", pay_delay_s=0, for_next=1)
    order = new_order(CODE)
    add_fault(gateway, "wechat.micropay", fault)
    with pytest.raises(OutcomeUnknown):
        await impatient.charge_code(order, new_code())
    assert (await impatient.query(order)).state is PAID  # the charge did happen; only its answer was spoiled


@pytest.mark.parametrize("fault", ["bad_signature", "unsigned", "wrong_order_id", "wrong_amount", "wrong_currency"])
async def test_spoiled_answers_about_a_pending_order_never_read_as_paid(
    gateway: SandboxGateway, impatient: WechatV2Provider, fault: str
) -> None:
    gateway.set_behaviour("never_pays", for_next=1)
    order = new_order(CODE)
    await impatient.charge_code(order, new_code())
    add_fault(gateway, "wechat.orderquery", fault, count=2)
    for _ in range(2):
        with pytest.raises(OutcomeUnknown):
            await impatient.query(order)
    assert (await impatient.query(order)).state is PENDING


async def test_a_delay_within_the_timeout_still_answers(gateway: SandboxGateway, impatient: WechatV2Provider) -> None:
    order = await paid_code_order(gateway, impatient)
    gateway.add_fault("wechat.orderquery", "delay", delay_s=TIMEOUT_S / 3)
    assert (await impatient.query(order)).state is PAID


@pytest.mark.parametrize("fault", SPOILING)
async def test_lost_refund_answer_then_the_same_id_refunds_once(
    gateway: SandboxGateway, impatient: WechatV2Provider, fault: str
) -> None:
    order = await paid_code_order(gateway, impatient)
    add_fault(gateway, "wechat.refund", fault)
    with pytest.raises(OutcomeUnknown):
        await impatient.refund(order, "R-9")
    assert (await impatient.refund(order, "R-9")).amount_minor == 350
    v = view(gateway, order)
    assert (v["refunded_minor"], v["refund_count"]) == (350, 1)


@pytest.mark.parametrize("fault", SPOILING)
async def test_lost_reverse_answer_then_retry(gateway: SandboxGateway, impatient: WechatV2Provider, fault: str) -> None:
    order = await paid_code_order(gateway, impatient)
    await asyncio.sleep(NOT_BEFORE_S)
    add_fault(gateway, "wechat.reverse", fault)
    with pytest.raises(OutcomeUnknown):
        await impatient.cancel(order)
    await impatient.cancel(order)  # the retry finds it reversed; the money went back once
    assert (await impatient.query(order)).state is PaymentState.CLOSED
    v = view(gateway, order)
    assert v["reversed"] and v["refunded_minor"] == 350 and v["refund_count"] == 0


@pytest.mark.parametrize("fault", SPOILING)
async def test_lost_unifiedorder_answer_then_retry_gets_the_same_qr(
    gateway: SandboxGateway, impatient: WechatV2Provider, fault: str
) -> None:
    order = new_order(QR)
    add_fault(gateway, "wechat.unifiedorder", fault)
    with pytest.raises(OutcomeUnknown):
        await impatient.create_qr(order)
    qr = await impatient.create_qr(order)
    assert view(gateway, order)["qr_code"] == qr.qr_content
    assert len([o for o in gateway.orders() if o["protocol"] == "wechat_v2"]) == 1


@pytest.mark.parametrize("fault", SPOILING)
async def test_lost_closeorder_answer_then_retry(
    gateway: SandboxGateway, impatient: WechatV2Provider, fault: str
) -> None:
    gateway.set_behaviour("never_pays", for_next=1)
    order = new_order(QR)
    await impatient.create_qr(order)
    add_fault(gateway, "wechat.closeorder", fault)
    with pytest.raises(OutcomeUnknown):
        await impatient.cancel(order)
    assert not (await impatient.cancel(order)).refunded
    assert view(gateway, order)["closed"]


# ---------------------------------------------------------------- signatures


async def test_a_request_signed_with_the_wrong_key_is_refused(
    gateway: SandboxGateway, sandbox: WechatV2Protocol, tmp_path: Path
) -> None:
    other = tmp_path / "other_api_key.txt"
    other.write_text("0" * 32)
    impostor = WechatV2Provider(sandbox.config(api_key_file=other))
    try:
        with pytest.raises(OutcomeUnknown, match="签名错误"):
            await impostor.charge_code(new_order(), new_code())
    finally:
        await impostor.aclose()
    assert gateway.orders() == []


class _Impostor(ThreadingHTTPServer):
    """A server on loopback that answers every request with `reply` (real HTTP, fake WeChat)."""

    reply: bytes = b""


class _ImpostorHandler(BaseHTTPRequestHandler):
    server: _Impostor

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.reply)))
        self.end_headers()
        self.wfile.write(self.server.reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[_Impostor]:
    server = _Impostor(("127.0.0.1", 0), _ImpostorHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_answers_signed_with_another_key_or_md5_are_not_believed(
    sandbox: WechatV2Protocol, impostor: _Impostor
) -> None:
    order = new_order()
    paid = {
        "return_code": "SUCCESS", "appid": sandbox.appid, "mch_id": sandbox.mch_id, "nonce_str": wx.nonce(),
        "result_code": "SUCCESS", "trade_state": "SUCCESS", "out_trade_no": order.order_id,
        "total_fee": "350", "fee_type": "USD", "transaction_id": "4200000000000000000000000001",
    }
    host, port = impostor.server_address[:2]
    provider = WechatV2Provider(sandbox.config(tls=False, api_url=f"http://{host!s}:{port}"))
    try:
        for key, sign_type in (("f" * 32, wx.HMAC_SHA256), (api_key(sandbox), wx.MD5)):
            body = {**paid, "sign": wx.sign(paid, key, sign_type)}
            impostor.reply = wx.to_xml(body)
            with pytest.raises(OutcomeUnknown, match="signature does not verify"):
                await provider.query(order)
        # The same answer signed properly is believed: the two above failed on their signature alone.
        impostor.reply = wx.to_xml({**paid, "sign": wx.sign(paid, api_key(sandbox))})
        assert (await provider.query(order)).state is PAID
    finally:
        await provider.aclose()


# ---------------------------------------------------------------- client certificate and TLS


async def test_secapi_without_a_client_certificate_is_refused(
    gateway: SandboxGateway, sandbox: WechatV2Protocol
) -> None:
    plain = WechatV2Provider(sandbox.config(tls=False))  # the gateway's HTTP port: no TLS, no certificate
    try:
        order = await paid_code_order(gateway, plain)  # /pay/ needs no certificate
        with pytest.raises(OutcomeUnknown, match="client certificate"):
            await plain.refund(order, "R-1")
        await asyncio.sleep(NOT_BEFORE_S)
        with pytest.raises(OutcomeUnknown):
            await plain.cancel(order)
    finally:
        await plain.aclose()
    v = view(gateway, order)
    assert v["paid"] and not v["reversed"] and v["refunded_minor"] == 0


async def test_a_certificate_the_sandbox_ca_did_not_sign_is_refused(
    gateway: SandboxGateway, sandbox: WechatV2Protocol, provider: WechatV2Provider, tmp_path: Path
) -> None:
    order = await paid_code_order(gateway, provider)
    stranger = ensure_files(tmp_path / "stranger", sandbox.mch_id)  # its own CA
    rogue = WechatV2Provider(sandbox.config(
        client_cert_file=stranger.client_cert_file, client_key_file=stranger.client_key_file
    ))
    try:
        with pytest.raises(OutcomeUnknown):
            await rogue.refund(order, "R-1")
    finally:
        await rogue.aclose()
    assert view(gateway, order)["refund_count"] == 0


async def test_another_merchants_certificate_is_refused(
    gateway: SandboxGateway, sandbox: WechatV2Protocol, provider: WechatV2Provider, tmp_path: Path
) -> None:
    order = await paid_code_order(gateway, provider)
    other_dir = tmp_path / "other-merchant"
    other_dir.mkdir()
    for name in ("wechat_v2_ca.pem", "wechat_v2_ca_key.pem"):  # the same CA issues a cert for mch_id 999
        shutil.copy(sandbox.files.ca_file.parent / name, other_dir / name)
    other = ensure_files(other_dir, "999")
    wrong = WechatV2Provider(sandbox.config(client_cert_file=other.client_cert_file,
                                            client_key_file=other.client_key_file))
    try:
        with pytest.raises(OutcomeUnknown, match="证书错误"):
            await wrong.refund(order, "R-1")
    finally:
        await wrong.aclose()
    assert view(gateway, order)["refund_count"] == 0


async def test_the_servers_certificate_is_checked(sandbox: WechatV2Protocol) -> None:
    trusting_public_cas = WechatV2Provider(sandbox.config(ca_file=None))
    try:
        with pytest.raises(OutcomeUnknown, match="ConnectError"):
            await trusting_public_cas.query(new_order())
    finally:
        await trusting_public_cas.aclose()


async def test_the_tls_listener_stops_with_the_gateway(keys_dir: Path) -> None:
    gw = SandboxGateway(keys_dir=keys_dir)
    gw.start()
    from kiosk.payments.sandbox.wechat_v2 import protocol_of

    config = protocol_of(gw).config(timeout_s=1)
    gw.stop()
    provider = WechatV2Provider(config)
    try:
        await asyncio.sleep(0.3)  # the listener's poll interval
        with pytest.raises(OutcomeUnknown, match="ConnectError"):
            await provider.query(new_order())
    finally:
        await provider.aclose()


# ---------------------------------------------------------------- configuration and secrets


def test_config_errors_name_the_key_not_the_secret(sandbox: WechatV2Protocol, tmp_path: Path) -> None:
    with pytest.raises(WechatV2ConfigError, match=r"payments\.wechat_v2\.api_key_file: .*does not exist"):
        WechatV2Provider(sandbox.config(api_key_file=tmp_path / "missing.txt"))
    with pytest.raises(WechatV2ConfigError, match="client_cert_file: required"):
        WechatV2Provider(sandbox.config(client_cert_file=None))
    key_lines = sandbox.files.client_key_file.read_text().splitlines()[1:-1]
    broken = tmp_path / "broken_key.pem"
    broken.write_text("\n".join(["-----BEGIN PRIVATE KEY-----", key_lines[0][:20], "-----END PRIVATE KEY-----"]))
    with pytest.raises(WechatV2ConfigError) as info:
        WechatV2Provider(sandbox.config(client_key_file=broken))
    assert "client_key_file" in str(info.value) and key_lines[0][:20] not in str(info.value)


async def test_no_secret_in_logs_or_errors(
    gateway: SandboxGateway, sandbox: WechatV2Protocol, provider: WechatV2Provider,
    caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    order = await paid_code_order(gateway, provider)
    gateway.add_fault("wechat.orderquery", "bad_signature")
    try:
        await provider.query(order)
    except OutcomeUnknown as exc:
        errors.append(str(exc))
    await provider.refund(order, "R-1")
    wrong_key = tmp_path / "k.txt"
    wrong_key.write_text("1" * 32)
    impostor = WechatV2Provider(sandbox.config(api_key_file=wrong_key))
    try:
        await impostor.query(order)
    except OutcomeUnknown as exc:
        errors.append(str(exc))
    finally:
        await impostor.aclose()
    assert len(errors) == 2
    secrets = [api_key(sandbox), "1" * 32, *sandbox.files.client_key_file.read_text().splitlines()[1:-1]]
    for secret in secrets:
        assert secret not in caplog.text and not any(secret in e for e in errors)
        assert secret not in repr(provider)


# ---------------------------------------------------------------- the sandbox's own checks


async def test_sandbox_checks_requests_like_wechat(gateway: SandboxGateway, sandbox: WechatV2Protocol) -> None:
    key = api_key(sandbox)
    base = {"appid": sandbox.appid, "mch_id": sandbox.mch_id, "nonce_str": wx.nonce(), "out_trade_no": "none"}
    url = gateway.url + "/pay/orderquery"
    async with httpx.AsyncClient() as client:

        async def post(body: bytes) -> dict[str, str]:
            return wx.from_xml((await client.post(url, content=body)).content)

        # MD5, WeChat's default sign_type, is accepted, and the answer is signed in kind.
        answer = await post(wx.to_xml(wx.signed(base, key, wx.MD5)))
        assert answer["err_code"] == "ORDERNOTEXIST" and wx.verify(answer, key, wx.MD5)
        tampered = {**wx.signed(base, key), "out_trade_no": "other"}
        assert (await post(wx.to_xml(tampered))) == {"return_code": "FAIL", "return_msg": "签名错误"}
        assert (await post(b"<!DOCTYPE xml [<!ENTITY a 'x'>]><xml><a>&a;</a></xml>"))["return_code"] == "FAIL"
        lacking = {k: v for k, v in base.items() if k != "out_trade_no"}
        assert (await post(wx.to_xml(wx.signed(lacking, key))))["err_code"] == "LACK_PARAMS"
        assert "REQUIRE_POST_METHOD" in wx.from_xml((await client.get(url)).content)["return_msg"]


async def test_control_api(gateway: SandboxGateway, sandbox: WechatV2Protocol, provider: WechatV2Provider) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        info = (await client.get("/sandbox/wechat_v2")).json()
        assert info["api_url"].startswith("https://") and info["mch_id"] == sandbox.mch_id
        assert info["client_cert_file"].endswith("apiclient_cert.pem") and "BEGIN" not in str(info)
        r = await client.post("/sandbox/wechat_v2", json={"reverse_not_before_s": 2, "auto_revoke_s": 9})
        assert (r.json()["reverse_not_before_s"], sandbox.books.auto_revoke_s) == (2.0, 9.0)
        assert (await client.post("/sandbox/wechat_v2", json={"auto_revoke_s": "soon"})).status_code == 400
        r = await client.post("/sandbox/faults", json={"method": "wechat.micropay", "fault": "unsigned"})
        assert r.status_code == 200
        with pytest.raises(OutcomeUnknown, match="unsigned"):
            await provider.charge_code(new_order(), new_code())
        orders = (await client.get("/sandbox/orders")).json()["orders"]
        assert [o["protocol"] for o in orders] == ["wechat_v2"]
    with pytest.raises(ValueError):
        gateway.add_fault("wechat.nope", "unsigned")
    gateway.reset()
    assert gateway.orders() == []


async def test_engine_style_poll_of_a_slow_code(gateway: SandboxGateway, provider: WechatV2Provider) -> None:
    """USERPAYING for a while, then paid: polling at the provider's interval finds it."""
    gateway.set_behaviour("pays", pay_delay_s=0.25, for_next=1)
    order = new_order()
    assert (await provider.charge_code(order, new_code())).state is PENDING
    assert (await until(provider, order, PAID)).amount_minor == 350
