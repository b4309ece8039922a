"""The power-cut shim (tests/powerloss) does what it says. Each test uses a real child process
under LD_PRELOAD that is SIGKILLed, after which the tracked directory is restored from the
durable image.

The fixture `powerloss_shim` compiles the shim with gcc and caches it in pytest's cache dir by
source hash. A missing gcc fails the tests and never skips them.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from powerloss import ShimBuildError, build_shim, env_for, restore_after_power_cut


@pytest.fixture(scope="session")
def powerloss_shim(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(request.config, "cache", None)
    build_dir = cache.mkdir("powerloss") if cache is not None else tmp_path_factory.mktemp("powerloss")
    try:
        return build_shim(build_dir)
    except ShimBuildError as exc:
        pytest.fail(str(exc), pytrace=False)


class Machine:
    """A tracked directory (`data`), its durable image, and children that die by SIGKILL."""

    def __init__(self, shim: Path, root: Path) -> None:
        self.shim = shim
        self.data = root / "data"
        self.durable = root / "durable"
        self.data.mkdir()

    def run_and_kill(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `code` under the shim. The child SIGKILLs itself once `code` is done, so nothing
        gets closed, flushed or checkpointed on the way out."""
        script = textwrap.dedent(code) + "\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
        env = {**os.environ, **env_for(self.shim, self.data, self.durable)}
        proc = subprocess.run(
            [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == -signal.SIGKILL, f"child: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def power_cut(self) -> None:
        restore_after_power_cut(self.durable, self.data)


@pytest.fixture
def machine(powerloss_shim: Path, tmp_path: Path) -> Machine:
    return Machine(powerloss_shim, tmp_path)


def test_unsynced_writes_do_not_survive(machine: Machine) -> None:
    (machine.data / "old.txt").write_bytes(b"old")  # on disk before the experiment: durable
    machine.run_and_kill(
        """
        import sys
        d = sys.argv[1]
        with open(f"{d}/old.txt", "wb") as fh:
            fh.write(b"new and longer")
        with open(f"{d}/new.txt", "wb") as fh:
            fh.write(b"never synced")
        """,
        str(machine.data),
    )
    # A SIGKILL alone keeps everything: this is what a kill-only crash test sees.
    assert (machine.data / "old.txt").read_bytes() == b"new and longer"
    assert (machine.data / "new.txt").exists()

    machine.power_cut()
    assert (machine.data / "old.txt").read_bytes() == b"old"
    assert not (machine.data / "new.txt").exists()


def test_fsynced_data_survives_exactly(machine: Machine) -> None:
    (machine.data / "old.txt").write_bytes(b"old")
    machine.run_and_kill(
        """
        import os, sys
        d = sys.argv[1]
        payload = bytes(range(256)) * 400  # 100 KiB: more than the shim's copy buffer
        with open(f"{d}/data.bin", "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
            fh.write(b"tail written after the last fsync")
            fh.flush()
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)  # makes the name data.bin durable
        os.close(dfd)
        fd = os.open(f"{d}/old.txt", os.O_WRONLY | os.O_TRUNC)
        os.write(fd, b"replaced")
        os.fdatasync(fd)  # an existing name: fdatasync of the file alone is enough
        os.close(fd)
        fd = os.open(f"{d}/old.txt", os.O_WRONLY | os.O_APPEND | os.O_DSYNC)
        os.write(fd, b" + O_DSYNC")  # durable when write returns, no fsync needed
        os.close(fd)
        """,
        str(machine.data),
    )
    machine.power_cut()
    assert (machine.data / "data.bin").read_bytes() == bytes(range(256)) * 400
    assert (machine.data / "old.txt").read_bytes() == b"replaced + O_DSYNC"
    assert sorted(p.name for p in machine.data.iterdir()) == ["data.bin", "old.txt"]


def test_names_are_durable_only_after_a_directory_fsync(machine: Machine) -> None:
    """Creations, renames and unlinks are directory updates: lost unless the directory is fsynced."""
    (machine.data / "config").write_bytes(b"v1")
    (machine.data / "doomed").write_bytes(b"still here")
    (machine.data / "sub").mkdir()
    machine.run_and_kill(
        """
        import os, sys
        d = sys.argv[1]

        def write_synced(path, data):
            with open(path, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())

        def fsync_dir(path):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(fd)
            os.close(fd)

        write_synced(f"{d}/orphan", b"content synced, name never")  # no directory fsync
        write_synced(f"{d}/.config.tmp", b"v2")
        os.replace(f"{d}/.config.tmp", f"{d}/config")  # atomic replace without directory fsync
        os.unlink(f"{d}/doomed")
        write_synced(f"{d}/sub/kept", b"kept")
        fsync_dir(f"{d}/sub")  # only sub/ is fsynced, not data/
        """,
        str(machine.data),
    )
    machine.power_cut()
    assert not (machine.data / "orphan").exists()
    assert not (machine.data / ".config.tmp").exists()
    assert (machine.data / "config").read_bytes() == b"v1"  # the rename did not reach the disk
    assert (machine.data / "doomed").read_bytes() == b"still here"  # nor did the unlink
    assert (machine.data / "sub" / "kept").read_bytes() == b"kept"

    # The next life fsyncs the directory: now the replace and the unlink are durable.
    machine.run_and_kill(
        """
        import os, sys
        d = sys.argv[1]
        with open(f"{d}/.config.tmp", "wb") as fh:
            fh.write(b"v2")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(f"{d}/.config.tmp", f"{d}/config")
        os.unlink(f"{d}/doomed")
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)
        """,
        str(machine.data),
    )
    machine.power_cut()
    assert (machine.data / "config").read_bytes() == b"v2"
    assert sorted(p.name for p in machine.data.iterdir()) == ["config", "sub"]


def test_threads_and_forks_record_consistently(machine: Machine) -> None:
    """Eight threads fsync their own files concurrently while a forked child syncs too. The
    in-process mutex and the flock between processes keep the image consistent."""
    machine.run_and_kill(
        """
        import os, sys, threading
        d = sys.argv[1]

        def worker(k):
            with open(f"{d}/t{k}", "wb") as fh:
                for i in range(20):
                    fh.seek(0)
                    fh.write(f"{k}:{i}:".encode() * 500)
                    fh.flush()
                    os.fsync(fh.fileno())
                fh.write(b"unsynced tail")
                fh.flush()

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        pid = os.fork()
        if pid == 0:
            with open(f"{d}/forked", "wb") as fh:
                fh.write(b"from the child")
                fh.flush()
                os.fsync(fh.fileno())
            os._exit(0)
        for t in threads:
            t.join()
        assert os.waitpid(pid, 0)[1] == 0
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)
        """,
        str(machine.data),
    )
    machine.power_cut()
    for k in range(8):
        assert (machine.data / f"t{k}").read_bytes() == f"{k}:19:".encode() * 500
    assert (machine.data / "forked").read_bytes() == b"from the child"


SALES = """
import sqlite3, sys
path, synchronous, checkpoint = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
db = sqlite3.connect(path, isolation_level=None)
assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS sale (n INTEGER PRIMARY KEY, amount INTEGER NOT NULL)")
db.execute(f"PRAGMA synchronous={synchronous}")
start = db.execute("SELECT count(*) FROM sale").fetchone()[0]
for n in range(start, start + 50):
    db.execute("BEGIN")
    db.execute("INSERT INTO sale VALUES (?, ?)", (n, 100 + n))
    db.execute("COMMIT")
    if checkpoint and n == start + 24:
        assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
"""


def _sales(path: Path) -> list[tuple[int, int]]:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        return db.execute("SELECT n, amount FROM sale ORDER BY n").fetchall()
    finally:
        db.close()


@pytest.mark.parametrize(
    ("synchronous", "checkpoint", "survivors"),
    [
        ("FULL", False, 50),  # the journal's and the outbox's setting: every commit is durable
        ("FULL", True, 50),
        ("NORMAL", False, 0),  # WAL + NORMAL: commits are durable only at a checkpoint
        ("NORMAL", True, 25),
        ("OFF", False, 0),  # the negative control: SQLite never fsyncs
    ],
)
def test_sqlite_wal_commits_survive_only_when_synced(
    machine: Machine, tmp_path: Path, synchronous: str, checkpoint: bool, survivors: int
) -> None:
    db = machine.data / "journal.sqlite3"
    machine.run_and_kill(SALES, str(db), synchronous, "1" if checkpoint else "0")

    # SIGKILL alone: every commit survives whatever the setting, so a kill-only test cannot tell.
    killed_only = tmp_path / "killed-only"
    shutil.copytree(machine.data, killed_only)
    assert len(_sales(killed_only / db.name)) == 50

    machine.power_cut()
    rows = _sales(db)
    assert rows == [(n, 100 + n) for n in range(survivors)]

    # Restart after the cut (as the crash matrix does): a second life under the shim continues
    # from the restored state, and a second power cut keeps what it committed durably.
    machine.run_and_kill(SALES, str(db), "FULL", "0")
    machine.power_cut()
    assert _sales(db) == [(n, 100 + n) for n in range(survivors + 50)]


def test_files_outside_the_tracked_directory_are_untouched(machine: Machine, tmp_path: Path) -> None:
    outside = tmp_path / "data-outside"  # shares the tracked directory's name as a prefix
    outside.mkdir()
    (outside / "before").write_bytes(b"before")
    proc = machine.run_and_kill(
        """
        import os, sys
        inside, outside = sys.argv[1], sys.argv[2]
        with open(f"{outside}/unsynced", "wb") as fh:
            fh.write(b"unsynced outside")
        with open(f"{outside}/synced", "wb") as fh:
            fh.write(b"synced outside")
            fh.flush()
            os.fsync(fh.fileno())
        fd = os.open(outside, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)
        os.replace(f"{outside}/before", f"{outside}/after")
        with open(f"{inside}/lost", "wb") as fh:
            fh.write(b"unsynced inside")
        print(os.stat(f"{outside}/synced").st_ino, os.stat(outside).st_ino, flush=True)
        """,
        str(machine.data),
        str(outside),
    )
    file_ino, dir_ino = proc.stdout.split()
    # Image records are named "<inode>.<generation>".
    recorded = {p.name.split(".")[0] for kind in ("i", "d") for p in (machine.durable / "img" / kind).iterdir()}
    assert recorded, "the shim recorded nothing at all"
    machine.power_cut()
    assert not (machine.data / "lost").exists()
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == {
        "unsynced": b"unsynced outside",
        "synced": b"synced outside",
        "after": b"before",
    }
    assert file_ino not in recorded  # its fsyncs were passed through, not recorded
    assert dir_ino not in recorded


def test_restore_refuses_without_an_image(tmp_path: Path) -> None:
    """No image means the shim never ran (e.g. LD_PRELOAD was lost): that must not pass as
    'everything survived'."""
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match="no durable image"):
        restore_after_power_cut(tmp_path / "durable", tmp_path / "data")


def test_misconfiguration_fails_loudly(powerloss_shim: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {**os.environ, "LD_PRELOAD": str(powerloss_shim), "POWERLOSS_DIR": str(data)}
    env["POWERLOSS_DURABLE"] = str(data / "image")  # inside the tracked directory
    proc = subprocess.run([sys.executable, "-c", "pass"], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 111
    assert "POWERLOSS_DURABLE must not be inside POWERLOSS_DIR" in proc.stderr
    with pytest.raises(ValueError, match="must not be inside"):
        env_for(powerloss_shim, data, data / "image")


def test_missing_gcc_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ShimBuildError, match=r"gcc not found.*build-essential"):
        build_shim(tmp_path / "build")
