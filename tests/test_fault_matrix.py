"""The wallets fault matrix: every fault knob x every provider x both scan directions, through
the whole kiosk. In every cell the kiosk delivers only on a verified payment, and every order
ends final at its provider. Prints the matrix.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kiosk.config import KioskConfig, load_config
from kiosk.demo import EXAMPLE_CONFIG, demo_config, fresh_code
from kiosk.demo_choices import PROVIDERS
from kiosk.payments.sandbox import SandboxGateway
from kiosk.sale import Sale, SaleState
from tests.kiosk_harness import RunningKiosk, ended_at_provider, running_kiosk, wait_for

# The wire methods that create the payment and that query it, per provider and direction.
METHODS = {
    ("alipay", "qr"): ("alipay.trade.precreate", "alipay.trade.query"),
    ("alipay", "code"): ("alipay.trade.pay", "alipay.trade.query"),
    ("wechat_v2", "qr"): ("wechat.unifiedorder", "wechat.orderquery"),
    ("wechat_v2", "code"): ("wechat.micropay", "wechat.orderquery"),
    ("wechat_v3", "qr"): ("wechat_v3.native", "wechat_v3.query"),
    ("wechat_v3", "code"): ("wechat_v3.micropay", "wechat_v3.query"),
    ("alipay_plus", "qr"): ("alipay_plus.pay", "alipay_plus.inquiry"),
    ("alipay_plus", "code"): ("alipay_plus.pay", "alipay_plus.inquiry"),
    ("citcon", "qr"): ("citcon.charges", "citcon.inquiry"),
    ("citcon", "code"): ("citcon.charges", "citcon.inquiry"),
}
# Every answer a provider can spoil, applied to the create/charge call and the next queries.
FAULTS = ("delay", "http_500", "timeout", "drop_connection", "bad_signature", "unsigned",
          "wrong_amount", "wrong_order_id", "wrong_currency")
CLIENT_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str | None = None
    behaviour: str = "pays"
    pending_polls: int | None = None
    modes: tuple[str, ...] = ("qr", "code")


SCENARIOS = [
    *(Scenario(f"fault:{f}", fault=f) for f in FAULTS),
    Scenario("userpaying x3", pending_polls=3, modes=("code",)),
    Scenario("code expired", behaviour="code_expired", modes=("code",)),
    Scenario("code used", behaviour="code_used", modes=("code",)),
    Scenario("never pays", behaviour="never_pays", modes=("qr",)),
]


def matrix_config(tmp: Path, gateway: SandboxGateway, provider: str, mode: str) -> KioskConfig:
    config = demo_config(load_config(EXAMPLE_CONFIG), tmp, tmp / "frames", gateway, None, provider=provider, mode=mode)
    fast = {"timeout_s": CLIENT_TIMEOUT_S, "poll_interval_s": 0.3}
    section = getattr(config.payments, provider).model_copy(update=fast)
    selection = config.selection.model_copy(
        update={"payment_timeout_s": 3.5, "result_screen_s": 0, "provider_error_pause_s": 0}
    )
    display = config.display.model_copy(update={"keep_frames": False})
    return config.model_copy(
        update={"payments": config.payments.model_copy(update={provider: section}), "selection": selection,
                "display": display}
    )


def fast_code_poll(kiosk: RunningKiosk) -> None:
    """Test-speed polling: the providers' real windows (45-60 s) would make the matrix take an hour."""
    from kiosk.payments.base import CodePollPolicy

    assert kiosk.app.engine is not None
    for provider in kiosk.app.engine.runner.providers.values():
        provider.code_poll = CodePollPolicy(interval_s=0.4, give_up_after_s=4, cancel_not_before_s=0)  # type: ignore[misc]


async def one_sale(kiosk: RunningKiosk, gateway: SandboxGateway, provider: str, mode: str, s: Scenario) -> str:
    gateway.reset()
    create, query = METHODS[(provider, mode)]
    if s.fault:
        delay = CLIENT_TIMEOUT_S + 0.5 if s.fault == "timeout" else 0.3
        gateway.add_fault(create, s.fault, count=1, delay_s=delay)
        gateway.add_fault(query, s.fault, count=2, delay_s=delay)
    gateway.set_behaviour(s.behaviour, scan_delay_s=0.1, pay_delay_s=0.2, pending_polls=s.pending_polls,
                          for_next="default")
    before = len(kiosk.finished)
    kiosk.machine.press(kiosk.config.catalog.slot("A1").button)  # type: ignore[arg-type]
    if mode == "code":
        await wait_for(lambda: kiosk.app.engine.runner.sale.state is SaleState.AWAITING_PAYMENT, 15, "pay screen")  # type: ignore[union-attr]
        scanner = kiosk.app.hardware.scanner  # type: ignore[union-attr]
        scanner.scan(fresh_code(provider))
    await wait_for(lambda: len(kiosk.finished) > before, 60, "the sale to finish")
    sale = kiosk.finished[-1]
    await settle(kiosk, sale)
    problems = check_cell(sale, gateway.orders(), kiosk)
    return f"{sale.state.value:<9} {'OK' if not problems else 'FAIL: ' + '; '.join(problems)}"


async def settle(kiosk: RunningKiosk, sale: Sale) -> None:
    """Losing attempts are closed after delivery; give those closes (and their retries) time."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        record = kiosk.app.journal.get(sale.order_id or "")  # type: ignore[union-attr]
        if record is not None and not record.to_sale().needs_settling:
            return
        await asyncio.sleep(0.1)


def check_cell(sale: Sale, orders: list[dict[str, Any]], kiosk: RunningKiosk) -> list[str]:
    problems: list[str] = []
    books = {o["out_trade_no"]: o for o in orders}
    delivered = "A1" in kiosk.machine.dropped
    kiosk.machine.dropped.clear()
    kept = [oid for oid, o in books.items() if o["paid"] and o.get("refunded_minor", 0) < o["amount_minor"]]
    for oid, o in books.items():
        if not ended_at_provider(o):
            problems.append(f"{oid} left open at the provider")
    if sale.state is SaleState.DONE:
        if not delivered:
            problems.append("done without a drop")
        if kept != [sale.winner]:
            problems.append(f"done but the provider kept {kept}")
    else:
        if delivered:
            problems.append(f"delivered but the sale ended {sale.state.value}")
        if kept:
            problems.append(f"money kept {kept} without delivery")
    if delivered and SaleState.PAID not in sale.history:
        problems.append("delivered without a verified payment")
    return problems


@pytest.mark.timeout(900)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_fault_matrix(provider: str, tmp_path: Path) -> None:
    rows: list[str] = []
    for mode in ("qr", "code"):
        with SandboxGateway(keys_dir=tmp_path / "keys") as gateway:
            config = matrix_config(tmp_path / mode, gateway, provider, mode)
            async with running_kiosk(config) as kiosk:
                fast_code_poll(kiosk)
                for scenario in SCENARIOS:
                    if mode not in scenario.modes:
                        continue
                    outcome = await one_sale(kiosk, gateway, provider, mode, scenario)
                    rows.append(f"{provider:<12} {mode:<5} {scenario.name:<22} {outcome}")
    print("\nprovider     mode  fault / behaviour      outcome")
    print("\n".join(rows))
    failures = [r for r in rows if "FAIL" in r]
    assert not failures, "\n".join(failures)
