"""The soak: many sales on one kiosk with random tourists and random faults, checked by the money
invariants after every sale and over the whole run. Used by tests/test_soak.py (short, in CI) and
bench/soak.py (hundreds of sales)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiosk.config import KioskConfig, load_config
from kiosk.demo import EXAMPLE_CONFIG, demo_config, fresh_code
from kiosk.payments.base import CodePollPolicy
from kiosk.payments.sandbox import SandboxGateway
from kiosk.payments.sandbox.configs import provider_config
from kiosk.payments.sandbox.wechat_v2 import protocol_of
from kiosk.sale import Sale, SaleState
from tests.kiosk_harness import RunningKiosk, ended_at_provider, running_kiosk, wait_for

QR_PROVIDER, CODE_PROVIDER = "alipay", "wechat_v2"
METHODS = ["alipay.trade.precreate", "alipay.trade.query", "alipay.trade.cancel", "alipay.trade.refund",
           "wechat.micropay", "wechat.orderquery", "wechat.reverse", "wechat.refund"]
FAULTS = ["delay", "http_500", "timeout", "drop_connection", "bad_signature", "unsigned", "wrong_amount",
          "wrong_order_id", "wrong_currency"]
TOURISTS = ["qr_pays", "code_pays", "code_pending", "never_pays", "code_refused", "jam", "cancels"]


@dataclass
class SoakReport:
    sales: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        by = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return f"{self.sales} sales in {self.seconds:.0f} s: {by}; {len(self.problems)} problem(s)"


def soak_config(tmp: Path, gateway: SandboxGateway) -> KioskConfig:
    config = demo_config(load_config(EXAMPLE_CONFIG), tmp, tmp / "frames", gateway, None,
                         provider=QR_PROVIDER, mode="both")
    wechat = provider_config(gateway, CODE_PROVIDER, timeout_s=1.0, poll_interval_s=0.3)
    alipay = config.payments.alipay.model_copy(update={"timeout_s": 1.0, "poll_interval_s": 0.3})  # type: ignore[union-attr]
    routes = config.payments.routes.model_copy(update={"wechat": CODE_PROVIDER, "alipay_cn": None})
    payments = config.payments.model_copy(update={"alipay": alipay, CODE_PROVIDER: wechat, "routes": routes})
    selection = config.selection.model_copy(
        update={"payment_timeout_s": 5, "result_screen_s": 0, "provider_error_pause_s": 0.2}
    )
    display = config.display.model_copy(update={"keep_frames": False})
    return config.model_copy(update={"payments": payments, "selection": selection, "display": display})


async def soak(tmp: Path, sales: int, seed: int = 7) -> SoakReport:
    rng = random.Random(seed)
    report = SoakReport()
    started = time.monotonic()
    with SandboxGateway(keys_dir=tmp / "keys") as gateway:
        config = soak_config(tmp, gateway)
        async with running_kiosk(config) as kiosk:
            assert kiosk.app.engine is not None
            for provider in kiosk.app.engine.runner.providers.values():
                # Test-speed windows; the reverse-age rule is the sandbox's to enforce.
                provider.code_poll = CodePollPolicy(interval_s=0.4, give_up_after_s=4, cancel_not_before_s=0)  # type: ignore[misc]
            protocol_of(gateway).books.reverse_not_before_s = 0
            for number in range(sales):
                tourist = rng.choice(TOURISTS)
                fault = rng.choice(FAULTS) if rng.random() < 0.35 else None
                method = rng.choice(METHODS)
                sale = await one_sale(kiosk, gateway, rng, tourist, fault, method)
                report.sales += 1
                report.outcomes[sale.state.value] += 1
                for problem in check(sale, gateway.orders(), kiosk):
                    report.problems.append(f"sale {number} ({tourist}, {fault} on {method}): {problem}")
                gateway.reset()
    report.seconds = time.monotonic() - started
    return report


async def one_sale(
    kiosk: RunningKiosk, gateway: SandboxGateway, rng: random.Random, tourist: str, fault: str | None, method: str
) -> Sale:
    engine = kiosk.app.engine
    assert engine is not None
    if fault:
        gateway.add_fault(method, fault, count=rng.randint(1, 2), delay_s=1.5 if fault == "timeout" else 0.2)
    shows_code = tourist.startswith("code") or (tourist == "jam" and rng.random() < 0.5)
    if shows_code:
        gateway.set_behaviour("never_pays", for_next=1)  # the QR order: not scanned
    behaviour = {"never_pays": "never_pays", "code_refused": "code_expired", "jam": "pays_then_jam"}.get(
        tourist, "pays"
    )
    gateway.set_behaviour(behaviour, scan_delay_s=0.1, pay_delay_s=0.3,
                          pending_polls=2 if tourist == "code_pending" else None, for_next="default")
    slot = "A2" if tourist == "jam" else rng.choice(["A1", "B1"])
    kiosk.machine.jammed = {slot} if tourist == "jam" else set()
    before = len(kiosk.finished)
    kiosk.machine.press(kiosk.config.catalog.slot(slot).button)  # type: ignore[arg-type]
    if shows_code or tourist == "cancels":
        await wait_for(lambda: engine.runner.sale.state is SaleState.AWAITING_PAYMENT or len(kiosk.finished) > before,
                       20, "the pay screen")
    if shows_code and len(kiosk.finished) == before:
        kiosk.app.hardware.scanner.scan(fresh_code(CODE_PROVIDER))  # type: ignore[union-attr]
    if tourist == "cancels" and len(kiosk.finished) == before:
        await asyncio.sleep(rng.uniform(0, 0.6))
        kiosk.press_cancel()
    await wait_for(lambda: len(kiosk.finished) > before, 90, "the sale to finish")
    sale = kiosk.finished[-1]
    await settle(kiosk, sale)
    return sale


async def settle(kiosk: RunningKiosk, sale: Sale) -> None:
    """Losing attempts close after delivery, and reconciliation finishes what a fault left open."""
    journal = kiosk.app.journal
    assert journal is not None
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        record = journal.get(sale.order_id or "")
        if record is not None and record.is_final and not record.to_sale().needs_settling:
            return
        await asyncio.sleep(0.2)


def check(sale: Sale, orders: list[dict[str, Any]], kiosk: RunningKiosk) -> list[str]:
    problems: list[str] = []
    journal = kiosk.app.journal
    assert journal is not None
    record = journal.get(sale.order_id or "")
    final = record.to_sale() if record else sale
    delivered = bool(kiosk.machine.dropped) or final.state is SaleState.DONE
    kiosk.machine.dropped.clear()
    kept = [o["out_trade_no"] for o in orders if o["paid"] and o.get("refunded_minor", 0) < o["amount_minor"]]
    for o in orders:
        if not ended_at_provider(o):
            problems.append(f"{o['out_trade_no']} left open at the provider")
        if o.get("refunded_minor", 0) > o["amount_minor"] or len(o.get("refund_requests", [])) > 1:
            problems.append(f"{o['out_trade_no']} refunded twice or too much")
    if not final.is_final:
        problems.append(f"sale left {final.state.value}")
    if final.state is SaleState.DONE and kept != [final.winner]:
        problems.append(f"done, but the provider kept {kept} (winner {final.winner})")
    if final.state is not SaleState.DONE and kept:
        problems.append(f"{final.state.value}, but the provider kept {kept}")
    if delivered and SaleState.PAID not in final.history and final.state is not SaleState.DONE:
        problems.append("delivered without a verified payment")
    return problems
