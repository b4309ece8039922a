"""A short soak in CI: random tourists and faults on one kiosk, every sale checked for money.
`bench/soak.py --sales 300` runs the long one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.soak import soak


@pytest.mark.timeout(1200)
async def test_soak_keeps_every_sale_whole(tmp_path: Path) -> None:
    sales = int(os.environ.get("KIOSK_SOAK_SALES", "16"))
    report = await soak(tmp_path, sales, seed=int(os.environ.get("KIOSK_SOAK_SEED", "7")))
    print("\n" + report.summary())
    assert report.sales == sales
    assert not report.problems, "\n".join(report.problems)
    assert len(report.outcomes) >= 3, "the random tourists should end sales in several ways"
