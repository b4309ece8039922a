"""Recovery: drive every unsettled sale in the journal to a final state by asking the providers.

Runs at start-up (after a crash or power loss) and between sales (for sales a provider could
not finish earlier). It never guesses: an attempt is closed, delivered or refunded only on what
its provider verifiably says; the configured policy decides for paid sales whose delivery is
unknown, and that choice is journaled and reported.
"""

from __future__ import annotations

import logging

from kiosk.config import RecoveryPolicy
from kiosk.journal import Journal, SaleRecord
from kiosk.payments.base import PaymentState
from kiosk.runner import EmitEvent, SaleRunner, Unresolved, sale_event_id
from kiosk.sale import AttemptState, SaleState, ShutdownRequested

log = logging.getLogger(__name__)


class Recovery:
    def __init__(
        self,
        journal: Journal,
        runner: SaleRunner,
        policy: RecoveryPolicy,
        emit_event: EmitEvent,
    ) -> None:
        self._journal = journal
        self._runner = runner
        self._policy = policy
        self._emit_event = emit_event

    async def reconcile(self) -> int:
        """Finish what can be finished now; return how many sales are still unsettled."""
        still_open = 0
        self._runner.hold_delivery = True
        try:
            for record in self._journal.unsettled():
                try:
                    await self._finish(record)
                except Unresolved as exc:
                    log.warning("recovery: %s", exc)
                if not self._runner.sale.is_final or self._runner.sale.needs_settling:
                    still_open += 1
            for record in self._journal.unreported():
                # Final in the journal, but its event may not have reached the outbox.
                self._runner.adopt(record.to_sale())
                self._runner.report()
        finally:
            self._runner.hold_delivery = False
        return still_open

    async def _finish(self, record: SaleRecord) -> None:
        runner = self._runner
        runner.adopt(record.to_sale())
        log.info("recovery: order %s was left %s", record.order_id, record.state.value)
        if record.state in (SaleState.SELECTED, SaleState.AWAITING_PAYMENT):
            await self._settle_unpaid_sale(record)
        elif record.state is SaleState.CLOSING:
            # Closing is idempotent; a paid attempt is refunded by its provider's cancel/reverse.
            for attempt in runner.sale.open_attempts:
                await runner.close_order(attempt.order_id)
        elif record.state in (SaleState.PAID, SaleState.DELIVERING):
            await self._paid_undelivered(record, f"restart during {record.state.value}; delivery unknown")
        elif record.state is SaleState.REFUNDING:
            sale = runner.sale
            await runner.refund(sale.refund_id or f"{sale.winner or sale.order_id}R1", sale.winner)
        await self._settle_losers()

    async def _settle_unpaid_sale(self, record: SaleRecord) -> None:
        runner = self._runner
        for attempt in runner.sale.open_attempts:
            status = await runner.query(attempt.order_id)
            if status is None:
                raise Unresolved(f"order {attempt.order_id}: status unknown, will retry")
            if status.state is PaymentState.PAID and await runner.verified_paid(status, attempt.order_id):
                await self._paid_undelivered(record, "paid before a restart; delivery never started")
                return
        # Nothing paid: close every attempt so a late payment cannot be taken.
        await runner.step(ShutdownRequested(0.0), {"recovery": "closed after restart"})

    async def _settle_losers(self) -> None:
        """Attempts that lost the race (or a restart interrupted their close) are closed;
        a close that finds one paid refunds it."""
        sale = self._runner.sale
        for attempt in sale.attempts:
            if attempt.order_id != sale.winner and attempt.state in (AttemptState.OPEN, AttemptState.PAID):
                if sale.state in (SaleState.SELECTED, SaleState.AWAITING_PAYMENT):
                    continue  # handled by _settle_unpaid_sale
                await self._runner.close_order(attempt.order_id)

    async def _paid_undelivered(self, record: SaleRecord, reason: str) -> None:
        self._emit_event(
            "recovery",
            {
                "order_id": record.order_id,
                "state": record.state.value,
                "policy": self._policy.value,
                "reason": reason,
            },
            True,
            sale_event_id(record.order_id, "recovery"),
        )
        runner = self._runner
        runner.hold_delivery = False
        try:
            await runner.force_delivery_outcome(self._policy is RecoveryPolicy.DELIVER, reason)
        finally:
            runner.hold_delivery = True
