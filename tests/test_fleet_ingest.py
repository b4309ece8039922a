"""`kiosk fleet ingest` and the console's reading commands: SQLite and a real PostgreSQL, shared
subscriptions splitting the load, de-duplication by id, and `kiosk fleet status/events/sales`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker import Mosquitto
from fleet_helpers import REPO, wait_until
from postgres import Postgres, PostgresMissing

from kiosk.config import MqttConfig
from kiosk.fleet import FleetLink, Outbox, Topics
from kiosk.fleet.ingest import Ingest
from kiosk.fleet.store import Store, sales_summary


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    try:
        server = Postgres()
    except PostgresMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def sale(order: str, amount: int, provider: str = "alipay") -> dict[str, Any]:
    return {"order_id": order, "slot_id": "A1", "amount_minor": amount, "currency": "USD", "provider": provider,
            "state": "done", "provider_txn_id": "t"}


async def publish_from_kiosks(broker: Mosquitto, tmp_path: Path, kiosks: int, sales_each: int) -> list[str]:
    """Real FleetLinks: each kiosk puts its sales and one refund in its outbox and drains it."""
    ids: list[str] = []
    links: list[tuple[FleetLink, asyncio.Task[None]]] = []
    for k in range(kiosks):
        topics = Topics("kiosk/v1", "f1", f"k-{k}")
        outbox = Outbox(tmp_path / f"outbox-{k}.sqlite", topics)
        for n in range(sales_each):
            ids.append(outbox.put_event("sale", sale(f"O{k}x{n}", 100 + n, "alipay" if n % 2 else "wechat_v3"),
                                        money=True))
        refund = {**sale(f"O{k}x0", 100), "state": "refunded", "refund_id": f"O{k}x0R1", "reason": "jam"}
        ids.append(outbox.put_event("refund", refund, money=True))
        link = FleetLink(MqttConfig(url=broker.url, will_delay_s=0), topics, outbox, client_id=f"k-{k}",
                         backoff_initial_s=0.2, backoff_max_s=0.5)
        links.append((link, asyncio.create_task(link.run())))
    for link, _ in links:
        await wait_until(lambda link=link: link.delivered >= sales_each + 1, 20, "the kiosk to drain")
    for link, task in links:
        await link.aclose()
        await asyncio.wait_for(task, 5)
    return ids


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_ingest_stores_every_event_once_with_two_instances_sharing_the_load(
    backend: str, tmp_path: Path, mosquitto: Mosquitto, request: pytest.FixtureRequest
) -> None:
    target = request.getfixturevalue("postgres").url if backend == "postgresql" else str(tmp_path / "fleet.sqlite")
    stores = [Store(target), Store(target)]
    instances = [Ingest(url=mosquitto.url, store=s, client_id=f"ingest-{i}") for i, s in enumerate(stores)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(i.run(stop)) for i in instances]
    for instance in instances:
        await asyncio.wait_for(instance.connected.wait(), 10)
    ids = await publish_from_kiosks(mosquitto, tmp_path, kiosks=4, sales_each=10)
    await wait_until(lambda: stores[0].count("events") >= len(ids), 20, "every event stored")
    await wait_until(lambda: sum(i.received for i in instances) >= len(ids) + 8, 20, "the batches counted")
    # Both instances got a share (the shared subscription splits the messages between them).
    assert all(i.received > 0 for i in instances), [i.received for i in instances]
    assert sum(i.received for i in instances) >= len(ids)
    # A duplicate (a kiosk re-sending after a lost ack) is stored once.
    row = stores[0].events(limit=1)[0]
    from kiosk.fleet.store import EventRow

    again = EventRow(row["id"], row["fleet"], row["device"], row["seq"], row["type"], row["ts"], True, row["data"])
    assert stores[1].add([again], "2026-01-01T00:00:00Z") == 0
    stop.set()
    await asyncio.gather(*tasks)
    events = stores[0].events(limit=10_000)
    assert sorted(e["id"] for e in events) == sorted(ids)
    by_wallet = {g["wallet"]: g for g in sales_summary(events, "wallet")}
    assert by_wallet["alipay"]["sales"] == 20 and by_wallet["wechat_v3"]["sales"] == 20
    by_device = sales_summary(events, "device")
    assert [g["device"] for g in by_device] == ["k-0", "k-1", "k-2", "k-3"]
    assert all(g["refunds"] == 1 and g["refunds_minor"] == 100 for g in by_device)
    # The retained statuses (online, then offline) of every kiosk were stored as changes.
    assert stores[0].count("statuses") >= 8
    for store in stores:
        store.close()


def kiosk_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kiosk", "fleet", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})}, check=False)


async def test_console_status_events_and_sales_commands(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory()
    broker.start()
    db = tmp_path / "fleet.sqlite"
    ingest = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kiosk", "fleet", "ingest", "--url", broker.url, "--db", str(db), "--group", "",
        cwd=REPO, stderr=subprocess.PIPE,
    )
    try:
        await wait_until(lambda: db.exists(), 20, "ingest to start")
        await asyncio.sleep(1.0)
        ids = await publish_from_kiosks(broker, tmp_path, kiosks=2, sales_each=3)
        # A kiosk that is online with an alarm and counters (retained), as a live kiosk leaves them.
        topics = Topics("kiosk/v1", "f2", "k-live")
        outbox = Outbox(tmp_path / "live.sqlite", topics)
        link = FleetLink(MqttConfig(url=broker.url, will_delay_s=0), topics, outbox, client_id="k-live")
        run = asyncio.create_task(link.run())
        await wait_until(lambda: link.connected, what="k-live online")
        alarm = {"id": "door", "severity": "warning", "message": "door open", "raised_at": "2026-11-21T10:00:00.000Z",
                 "source": "hardware"}
        await link.publish(topics.alarm("door"), json.dumps(alarm).encode(), retain=True)
        counters = {"day": "2026-11-21", "sales": 7, "refunds": 1, "amounts": {"USD": {"sales": 1750, "refunds": 250}},
                    "open_alarms": 1, "alarms": ["door"], "ts": "2026-11-21T10:00:00.000Z"}
        await link.publish(topics.counters, json.dumps(counters).encode(), retain=True)
        await wait_until(lambda: Store(str(db)).count("events") >= len(ids), 20, "ingest to store all")

        status = await asyncio.to_thread(kiosk_cli, "status", "--url", broker.url)
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0].startswith("3 kiosk(s)") and "1 online" in lines[0] and "2 offline" in lines[0]
        live = next(line for line in lines if "k-live" in line)
        assert "online" in live and " 7 " in live and "17.50" in live and "door(warning)" in live
        assert lines.index(live) == 2, "kiosks with alarms come first"
        alarms = await asyncio.to_thread(kiosk_cli, "alarms", "--url", broker.url)
        assert "k-live" in alarms.stdout and "door open" in alarms.stdout
        await link.aclose()
        await asyncio.wait_for(run, 5)
    finally:
        ingest.send_signal(2)
        _, err = await asyncio.wait_for(ingest.communicate(), 20)
    assert ingest.returncode == 0, err.decode()
    events = await asyncio.to_thread(kiosk_cli, "events", "--db", str(db), "--device", "k-1")
    assert events.returncode == 0 and len(events.stdout.splitlines()) == 4
    sales = await asyncio.to_thread(kiosk_cli, "sales", "--db", str(db), "--by", "device")
    rows = sales.stdout.splitlines()
    assert rows[0].split()[:3] == ["DEVICE", "CUR", "SALES"]
    assert any(r.split()[:3] == ["k-0", "USD", "3"] for r in rows), rows
