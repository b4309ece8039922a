"""Pimoroni Inky pHAT / wHAT / Impression through the `inky` library (optional extra `eink`).

`inky.auto.auto()` reads the board's EEPROM and returns the right class. Inky boards have no
partial refresh; a full refresh takes 15 s or more on the red/yellow boards, so they suit the
static "scan to pay" layout. Colours are the board's own palette indices (BLACK and WHITE differ
between board families).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from PIL import Image
from pydantic import Field

from devices.base import DeviceError, DriverOptions
from devices.eink import EinkDisplay, EinkOptions


class InkyOptions(EinkOptions):
    type: Literal["inky"] = "inky"
    width: int = Field(default=400, ge=64, le=4096)
    height: int = Field(default=300, ge=64, le=4096)
    dpi: float = Field(default=119, ge=50, le=600)
    partial_refresh: bool = False
    refresh_s: float = Field(default=20.0, gt=0, le=120)


def auto_board(options: InkyOptions) -> Any:
    try:
        from inky.auto import auto
    except ModuleNotFoundError as exc:
        raise DeviceError("display.type 'inky' needs Pimoroni's library: pip install 'kiosk[eink]'") from exc
    return auto(ask_user=False, verbose=False)


class InkyDisplay(EinkDisplay):
    name = "inky"
    Options: ClassVar[type[DriverOptions]] = InkyOptions
    board_factory: ClassVar[Callable[[InkyOptions], Any]] = staticmethod(auto_board)

    def __init__(self, options: InkyOptions) -> None:
        super().__init__(options)
        self.options: InkyOptions = options
        self.board: Any = None

    async def open(self) -> None:
        try:
            board = await asyncio.to_thread(type(self).board_factory, self.options)
        except DeviceError:
            raise
        except Exception as exc:  # no EEPROM, no I2C, no SPI: inky raises RuntimeError and friends
            raise DeviceError(f"inky: no board found ({exc})") from exc
        if self.size not in {(board.width, board.height), (board.height, board.width)}:
            raise DeviceError(f"inky board is {board.width}x{board.height}; config says {self.size[0]}x{self.size[1]}")
        self.board = board

    def _refresh(self, frame: Image.Image, full: bool) -> None:
        board = self.board
        if board is None:
            raise DeviceError("inky is not open")
        if (frame.width, frame.height) != (board.width, board.height):
            frame = frame.transpose(Image.Transpose.ROTATE_90)
        black, white = int(board.BLACK), int(board.WHITE)
        indices = frame.convert("L").point(lambda v: white if v >= 128 else black)
        board.set_image(Image.frombytes("P", indices.size, indices.tobytes()))
        with contextlib.suppress(AttributeError):
            board.set_border(white)
        board.show()

    def describe(self) -> str:
        return f"inky {self.options.width}x{self.options.height} (full refresh, ~{self.options.refresh_s:g} s)"
