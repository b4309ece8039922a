"""The daemon's own overhead on the money path: from the moment the gateway's verified success
answer is in hand to the moment the relay energizes, as a ratio to one signed gateway round trip
(a query), both measured in the same run against the sandbox in its own process.

    .venv/bin/python bench/bench_paid_to_relay.py [--sales 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import start_sandbox  # noqa: E402
from kiosk.payments.base import Order, PaymentState  # noqa: E402
from kiosk.payments.sandbox.keys import ensure_keys  # noqa: E402
from tests.kiosk_harness import make_config, running_kiosk  # noqa: E402


async def measure(state: Path, gateway: str, keys: Path, sales: int) -> tuple[list[float], list[float]]:
    config = make_config(state, gateway, keys, None, result_screen_s=0)
    paid_to_relay: list[float] = []
    round_trips: list[float] = []
    async with running_kiosk(config) as kiosk:
        engine = kiosk.app.engine
        assert engine is not None
        provider = engine.runner.providers["alipay"]
        relay = engine.runner._relays["A1"]  # the relay object the runner drives
        paid_at: dict[str, float] = {}
        real_query = provider.query

        async def timed_query(order: Order) -> Any:
            status = await real_query(order)  # signed, sent, answered and verified
            if status.state is PaymentState.PAID:
                paid_at["t"] = time.perf_counter()
            return status

        real_pulse = relay.pulse

        async def timed_pulse(ms: int) -> None:
            if "t" in paid_at:
                paid_to_relay.append(time.perf_counter() - paid_at.pop("t"))
            await real_pulse(ms)

        provider.query = timed_query  # type: ignore[method-assign]
        relay.pulse = timed_pulse  # type: ignore[method-assign]
        await kiosk.buy("B1")  # warm-up
        for _ in range(sales):
            await kiosk.buy("A1")
        # The baseline: one signed round trip with the same provider, on the same loop.
        for i in range(sales):
            start = time.perf_counter()
            await real_query(Order(f"RTT{i}{time.monotonic_ns()}", 250, "USD", "bench"))
            round_trips.append(time.perf_counter() - start)
    return paid_to_relay, round_trips


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sales", type=int, default=20)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="kiosk-bench-relay-"))
    keys = state / "keys"
    ensure_keys(keys)
    proc, gateway = start_sandbox(keys)
    try:
        overhead, rtt = asyncio.run(measure(state, gateway, keys, args.sales))
    finally:
        proc.terminate()
        proc.wait(10)
    o, r = statistics.median(overhead), statistics.median(rtt)
    print(f"paid_to_relay: median {o * 1000:.2f} ms from the verified success to the relay, "
          f"{r * 1000:.2f} ms per gateway round trip; ratio {o / r:.2f}x ({len(overhead)} sales)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
