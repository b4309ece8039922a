"""The engine: waits for a selection, runs one sale at a time, keeps the screen honest.

Deadlines use the event loop's monotonic clock, so a wall-clock step (NTP at boot) never
expires a sale early or late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from kiosk.config import KioskConfig, SelectionMode
from kiosk.journal import Journal
from kiosk.money import format_amount
from kiosk.payments.base import PaymentState
from kiosk.runner import SaleRunner, Unresolved
from kiosk.sale import (
    BuyerScanned,
    CancelPressed,
    CloseReason,
    ProviderClosed,
    Sale,
    SaleState,
    Selected,
    ShutdownRequested,
    Tick,
)
from kiosk.screens.model import ProductLine, Screen, ScreenKind

log = logging.getLogger(__name__)

CANCEL = "cancel"
ShowScreen = Callable[[Screen], Awaitable[None]]


class Engine:
    def __init__(
        self,
        config: KioskConfig,
        runner: SaleRunner,
        journal: Journal,
        show: ShowScreen,
        presses: asyncio.Queue[str],
        *,
        reconcile: Callable[[], Awaitable[int]] | None = None,
        can_sell: Callable[[], str | None] | None = None,
    ) -> None:
        self._config = config
        self._runner = runner
        self._journal = journal
        self._show = show
        self._presses = presses
        self._reconcile = reconcile
        # Returns a reason when selling must pause (e.g. the outbox cannot take money records).
        self._can_sell = can_sell or (lambda: None)
        self._stop = asyncio.Event()
        self._loop_clock = asyncio.get_running_loop().time
        self.sales_finished: list[Sale] = []
        self.out_of_service: str | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()

    def product_line(self, slot_id: str) -> ProductLine:
        slot = self._config.catalog.slot(slot_id)
        return ProductLine(slot.id, slot.names.en, slot.names.zh_hans, format_amount(slot.price, slot.currency))

    # ------------------------------------------------------------ main loop

    async def run(self) -> None:
        while not self._stop.is_set():
            reason = self._can_sell()
            if reason is not None:
                await self._show_out_of_service(reason, "暂停服务")
                await self._sleep_or_stop(5)
                continue
            await self._show_idle()
            slot_id = await self._next_selection()
            if slot_id is None:
                break
            sale = await self.sell(slot_id)
            if sale.state is SaleState.CANCELLED and sale.close_reason is CloseReason.PROVIDER_ERROR:
                await self._show_out_of_service("Payment service unavailable", "支付服务暂不可用")
                await self._sleep_or_stop(10)
            elif self._config.selection.result_screen_s:
                await self._sleep_or_stop(self._config.selection.result_screen_s)
            if self._reconcile is not None:
                await self._reconcile()

    async def _next_selection(self) -> str | None:
        if self._config.selection.mode is SelectionMode.SINGLE:
            return None if self._stop.is_set() else self._config.catalog.slots[0].id
        while not self._stop.is_set():
            name = await self._wait_press(None)
            if name is not None and name != CANCEL:
                return name
        return None

    async def _wait_press(self, timeout: float | None) -> str | None:
        """A button name, or None on timeout or stop."""
        get = asyncio.create_task(self._presses.get())
        stop = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait({get, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (get, stop):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if get in done:
            return get.result()
        return None

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # ------------------------------------------------------------ one sale

    async def sell(self, slot_id: str) -> Sale:
        slot = self._config.catalog.slot(slot_id)
        runner = self._runner
        runner.adopt(Sale())
        try:
            await runner.step(
                Selected(slot.id, Journal.new_order_id(), slot.price, slot.currency, self._loop_clock())
            )
            await self._await_payment()
        except Unresolved as exc:
            # The journal keeps the sale open; reconciliation finishes it when the provider answers.
            log.error("%s", exc)
            await self._show_out_of_service("Payment service unavailable", "支付服务暂不可用")
        sale = runner.sale
        self.sales_finished.append(sale)
        await self._show_result(sale)
        return sale

    async def _await_payment(self) -> None:
        runner = self._runner
        poll_every = self._poll_interval()
        next_poll = self._loop_clock() + poll_every
        shown: tuple[ScreenKind, int] | None = None
        while runner.sale.state is SaleState.AWAITING_PAYMENT:
            sale = runner.sale
            now = self._loop_clock()
            shown = await self._show_pay(sale, now, shown)
            if self._stop.is_set():
                await runner.step(ShutdownRequested(now))
                break
            deadline = sale.deadline or now
            # Wake when the countdown's whole second changes, a poll is due, or time is up.
            fraction = (deadline - now) % 1.0
            wake = min(next_poll, deadline, now + (fraction if fraction > 1e-3 else 1.0))
            press = await self._wait_press(max(0.0, wake - now))
            now = self._loop_clock()
            if press == CANCEL:
                await runner.step(CancelPressed(now))
                break
            if now >= next_poll or now >= deadline:
                # At the deadline, query once more before closing: a payment that just went
                # through must be delivered, not cancelled.
                await self._poll(now)
                next_poll = self._loop_clock() + poll_every
            await runner.step(Tick(self._loop_clock()))

    def _poll_interval(self) -> float:
        alipay = self._config.payments.alipay
        return alipay.poll_interval_s if alipay is not None else 2.0

    async def _poll(self, now: float) -> None:
        runner = self._runner
        status = await runner.query()
        if status is None:
            return
        if status.state is PaymentState.PAID:
            await runner.verified_paid(status)
        elif status.state is PaymentState.PENDING and status.buyer_scanned:
            await runner.step(BuyerScanned(now))
        elif status.state is PaymentState.CLOSED:
            await runner.step(ProviderClosed(now))

    # ------------------------------------------------------------ screens

    async def _show_idle(self) -> None:
        products = tuple(self.product_line(s.id) for s in self._config.catalog.slots)
        single = self._config.selection.mode is SelectionMode.SINGLE
        await self._show(Screen(ScreenKind.IDLE, products=products, single_product=single))

    async def _show_out_of_service(self, reason_en: str, reason_zh: str) -> None:
        self.out_of_service = reason_en
        await self._show(Screen(ScreenKind.OUT_OF_SERVICE, reason_en=reason_en, reason_zh=reason_zh))

    async def _show_pay(
        self, sale: Sale, now: float, shown: tuple[ScreenKind, int] | None
    ) -> tuple[ScreenKind, int]:
        kind = ScreenKind.CONFIRMING if sale.buyer_scanned else ScreenKind.PAY
        left = sale.seconds_left(now)
        if shown != (kind, left):
            assert sale.slot_id is not None
            await self._show(
                Screen(kind, product=self.product_line(sale.slot_id), qr_content=sale.qr_content, seconds_left=left)
            )
        return kind, left

    async def show_state(self, sale: Sale) -> None:
        """Screens for the states a sale passes through after payment (runner listener)."""
        if sale.slot_id is None:
            return
        product = self.product_line(sale.slot_id)
        if sale.state is SaleState.PAID:  # DELIVERING follows at once with the same screen
            await self._show(Screen(ScreenKind.DELIVERING, product=product))
        elif sale.state is SaleState.REFUNDING:
            await self._show(
                Screen(
                    ScreenKind.CANCELLED,
                    product=product,
                    reason_en="Delivery failed - refunding your payment",
                    reason_zh="出货失败，正在退款",
                )
            )

    async def _show_result(self, sale: Sale) -> None:
        self.out_of_service = None
        product = self.product_line(sale.slot_id) if sale.slot_id else None
        match sale.state:
            case SaleState.DONE:
                await self._show(Screen(ScreenKind.THANK_YOU, product=product))
            case SaleState.REFUNDED:
                await self._show(Screen(ScreenKind.REFUNDED, product=product))
            case SaleState.EXPIRED:
                await self._show(
                    Screen(
                        ScreenKind.CANCELLED,
                        product=product,
                        reason_en="Time is up - you have not been charged",
                        reason_zh="支付超时，未扣款",
                    )
                )
            case SaleState.CANCELLED:
                if sale.close_reason is not CloseReason.PROVIDER_ERROR:
                    await self._show(
                        Screen(
                            ScreenKind.CANCELLED,
                            product=product,
                            reason_en="Cancelled - you have not been charged",
                            reason_zh="已取消，未扣款",
                        )
                    )
