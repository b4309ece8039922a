"""Serial scanners over real pseudo-terminals (os.openpty), through pyserial-asyncio-fast."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devices.lines import CodeOptions, LineDecoder
from devices.scanner_serial import PtyScanner, SerialOptions, SerialScanner


class Pty:
    """A pseudo-terminal whose slave is reached through a stable symlink, like /dev/serial/by-id."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.slave = -1
        self.plug()

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        self.link.symlink_to(os.ttyname(self.slave))

    def unplug(self) -> None:
        self.link.unlink()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[Pty]:
    p = Pty(tmp_path / "scanner")
    yield p
    p.unplug() if p.link.exists() else None


@contextlib.asynccontextmanager
async def reading(scanner: SerialScanner) -> AsyncIterator[asyncio.Queue[str]]:
    codes: asyncio.Queue[str] = asyncio.Queue()

    async def pump() -> None:
        async for code in scanner.codes():
            codes.put_nowait(code)

    task = asyncio.create_task(pump())
    try:
        await asyncio.wait_for(scanner.connected.wait(), 5)
        yield codes
    finally:
        await scanner.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_codes(codes: asyncio.Queue[str], n: int, timeout: float = 5) -> list[str]:
    return [await asyncio.wait_for(codes.get(), timeout) for _ in range(n)]


def serial(port: Path, **options: object) -> SerialScanner:
    return SerialScanner(SerialOptions(port=str(port), reconnect_s=0.1, **options))  # type: ignore[arg-type]


async def test_fragmented_lines_are_joined(pty: Pty) -> None:
    scanner = serial(pty.link, terminator="CR")
    async with reading(scanner) as codes:
        for chunk in (b"2834", b"5678901", b"234\r28", b"99\r"):
            pty.write(chunk)
            await asyncio.sleep(0.02)
        assert await next_codes(codes, 2) == ["28345678901234", "2899"]


async def test_garbage_and_empty_lines_are_dropped_whole(pty: Pty) -> None:
    scanner = serial(pty.link)
    async with reading(scanner) as codes:
        pty.write(b"\x00\xff\x13noise\r\n\r\n  \n134567890123456789\r\n")
        assert await next_codes(codes, 1) == ["134567890123456789"]
        assert scanner.decoder.dropped == 1
        assert codes.empty()


async def test_an_over_long_line_is_dropped_including_its_tail(pty: Pty) -> None:
    scanner = serial(pty.link, max_length=32)
    async with reading(scanner) as codes:
        pty.write(b"9" * 40)  # no terminator yet: more than max_length, so it is being dropped
        await asyncio.sleep(0.05)
        pty.write(b"TAIL\r1234\r")
        assert await next_codes(codes, 1) == ["1234"]
        pty.write(b"8" * 33 + b"\r5678\r")
        assert await next_codes(codes, 1) == ["5678"]


async def test_prefix_and_suffix_are_stripped_and_crlf_frames(pty: Pty) -> None:
    scanner = serial(pty.link, terminator="CRLF", prefix="]Q1", suffix="#")
    async with reading(scanner) as codes:
        pty.write(b"]Q1281234567890#\r\n287777\r\n")
        assert await next_codes(codes, 2) == ["281234567890", "287777"]


async def test_parity_and_baud_rate_reach_the_port(pty: Pty) -> None:
    scanner = serial(pty.link, baudrate=115200)
    async with reading(scanner) as codes:
        transport = scanner._writer.transport  # type: ignore[union-attr]
        assert transport.serial.baudrate == 115200  # type: ignore[attr-defined]
        pty.write(b"42\r")
        assert await next_codes(codes, 1) == ["42"]
    # A pty refuses parity and 7 data bits (real UARTs take them): check what the port is asked for.
    framed = serial(pty.link, baudrate=9600, parity="even", bytesize=7, stopbits=2)
    assert framed._serial_kwargs() == {"baudrate": 9600, "bytesize": 7, "parity": "E", "stopbits": 2}


async def test_a_port_that_refuses_the_settings_is_reported_not_raised(pty: Pty) -> None:
    scanner = serial(pty.link, parity="odd")
    health: list[tuple[bool, str]] = []
    scanner.health_listener = lambda ok, detail: health.append((ok, detail))
    task = asyncio.create_task(anext(scanner.codes()))
    await asyncio.sleep(0.3)
    assert health and health[-1][0] is False and "Invalid argument" in health[-1][1]
    assert not task.done()
    await scanner.aclose()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
        await task


async def test_unplugged_and_replugged_the_scanner_carries_on(pty: Pty) -> None:
    health: list[tuple[bool, str]] = []
    scanner = serial(pty.link)
    scanner.health_listener = lambda ok, detail: health.append((ok, detail))
    async with reading(scanner) as codes:
        pty.write(b"1111\r")
        assert await next_codes(codes, 1) == ["1111"]
        pty.write(b"22")  # half a code when the cable is pulled: never delivered
        await asyncio.sleep(0.05)
        pty.unplug()
        for _ in range(100):
            if health and not health[-1][0]:
                break
            await asyncio.sleep(0.02)
        assert health[-1][0] is False
        await asyncio.sleep(0.3)  # several retries against a missing port, no crash
        pty.plug()
        await asyncio.wait_for(scanner.connected.wait(), 5)
        pty.write(b"3333\r")
        assert await next_codes(codes, 1) == ["3333"]
        assert health[-1] == (True, f"{pty.link} open")
        assert codes.empty()


async def test_a_port_missing_at_start_is_retried(tmp_path: Path) -> None:
    link = tmp_path / "later"
    scanner = serial(link)
    health: list[bool] = []
    scanner.health_listener = lambda ok, _detail: health.append(ok)
    codes: asyncio.Queue[str] = asyncio.Queue()

    async def pump() -> None:
        async for code in scanner.codes():
            codes.put_nowait(code)

    task = asyncio.create_task(pump())
    try:
        await asyncio.sleep(0.3)
        assert health and health[-1] is False
        late = Pty(link)
        await asyncio.wait_for(scanner.connected.wait(), 5)
        late.write(b"77\r")
        assert await next_codes(codes, 1) == ["77"]
        late.unplug()
    finally:
        await scanner.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_simulated_scanner_types_through_the_same_code_path() -> None:
    scanner = PtyScanner()
    async with reading(scanner) as codes:
        scanner.scan("286512345678901234")
        scanner.scan("99", terminator=b"\n")
        assert await next_codes(codes, 2) == ["286512345678901234", "99"]


@pytest.mark.parametrize(
    ("terminator", "stream", "expected"),
    [
        ("CR", b"12\r34\r\n56\r", ["12", "34", "56"]),
        ("LF", b"12\n34\r\n", ["12", "34"]),
        ("CRLF", b"12\r\n34\r\n", ["12", "34"]),
        ("any", b"12\r34\n56\r\n\r\n78\r", ["12", "34", "56", "78"]),
    ],
)
def test_each_terminator_frames_codes(terminator: str, stream: bytes, expected: list[str]) -> None:
    decoder = LineDecoder(CodeOptions(terminator=terminator))  # type: ignore[arg-type]
    got = [code for byte in stream for code in decoder.feed(bytes([byte]))]
    assert got == expected
