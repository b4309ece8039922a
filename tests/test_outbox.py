"""Outbox on real SQLite files: durability across reopen, ordering, acks, and the class quotas."""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kiosk.fleet import MessageClass, Outbox, Topics

TOPICS = Topics("kiosk/v1", "fleet-a", "k-001")


def open_outbox(path: Path, **kwargs: int) -> Outbox:
    return Outbox(path, TOPICS, **kwargs)


def test_envelope_shape_and_topic(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.sqlite") as box:
        event_id = box.put_event("sale", {"slot": "A1", "amount": 350, "currency": "USD"}, money=True)
        [record] = box.pending(10)
    assert record.id == event_id
    assert uuid.UUID(hex=event_id).version == 4 and len(event_id) == 32
    assert record.topic == "kiosk/v1/fleet-a/k-001/events/sale"
    assert record.money and record.message_class is MessageClass.MONEY
    env = record.envelope()
    assert set(env) == {"id", "seq", "type", "device", "fleet", "ts", "data"}
    assert (env["id"], env["seq"], env["type"]) == (event_id, 1, "sale")
    assert (env["device"], env["fleet"]) == ("k-001", "fleet-a")
    assert env["data"] == {"slot": "A1", "amount": 350, "currency": "USD"}
    ts = datetime.fromisoformat(env["ts"].replace("Z", "+00:00"))
    offset = ts.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    assert abs((datetime.now(UTC) - ts).total_seconds()) < 60


def test_records_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with open_outbox(path) as box:
        sale = box.put_event("sale", {"amount": 350}, money=True)
        temp = box.put_event("telemetry", {"temp_c": 41.5}, money=False)
    with open_outbox(path) as box:
        records = box.pending(10)
        assert [r.id for r in records] == [sale, temp]
        assert records[0].envelope()["data"] == {"amount": 350}
        assert records[1].message_class is MessageClass.TELEMETRY
        assert box.depth() == 2


def test_file_is_wal(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    open_outbox(path).close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_seq_is_monotonic_across_reopen_and_acks(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    seqs: list[int] = []
    for _ in range(3):
        with open_outbox(path) as box:
            for _ in range(2):
                box.put_event("sale", {}, money=True)
            records = box.pending(100)
            seqs.extend(r.seq for r in records)
            # Acking everything must not let the counter restart at 1.
            for r in records:
                box.ack(r.id)
            assert box.depth() == 0
    assert seqs == [1, 2, 3, 4, 5, 6]
    with open_outbox(path) as box:
        assert box.last_seq == 6


def test_session_counter_persists(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with open_outbox(path) as box:
        assert [box.next_session(), box.next_session()] == [1, 2]
    with open_outbox(path) as box:
        assert box.next_session() == 3
        assert box.last_seq == 0  # sessions and event numbers are separate counters


def test_pending_is_oldest_first_and_limited(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.sqlite") as box:
        ids = [box.put_event("sale" if i % 2 else "telemetry", {"i": i}, money=bool(i % 2)) for i in range(7)]
        assert [r.id for r in box.pending(3)] == ids[:3]
        assert [r.id for r in box.pending(100)] == ids
        assert [r.seq for r in box.pending(100)] == list(range(1, 8))


def test_ack_deletes_only_that_record(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with open_outbox(path) as box:
        a = box.put_event("sale", {"n": 1}, money=True)
        b = box.put_event("sale", {"n": 2}, money=True)
        assert box.ack(a) is True
        assert box.ack(a) is False  # a repeated ack is harmless
        assert box.ack("no-such-id") is False
        assert [r.id for r in box.pending(10)] == [b]
    with open_outbox(path) as box:
        assert [r.id for r in box.pending(10)] == [b]


def test_telemetry_quota_drops_oldest_but_never_money(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with open_outbox(path, telemetry_limit=3) as box:
        money = [box.put_event("sale", {"n": n}, money=True) for n in range(5)]
        telemetry = [box.put_event("telemetry", {"n": n}, money=False) for n in range(10)]
        money.append(box.put_event("refund", {"n": 99}, money=True))
        assert box.depth(MessageClass.MONEY) == 6
        assert box.depth(MessageClass.TELEMETRY) == 3
        assert box.depth() == 9
        assert box.dropped_telemetry == 7
        kept = [r.id for r in box.pending(100)]
        # All money, the three newest telemetry, still in insertion order.
        assert kept == money[:5] + telemetry[-3:] + money[5:]
    with open_outbox(path, telemetry_limit=3) as box:
        assert box.dropped_telemetry == 7


def test_money_has_no_quota(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.sqlite", telemetry_limit=1) as box:
        for n in range(50):
            box.put_event("sale", {"n": n}, money=True)
        box.put_event("telemetry", {}, money=False)
        assert box.depth(MessageClass.MONEY) == 50


def test_unserialisable_data_stores_nothing(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.sqlite") as box:
        with pytest.raises(TypeError):
            box.put_event("sale", {"when": datetime.now(UTC)}, money=True)
        with pytest.raises(ValueError):
            box.put_event("sale", {"amount": float("nan")}, money=True)
        assert box.depth() == 0
        # The failed puts rolled their sequence numbers back: no gap for the backend to chase.
        box.put_event("sale", {"amount": 1}, money=True)
        assert [r.seq for r in box.pending(10)] == [1]


@pytest.mark.parametrize("kind", ["", "a/b", "sale+", "#", "nul\x00"])
def test_kind_must_be_one_topic_level(tmp_path: Path, kind: str) -> None:
    with open_outbox(tmp_path / "o.sqlite") as box:
        with pytest.raises(ValueError):
            box.put_event(kind, {}, money=True)
        assert box.depth() == 0


def test_per_device_sequence(tmp_path: Path) -> None:
    # The same file reopened under another device id starts that device's own sequence.
    path = tmp_path / "o.sqlite"
    with open_outbox(path) as box:
        box.put_event("sale", {}, money=True)
    with Outbox(path, Topics("kiosk/v1", "fleet-a", "k-002")) as other:
        other.put_event("sale", {}, money=True)
        assert [r.envelope()["device"] for r in other.pending(10)] == ["k-001", "k-002"]
        assert [r.seq for r in other.pending(10)] == [1, 1]


def test_topics() -> None:
    assert TOPICS.status == "kiosk/v1/fleet-a/k-001/status"
    assert TOPICS.event("refund") == "kiosk/v1/fleet-a/k-001/events/refund"
    for bad in (("kiosk/+", "f", "d"), ("kiosk/v1", "f/x", "d"), ("kiosk/v1", "f", "#"), ("", "f", "d")):
        with pytest.raises(ValueError):
            Topics(*bad)


def test_ack_many_pending_after_and_historical_payload(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.sqlite") as box:
        ids = [box.put_event("sale", {"n": n}, money=True) for n in range(5)]
        first = box.pending(2)
        assert [r.id for r in box.pending(10, after_pos=first[-1].pos)] == ids[2:]
        assert box.last_pos() == box.pending(10)[-1].pos
        historical = json.loads(first[0].historical_payload())
        assert historical["historical"] is True and historical["id"] == ids[0]
        assert box.ack_many(ids[:3]) == 3 and box.ack_many([]) == 0
        assert [r.id for r in box.pending(10)] == ids[3:]


def test_money_limit_marks_full_but_never_refuses_money(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.sqlite", money_limit=3) as box:
        for n in range(2):
            box.put_event("sale", {"n": n}, money=True)
        assert not box.money_full
        box.put_event("refund", {}, money=True)
        assert box.money_full
        box.put_event("sale", {}, money=True)  # a sale under way when it filled is still stored
        assert box.depth(MessageClass.MONEY) == 4


def test_nonces_are_single_use_until_they_expire_and_state_persists(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with open_outbox(path) as box:
        assert box.use_nonce("n1", expires=100.0, now=50.0)
        assert not box.use_nonce("n1", expires=100.0, now=60.0)
        box.set_state("alarms", '{"active": {}}')
    with open_outbox(path) as box:
        assert not box.use_nonce("n1", expires=100.0, now=70.0), "a replay after a restart is still refused"
        assert box.use_nonce("n1", expires=300.0, now=150.0), "forgotten once it could only be stale"
        assert box.get_state("alarms") == '{"active": {}}'
        box.set_state("alarms", None)
        assert box.get_state("alarms") is None


def test_event_on_another_topic(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.sqlite") as box:
        box.put_event("telemetry", {"uptime_s": 1}, money=False, topic=TOPICS.telemetry)
        [record] = box.pending(1)
    assert record.topic == "kiosk/v1/fleet-a/k-001/telemetry" and record.kind == "telemetry"
