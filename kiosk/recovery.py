"""Recovery: drive every unfinished sale in the journal to a final state by asking the provider.

Runs at start-up (after a crash or power loss) and between sales (for sales the provider could
not finish earlier). It never guesses: an order is closed, delivered or refunded only on what
the provider verifiably says; the configured policy decides for paid sales whose delivery is
unknown, and that choice is journaled and reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kiosk.config import RecoveryPolicy
from kiosk.journal import Journal, SaleRecord
from kiosk.payments.base import PaymentState
from kiosk.runner import SaleRunner, Unresolved
from kiosk.sale import SaleState, ShutdownRequested

log = logging.getLogger(__name__)


class Recovery:
    def __init__(
        self,
        journal: Journal,
        runner: SaleRunner,
        policy: RecoveryPolicy,
        emit_event: Callable[[str, dict[str, object], bool], None],
    ) -> None:
        self._journal = journal
        self._runner = runner
        self._policy = policy
        self._emit_event = emit_event

    async def reconcile(self) -> int:
        """Finish what can be finished now; return how many sales are still open."""
        still_open = 0
        for record in self._journal.unfinished():
            try:
                await self._finish(record)
            except Unresolved as exc:
                log.warning("recovery: %s", exc)
            if not self._runner.sale.is_final:
                still_open += 1
        return still_open

    async def _finish(self, record: SaleRecord) -> None:
        runner = self._runner
        runner.adopt(record.to_sale())
        log.info("recovery: order %s was left %s", record.order_id, record.state.value)
        if record.state in (SaleState.SELECTED, SaleState.AWAITING_PAYMENT):
            status = await runner.query()
            if status is None:
                raise Unresolved(f"order {record.order_id}: status unknown, will retry")
            if status.state is PaymentState.PAID and await runner.verified_paid(status):
                await self._paid_undelivered(record, "paid before a restart; delivery never started")
            else:
                # Not paid: close it at the provider so a late payment cannot be taken.
                await runner.step(ShutdownRequested(0.0), {"recovery": "closed after restart"})
        elif record.state is SaleState.CLOSING:
            # Closing is idempotent; a paid order is refunded by the provider's cancel/reverse.
            await runner.close_order()
        elif record.state in (SaleState.PAID, SaleState.DELIVERING):
            await self._paid_undelivered(record, f"restart during {record.state.value}; delivery unknown")
        elif record.state is SaleState.REFUNDING:
            sale = runner.sale
            await runner.refund(sale.refund_id or f"{sale.order_id}R1")

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
        )
        await self._runner.force_delivery_outcome(self._policy is RecoveryPolicy.DELIVER, reason)
