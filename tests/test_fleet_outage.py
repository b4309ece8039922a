"""A long broker outage while the kiosk keeps selling: after the broker returns, every sale and
refund event reaches the fleet's history exactly once, de-duplicable by id."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker import Mosquitto
from fleet_helpers import wait_until, with_fleet
from kiosk_harness import make_config, running_kiosk, sandbox_gateway

from kiosk.fleet.ingest import Ingest
from kiosk.fleet.outbox import MessageClass
from kiosk.fleet.store import Store
from kiosk.sale import SaleState


async def test_sales_during_a_long_outage_all_arrive_once(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    persist = tmp_path / "broker-state"
    persist.mkdir()
    # A persistent broker, as in production: the ingest session (and what is queued for it)
    # survives the broker's restart.
    broker = mosquitto_factory(extra_config=f"persistence true\npersistence_location {persist}/\n")
    broker.start()
    store = Store(str(tmp_path / "fleet.sqlite"))
    ingest = Ingest(url=broker.url, store=store, group=None, client_id="outage-ingest")
    stop_ingest = asyncio.Event()
    ingest_task = asyncio.create_task(ingest.run(stop_ingest))
    await asyncio.wait_for(ingest.connected.wait(), 10)

    with sandbox_gateway(tmp_path / "keys") as (gateway, url):
        gateway.set_behaviour("pays", scan_delay_s=0.05, pay_delay_s=0.1, for_next="default")
        config = with_fleet(make_config(tmp_path, url, tmp_path / "keys", None, result_screen_s=0), broker.url)
        config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"backoff_max_s": 2})})
        async with running_kiosk(config) as kiosk:
            link, outbox = kiosk.app.link, kiosk.app.outbox
            assert link is not None and outbox is not None

            async def sell(n: int) -> None:
                for i in range(n):
                    jam = i % 3 == 2  # every third sale jams and is refunded
                    slot = "A2" if jam else "A1"
                    if jam:
                        kiosk.machine.jammed.add("A2")
                    try:
                        sale = await kiosk.buy(slot)
                    finally:
                        kiosk.machine.jammed.discard("A2")
                    assert sale.state is (SaleState.REFUNDED if jam else SaleState.DONE), sale

            await wait_until(lambda: link.connected, what="online")
            await sell(3)
            await asyncio.to_thread(broker.stop)
            await wait_until(lambda: not link.connected, what="the link to notice the outage")
            await sell(12)  # the outage: sales go on, their records wait in the outbox
            assert outbox.depth(MessageClass.MONEY) >= 12
            assert not link.connected
            await asyncio.to_thread(broker.start)
            await wait_until(lambda: outbox.depth(MessageClass.MONEY) == 0, 30, "the outbox to drain")
            await sell(3)
            await wait_until(lambda: outbox.depth(MessageClass.MONEY) == 0, 30, "the last sales")
            finished = list(kiosk.finished)

    done = sorted(s.order_id for s in finished if s.state is SaleState.DONE)
    refunded = sorted(s.order_id for s in finished if s.state is SaleState.REFUNDED)
    assert (len(done), len(refunded)) == (12, 6)

    def money() -> list[dict[str, Any]]:
        return store.events(types=("sale", "refund"), limit=100_000)

    await wait_until(lambda: len(money()) >= 18, 30, "ingest to hold all 18 money events")
    await asyncio.sleep(1.0)  # room for a duplicate to arrive
    stop_ingest.set()
    await asyncio.wait_for(ingest_task, 10)
    events = money()
    assert sorted(e["data"]["order_id"] for e in events if e["type"] == "sale") == done
    assert sorted(e["data"]["order_id"] for e in events if e["type"] == "refund") == refunded
    assert len({e["id"] for e in events}) == len(events) == 18
    historical = [e for e in events if e["historical"]]
    assert len(historical) >= 12, "the replays after the outage are flagged historical"
    # Per-device sequence numbers: unique, and every gap is a dropped telemetry sample, not money.
    assert len({e["seq"] for e in events}) == 18
    store.close()


async def test_a_full_outbox_stops_selling_with_an_alarm_and_never_drops_a_sale(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory()  # not started: the broker is away from the start
    with sandbox_gateway(tmp_path / "keys") as (gateway, url):
        gateway.set_behaviour("pays", scan_delay_s=0.05, pay_delay_s=0.1, for_next="default")
        config = with_fleet(make_config(tmp_path, url, tmp_path / "keys", None, result_screen_s=0), broker.url)
        config = config.model_copy(update={
            "outbox": config.outbox.model_copy(update={"money_limit": 10}),
            "mqtt": config.mqtt.model_copy(update={"backoff_max_s": 1}),
        })
        async with running_kiosk(config) as kiosk:
            outbox, engine, operator = kiosk.app.outbox, kiosk.app.engine, kiosk.app.operator
            assert outbox is not None and engine is not None and operator is not None
            for _ in range(10):
                await kiosk.buy("A1")
            assert outbox.depth(MessageClass.MONEY) == 10
            await wait_until(lambda: operator.agent.alarms.is_raised("outbox_full"), 10, "the outbox_full alarm")
            await wait_until(lambda: engine.out_of_service is not None, 10, "the out-of-service screen")
            slot = config.catalog.slot("A1")
            assert slot.button is not None
            kiosk.machine.press(slot.button)
            await asyncio.sleep(1.0)
            assert len(kiosk.finished) == 10 and not engine.selling, "no sale while the outbox is full"
            await asyncio.to_thread(broker.start)
            await wait_until(lambda: outbox.depth(MessageClass.MONEY) == 0, 30, "the drain")
            await wait_until(lambda: not operator.agent.alarms.is_raised("outbox_full"), 10, "the alarm cleared")
            sale = await kiosk.buy("A1")
            assert sale.state is SaleState.DONE
            assert kiosk.app.link is not None and kiosk.app.link.delivered >= 11
