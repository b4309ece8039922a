"""USB HID scanners in keyboard mode: recorded evdev key-event sequences back to the codes."""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import evdev
from evdev import ecodes

from devices.keymap import US, KeyDecoder, decode_events
from devices.scanner_evdev import EvdevOptions, EvdevScanner

EV_SYN, EV_KEY, EV_MSC = ecodes.EV_SYN, ecodes.EV_KEY, ecodes.EV_MSC


def typed(text: str, *, end: int = ecodes.KEY_ENTER) -> list[tuple[int, int, int]]:
    """What a KBW scanner sends: MSC_SCAN, key down, SYN, key up, SYN; shift around shifted keys."""
    reverse = {}
    for code, (plain, shifted) in US.items():
        if code < 71:  # the main block, as scanners type it
            reverse.setdefault(plain, (code, False))
            reverse.setdefault(shifted, (code, True))
    events: list[tuple[int, int, int]] = []

    def key(code: int, value: int) -> None:
        events.extend([(EV_MSC, ecodes.MSC_SCAN, 0x70000 + code), (EV_KEY, code, value), (EV_SYN, 0, 0)])

    for char in text:
        code, shift = reverse[char]
        if shift:
            key(ecodes.KEY_LEFTSHIFT, 1)
        key(code, 1)
        key(code, 0)
        if shift:
            key(ecodes.KEY_LEFTSHIFT, 0)
    key(end, 1)
    key(end, 0)
    return events


def test_keymap_codes_are_the_kernels() -> None:
    # The table is written out so the decoder needs no evdev; it must agree with the kernel's.
    assert ecodes.KEY_1 == 2 and ecodes.KEY_Q == 16 and ecodes.KEY_A == 30 and ecodes.KEY_Z == 44
    assert ecodes.KEY_SLASH == 53 and ecodes.KEY_KP0 == 82 and ecodes.KEY_KPENTER == 96


def test_a_payment_code_is_decoded() -> None:
    assert decode_events(typed("286512345678901234")) == ["286512345678901234"]


def test_shifted_characters_and_a_url() -> None:
    url = "HTTPS://QR.ALIPAY.COM/bax03190?A=1&B=_x"
    assert decode_events(typed(url)) == [url]
    assert decode_events(typed('!@#$%^&*()_+{}|:"<>?~')) == ['!@#$%^&*()_+{}|:"<>?~']


def test_right_shift_caps_lock_keypad_and_repeats() -> None:
    k = ecodes
    events = [
        (EV_KEY, k.KEY_RIGHTSHIFT, 1), (EV_KEY, k.KEY_A, 1), (EV_KEY, k.KEY_A, 2), (EV_KEY, k.KEY_A, 0),
        (EV_KEY, k.KEY_RIGHTSHIFT, 0), (EV_KEY, k.KEY_CAPSLOCK, 1), (EV_KEY, k.KEY_CAPSLOCK, 0),
        (EV_KEY, k.KEY_B, 1), (EV_KEY, k.KEY_B, 0), (EV_KEY, k.KEY_1, 1), (EV_KEY, k.KEY_1, 0),
        (EV_KEY, k.KEY_KP7, 1), (EV_KEY, k.KEY_KP7, 0), (EV_KEY, k.KEY_KPENTER, 1),
    ]
    assert decode_events(events) == ["AB17"]  # auto-repeat types nothing; caps lock only for letters


def test_two_scans_in_one_recording_and_unknown_keys_ignored() -> None:
    events = [*typed("123"), (EV_KEY, ecodes.KEY_F1, 1), (EV_KEY, ecodes.KEY_F1, 0), *typed("456")]
    decoder = KeyDecoder()
    assert [line for e in events if (line := decoder.feed(*e)) is not None] == ["123", "456"]
    assert decoder.unknown_keys == 1


class FakeInputDevice:
    """python-evdev's InputDevice shape: grab, ungrab, close, async_read_loop of InputEvents."""

    def __init__(self, events: list[tuple[int, int, int]], *, then_unplug: bool) -> None:
        self.events = events
        self.then_unplug = then_unplug
        self.grabbed = False
        self.closed = False

    def grab(self) -> None:
        self.grabbed = True

    def ungrab(self) -> None:
        self.grabbed = False

    def close(self) -> None:
        self.closed = True

    async def async_read_loop(self) -> AsyncIterator[Any]:
        for t, c, v in self.events:
            await asyncio.sleep(0)
            yield evdev.InputEvent(0, 0, t, c, v)
        if self.then_unplug:
            raise OSError(errno.ENODEV, "No such device")
        await asyncio.Event().wait()


async def test_the_scanner_grabs_reads_survives_an_unplug_and_reopens(monkeypatch: Any, tmp_path: Path) -> None:
    opened: list[FakeInputDevice] = []
    plan = [
        FakeInputDevice(typed("]Q1111111") + typed("2222"), then_unplug=True),
        OSError(errno.ENOENT, "No such file or directory"),  # still unplugged at the first retry
        FakeInputDevice(typed("3333"), then_unplug=False),
    ]

    def factory(path: Path) -> FakeInputDevice:
        item = plan.pop(0)
        if isinstance(item, OSError):
            raise item
        opened.append(item)
        return item

    monkeypatch.setattr(EvdevScanner, "device_factory", staticmethod(factory))
    scanner = EvdevScanner(EvdevOptions(path=tmp_path / "event-kbd", prefix="]Q1", reconnect_s=0.05))
    health: list[bool] = []
    scanner.health_listener = lambda ok, _detail: health.append(ok)
    codes: list[str] = []

    async def pump() -> None:
        async for code in scanner.codes():
            codes.append(code)

    task = asyncio.create_task(pump())
    try:
        for _ in range(200):
            if len(codes) == 3:
                break
            await asyncio.sleep(0.01)
        assert codes == ["111111", "2222", "3333"]
        assert health == [True, False, False, True]
        assert opened[0].closed and not opened[0].grabbed  # released on unplug
        assert opened[1].grabbed  # exclusive: the keystrokes reach no console
    finally:
        await scanner.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert opened[1].closed
