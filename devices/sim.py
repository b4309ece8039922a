"""A simulated vending mechanism for `MockFactory` pins: what the relay does to the sensor.

When a slot's relay energizes, the product drops and the drop sensor fires shortly after,
unless the slot is jammed. This is the hardware half of the demo's simulated tourist.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from gpiozero.pins.mock import MockFactory, MockPin


@dataclass
class SimSlot:
    relay_pin: int | str
    sensor_pin: int | str | None
    relay_active_high: bool = True
    sensor_active_high: bool = False


class SimulatedMachine:
    def __init__(self, factory: MockFactory, slots: dict[str, SimSlot], *, drop_delay_s: float = 0.15) -> None:
        self._factory = factory
        self._slots = slots
        self._delay = drop_delay_s
        self.jammed: set[str] = set()
        self.dropped: list[str] = []
        self._lock = threading.Lock()
        for slot_id, slot in slots.items():
            self._watch(slot_id, slot)

    def _pin(self, spec: int | str) -> MockPin:
        pin: MockPin = self._factory.pin(spec)
        return pin

    def _watch(self, slot_id: str, slot: SimSlot) -> None:
        relay = self._pin(slot.relay_pin)
        original = relay._change_state

        def change_state(value: bool) -> bool:
            changed: bool = original(value)
            energized = changed and value == slot.relay_active_high
            if energized and slot.sensor_pin is not None and slot_id not in self.jammed:
                threading.Timer(self._delay, self._drop, args=(slot_id, slot)).start()
            return changed

        # MockPin has no output hook; wrapping its state setter is the one seam it offers.
        relay._change_state = change_state

    def _drop(self, slot_id: str, slot: SimSlot) -> None:
        assert slot.sensor_pin is not None
        sensor = self._pin(slot.sensor_pin)
        with self._lock:
            self.dropped.append(slot_id)
            # A falling product interrupts the beam for a moment: one active pulse.
            if slot.sensor_active_high:
                sensor.drive_high()
                sensor.drive_low()
            else:
                sensor.drive_low()
                sensor.drive_high()

    def press(self, pin: int | str) -> None:
        """Press and release an active-low button."""
        p = self._pin(pin)
        p.drive_low()
        p.drive_high()
