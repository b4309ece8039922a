"""USB HID barcode scanners in keyboard mode: Linux key events back to the characters typed.

Pure, so it is tested with recorded event sequences and needs no evdev. Key codes are the kernel's
(linux/input-event-codes.h, a stable ABI); the layout is US, which is what scanners emit unless
reconfigured. Shift and Caps Lock are tracked; Enter (or Tab) ends a code.
"""

from __future__ import annotations

from collections.abc import Iterable

EV_KEY = 1
KEY_UP, KEY_DOWN, KEY_REPEAT = 0, 1, 2
KEY_TAB, KEY_ENTER, KEY_KPENTER = 15, 28, 96
KEY_LEFTSHIFT, KEY_RIGHTSHIFT, KEY_CAPSLOCK = 42, 54, 58

# code: (unshifted, shifted)
US: dict[int, tuple[str, str]] = {
    2: ("1", "!"), 3: ("2", "@"), 4: ("3", "#"), 5: ("4", "$"), 6: ("5", "%"), 7: ("6", "^"),
    8: ("7", "&"), 9: ("8", "*"), 10: ("9", "("), 11: ("0", ")"), 12: ("-", "_"), 13: ("=", "+"),
    16: ("q", "Q"), 17: ("w", "W"), 18: ("e", "E"), 19: ("r", "R"), 20: ("t", "T"), 21: ("y", "Y"),
    22: ("u", "U"), 23: ("i", "I"), 24: ("o", "O"), 25: ("p", "P"), 26: ("[", "{"), 27: ("]", "}"),
    30: ("a", "A"), 31: ("s", "S"), 32: ("d", "D"), 33: ("f", "F"), 34: ("g", "G"), 35: ("h", "H"),
    36: ("j", "J"), 37: ("k", "K"), 38: ("l", "L"), 39: (";", ":"), 40: ("'", '"'), 41: ("`", "~"),
    43: ("\\", "|"), 44: ("z", "Z"), 45: ("x", "X"), 46: ("c", "C"), 47: ("v", "V"), 48: ("b", "B"),
    49: ("n", "N"), 50: ("m", "M"), 51: (",", "<"), 52: (".", ">"), 53: ("/", "?"), 57: (" ", " "),
    # The numeric keypad, which some scanners use for digits.
    71: ("7", "7"), 72: ("8", "8"), 73: ("9", "9"), 74: ("-", "-"), 75: ("4", "4"), 76: ("5", "5"),
    77: ("6", "6"), 78: ("+", "+"), 79: ("1", "1"), 80: ("2", "2"), 81: ("3", "3"), 82: ("0", "0"),
    83: (".", "."), 55: ("*", "*"), 98: ("/", "/"),
}
_SHIFTS = (KEY_LEFTSHIFT, KEY_RIGHTSHIFT)


class KeyDecoder:
    """Feed EV_KEY events; each Enter returns the text typed since the previous one."""

    def __init__(self, *, end_keys: Iterable[int] = (KEY_ENTER, KEY_KPENTER), max_length: int = 4096) -> None:
        self.end_keys = frozenset(end_keys)
        self.max_length = max_length
        self._shift: set[int] = set()
        self._caps = False
        self._text: list[str] = []
        self.unknown_keys = 0

    def feed(self, ev_type: int, code: int, value: int) -> str | None:
        if ev_type != EV_KEY:
            return None  # EV_SYN, EV_MSC (scan codes), EV_LED ...
        if code in _SHIFTS:
            if value == KEY_DOWN:
                self._shift.add(code)
            elif value == KEY_UP:
                self._shift.discard(code)
            return None
        if value != KEY_DOWN:
            return None  # key up and auto-repeat type nothing new
        if code == KEY_CAPSLOCK:
            self._caps = not self._caps
            return None
        if code in self.end_keys:
            text, self._text = "".join(self._text), []
            return text
        chars = US.get(code)
        if chars is None:
            self.unknown_keys += 1
            return None
        shifted = bool(self._shift)
        char = chars[1] if shifted else chars[0]
        if self._caps and char.isalpha():
            char = char.swapcase()
        if len(self._text) < self.max_length + 1:
            self._text.append(char)
        return None

    def reset(self) -> None:
        self._shift.clear()
        self._text.clear()


def decode_events(events: Iterable[tuple[int, int, int]]) -> list[str]:
    """Every line in a recorded (type, code, value) sequence."""
    decoder = KeyDecoder()
    return [line for e in events if (line := decoder.feed(*e)) is not None]
