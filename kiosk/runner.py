"""Carries out a sale's commands: journal first, then the side effect, then the next event.

Used by the engine for live sales and by recovery for sales a crash left unfinished, so both
paths move money and goods through exactly the same code.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from devices.base import Input, Relay
from kiosk import crashpoints
from kiosk.config import HoldDelivery, PulseDelivery, PulsesDelivery, Slot
from kiosk.journal import Journal
from kiosk.payments.base import (
    Order,
    OutcomeUnknown,
    PaymentError,
    PaymentMode,
    PaymentRejected,
    PaymentState,
    PaymentStatus,
    Provider,
)
from kiosk.sale import (
    BeginDelivery,
    BuyerScanned,
    ChargeCode,
    CloseOrder,
    CodeRefused,
    Command,
    CreateQr,
    Deliver,
    DeliveryConfirmed,
    DeliveryFailed,
    DeliveryStarted,
    Event,
    Finished,
    OrderClosed,
    OrderFailed,
    PaymentVerified,
    ProviderClosed,
    QrReady,
    Refund,
    RefundConfirmed,
    Sale,
    SaleState,
)

log = logging.getLogger(__name__)

class EmitEvent(Protocol):
    """Puts an event into the outbox; a given event_id is stored at most once."""

    def __call__(self, kind: str, data: dict[str, object], money: bool, event_id: str | None = None) -> bool: ...


def sale_event_id(order_id: str, kind: str) -> str:
    """The same id every time a sale's final event is reported, so a repeat after a crash is
    de-duplicated by the outbox and by the backend."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"kiosk-sale:{order_id}:{kind}").hex


# Told of every state change after it is journaled (screens, the demo's timeline).
Listener = Callable[[Sale, str], Awaitable[None] | None]


class Unresolved(Exception):
    """The provider could not be reached to finish this step; the journal keeps the sale open
    and the reconciler tries again later."""


@dataclass
class Retry:
    attempts: int = 5
    first_delay_s: float = 1.0
    max_delay_s: float = 15.0

    def delays(self) -> list[float]:
        out, d = [], self.first_delay_s
        for _ in range(self.attempts - 1):
            out.append(d)
            d = min(d * 2, self.max_delay_s)
        return out


class SaleRunner:
    def __init__(
        self,
        *,
        journal: Journal,
        providers: dict[str, Provider],
        slots: dict[str, Slot],
        relays: dict[str, Relay],
        sensors: dict[str, Input],
        emit_event: EmitEvent,
        clock: Callable[[], float],
        payment_timeout_s: float,
        subject_prefix: str = "Kiosk",
        retry: Retry | None = None,
        listener: Listener | None = None,
    ) -> None:
        self._journal = journal
        self._providers = providers
        self._slots = slots
        self._relays = relays
        self._sensors = sensors
        self._emit_event = emit_event
        self._clock = clock
        self._timeout_s = payment_timeout_s
        self._subject_prefix = subject_prefix
        self._retry = retry or Retry()
        self._listeners: list[Listener] = [listener] if listener else []
        self.sale = Sale()
        self.last_refusal: str | None = None
        # Recovery sets this: a payment found verified after a restart is delivered or refunded
        # by the recovery policy, not delivered on the spot.
        self.hold_delivery = False

    def replace_slots(self, slots: dict[str, Slot]) -> None:
        """A new catalog from the operator: names for order subjects, delivery settings. The amount
        of a sale under way stays the one it was created (and journaled) with."""
        self._slots = slots

    @property
    def providers(self) -> dict[str, Provider]:
        return self._providers

    def provider_for(self, order_id: str | None = None) -> Provider:
        attempt = self.sale.attempt(order_id)
        if attempt is None:
            raise KeyError(f"sale {self.sale.order_id} has no payment attempt {order_id}")
        return self._providers[attempt.provider]

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def order(self, order_id: str | None = None) -> Order:
        """The provider-side order of one payment attempt (default: the sale's QR order)."""
        sale = self.sale
        assert sale.order_id is not None and sale.slot_id is not None
        attempt = sale.attempt(order_id)
        slot = self._slots[sale.slot_id]
        return Order(
            order_id=attempt.order_id if attempt else sale.order_id,
            amount_minor=sale.amount_minor,
            currency=sale.currency,
            subject=f"{self._subject_prefix} {slot.names.en}",
            mode=attempt.mode if attempt else PaymentMode.QR,
        )

    def adopt(self, sale: Sale) -> None:
        """Take over a sale restored from the journal (recovery)."""
        self.sale = sale

    async def step(self, event: Event, note: dict[str, object] | None = None) -> None:
        """Apply an event; journal a changed state before running the commands it produced."""
        before = self.sale
        sale, commands = before.handle(event)
        if sale is before:
            return
        if sale.state is not before.state or sale.attempts != before.attempts:
            crashpoints.reached(f"journal.before:{sale.state.value}")
            self._journal.record(sale, note=note)
            crashpoints.reached(f"journal.after:{sale.state.value}")
        self.sale = sale
        detail = type(event).__name__
        for listener in self._listeners:
            result = listener(sale, detail)
            if inspect.isawaitable(result):
                await result
        for command in commands:
            await self._run(command)

    async def _run(self, command: Command) -> None:
        match command:
            case CreateQr(order_id=order_id):
                await self._create_qr(order_id)
            case ChargeCode(order_id=order_id, code=code):
                await self._charge_code(order_id, code)
            case CloseOrder(order_id=order_id):
                await self.close_order(order_id or None)
            case BeginDelivery():
                if not self.hold_delivery:
                    await self.step(DeliveryStarted(self._clock()))
            case Deliver(slot_id=slot_id):
                await self._deliver(slot_id)
            case Refund(refund_id=refund_id, order_id=order_id):
                await self.refund(refund_id, order_id or None)
            case Finished():
                self.report()

    # ------------------------------------------------------------ payments

    async def _create_qr(self, order_id: str) -> None:
        try:
            crashpoints.reached("provider.before:create_qr")
            qr = await self.provider_for(order_id).create_qr(self.order(order_id))
            crashpoints.reached("provider.after:create_qr")
        except PaymentError as exc:
            log.warning("order %s: could not create the QR: %s", self.sale.order_id, exc)
            await self.step(OrderFailed(str(exc), self._clock()))
            return
        await self.step(QrReady(qr.qr_content, self._clock(), self._timeout_s))

    async def _charge_code(self, order_id: str, code: str) -> None:
        self.last_refusal = None
        try:
            crashpoints.reached("provider.before:charge_code")
            status = await self.provider_for(order_id).charge_code(self.order(order_id), code)
            crashpoints.reached("provider.after:charge_code")
        except PaymentRejected as exc:
            # A definitive, verified refusal: no money moved; the tourist may try again.
            self.last_refusal = exc.code
            await self.step(CodeRefused(order_id, str(exc), self._clock()))
            return
        except PaymentError as exc:
            # Unknown: the engine's polling settles it by query, then cancel/reverse.
            log.warning("order %s: charge outcome unknown: %s", order_id, exc)
            return
        await self.apply_status(status, order_id)

    async def apply_status(self, status: PaymentStatus, order_id: str | None = None) -> None:
        """Feed a provider's answer about one attempt into the sale."""
        now = self._clock()
        if status.state is PaymentState.PAID:
            await self.verified_paid(status, order_id)
        elif status.state is PaymentState.PENDING and status.buyer_scanned:
            await self.step(BuyerScanned(now, order_id))
        elif status.state in (PaymentState.CLOSED, PaymentState.REFUNDED):
            await self.step(ProviderClosed(now, order_id))

    async def probe(self, provider_name: str) -> bool:
        """Is the provider reachable and answering verifiably? Queries an order that never existed."""
        provider = self._providers.get(provider_name)
        if provider is None:
            return False
        currency = next(iter(self._slots.values())).currency
        probe = Order(f"PROBE{uuid.uuid4().hex[:20]}", 1, currency, "availability probe")
        try:
            await provider.query(probe)
        except PaymentRejected:
            return True  # a verified refusal is an answer
        except PaymentError as exc:
            log.info("provider %s still unavailable: %s", provider_name, exc)
            return False
        return True

    async def query(self, order_id: str | None = None) -> PaymentStatus | None:
        """One status query; None when the outcome stays unknown (the caller polls again)."""
        try:
            status = await self.provider_for(order_id).query(self.order(order_id))
            if status.state is PaymentState.PAID:
                crashpoints.reached("provider.after:query_paid")
            return status
        except OutcomeUnknown as exc:
            log.warning("order %s: query outcome unknown: %s", order_id or self.sale.order_id, exc)
            return None
        except PaymentRejected as exc:
            log.warning("order %s: query rejected: %s", order_id or self.sale.order_id, exc)
            return None

    async def close_order(self, order_id: str | None = None) -> None:
        """Close one attempt at its provider (idempotent); a close that finds it paid refunds it."""
        order = self.order(order_id)
        provider = self.provider_for(order_id)
        attempt = self.sale.attempt(order_id)
        if attempt is not None and order.mode is PaymentMode.CODE:
            # WeChat refuses to reverse a micropay younger than 15 s, counted from when it created
            # the order (during our charge call, a little after attempt.started): wait out the
            # rest with a margin, so the first reverse is not refused.
            floor = provider.code_poll.cancel_not_before_s
            wait = attempt.started + floor + (1.0 if floor else 0.0) - self._clock()
            if 0 < wait <= floor + 1.0:
                await asyncio.sleep(wait)
        last_error: Exception | None = None
        for delay in [*self._retry.delays(), None]:
            try:
                crashpoints.reached("provider.before:cancel")
                outcome = await provider.cancel(order)
                crashpoints.reached("provider.after:cancel")
            except PaymentError as exc:
                last_error = exc
                log.warning("order %s: close failed: %s", order.order_id, exc)
            else:
                await self.step(OrderClosed(outcome.refunded, self._clock(), order.order_id))
                return
            if delay is not None:
                await asyncio.sleep(delay)
        raise Unresolved(f"order {order.order_id} could not be closed: {last_error}")

    async def refund(self, refund_id: str, order_id: str | None = None) -> None:
        """Refund the winning payment in full with this refund id (reused on every retry)."""
        order_id = order_id or self.sale.winner
        order = self.order(order_id)
        provider = self.provider_for(order_id)
        last_error: Exception | None = None
        for delay in [*self._retry.delays(), None]:
            try:
                # The same refund id on every retry: the provider refunds it once.
                crashpoints.reached("provider.before:refund")
                await provider.refund(order, refund_id)
                crashpoints.reached("provider.after:refund")
            except PaymentError as exc:
                last_error = exc
                log.warning("order %s: refund %s failed: %s", order.order_id, refund_id, exc)
            else:
                await self.step(RefundConfirmed(self._clock()), {"refund_id": refund_id})
                return
            if delay is not None:
                await asyncio.sleep(delay)
        raise Unresolved(f"order {order.order_id} refund {refund_id} not confirmed: {last_error}")

    async def verified_paid(self, status: PaymentStatus, order_id: str | None = None) -> bool:
        """Step to PAID on a provider-verified success whose amount and currency are ours too."""
        if status.state is not PaymentState.PAID:
            return False
        sale = self.sale
        expected = order_id or sale.order_id
        if (
            status.order_id != expected
            or status.amount_minor != sale.amount_minor
            or status.currency != sale.currency
        ):
            # The provider layer checks this already; a second look costs nothing and a bug
            # there must not turn into a delivery on someone else's payment.
            log.error("order %s: paid status does not match the sale; ignored", sale.order_id)
            return False
        await self.step(PaymentVerified(status.provider_txn_id, self._clock(), order_id))
        return True

    # ------------------------------------------------------------ delivery

    async def _deliver(self, slot_id: str) -> None:
        slot = self._slots[slot_id]
        relay = self._relays[slot_id]
        sensor = self._sensors.get(slot_id)
        # Arm the sensor before the relay moves: a fast drop must not be missed.
        confirmed: asyncio.Task[bool] | None = None
        if sensor is not None and slot.confirm is not None:
            confirmed = asyncio.create_task(sensor.wait_active(self._delivery_window(slot)))
        try:
            crashpoints.reached("relay.before")
            await self._move_relay(slot, relay)
            crashpoints.reached("relay.after")
        except Exception as exc:  # a relay driver failure must end in a refund, not a crash
            if confirmed is not None:
                confirmed.cancel()
            log.error("slot %s: relay failed: %s", slot_id, exc)
            await self.step(DeliveryFailed(f"relay failed: {exc}", self._clock()))
            return
        if confirmed is None or await confirmed:
            await self.step(DeliveryConfirmed(self._clock()))
        else:
            await self.step(DeliveryFailed("no drop detected", self._clock()))

    @staticmethod
    def _delivery_window(slot: Slot) -> float:
        assert slot.confirm is not None
        match slot.delivery:
            case PulseDelivery(ms=ms):
                active = ms / 1000
            case PulsesDelivery(count=count, ms=ms, gap_ms=gap):
                active = (count * ms + (count - 1) * gap) / 1000
            case HoldDelivery(s=s):
                active = s
        return active + slot.confirm.timeout_s

    @staticmethod
    async def _move_relay(slot: Slot, relay: Relay) -> None:
        match slot.delivery:
            case PulseDelivery(ms=ms):
                await relay.pulse(ms)
            case PulsesDelivery(count=count, ms=ms, gap_ms=gap):
                await relay.pulses(count, ms, gap)
            case HoldDelivery(s=s):
                await relay.hold(s)

    async def force_delivery_outcome(self, deliver: bool, reason: str) -> None:
        """Recovery of a paid sale whose delivery is unknown: deliver (again) or refund, by policy.
        The choice is journaled before it is carried out."""
        note: dict[str, object] = {"recovery": reason, "policy": "deliver" if deliver else "refund"}
        self._journal.record(self.sale, note=note)
        if deliver and self.sale.state is SaleState.PAID:
            await self.step(DeliveryStarted(self._clock()), note)
        elif deliver and self.sale.state is SaleState.DELIVERING and self.sale.slot_id is not None:
            await self._deliver(self.sale.slot_id)
        else:
            await self.step(DeliveryFailed(reason, self._clock()), note)

    # ------------------------------------------------------------ reporting

    def report(self) -> None:
        """Put the sale's final event into the outbox, then mark it reported in the journal.
        A crash in between repeats the event (same id) at recovery; it is never lost."""
        sale = self.sale
        state = sale.state
        winner = sale.attempt(sale.winner) if sale.winner else None
        data: dict[str, object] = {
            "order_id": sale.order_id,
            "slot_id": sale.slot_id,
            "amount_minor": sale.amount_minor,
            "currency": sale.currency,
            "provider": winner.provider if winner else None,
            "mode": winner.mode.value if winner else None,
            "state": state.value,
            "provider_txn_id": sale.provider_txn_id,
        }
        assert sale.order_id is not None
        if state is SaleState.DONE:
            kind, money = "sale", True
        elif state is SaleState.REFUNDED:
            kind, money = "refund", True
            data["refund_id"] = sale.refund_id
            data["reason"] = sale.detail or (sale.close_reason.value if sale.close_reason else None)
        else:
            kind, money = "sale_closed", False
            data["reason"] = sale.close_reason.value if sale.close_reason else None
        if self._emit_event(kind, data, money, sale_event_id(sale.order_id, kind)):
            self._journal.mark_reported(sale.order_id)
