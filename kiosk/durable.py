"""Making new files survive a power cut: a file's name is on disk only once its directory is fsynced.

SQLite fsyncs the file's data (synchronous=FULL) and the directory after creating its WAL, but not
the directory entry of the database file itself, nor directories we create for it.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """mkdir -p, fsyncing each parent whose listing changed."""
    missing: list[Path] = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        fsync_dir(new.parent)


def created_durably(path: Path) -> None:
    """Call after creating `path`: its name reaches the disk before anything relies on it."""
    fsync_dir(path.parent)
