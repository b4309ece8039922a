"""A local stand-in for the Alipay open platform gateway, for tests, demos and the kiosk simulator.

It speaks the real protocol (RSA2-signed requests and responses, alipay.trade.* semantics), plays a
tourist per order ("pays", "never_pays", "pays_then_jam") and injects faults on demand.
"""

from kiosk.payments.sandbox.cli import main
from kiosk.payments.sandbox.faults import FAULTS
from kiosk.payments.sandbox.gateway import DEFAULT_APP_ID, SandboxGateway
from kiosk.payments.sandbox.keys import SandboxKeys, ensure_keys
from kiosk.payments.sandbox.ledger import BEHAVIOURS

__all__ = ["BEHAVIOURS", "DEFAULT_APP_ID", "FAULTS", "SandboxGateway", "SandboxKeys", "ensure_keys", "main"]
