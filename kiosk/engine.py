"""The engine: waits for a selection, runs one sale at a time, keeps the screen honest.

Both payment directions are armed together when configured: the provider's QR is on screen
and the scanner takes the tourist's payment code; the first verified payment wins.
Deadlines use the event loop's monotonic clock, so a wall-clock step (NTP at boot) never
expires a sale early or late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kiosk.config import Catalog, KioskConfig, SelectionMode
from kiosk.journal import Journal
from kiosk.money import format_amount
from kiosk.payments.base import PaymentMode
from kiosk.payments.codes import CodeRejected, PaymentCode, classify, route
from kiosk.runner import SaleRunner, Unresolved
from kiosk.sale import (
    CancelPressed,
    CloseReason,
    CodeScanned,
    GiveUpAttempt,
    Sale,
    SaleState,
    Selected,
    ShutdownRequested,
    Tick,
)
from kiosk.screens.model import ProductLine, Screen, ScreenKind

log = logging.getLogger(__name__)

CANCEL = "cancel"
WAKE = ""  # put into the presses queue so the idle loop looks again (maintenance, new catalog)
NOTICE_S = 4.0  # how long a notice (e.g. a refused code) stays over the pay screen
ShowScreen = Callable[[Screen], Awaitable[None]]


@dataclass(frozen=True)
class Press:
    name: str


@dataclass(frozen=True)
class Scan:
    line: str


@dataclass
class Notice:
    en: str
    zh: str
    until: float


class Engine:
    def __init__(
        self,
        config: KioskConfig,
        runner: SaleRunner,
        journal: Journal,
        show: ShowScreen,
        presses: asyncio.Queue[str],
        *,
        scans: asyncio.Queue[str] | None = None,
        reconcile: Callable[[], Awaitable[int]] | None = None,
        can_sell: Callable[[], str | None] | None = None,
    ) -> None:
        self._config = config
        self._runner = runner
        self._journal = journal
        self._show = show
        self._presses = presses
        self._scans = scans
        self._reconcile = reconcile
        # Returns a reason when selling must pause (e.g. the outbox cannot take money records).
        self._can_sell = can_sell or (lambda: None)
        self._stop = asyncio.Event()
        self._clock = asyncio.get_running_loop().time
        self._notice: Notice | None = None
        self._screen_behind: asyncio.Task[None] | None = None
        self.sales_finished: list[Sale] = []
        self.out_of_service: str | None = None
        self.rejected_scans = 0
        self.maintenance = False

    @property
    def runner(self) -> SaleRunner:
        return self._runner

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def selling(self) -> bool:
        """A sale is under way (an updater must wait)."""
        return not self._runner.sale.is_final and self._runner.sale.state is not SaleState.IDLE

    def request_stop(self) -> None:
        self._stop.set()

    def set_maintenance(self, on: bool) -> None:
        """Operators: stop offering sales (one under way finishes) until switched off again."""
        self.maintenance = on
        self._presses.put_nowait(WAKE)

    def wake(self) -> None:
        """Look again now: a reason to pause selling has gone (e.g. the outbox drained)."""
        self._presses.put_nowait(WAKE)

    def replace_catalog(self, catalog: Catalog) -> None:
        """Operators: new names and prices; a sale under way keeps the amount it was created with."""
        self._config = self._config.model_copy(update={"catalog": catalog})
        self._runner.replace_slots({slot.id: slot for slot in catalog.slots})
        self._presses.put_nowait(WAKE)

    def product_line(self, slot_id: str) -> ProductLine:
        slot = self._config.catalog.slot(slot_id)
        return ProductLine(slot.id, slot.names.en, slot.names.zh_hans, format_amount(slot.price, slot.currency))

    # ------------------------------------------------------------ main loop

    def _pause_reason(self) -> tuple[str, str] | None:
        if self.maintenance:
            return "Under maintenance", "维护中"
        if self._storage_short():
            return "Storage full - not selling", "存储空间不足，暂停销售"
        reason = self._can_sell()
        return (reason, "暂停服务") if reason is not None else None

    def _storage_short(self) -> bool:
        """Less free space than a sale's journal rows need: stop before a write can fail."""
        journal = self._config.journal
        try:
            free = shutil.disk_usage(journal.path.parent).free
        except OSError:
            return True
        short = free < journal.min_free_mb * 1024 * 1024
        if short:
            log.error("journal storage has %.1f MB free (< %.1f MB): not selling", free / 2**20, journal.min_free_mb)
        return short

    async def run(self) -> None:
        while not self._stop.is_set():
            pause = self._pause_reason()
            if pause is not None:
                await self._show_out_of_service(*pause)
                await self._wait_input(5)  # presses are ignored; a WAKE ends the wait early
                continue
            await self._show_idle()
            slot_id = await self._next_selection()
            if slot_id is None:
                break
            if slot_id == WAKE or self._pause_reason() is not None:
                continue
            sale = await self.sell(slot_id)
            if sale.close_reason is CloseReason.PROVIDER_ERROR or not sale.is_final:
                # The provider failed us (or could not finish the sale): out of service until
                # it answers again; reconciliation then settles what is open.
                await self._wait_for_provider(sale)
            elif self._config.selection.result_screen_s:
                await self._sleep_or_stop(self._config.selection.result_screen_s)
            if self._reconcile is not None:
                await self._reconcile()
        if self._screen_behind is not None:
            await self._screen_behind

    async def _wait_for_provider(self, sale: Sale) -> None:
        """Out of service until the provider that failed answers again (probed with a query for
        an order that does not exist: any verified answer means it is back)."""
        name = sale.attempts[0].provider if sale.attempts else self._config.payments.provider
        pause = max(0.5, self._config.selection.provider_error_pause_s)
        while not self._stop.is_set():
            await self._show_out_of_service("Payment service unavailable", "支付服务暂不可用")
            await self._sleep_or_stop(pause)
            if name is None or await self._runner.probe(name):
                log.info("provider %s answers again; selling", name)
                self.out_of_service = None
                return
            pause = min(pause * 2, 60.0)

    async def _next_selection(self) -> str | None:
        if self._config.selection.mode is SelectionMode.SINGLE:
            return None if self._stop.is_set() else self._config.catalog.slots[0].id
        while not self._stop.is_set():
            got = await self._wait_input(None)
            if isinstance(got, Press) and got.name != CANCEL:
                return got.name
            if isinstance(got, Scan):
                # A payment code before a product is chosen: nothing to charge yet.
                self.rejected_scans += 1
                self._notice = Notice("Choose a product first", "请先选择商品", self._clock() + NOTICE_S)
                await self._show_idle()
        return None

    async def _wait_input(self, timeout: float | None) -> Press | Scan | None:
        """A button press or a scanner line, or None on timeout or stop."""
        waiters: dict[asyncio.Task[object], str] = {
            asyncio.create_task(self._presses.get()): "press",
            asyncio.create_task(self._stop.wait()): "stop",
        }
        if self._scans is not None:
            waiters[asyncio.create_task(self._scans.get())] = "scan"
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        # Both queues may have delivered at once: put the extra item back rather than lose it.
        result: Press | Scan | None = None
        for task in done:
            kind = waiters[task]
            if kind == "stop":
                continue
            item = Press(str(task.result())) if kind == "press" else Scan(str(task.result()))
            if result is None:
                result = item
            elif isinstance(item, Press):
                self._presses.put_nowait(item.name)
            elif self._scans is not None:
                self._scans.put_nowait(item.line)
        return result

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # ------------------------------------------------------------ one sale

    async def sell(self, slot_id: str) -> Sale:
        slot = self._config.catalog.slot(slot_id)
        runner = self._runner
        runner.adopt(Sale())
        self._notice = None
        selected = Selected(
            slot.id,
            Journal.new_order_id(),
            slot.price,
            slot.currency,
            self._clock(),
            qr_provider=self._config.payments.provider,
            timeout_s=self._config.selection.payment_timeout_s,
        )
        try:
            await runner.step(selected)
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
        next_poll: dict[str, float] = {}
        shown: tuple[object, ...] | None = None
        while runner.sale.state is SaleState.AWAITING_PAYMENT:
            sale = runner.sale
            now = self._clock()
            shown = await self._show_pay(sale, now, shown)
            if self._stop.is_set():
                await runner.step(ShutdownRequested(now))
                break
            deadline = sale.deadline or now
            for attempt in sale.open_attempts:
                first_poll = attempt.started + self._poll_interval(attempt.provider, attempt.mode)
                next_poll.setdefault(attempt.order_id, first_poll)
            # Wake when the countdown's whole second changes, a poll is due, or time is up.
            fraction = (deadline - now) % 1.0
            wake = min([deadline, now + (fraction if fraction > 1e-3 else 1.0), *next_poll.values()])
            got = await self._wait_input(max(0.0, wake - now))
            if isinstance(got, Press) and got.name == CANCEL:
                await runner.step(CancelPressed(self._clock()))
                break
            if isinstance(got, Scan):
                await self._on_scan(got.line)
                continue
            now = self._clock()
            for attempt in runner.sale.open_attempts:
                due = next_poll.get(attempt.order_id, now)
                if now >= due or now >= deadline:
                    # At the deadline, query once more before closing: a payment that just went
                    # through must be delivered, not cancelled.
                    await self._poll(attempt.order_id)
                    next_poll[attempt.order_id] = self._clock() + self._poll_interval(attempt.provider, attempt.mode)
                    if runner.sale.state is not SaleState.AWAITING_PAYMENT:
                        break
                    await self._give_up_stale_code(attempt.order_id)
            await runner.step(Tick(self._clock()))

    def _poll_interval(self, provider: str, mode: PaymentMode) -> float:
        if mode is PaymentMode.CODE:
            return self._runner.providers[provider].code_poll.interval_s
        section = getattr(self._config.payments, provider, None)
        return float(getattr(section, "poll_interval_s", 2.0))

    async def _poll(self, order_id: str) -> None:
        status = await self._runner.query(order_id)
        if status is not None:
            await self._runner.apply_status(status, order_id)

    async def _give_up_stale_code(self, order_id: str) -> None:
        attempt = self._runner.sale.attempt(order_id)
        if attempt is None or attempt.mode is not PaymentMode.CODE or attempt.state.value != "open":
            return
        window = self._runner.providers[attempt.provider].code_poll.give_up_after_s
        if self._clock() - attempt.started >= window:
            await self._runner.step(GiveUpAttempt(order_id, self._clock()))

    async def _on_scan(self, line: str) -> None:
        """A scanner line during payment: classify, route and charge it, or say why not."""
        runner = self._runner
        code = classify(line)
        if isinstance(code, PaymentCode):
            routes = self._config.payments.routes.model_dump()
            provider = route(code, routes)
            if isinstance(provider, str) and provider not in runner.providers:
                provider = CodeRejected(f"provider {provider} is not available", "Payment code not accepted",
                                        "暂不支持此付款码")
        if isinstance(code, CodeRejected) or isinstance(provider, CodeRejected):
            rejected = code if isinstance(code, CodeRejected) else provider
            assert isinstance(rejected, CodeRejected)
            log.info("scanner: refused a code: %s", rejected.why)
            self.rejected_scans += 1
            self._notice = Notice(rejected.reason_en, rejected.reason_zh, self._clock() + NOTICE_S)
            return
        sale = runner.sale
        if sale.code_attempt_open:
            self._notice = Notice("One moment - a payment is in progress", "正在处理付款，请稍候",
                                  self._clock() + NOTICE_S)
            return
        number = sum(1 for a in sale.attempts if a.mode is PaymentMode.CODE) + 1
        order_id = f"{sale.order_id}C{number}"
        log.info("scanner: %s code %s -> %s", code.family.value, code.masked, provider)
        await runner.step(CodeScanned(order_id, provider, code.code, self._clock()))
        if runner.last_refusal is not None:
            self._notice = Notice("Payment code refused - please refresh it and scan again",
                                  "付款码无效，请刷新后重新扫描", self._clock() + NOTICE_S)

    # ------------------------------------------------------------ screens

    def _current_notice(self) -> Notice | None:
        if self._notice is not None and self._clock() >= self._notice.until:
            self._notice = None
        return self._notice

    async def _show_idle(self) -> None:
        products = tuple(self.product_line(s.id) for s in self._config.catalog.slots)
        single = self._config.selection.mode is SelectionMode.SINGLE
        notice = self._current_notice()
        await self._display(
            Screen(
                ScreenKind.IDLE,
                products=products,
                single_product=single,
                reason_en=notice.en if notice else None,
                reason_zh=notice.zh if notice else None,
            )
        )

    async def _show_out_of_service(self, reason_en: str, reason_zh: str) -> None:
        self.out_of_service = reason_en
        await self._display(Screen(ScreenKind.OUT_OF_SERVICE, reason_en=reason_en, reason_zh=reason_zh))

    async def _show_pay(self, sale: Sale, now: float, shown: tuple[object, ...] | None) -> tuple[object, ...]:
        kind = ScreenKind.CONFIRMING if sale.buyer_scanned else ScreenKind.PAY
        left = sale.seconds_left(now)
        notice = self._current_notice()
        key = (kind, left, notice.en if notice else None)
        if shown != key:
            assert sale.slot_id is not None
            await self._display(
                Screen(
                    kind,
                    product=self.product_line(sale.slot_id),
                    qr_content=sale.qr_content,
                    seconds_left=left,
                    reason_en=notice.en if notice else None,
                    reason_zh=notice.zh if notice else None,
                    scanner=self._scans is not None,
                )
            )
        return key

    async def _display(self, screen: Screen) -> None:
        """Show a screen after any screen still being drawn in the background, so none overtakes."""
        behind, self._screen_behind = self._screen_behind, None
        if behind is not None:
            await behind
        await self._show(screen)

    def _display_behind(self, screen: Screen) -> None:
        """Draw a screen without holding up the caller: the relay must not wait for Pillow."""
        behind = self._screen_behind

        async def draw() -> None:
            if behind is not None:
                await behind
            await self._show(screen)

        self._screen_behind = asyncio.create_task(draw(), name="screen")

    async def show_state(self, sale: Sale, detail: str) -> None:
        """Screens for the states a sale passes through after payment (runner listener)."""
        if sale.slot_id is None:
            return
        product = self.product_line(sale.slot_id)
        if sale.state is SaleState.PAID and detail == "PaymentVerified":
            self._display_behind(Screen(ScreenKind.DELIVERING, product=product))
        elif sale.state is SaleState.REFUNDING and detail == "DeliveryFailed":
            await self._display(
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
                await self._display(Screen(ScreenKind.THANK_YOU, product=product))
            case SaleState.REFUNDED:
                await self._display(Screen(ScreenKind.REFUNDED, product=product))
            case SaleState.EXPIRED:
                await self._display(
                    Screen(
                        ScreenKind.CANCELLED,
                        product=product,
                        reason_en="Time is up - you have not been charged",
                        reason_zh="支付超时，未扣款",
                    )
                )
            case SaleState.CANCELLED:
                if sale.close_reason is not CloseReason.PROVIDER_ERROR:
                    await self._display(
                        Screen(
                            ScreenKind.CANCELLED,
                            product=product,
                            reason_en="Cancelled - you have not been charged",
                            reason_zh="已取消，未扣款",
                        )
                    )
