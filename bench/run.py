"""Benchmarks. Each figure is a ratio to a baseline measured in the same run, never a bare time.

    .venv/bin/python bench/run.py [--sales 20]

sale_cpu: CPU time of this process per sale through the full engine (journal, screens rendered
and written as PNG, relay, outbox) against the sandbox gateway, divided by the CPU time of the
bare signed HTTP round trips the protocol needs for one sale (precreate + query), made with the
same provider code. The gateway runs in its own process so its work is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiosk.payments.alipay import AlipayProvider  # noqa: E402
from kiosk.payments.base import Order  # noqa: E402
from kiosk.payments.sandbox.keys import ensure_keys  # noqa: E402
from tests.kiosk_harness import make_config, running_kiosk  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sandbox(keys: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiosk", "sandbox", "--port", str(port), "--keys", str(keys)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(base + "/sandbox/orders", timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the sandbox did not start") from None
            time.sleep(0.1)
    body = json.dumps({"behaviour": "pays", "scan_delay_s": 0, "pay_delay_s": 0, "for_next": "default"}).encode()
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(base + "/sandbox/behaviour", data=body, headers=headers)
    urllib.request.urlopen(request, timeout=5).read()
    return proc, base + "/gateway.do"


async def engine_cpu_per_sale(state: Path, gateway: str, keys: Path, sales: int) -> float:
    config = make_config(state, gateway, keys, None, result_screen_s=0)
    async with running_kiosk(config) as kiosk:
        await kiosk.buy("B1")  # warm-up: imports, font cache, first connection
        start = time.process_time()
        for _ in range(sales):
            sale = await kiosk.buy("A1")
            assert sale.state.value == "done", sale.state
        return (time.process_time() - start) / sales


async def bare_cpu_per_sale(gateway: str, keys: Path, sales: int) -> float:
    config = make_config(Path(tempfile.mkdtemp()), gateway, keys, None)
    assert config.payments.alipay is not None
    provider = AlipayProvider(config.payments.alipay)
    try:
        await provider.create_qr(Order("WARMUP" + os.urandom(4).hex(), 250, "USD", "warm-up"))
        start = time.process_time()
        for i in range(sales):
            order = Order(f"BENCH{i}{os.urandom(4).hex()}", 250, "USD", "bench")
            await provider.create_qr(order)
            status = await provider.query(order)
            assert status.state.value == "paid", status
        return (time.process_time() - start) / sales
    finally:
        await provider.aclose()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sales", type=int, default=20)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="kiosk-bench-"))
    keys = state / "keys"
    ensure_keys(keys)
    proc, gateway = start_sandbox(keys)
    try:
        bare = asyncio.run(bare_cpu_per_sale(gateway, keys, args.sales))
        engine = asyncio.run(engine_cpu_per_sale(state, gateway, keys, args.sales))
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"sale_cpu: {engine * 1000:.1f} ms CPU per sale through the engine, "
          f"{bare * 1000:.1f} ms for the bare signed round trips; ratio {engine / bare:.1f}x ({args.sales} sales)")
    # Wallets: the daemon's overhead from a verified success to the relay vs one round trip.
    subprocess.run([sys.executable, str(Path(__file__).with_name("bench_paid_to_relay.py"))], check=True)
    # Screens and memory (pay screen vs bare qrcode + Pillow; idle daemon RSS vs bare imports).
    subprocess.run([sys.executable, str(Path(__file__).with_name("bench_screens.py"))], check=True)
    # Fleet: outbox drain vs a bare QoS 1 publisher; simulated kiosks against one Mosquitto.
    subprocess.run([sys.executable, str(Path(__file__).with_name("bench_fleet.py"))], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
