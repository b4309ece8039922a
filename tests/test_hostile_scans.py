"""Hostile scanner input through the whole kiosk: very long lines, binary, partial codes and
unroutable wallets reach no provider, leave the sale running, and a good code still pays."""

from __future__ import annotations

from pathlib import Path

from kiosk.config import load_config
from kiosk.demo import EXAMPLE_CONFIG, demo_config, fresh_code
from kiosk.payments.sandbox import SandboxGateway
from kiosk.sale import SaleState
from tests.kiosk_harness import running_kiosk, wait_for

HOSTILE = [
    "9" * 5000,  # a scanner stuck in a loop
    "\x00\x01\x02\xff\xfe binary",
    "2865432109",  # a partial Alipay code
    "13456789012345678",  # WeChat, one digit short
    "6212345678901234567",  # UnionPay: no provider routed
    "https://qr.alipay.com/bax03190uxd47wbekffy6033",  # a merchant QR scanned by mistake
    "'; DROP TABLE sales; --",
    "",
]


async def test_hostile_lines_never_reach_a_provider(tmp_path: Path) -> None:
    with SandboxGateway(keys_dir=tmp_path / "keys") as gateway:
        config = demo_config(load_config(EXAMPLE_CONFIG), tmp_path, tmp_path / "frames", gateway, None,
                             provider="alipay", mode="both")
        gateway.set_behaviour("never_pays", for_next=1)  # nobody scans the QR
        gateway.set_behaviour("pays", pending_polls=0, for_next="default")
        async with running_kiosk(config) as kiosk:
            engine = kiosk.app.engine
            scanner = kiosk.app.hardware.scanner  # type: ignore[union-attr]
            assert engine is not None and scanner is not None
            before = len(kiosk.finished)
            kiosk.machine.press(config.catalog.slot("A1").button)  # type: ignore[arg-type]
            await wait_for(lambda: engine.runner.sale.state is SaleState.AWAITING_PAYMENT, 10, "the pay screen")
            for line in HOSTILE:
                scanner.scan(line)
            await wait_for(lambda: engine.rejected_scans >= 5, 10, "the lines to be refused")
            assert engine.runner.sale.state is SaleState.AWAITING_PAYMENT
            assert [o["out_trade_no"] for o in gateway.orders()] == [engine.runner.sale.order_id], (
                "only the QR order exists: no refused line reached a provider"
            )
            scanner.scan(fresh_code("alipay"))
            await wait_for(lambda: len(kiosk.finished) > before, 20, "the good code to pay")
        assert kiosk.finished[-1].state is SaleState.DONE

