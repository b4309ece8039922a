"""Whole sales through the real engine: sandbox gateway over real HTTP with real RSA2 signatures,
gpiozero MockFactory pins, the PNG display, real SQLite files and a real Mosquitto broker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import zxingcpp
from PIL import Image

from kiosk.journal import Journal
from kiosk.payments.sandbox import SandboxGateway
from kiosk.sale import SaleState
from tests.kiosk_harness import make_config, running_kiosk, sandbox_gateway, wait_for


def order_view(gateway: SandboxGateway, order_id: str | None) -> dict[str, Any]:
    views = [o for o in gateway.orders() if o["out_trade_no"] == order_id]
    assert len(views) == 1, f"sandbox has no single order {order_id}"
    return views[0]


def pay_frames(frames: Path) -> list[Path]:
    return sorted(frames.glob("*-pay.png"))


async def test_a_full_sale_is_paid_delivered_journaled_and_published(tmp_path: Path, mosquitto: Any) -> None:
    with sandbox_gateway(tmp_path / "keys") as (gateway, url):
        config = make_config(tmp_path, url, tmp_path / "keys", mosquitto.url)
        received: list[dict[str, Any]] = []

        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub:
            await sub.subscribe("kiosk/v1/demo/demo-kiosk-1/#", qos=1)

            async def collect() -> None:
                async for message in sub.messages:
                    if "/events/" in str(message.topic):
                        received.append({"topic": str(message.topic), **json.loads(message.payload)})  # type: ignore[arg-type]

            collector = asyncio.create_task(collect())
            gateway.set_behaviour("pays", scan_delay_s=0.3, pay_delay_s=0.8, for_next=1)
            async with running_kiosk(config) as kiosk:
                sale = await kiosk.buy("A1")
                assert kiosk.machine.dropped == ["A1"]
                await wait_for(lambda: any(m["type"] == "sale" for m in received), 10, "the sale event")
            collector.cancel()

        assert sale.state is SaleState.DONE
        # The sandbox took exactly the price, once, and refunded nothing.
        view = order_view(gateway, sale.order_id)
        assert view["paid"] and view["amount_minor"] == 250 and view["refunded_minor"] == 0

        journal = Journal(config.journal.path)
        record = journal.get(sale.order_id or "")
        assert record is not None and record.state is SaleState.DONE
        # Attempt updates (the tourist scanned the QR) add rows in the same state: compare the
        # sequence of states the sale went through.
        rows = [e.state for e in journal.events(record.order_id)]
        states = [s for i, s in enumerate(rows) if i == 0 or s != rows[i - 1]]
        assert states == [
            SaleState.SELECTED, SaleState.AWAITING_PAYMENT, SaleState.PAID, SaleState.DELIVERING, SaleState.DONE
        ]

        event = next(m for m in received if m["type"] == "sale")
        assert event["topic"] == "kiosk/v1/demo/demo-kiosk-1/events/sale"
        assert event["data"]["order_id"] == sale.order_id
        assert event["data"]["amount_minor"] == 250 and event["data"]["currency"] == "USD"
        assert event["id"] and isinstance(event["seq"], int)

        # What the tourist scanned is exactly what the provider issued.
        frame = pay_frames(config.display.dir)[0]
        decoded = zxingcpp.read_barcodes(Image.open(frame))
        assert [d.text for d in decoded] == [view["qr_code"]]


async def test_a_jammed_delivery_is_refunded_exactly_once(tmp_path: Path) -> None:
    with sandbox_gateway(tmp_path / "keys") as (gateway, url):
        config = make_config(tmp_path, url, tmp_path / "keys", None)
        gateway.set_behaviour("pays_then_jam", scan_delay_s=0.2, pay_delay_s=0.5, for_next=1)
        async with running_kiosk(config) as kiosk:
            kiosk.machine.jammed.add("A2")
            sale = await kiosk.buy("A2")
        assert sale.state is SaleState.REFUNDED
        assert SaleState.DELIVERING in sale.history
        view = order_view(gateway, sale.order_id)
        assert view["paid"] and view["refunded_minor"] == 350 and view["refund_requests"] == [f"{sale.order_id}R1"]
        assert sorted(config.display.dir.glob("*-refunded.png"))


async def test_an_unpaid_order_expires_and_is_closed_at_the_provider(tmp_path: Path) -> None:
    with sandbox_gateway(tmp_path / "keys") as (gateway, url):
        config = make_config(tmp_path, url, tmp_path / "keys", None, payment_timeout_s=2.5)
        gateway.set_behaviour("never_pays", for_next=1)
        async with running_kiosk(config) as kiosk:
            sale = await kiosk.buy("A1")
            relay_states = kiosk.app.hardware.pin_factory.pin(17).states  # type: ignore[union-attr]
        assert sale.state is SaleState.EXPIRED
        assert not any(s.state for s in relay_states), "the relay never moved"
        view = order_view(gateway, sale.order_id)
        assert view["closed"] and not view["paid"]
        # The countdown was honest: the pay screen was redrawn as the seconds went by.
        assert len(pay_frames(config.display.dir)) >= 2


async def test_the_cancel_button_closes_the_order(tmp_path: Path) -> None:
    with sandbox_gateway(tmp_path / "keys") as (gateway, url):
        config = make_config(tmp_path, url, tmp_path / "keys", None)
        gateway.set_behaviour("never_pays", for_next=1)
        async with running_kiosk(config) as kiosk:
            slot = config.catalog.slot("B1")
            assert slot.button is not None
            before = len(kiosk.finished)
            kiosk.machine.press(slot.button)
            await wait_for(lambda: bool(pay_frames(config.display.dir)), 10, "the pay screen")
            kiosk.press_cancel()
            await wait_for(lambda: len(kiosk.finished) > before, 10, "the cancel")
            sale = kiosk.finished[-1]
        assert sale.state is SaleState.CANCELLED
        assert order_view(gateway, sale.order_id)["closed"]


async def test_a_response_with_the_wrong_amount_is_not_a_payment(tmp_path: Path) -> None:
    """The gateway says TRADE_SUCCESS but for another amount on every query: the kiosk never
    delivers, and closing the order gives the tourist's money back."""
    with sandbox_gateway(tmp_path / "keys") as (gateway, url):
        config = make_config(tmp_path, url, tmp_path / "keys", None, payment_timeout_s=3)
        gateway.set_behaviour("pays", scan_delay_s=0.1, pay_delay_s=0.3, for_next=1)
        gateway.add_fault("alipay.trade.query", "wrong_amount", count=1000)
        async with running_kiosk(config) as kiosk:
            sale = await kiosk.buy("A1")
            assert kiosk.machine.dropped == []
        assert SaleState.PAID not in sale.history
        assert sale.state is SaleState.REFUNDED  # the close refunded the payment it found
        view = order_view(gateway, sale.order_id)
        assert view["refunded_minor"] == view["amount_minor"]


async def test_a_bad_signature_is_not_a_payment_until_a_verified_answer_comes(tmp_path: Path) -> None:
    with sandbox_gateway(tmp_path / "keys") as (gateway, url):
        config = make_config(tmp_path, url, tmp_path / "keys", None)
        gateway.set_behaviour("pays", scan_delay_s=0.1, pay_delay_s=0.2, for_next=1)
        gateway.add_fault("alipay.trade.query", "bad_signature", count=3)
        async with running_kiosk(config) as kiosk:
            sale = await kiosk.buy("A1")
        assert sale.state is SaleState.DONE
        view = order_view(gateway, sale.order_id)
        assert view["paid"] and view["refunded_minor"] == 0
