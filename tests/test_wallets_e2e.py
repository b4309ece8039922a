"""Every provider sells in both directions through the whole kiosk: the QR on screen and a
payment code at the scanner armed together, against the sandbox's real protocols."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from kiosk.demo import run_demo
from kiosk.demo_choices import PROVIDERS
from kiosk.payments.base import PaymentMode
from kiosk.sale import SaleState


@pytest.mark.timeout(240)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_both_directions_sell_and_the_losing_order_is_closed(provider: str, tmp_path: Path) -> None:
    out = io.StringIO()
    result = await run_demo(
        sales=2, frames=tmp_path / "frames", mqtt=None, out=out, jam_sale=0, provider=provider, mode="both"
    )
    assert [s.state for s in result.sales] == [SaleState.DONE, SaleState.DONE], out.getvalue()
    code_sale, qr_sale = result.sales
    winner_mode = [a.mode for a in code_sale.attempts if a.order_id == code_sale.winner]
    assert winner_mode == [PaymentMode.CODE], "tourist 1 showed a payment code"
    assert [a.mode for a in qr_sale.attempts if a.order_id == qr_sale.winner] == [PaymentMode.QR]
    books = {o["out_trade_no"]: o for o in result.provider_orders}
    for sale in result.sales:
        for attempt in sale.attempts:
            view = books.get(attempt.order_id)
            assert view is not None, f"{attempt.order_id} never reached {provider}"
            if attempt.order_id == sale.winner:
                assert view["paid"] and view["refunded_minor"] == 0 and view["amount_minor"] == sale.amount_minor
            else:
                # The QR nobody scanned is closed at the provider, so a late scan cannot pay.
                assert view["closed"] and not view["paid"], view
    assert "charging the payment code" in out.getvalue()
