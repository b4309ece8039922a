"""Power-cut simulation for the money-safety tests (issue 7, part 2).

A SIGKILL keeps everything a process wrote: the page cache survives it. A power cut keeps only
what was fsynced. `shim.c` is an LD_PRELOAD library. It records a "durable image" of one
directory at every fsync, fdatasync, directory fsync, O_SYNC write and sync. After the process has
been killed, `restore_after_power_cut` rebuilds the directory from that image, which gives the
state a power cut at the moment of the kill would have left. The C file's header lists what the
shim models and what it does not.

    shim = build_shim(build_dir)                       # gcc; cached by source hash
    env = {**os.environ, **env_for(shim, state_dir, durable_dir)}
    proc = subprocess.Popen([...], env=env); ...; proc.send_signal(signal.SIGKILL); proc.wait()
    restore_after_power_cut(durable_dir, state_dir)    # state_dir now holds what was on disk

Prepare `state_dir` before starting the first shimmed process. The first shimmed process
snapshots the directory as fully durable, and a later restore removes files that non-shimmed
code put there afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["ShimBuildError", "build_shim", "env_for", "restore_after_power_cut"]

SOURCE = Path(__file__).with_name("shim.c")
_GCC_FLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra")
_LIBS = ("-ldl",)


class ShimBuildError(RuntimeError):
    """gcc is missing or the shim failed to compile. Tests must fail on it, never skip."""


def build_shim(build_dir: Path) -> Path:
    """Compile shim.c into `build_dir/<hash>/libpowerloss.so` and return the path.

    The build is reused while the source and flags are unchanged. Parallel builds are safe
    because each compiles to a temporary name and renames it into place.
    """
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ShimBuildError(
            "gcc not found: the power-loss tests compile tests/powerloss/shim.c at test time "
            "(install Debian's build-essential)"
        )
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + "\0".join(_GCC_FLAGS + _LIBS).encode()).hexdigest()[:16]
    out_dir = build_dir / digest
    lib = out_dir / "libpowerloss.so"
    if lib.is_file():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".libpowerloss.{os.getpid()}.so"
    cmd = [gcc, *_GCC_FLAGS, "-o", str(tmp), str(SOURCE), *_LIBS]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ShimBuildError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr}")
    os.replace(tmp, lib)
    return lib


def env_for(shim: Path, tracked: Path, durable: Path) -> dict[str, str]:
    """The variables to add to a child's environment: `{**os.environ, **env_for(...)}`.

    `tracked` must exist, and `durable` must not be inside it. `durable` is created if missing.
    An LD_PRELOAD already in this process's environment is kept, after the shim.
    """
    tracked = tracked.resolve(strict=True)
    durable.mkdir(parents=True, exist_ok=True)
    durable = durable.resolve(strict=True)
    if durable == tracked or tracked in durable.parents:
        raise ValueError(f"the durable image {durable} must not be inside the tracked directory {tracked}")
    preload = [str(shim.resolve(strict=True))]
    if os.environ.get("LD_PRELOAD"):
        preload.append(os.environ["LD_PRELOAD"])
    return {"LD_PRELOAD": " ".join(preload), "POWERLOSS_DIR": str(tracked), "POWERLOSS_DURABLE": str(durable)}


# A planned tree: file name -> (mode, identity, content) or (mode, identity, subtree). An identity
# is the shim's "<inode number>.<generation>".
_Entry = tuple[int, str, "bytes | _Tree"]
_Tree = dict[bytes, _Entry]


def _plan(img: Path, dir_id: str, seen: set[str]) -> _Tree:
    if dir_id in seen:  # a cycle: cannot happen with real directories; refuse to loop
        raise RuntimeError(f"durable image {img}: directory {dir_id} listed twice")
    seen.add(dir_id)
    listing = img / "d" / dir_id
    tree: _Tree = {}
    if not listing.exists():  # created and never fsynced: durable as an empty directory
        return tree
    for line in listing.read_bytes().splitlines():
        kind, id_bytes, mode_text, name = line.split(b" ", 3)
        ident, mode = id_bytes.decode(), int(mode_text, 8)
        if kind == b"d":
            tree[name] = (mode, ident, _plan(img, ident, seen))
        else:
            content = img / "i" / ident
            tree[name] = (mode, ident, content.read_bytes() if content.exists() else b"")
    return tree


def _materialize(where: bytes, tree: _Tree, links: dict[str, bytes]) -> None:
    for name, (mode, ident, body) in tree.items():
        path = os.path.join(where, name)
        if isinstance(body, dict):
            os.mkdir(path)
            _materialize(path, body, links)
        elif ident in links:  # a hard link: the same durable inode under two names
            os.link(links[ident], path)
            continue
        else:
            links[ident] = path
            with open(path, "wb") as fh:
                fh.write(body)
        os.chmod(path, mode)


def restore_after_power_cut(durable: Path, tracked: Path) -> None:
    """Replace the content of `tracked` with the durable image, as after a power cut.

    Files absent from the image never reached the disk and are removed. Files whose name is
    durable but whose content was never synced come back empty. The image is then deleted, and
    the next shimmed process snapshots the restored directory as its durable starting point.

    Raises FileNotFoundError if there is no image. That means no process ran under the shim since
    the last restore, for example because LD_PRELOAD did not reach it, and a restore would
    otherwise pass as "everything survived".
    """
    img = durable / "img"
    root = img / "root"
    if not root.is_file():
        raise FileNotFoundError(
            f"no durable image in {durable}: no process ran under the power-loss shim since the last restore"
        )
    plan = _plan(img, root.read_text().strip(), set())
    for child in tracked.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    _materialize(os.fsencode(tracked), plan, {})
    shutil.rmtree(img)
