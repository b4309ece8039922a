"""The simulated tourist behind one sandbox order, shared by every wire protocol in the sandbox.

A tourist either scans the kiosk's QR (merchant-presented) or has shown a payment code to the
kiosk's scanner (user-presented), then pays, hesitates, or is refused by the wallet. Times are
monotonic seconds and everything is computed when asked, never by a timer, so a given sequence of
calls at given times always gives the same answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# pays / never_pays / pays_then_jam: what the tourist does with a QR, or with a payment code
# (pay_delay_s or pending_polls of "confirm in the wallet" first). The code_* and no_balance
# behaviours are the wallet refusing a scanned payment code.
BEHAVIOURS = ("pays", "never_pays", "pays_then_jam", "code_expired", "code_used", "no_balance")
PAYING = frozenset({"pays", "pays_then_jam"})
CODE_REFUSALS = frozenset({"code_expired", "code_used", "no_balance"})
# With a QR there is no code to refuse: an expired or used code means the tourist never manages to
# scan; no balance means they scan and then cannot confirm.
_NEVER_SCANS_QR = frozenset({"never_pays", "code_expired", "code_used"})


@dataclass(frozen=True)
class Behaviour:
    """What the simulated tourist does with the QR code or payment code of one order."""

    name: str = "pays"
    scan_delay_s: float = 2.0  # after precreate: scans (the trade appears as WAIT_BUYER_PAY)
    pay_delay_s: float = 3.0  # after the scan: confirms (TRADE_SUCCESS)
    # Payment codes: stay "user paying" (USERPAYING / 10003 / PROCESSING) for this many status
    # queries, then pay; None = use pay_delay_s.
    pending_polls: int | None = None

    def __post_init__(self) -> None:
        if self.name not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {', '.join(BEHAVIOURS)}")
        if not (0 <= self.scan_delay_s <= 86_400 and 0 <= self.pay_delay_s <= 86_400):
            raise ValueError("delays must be between 0 and 86400 seconds")
        if self.pending_polls is not None and not 0 <= self.pending_polls <= 10_000:
            raise ValueError("pending_polls must be between 0 and 10000")


@dataclass
class Tourist:
    """One order's tourist. presented_code: they showed a code (so "scanned" at creation)."""

    behaviour: Behaviour
    created: float
    presented_code: bool = False
    closed_at: float | None = None
    _polls_left: int | None = field(default=None, init=False)
    _paid_by_polls_at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.presented_code and self.behaviour.pending_polls is not None:
            # pending_polls=0 pays at once, as in every other protocol of the sandbox.
            if self.behaviour.pending_polls == 0:
                self._paid_by_polls_at = self.created
            else:
                self._polls_left = self.behaviour.pending_polls

    @property
    def refusal(self) -> str | None:
        """The wallet's refusal of a presented code (code_expired, code_used, no_balance), if any."""
        name = self.behaviour.name
        return name if self.presented_code and name in CODE_REFUSALS else None

    @property
    def scan_at(self) -> float | None:
        if self.presented_code:
            return self.created
        if self.behaviour.name in _NEVER_SCANS_QR:
            return None
        return self.created + self.behaviour.scan_delay_s

    @property
    def pay_at(self) -> float | None:
        scan = self.scan_at
        if scan is None or self.behaviour.name not in PAYING:
            return None
        if self._polls_left is not None or self._paid_by_polls_at is not None:
            return self._paid_by_polls_at  # counted in queries, not seconds
        return scan + self.behaviour.pay_delay_s

    def _happened(self, at: float | None, now: float) -> bool:
        # Once closed, the tourist's later scan or payment fails, as on a closed real trade.
        horizon = now if self.closed_at is None else min(now, self.closed_at)
        return at is not None and at <= horizon

    def scanned(self, now: float) -> bool:
        return self._happened(self.scan_at, now)

    def paid(self, now: float) -> bool:
        return self._happened(self.pay_at, now)

    def polled(self, now: float) -> None:
        """A status query arrived: one fewer "still confirming" answer before the tourist pays."""
        if self._polls_left is None or self.closed_at is not None or self.behaviour.name not in PAYING:
            return
        # pending_polls queries answer "still confirming"; the one after them finds it paid.
        if self._polls_left == 0:
            self._paid_by_polls_at = now
            self._polls_left = None
        else:
            self._polls_left -= 1

    def close(self, now: float) -> None:
        if self.closed_at is None:
            self.closed_at = now
