"""WeChat Pay v3 callbacks from the sandbox, over real HTTP to a receiver on loopback that answers
the way a merchant must: 200 only for a callback that verifies and decrypts."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from wechatpayv3 import utils as oracle

from kiosk.payments import rsa2
from kiosk.payments.base import Order, OutcomeUnknown, PaymentMode, PaymentState, PaymentStatus
from kiosk.payments.sandbox import SandboxGateway
from kiosk.payments.sandbox.wechat_v3 import WechatV3Sandbox, wechat_v3
from kiosk.payments.wechat_v3 import WechatV3Provider
from kiosk.payments.wechat_v3_auth import load_wechatpay_key_file
from kiosk.payments.wechat_v3_notify import load_apiv3_key_file, open_notification


@dataclass
class Receiver:
    """What a merchant's callback endpoint saw and concluded."""

    url: str = ""
    statuses: list[PaymentStatus] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    raw: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxGateway]:
    gw = SandboxGateway(keys_dir=tmp_path_factory.mktemp("wechat-v3-notify-keys"))
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def sandbox(gateway: SandboxGateway) -> WechatV3Sandbox:
    gateway.reset()
    return wechat_v3(gateway)


@pytest.fixture
async def receiver(sandbox: WechatV3Sandbox) -> AsyncIterator[tuple[Receiver, WechatV3Provider]]:
    seen = Receiver()
    provider: WechatV3Provider | None = None

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = dict(self.headers.items())
            seen.raw.append((headers, body))
            assert provider is not None
            try:
                seen.statuses.append(provider.parse_notification(headers, body))
                seen.event_ids.append(json.loads(body)["id"])
                status, reply = 200, {"code": "SUCCESS"}
            except OutcomeUnknown as exc:
                seen.refused.append(str(exc))
                status, reply = 400, {"code": "FAIL", "message": "verification failed"}
            payload = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    seen.url = f"http://127.0.0.1:{server.server_address[1]}/wechatpay/v3/notify"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    provider = WechatV3Provider(sandbox.config(notify_url=seen.url, timeout_s=2))
    yield seen, provider
    await provider.aclose()
    server.shutdown()
    server.server_close()


_counter = iter(range(1, 1_000_000))


async def paid(gateway: SandboxGateway, provider: WechatV3Provider, mode: PaymentMode = PaymentMode.QR) -> Order:
    order = Order(f"N{next(_counter)}", 1250, "HKD", "洗车 Car wash", mode)
    if mode is PaymentMode.QR:
        gateway.set_behaviour("pays", for_next=1, scan_delay_s=0, pay_delay_s=0)
        await provider.create_qr(order)
    else:
        gateway.set_behaviour("pays", for_next=1, pending_polls=0)
        await provider.charge_code(order, "134567890123456789")
    assert (await provider.query(order)).state is PaymentState.PAID
    return order


async def test_callback_is_verified_decrypted_and_matches_the_order(
    gateway: SandboxGateway, sandbox: WechatV3Sandbox, receiver: tuple[Receiver, WechatV3Provider]
) -> None:
    seen, provider = receiver
    order = await paid(gateway, provider)
    assert sandbox.post_notifications(order.order_id) == [200]  # to the notify_url we sent
    [status] = seen.statuses
    assert (status.order_id, status.state, status.amount_minor, status.currency) == (
        order.order_id,
        PaymentState.PAID,
        1250,
        "HKD",
    )
    headers, body = seen.raw[0]
    assert provider.parse_notification(headers, body, order) == status  # checked against the order too


async def test_duplicate_callback_is_idempotent(
    gateway: SandboxGateway, sandbox: WechatV3Sandbox, receiver: tuple[Receiver, WechatV3Provider]
) -> None:
    seen, provider = receiver
    order = await paid(gateway, provider)
    gateway.add_fault("wechat_v3.notify", "duplicate_notification")
    assert sandbox.post_notifications(order.order_id) == [200, 200]
    assert len(seen.statuses) == 2 and seen.statuses[0] == seen.statuses[1]
    assert len(set(seen.event_ids)) == 1  # the same event: a receiver deduplicates on its id
    (h1, b1), (h2, b2) = seen.raw
    assert b1 == b2 and h1["Wechatpay-Nonce"] != h2["Wechatpay-Nonce"]  # re-sent, freshly signed


@pytest.mark.parametrize("fault", ["bad_signature", "unsigned"])
async def test_spoiled_callbacks_are_refused(
    gateway: SandboxGateway, sandbox: WechatV3Sandbox, receiver: tuple[Receiver, WechatV3Provider], fault: str
) -> None:
    seen, provider = receiver
    order = await paid(gateway, provider)
    gateway.add_fault("wechat_v3.notify", fault)
    assert sandbox.post_notifications(order.order_id) == [400]
    assert not seen.statuses and len(seen.refused) == 1


async def test_tampered_callbacks_are_refused(
    gateway: SandboxGateway, sandbox: WechatV3Sandbox, receiver: tuple[Receiver, WechatV3Provider]
) -> None:
    _, provider = receiver
    order = await paid(gateway, provider)
    [(headers, body)] = sandbox.notifications(order.order_id)
    envelope = json.loads(body)
    # 1. The body changed after signing: the signature catches it.
    changed = body.replace(b"TRANSACTION.SUCCESS", b"TRANSACTION.SUCCESS ")
    with pytest.raises(OutcomeUnknown, match="does not verify"):
        provider.parse_notification(headers, changed)
    # 2. Signed correctly, but the ciphertext is altered: the GCM tag catches it.
    sealed = bytearray(base64.b64decode(envelope["resource"]["ciphertext"]))
    sealed[0] ^= 1
    envelope["resource"]["ciphertext"] = base64.b64encode(bytes(sealed)).decode()
    resigned = json.dumps(envelope, ensure_ascii=False).encode()
    with pytest.raises(OutcomeUnknown, match="does not decrypt"):
        provider.parse_notification(sandbox.signed_headers(resigned), resigned)
    # 3. A genuine callback for another amount is not a payment of this order.
    other = Order(order.order_id, 1251, "HKD", "x")
    with pytest.raises(OutcomeUnknown, match="order is 1251"):
        provider.parse_notification(headers, body, other)


async def test_stale_callback_and_wrong_apiv3_key_are_refused(
    gateway: SandboxGateway, sandbox: WechatV3Sandbox, tmp_path: Path
) -> None:
    provider = WechatV3Provider(sandbox.config())
    order = await paid(gateway, provider)
    [(headers, body)] = sandbox.notifications(order.order_id)
    late = WechatV3Provider(sandbox.config(), clock=lambda: int(headers["Wechatpay-Timestamp"]) + 600)
    with pytest.raises(OutcomeUnknown, match="local clock"):
        late.parse_notification(headers, body)
    wrong = tmp_path / "apiv3"
    wrong.write_text("A" * 32)
    with pytest.raises(OutcomeUnknown, match="does not decrypt") as info:
        WechatV3Provider(sandbox.config(apiv3_key_file=wrong)).parse_notification(headers, body)
    assert "A" * 32 not in str(info.value)
    for p in (provider, late):
        await p.aclose()


async def test_oracle_reads_the_sandbox_callback(gateway: SandboxGateway, sandbox: WechatV3Sandbox) -> None:
    provider = WechatV3Provider(sandbox.config())
    order = await paid(gateway, provider)
    [(headers, body)] = sandbox.notifications(order.order_id)
    pub = rsa2.load_public_key_file(sandbox.keys.wechatpay_public_key_file)
    text = body.decode()
    assert oracle.rsa_verify(
        headers["Wechatpay-Timestamp"], headers["Wechatpay-Nonce"], text, headers["Wechatpay-Signature"], pub
    )
    resource = json.loads(text)["resource"]
    apiv3 = load_apiv3_key_file(sandbox.keys.apiv3_key_file).decode()
    theirs = oracle.aes_decrypt(resource["nonce"], resource["ciphertext"], resource["associated_data"], apiv3)
    ours = open_notification(
        headers,
        body,
        key=load_wechatpay_key_file(sandbox.keys.wechatpay_public_key_file, sandbox.keys.public_key_id),
        apiv3_key=apiv3.encode(),
        now=int(headers["Wechatpay-Timestamp"]),
    )
    assert json.loads(theirs) == ours.data and ours.data["out_trade_no"] == order.order_id
    await provider.aclose()


async def test_micropay_callback_goes_where_it_is_sent(
    gateway: SandboxGateway, sandbox: WechatV3Sandbox, receiver: tuple[Receiver, WechatV3Provider]
) -> None:
    # Micropay requests carry no notify_url (the result is synchronous or polled); the sandbox can
    # still deliver its callback to an explicit URL, and the receiver reads it like any other.
    seen, provider = receiver
    order = await paid(gateway, provider, PaymentMode.CODE)
    with pytest.raises(ValueError, match="notify_url"):
        sandbox.post_notifications(order.order_id)
    assert sandbox.post_notifications(order.order_id, seen.url) == [200]
    assert seen.statuses[0].state is PaymentState.PAID


async def test_unpaid_orders_have_no_callback(gateway: SandboxGateway, sandbox: WechatV3Sandbox) -> None:
    provider = WechatV3Provider(sandbox.config())
    gateway.set_behaviour("never_pays", for_next=1)
    order = Order("NUNPAID1", 100, "USD", "x")
    await provider.create_qr(order)
    with pytest.raises(ValueError, match="no paid order"):
        sandbox.notifications(order.order_id)
    await provider.aclose()
