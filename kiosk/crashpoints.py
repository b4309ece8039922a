"""Named points on the money path, where the crash tests kill the real process.

`KIOSK_CRASH_AT=journal.after:paid` makes the daemon SIGKILL itself when it reaches that point
(`...@2` for the second time). The variable is unset in production, and then `reached()` is one
comparison. Points: journal.before:<state> / journal.after:<state> around each journal write,
provider.before:<op> / provider.after:<op> around each provider call (create_qr, charge_code,
query, cancel, refund), relay.before / relay.after, outbox.before / outbox.after.
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("KIOSK_CRASH_AT") or None
_POINT, _, _NTH = (_SPEC or "").partition("@")
_WANTED = int(_NTH) if _NTH else 1
_seen = 0


def reached(point: str) -> None:
    global _seen
    if _SPEC is None or point != _POINT:
        return
    _seen += 1
    if _seen == _WANTED:
        os.kill(os.getpid(), signal.SIGKILL)
