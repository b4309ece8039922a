"""Payment QR codes drawn the way phone scanners read best.

ECC level M, a quiet zone of 4 modules, whole pixels per module and nearest-neighbour scaling
only, black on white (reference/devices.md 2.8): a fractional or smoothed module pitch blurs
module edges and is the usual reason a wallet needs several tries.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import qrcode
import qrcode.constants
from PIL import Image

QUIET_ZONE = 4  # modules; the QR standard's minimum


class QrDoesNotFitError(ValueError):
    """The code needs more pixels than the box has, even at one pixel per module."""


@dataclass(frozen=True)
class QrCode:
    image: Image.Image  # mode "L", quiet zone included, square
    modules: int  # modules per side, quiet zone included
    pitch: int  # pixels per module


@lru_cache(maxsize=8)
def _matrix(content: str) -> tuple[tuple[bool, ...], ...]:
    # Cached because the pay screen is redrawn every second with the same content.
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=1, border=QUIET_ZONE)
    code.add_data(content)
    code.make(fit=True)
    return tuple(tuple(bool(cell) for cell in row) for row in code.get_matrix())


def module_count(content: str) -> int:
    """Modules per side of the code for `content`, quiet zone included."""
    return len(_matrix(content))


def qr_code(content: str, max_side: int) -> QrCode:
    """The code for `content` at the largest whole pixels per module that fits in `max_side`."""
    matrix = _matrix(content)
    modules = len(matrix)
    pitch = max_side // modules
    if pitch < 1:
        raise QrDoesNotFitError(f"a QR code of {modules} modules does not fit in {max_side} px")
    small = Image.new("L", (modules, modules), 255)
    small.putdata([0 if dark else 255 for row in matrix for dark in row])
    image = small.resize((modules * pitch, modules * pitch), Image.Resampling.NEAREST)
    return QrCode(image=image, modules=modules, pitch=pitch)
