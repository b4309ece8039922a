"""The long soak: hundreds of sales with random tourists and faults (tests/soak.py), then the
figure: sales per minute, and every sale's money checked.

    .venv/bin/python bench/soak.py --sales 300 [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.soak import soak  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sales", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    report = asyncio.run(soak(Path(tempfile.mkdtemp(prefix="kiosk-soak-")), args.sales, args.seed))
    print("soak:", report.summary())
    for problem in report.problems:
        print("  ", problem)
    return 0 if not report.problems else 1


if __name__ == "__main__":
    sys.exit(main())
