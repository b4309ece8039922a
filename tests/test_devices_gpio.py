"""Relays, buttons, sensors, door switch and status LED on gpiozero's MockFactory."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPin

from devices.gpio import ButtonBank, DoorOptions, DoorSwitch, GpioInput, GpioRelay, LedOptions, StatusLed
from devices.supervisor import Supervisor


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    saved = Device.pin_factory
    Device.pin_factory = f = MockFactory()
    try:
        yield f
    finally:
        f.reset()
        Device.pin_factory = saved


def pin(factory: MockFactory, number: int) -> MockPin:
    p: MockPin = factory.pin(number)
    return p


def restart_clock(p: MockPin) -> None:
    """assert_states_and_times counts from the first recorded state: start the record now."""
    p.clear_states()


async def test_pulse(factory: MockFactory) -> None:
    relay = GpioRelay(17, pin_factory=factory)
    p = pin(factory, 17)
    restart_clock(p)
    await relay.pulse(200)
    p.assert_states_and_times([(0.0, False), (0.0, True), (0.2, False)])
    assert not relay.is_on


async def test_pulse_train(factory: MockFactory) -> None:
    relay = GpioRelay(18, pin_factory=factory)
    p = pin(factory, 18)
    restart_clock(p)
    await relay.pulses(3, 100, 150)
    p.assert_states_and_times(
        [(0.0, False), (0.0, True), (0.1, False), (0.15, True), (0.1, False), (0.15, True), (0.1, False)]
    )
    assert [s.state for s in p.states].count(True) == 3


async def test_hold(factory: MockFactory) -> None:
    relay = GpioRelay(23, pin_factory=factory)
    p = pin(factory, 23)
    restart_clock(p)
    await relay.hold(0.5)
    p.assert_states_and_times([(0.0, False), (0.0, True), (0.5, False)])


async def test_active_low_relay_is_off_at_boot_and_pulses_low(factory: MockFactory) -> None:
    relay = GpioRelay(24, active_high=False, pin_factory=factory)
    p = pin(factory, 24)
    assert p.state is True  # off = high on an active-low board: boot never dispenses
    restart_clock(p)
    await relay.pulse(100)
    p.assert_states_and_times([(0.0, True), (0.0, False), (0.1, True)])


async def test_a_cancelled_hold_switches_the_relay_off(factory: MockFactory) -> None:
    relay = GpioRelay(25, pin_factory=factory)
    task = asyncio.create_task(relay.hold(30))
    await asyncio.sleep(0.05)
    assert relay.is_on
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not relay.is_on and pin(factory, 25).state is False


async def test_button_presses_from_another_thread_arrive_in_the_loop(factory: MockFactory) -> None:
    loop = asyncio.get_running_loop()
    bank = ButtonBank(loop, {"A1": 5, "cancel": 21}, bounce_s=0, pin_factory=factory)
    seen_in: list[threading.Thread] = []
    bank.accept = lambda name: seen_in.append(threading.current_thread()) or True

    def press() -> None:
        pin(factory, 5).drive_low()
        pin(factory, 5).drive_high()

    worker = threading.Thread(target=press)
    worker.start()
    worker.join()
    assert await asyncio.wait_for(bank.presses.get(), 2) == "A1"
    assert seen_in == [threading.main_thread()]  # accept ran in the loop, not in gpiozero's thread
    bank.close()


async def test_button_bounce_is_debounced_and_refused_presses_dropped(factory: MockFactory) -> None:
    loop = asyncio.get_running_loop()
    bank = ButtonBank(loop, {"A1": 5, "cancel": 21}, bounce_s=0.2, pin_factory=factory)
    p = pin(factory, 5)
    for _ in range(5):  # contact bounce: five edges within a few ms
        p.drive_low()
        p.drive_high()
    await asyncio.sleep(0.05)
    assert bank.presses.qsize() == 1
    bank.presses.get_nowait()
    bank.accept = lambda name: name == "cancel"  # out of service
    await asyncio.sleep(0.25)
    p.drive_low()
    p.drive_high()
    pin(factory, 21).drive_low()
    pin(factory, 21).drive_high()
    await asyncio.sleep(0.05)
    assert [bank.presses.get_nowait() for _ in range(bank.presses.qsize())] == ["cancel"]
    bank.close()


async def test_delivery_sensor_wakes_the_waiter(factory: MockFactory) -> None:
    sensor = GpioInput(27, pin_factory=factory)
    waiting = asyncio.create_task(sensor.wait_active(2))
    await asyncio.sleep(0.05)
    threading.Thread(target=lambda: (pin(factory, 27).drive_low(), pin(factory, 27).drive_high())).start()
    assert await waiting is True
    assert await sensor.wait_active(0.05) is False


async def test_door_open_means_maintenance_and_an_alarm(factory: MockFactory) -> None:
    loop = asyncio.get_running_loop()
    supervisor = Supervisor()
    alarms: list[tuple[str, ...]] = []

    class Sink:
        def on_alarm(self, alarm_id: str, severity: str, message: str) -> None:
            alarms.append((alarm_id, severity, message))

        def on_clear(self, alarm_id: str) -> None:
            alarms.append(("cleared", alarm_id))

    supervisor.add_alarm_sink(Sink())
    p = pin(factory, 26)
    door = DoorSwitch(
        loop,
        DoorOptions(pin=26, bounce_s=0),
        lambda is_open: supervisor.set_maintenance("Service door open" if is_open else None),
        pin_factory=factory,
    )
    assert door.is_open  # pulled up, nothing connected: a cut wire reads as an open door
    p.drive_low()  # door closed: the reed switch pulls the line to ground
    await asyncio.sleep(0.05)
    assert not door.is_open
    p.drive_high()
    await asyncio.sleep(0.05)
    assert door.is_open and supervisor.unavailable_reason() == "Service door open"
    assert alarms == [("maintenance", "warning", "Service door open")]
    p.drive_low()
    await asyncio.sleep(0.05)
    assert supervisor.unavailable_reason() is None and alarms[-1] == ("cleared", "maintenance")
    door.close()


def test_status_led_on_blink_off(factory: MockFactory) -> None:
    led = StatusLed(LedOptions(pin=16), pin_factory=factory)
    p = pin(factory, 16)
    assert p.state is False
    led.set("on")
    assert p.state is True
    led.set("blink")
    time.sleep(0.9)
    assert {s.state for s in p.states[-3:]} == {True, False}
    led.set("off")
    assert p.state is False
    led.close()
