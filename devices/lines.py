"""Turning a scanner's byte stream into codes: terminators, prefix and suffix, garbage, length.

Shared by the serial and HID scanners. A code is printable ASCII; a line with anything else in it
(line noise at plug-in, a wrong baud rate) is dropped whole rather than half-read, and so is a line
longer than `max_length`, up to its terminator: its tail must not be taken for a code.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

Terminator = Literal["CR", "LF", "CRLF", "any"]
_SEPARATOR = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n", "any": b"\n"}


class CodeOptions(BaseModel):
    """How codes are framed; part of every scanner's options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    terminator: Terminator = "any"
    prefix: str = Field(default="", max_length=16, description="stripped from the start of a code when present")
    suffix: str = Field(default="", max_length=16, description="stripped from the end of a code when present")
    max_length: int = Field(default=128, ge=4, le=4096)


def clean(text: str, options: CodeOptions) -> str | None:
    """The code in one line, or None for an empty or garbled line."""
    if options.prefix and text.startswith(options.prefix):
        text = text[len(options.prefix) :]
    if options.suffix and text.endswith(options.suffix):
        text = text[: -len(options.suffix)]
    text = text.strip(" \r\n")
    if not text:
        return None
    if not (text.isascii() and text.isprintable()):
        log.warning("scanner: dropped a garbled line of %d characters", len(text))
        return None
    return text


class LineDecoder:
    def __init__(self, options: CodeOptions) -> None:
        self.options = options
        self._buffer = b""
        self._discarding = False
        self.dropped = 0  # garbled or over-long lines, for the self-test and health detail

    def feed(self, chunk: bytes) -> list[str]:
        sep = _SEPARATOR[self.options.terminator]
        data = self._buffer + chunk
        if self.options.terminator == "any":
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, self._buffer = data.split(sep)
        codes: list[str] = []
        for raw in lines:
            if self._discarding:
                self._discarding = False  # the rest of an over-long line ends here
                continue
            if len(raw) > self.options.max_length:
                self._drop(f"a line of {len(raw)} bytes")
                continue
            code = clean(raw.decode("ascii", errors="replace"), self.options)
            if code is not None:
                codes.append(code)
            elif raw.strip():
                self.dropped += 1
        if len(self._buffer) > self.options.max_length:
            # No terminator in sight: forget it and everything up to the next terminator.
            if not self._discarding:
                self._drop(f"more than {self.options.max_length} bytes without a terminator")
            self._buffer = b""
            self._discarding = True
        return codes

    def _drop(self, what: str) -> None:
        self.dropped += 1
        log.warning("scanner: dropped %s", what)

    def reset(self) -> None:
        """After a reconnect: half a line from before the unplug is not a code."""
        self._buffer = b""
        self._discarding = False
