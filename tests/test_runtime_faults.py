"""Faults while the kiosk runs: a provider outage, storage running out, the wall clock jumping."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kiosk.journal import Journal
from kiosk.sale import SaleState
from tests.kiosk_harness import make_config, running_kiosk, sandbox_gateway, wait_for


def frames(directory: Path) -> list[str]:
    return [p.stem.split("-", 1)[1] for p in sorted(directory.glob("*.png"))]


async def test_a_provider_outage_takes_the_kiosk_out_of_service_until_it_answers(tmp_path: Path) -> None:
    with sandbox_gateway(tmp_path / "keys") as (gateway, url):
        config = make_config(tmp_path, url, tmp_path / "keys", None, provider_error_pause_s=0.5)
        gateway.set_behaviour("pays", scan_delay_s=0.1, pay_delay_s=0.2, for_next="default")
        gateway.add_fault("alipay.trade.precreate", "http_500", count=1000)
        gateway.add_fault("alipay.trade.query", "http_500", count=1000)
        async with running_kiosk(config) as kiosk:
            sale = await kiosk.buy("A1")
            assert sale.state is SaleState.CANCELLED and kiosk.machine.dropped == []
            await wait_for(lambda: frames(config.display.dir)[-1] == "out_of_service", 5, "out of service")
            # Still down a while later: the kiosk keeps probing and stays out of service.
            await asyncio.sleep(2)
            assert frames(config.display.dir)[-1] == "out_of_service"
            gateway.faults.clear()
            await wait_for(lambda: frames(config.display.dir)[-1] == "idle", 15, "the kiosk to sell again")
            sale = await kiosk.buy("A1")
        assert sale.state is SaleState.DONE


async def test_the_kiosk_stops_selling_before_its_journal_storage_runs_out(tmp_path: Path) -> None:
    with sandbox_gateway(tmp_path / "keys") as (_gateway, url):
        config = make_config(tmp_path, url, tmp_path / "keys", None)
        # Ask for more free space than the disk has: the same as a disk that filled up.
        journal = config.journal.model_copy(update={"min_free_mb": 10.0**12})
        config = config.model_copy(update={"journal": journal})
        async with running_kiosk(config) as kiosk:
            await wait_for(lambda: "out_of_service" in frames(config.display.dir)[1:], 10, "out of service")
            kiosk.machine.press(config.catalog.slot("A1").button)  # type: ignore[arg-type]
            await asyncio.sleep(1.5)
            assert kiosk.finished == []
        assert Journal(config.journal.path).sales() == [], "no sale was started"
        assert frames(config.display.dir)[-1] == "out_of_service"


@pytest.mark.parametrize("jump_s", [7200.0, -7200.0])
async def test_a_wall_clock_step_neither_expires_a_sale_early_nor_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jump_s: float
) -> None:
    with sandbox_gateway(tmp_path / "keys") as (gateway, url):
        config = make_config(tmp_path, url, tmp_path / "keys", None, payment_timeout_s=3)
        gateway.set_behaviour("never_pays", for_next="default")
        async with running_kiosk(config) as kiosk:
            before = len(kiosk.finished)
            started = time.monotonic()
            kiosk.machine.press(config.catalog.slot("A1").button)  # type: ignore[arg-type]
            engine = kiosk.app.engine
            assert engine is not None
            await wait_for(lambda: engine.runner.sale.state is SaleState.AWAITING_PAYMENT, 10, "the pay screen")
            real_time = time.time
            monkeypatch.setattr(time, "time", lambda: real_time() + jump_s)  # NTP steps the clock
            await wait_for(lambda: len(kiosk.finished) > before, 20, "the sale to expire")
            elapsed = time.monotonic() - started
        assert kiosk.finished[-1].state is SaleState.EXPIRED
        assert 2.5 <= elapsed <= 8, f"expired after {elapsed:.1f} s of a 3 s payment window"
