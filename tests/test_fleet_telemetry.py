"""Telemetry readers on fake /proc and /sys trees, and the console's table."""

from __future__ import annotations

import json
from pathlib import Path

from kiosk.fleet.console import FleetView
from kiosk.fleet.telemetry import cpu_temp_c, memory, network, system_sample, uptime_s


def test_readers_on_a_raspberry_pi_like_tree(tmp_path: Path) -> None:
    proc, thermal = tmp_path / "proc", tmp_path / "thermal"
    (proc / "net").mkdir(parents=True)
    (proc / "uptime").write_text("12345.67 20000.00\n")
    (proc / "meminfo").write_text("MemTotal:        3884376 kB\nMemFree:  1 kB\nMemAvailable:    3000000 kB\n")
    (proc / "net" / "route").write_text(
        "Iface\tDestination\tGateway \tFlags\n"
        "wlan0\t0000A8C0\t00000000\t0001\n"
        "wlan0\t00000000\t0100A8C0\t0003\n"
    )
    (proc / "net" / "wireless").write_text(
        "Inter-| sta-|   Quality        |   Discarded packets\n"
        " face | tus | link level noise |  nwid  crypt\n"
        " wlan0: 0000   54.  -56.  -256        0      0\n"
    )
    for n, (kind, temp) in enumerate((("gpu-thermal", "40000"), ("cpu-thermal", "51234"))):
        zone = thermal / f"thermal_zone{n}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(temp + "\n")
    assert uptime_s(proc) == 12345.7
    assert cpu_temp_c(thermal) == 51.2  # the cpu zone, not the first one
    assert memory(proc) == {"total_bytes": 3884376 * 1024, "available_bytes": 3000000 * 1024}
    assert network(proc) == {"interface": "wlan0", "wifi_link_quality": 54.0, "wifi_signal_dbm": -56.0}


def test_missing_values_are_left_out(tmp_path: Path) -> None:
    assert cpu_temp_c(tmp_path) is None and network(tmp_path) is None and uptime_s(tmp_path) is None
    sample = system_sample(tmp_path)
    assert "disk" in sample and "load" in sample


def test_fleet_view_orders_problems_first_and_clears_alarms() -> None:
    view = FleetView()

    def put(topic: str, body: object) -> None:
        view.update(topic, json.dumps(body).encode() if body is not None else b"")

    put("kiosk/v1/f/a/status", {"state": "online", "session": 1, "ts": "2026-11-21T10:00:00Z"})
    put("kiosk/v1/f/b/status", {"state": "lost", "session": 3, "ts": "2026-11-21T09:00:00Z"})
    put("kiosk/v1/f/c/status", {"state": "online", "session": 2, "ts": "2026-11-21T10:00:00Z"})
    put("kiosk/v1/f/c/alarms/door", {"id": "door", "severity": "warning", "message": "open",
                                     "raised_at": "2026-11-21T10:00:00Z", "source": "hardware"})
    put("kiosk/v1/f/a/counters", {"sales": 3, "refunds": 0, "amounts": {"USD": {"sales": 750, "refunds": 0}},
                                  "ts": "2026-11-21T10:05:00Z"})
    lines = view.table().splitlines()
    assert lines[0] == "3 kiosk(s): 1 lost, 2 online"
    assert [line.split()[1] for line in lines[2:]] == ["b", "c", "a"]
    assert "7.50 USD" in lines[4] and "door(warning)" in lines[3]
    put("kiosk/v1/f/c/alarms/door", None)
    assert view.rows[("f", "c")].alarms == {} and view.alarm_lines() == []
