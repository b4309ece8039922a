"""Fleet benchmarks against a real Mosquitto on this machine; every figure is a ratio or a share
measured in the same run.

    .venv/bin/python bench/bench_fleet.py [--records 5000] [--kiosks 2000] [--watch-s 10]

drain: an outbox of N money records left by an outage, drained by FleetLink (several QoS 1
publishes in flight, acks deleted in batches, fsync per batch), as a ratio to a bare aiomqtt QoS 1
publisher sending the same payloads to the same broker one awaited publish at a time (the usual
code). Also shown: the link with one publish in flight, to show where the gain comes from.

scale: K simulated kiosks, each a real FleetLink + SQLite outbox (retained status, counters,
a sale event every ~30 s), in two worker processes, against one Mosquitto; then the console's
`status` (snapshot of the retained topics and the table) and `watch` (live for a while), with the
console's CPU time, and the broker's CPU share meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import aiomqtt  # noqa: E402
from broker import Mosquitto  # noqa: E402

from kiosk.config import MqttConfig  # noqa: E402
from kiosk.fleet import FleetLink, Outbox, Topics  # noqa: E402
from kiosk.fleet.console import ConsoleOptions, FleetView, snapshot  # noqa: E402

SALE = {"order_id": "K2611211215038", "slot_id": "A1", "amount_minor": 250, "currency": "USD",
        "provider": "alipay", "state": "done", "provider_txn_id": "2026112122001400000000000001"}


def start_broker(workdir: Path) -> Mosquitto:
    broker = Mosquitto(workdir, extra_config="max_queued_messages 100000\nmax_inflight_messages 20")
    broker.start()
    return broker


def broker_cpu_s(broker: Mosquitto) -> float:
    assert broker.proc is not None
    fields = Path(f"/proc/{broker.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- drain


async def bare_publisher(broker: Mosquitto, payloads: list[bytes], topic: str) -> float:
    async with aiomqtt.Client(broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5,
                              identifier="bare") as client:
        start = time.perf_counter()
        for payload in payloads:
            await client.publish(topic, payload, qos=1)
        return time.perf_counter() - start


async def link_drain(broker: Mosquitto, state: Path, records: int, inflight: int) -> float:
    topics = Topics("kiosk/v1", "bench", f"drain-{inflight}")
    outbox = Outbox(state / f"outbox-{inflight}-{time.monotonic_ns()}.sqlite", topics)
    for _ in range(records):
        outbox.put_event("sale", SALE, money=True)
    config = MqttConfig(url=broker.url, will_delay_s=0, replay_rate_per_s=0, max_inflight=inflight)
    link = FleetLink(config, topics, outbox, client_id=topics.device)
    start = time.perf_counter()
    task = asyncio.create_task(link.run())
    while outbox.depth() > 0:  # noqa: ASYNC110 - polling the outbox is what an observer can do
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - start
    await link.aclose()
    await task
    outbox.close()
    return elapsed


def bench_drain(records: int, repeats: int = 3) -> dict[str, float]:
    state = Path(tempfile.mkdtemp(prefix="kiosk-bench-fleet-"))
    broker = start_broker(state / "broker")
    try:
        topics = Topics("kiosk/v1", "bench", "bare")
        probe = Outbox(state / "probe.sqlite", topics)
        payloads = []
        for _ in range(records):
            probe.put_event("sale", SALE, money=True)
        payloads = [r.payload for r in probe.pending(records)]
        probe.close()
        # Interleaved, median of three each: the machine's other load hits both sides alike.
        bare, windowed, single = [], [], []
        for _ in range(repeats):
            bare.append(asyncio.run(bare_publisher(broker, payloads, topics.event("sale"))))
            windowed.append(asyncio.run(link_drain(broker, state, records, 20)))
            single.append(asyncio.run(link_drain(broker, state, records, 1)))
    finally:
        broker.stop()
    med = statistics.median
    return {"bare_rate": records / med(bare), "link_rate": records / med(windowed),
            "single_rate": records / med(single)}


# ---------------------------------------------------------------- scale


WORKER = "worker"


async def run_worker(url: str, first: int, count: int, duration_s: float, state: Path) -> None:
    links: list[tuple[FleetLink, Outbox, Topics]] = []
    tasks = []
    for n in range(first, first + count):
        topics = Topics("kiosk/v1", f"fleet-{n % 4}", f"kiosk-{n:05d}")
        outbox = Outbox(state / f"{topics.device}.sqlite", topics)
        config = MqttConfig(url=url, will_delay_s=10, keepalive_s=60)
        link = FleetLink(config, topics, outbox, client_id=topics.device, backoff_initial_s=0.5)
        sales = {"n": 0}

        async def counters(link: FleetLink = link, topics: Topics = topics, sales: dict[str, int] = sales) -> None:
            body = {"day": "2026-11-21", "sales": sales["n"], "refunds": 0,
                    "amounts": {"USD": {"sales": 250 * sales["n"], "refunds": 0}}, "open_alarms": 0, "alarms": [],
                    "ts": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}
            await link.publish(topics.counters, json.dumps(body).encode(), retain=True)

        link.connect_hooks.append(counters)
        links.append((link, outbox, topics))
        tasks.append(asyncio.create_task(link.run()))
        tasks.append(asyncio.create_task(_sell(link, outbox, counters, sales)))
        await asyncio.sleep(0.002)  # no connection storm of our own making
    while sum(link.connected for link, _, _ in links) < count:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    print(json.dumps({"ready": count}), flush=True)
    await asyncio.sleep(duration_s)
    for link, _, _ in links:
        await link.aclose()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _sell(link: FleetLink, outbox: Outbox, counters: object, sales: dict[str, int]) -> None:
    await asyncio.sleep(random.uniform(0, 30))
    while True:
        sales["n"] += 1
        outbox.put_event("sale", SALE, money=True)
        link.notify()
        await counters()  # type: ignore[operator]
        await asyncio.sleep(random.uniform(20, 40))


def bench_scale(kiosks: int, watch_s: float, workers: int = 2) -> dict[str, float]:
    state = Path(tempfile.mkdtemp(prefix="kiosk-bench-scale-"))
    broker = start_broker(state / "broker")
    procs: list[subprocess.Popen[str]] = []
    try:
        started = time.perf_counter()
        share = kiosks // workers
        for w in range(workers):
            count = share if w < workers - 1 else kiosks - share * (workers - 1)
            (state / f"w{w}").mkdir()
            procs.append(subprocess.Popen(
                [sys.executable, __file__, WORKER, broker.url, str(w * share), str(count), str(watch_s + 120),
                 str(state / f"w{w}")],
                stdout=subprocess.PIPE, text=True,
            ))
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("a worker died")
        connect_s = time.perf_counter() - started
        options = ConsoleOptions(url=broker.url)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        view = asyncio.run(snapshot(options, quiet_s=0.5, max_s=60))
        table = view.table(limit=20)
        status_wall = time.perf_counter() - wall0 - 0.5  # less the quiet period that ends the snapshot
        status_cpu = time.process_time() - cpu0
        assert table.startswith(f"{kiosks} kiosk(s)"), table.splitlines()[0]
        broker_cpu0, cpu0, wall0 = broker_cpu_s(broker), time.process_time(), time.perf_counter()
        watched = asyncio.run(_watch_quietly(options, watch_s))
        watch_wall = time.perf_counter() - wall0
        watch_cpu = time.process_time() - cpu0
        broker_cpu = broker_cpu_s(broker) - broker_cpu0
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
    return {
        "kiosks": kiosks, "connect_s": connect_s, "status_wall_s": status_wall, "status_cpu_s": status_cpu,
        "watch_cpu_share": watch_cpu / watch_wall, "watch_messages": watched, "watch_s": watch_wall,
        "broker_cpu_share": broker_cpu / watch_wall,
    }


async def _watch_quietly(options: ConsoleOptions, seconds: float) -> int:
    """`kiosk fleet watch` drawing into a null sink (the terminal is not what is measured)."""
    from kiosk.fleet.console import watch

    with open(os.devnull, "w") as sink:  # noqa: ASYNC230 - /dev/null does not block
        view: FleetView = await watch(options, sink, refresh_s=1.0, limit=40, duration_s=seconds)
    return view.messages


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == WORKER:
        url, first, count, duration, state = sys.argv[2:7]
        asyncio.run(run_worker(url, int(first), int(count), float(duration), Path(state)))
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--kiosks", type=int, default=2000)
    parser.add_argument("--watch-s", type=float, default=10.0)
    parser.add_argument("--only", choices=("drain", "scale"), default=None)
    args = parser.parse_args()
    if args.only in (None, "drain"):
        d = bench_drain(args.records)
        print(f"fleet_drain: outbox drain {d['link_rate']:.0f} msg/s vs bare aiomqtt QoS 1 publisher "
              f"{d['bare_rate']:.0f} msg/s; ratio {d['link_rate'] / d['bare_rate']:.2f}x "
              f"(one in flight: {d['single_rate'] / d['bare_rate']:.2f}x; {args.records} records)")
    if args.only in (None, "scale"):
        s = bench_scale(args.kiosks, args.watch_s)
        print(f"fleet_scale: {s['kiosks']} kiosks connected in {s['connect_s']:.1f} s to one Mosquitto; "
              f"console status {s['status_wall_s']:.2f} s wall, {s['status_cpu_s']:.2f} s CPU; "
              f"console watch {100 * s['watch_cpu_share']:.1f}% of one core over {s['watch_s']:.0f} s "
              f"({s['watch_messages']} messages); broker {100 * s['broker_cpu_share']:.1f}% of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
