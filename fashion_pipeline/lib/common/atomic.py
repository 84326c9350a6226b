"""Atomic writes: write beside the target, then rename, so an interrupted run keeps the last good output."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's entry to disk: a rename is durable only once both are."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            if not os.path.islink(os.path.join(dirpath, name)):
                _fsync(Path(dirpath) / name)
        _fsync(Path(dirpath))


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary file path in the target's folder; on success it replaces `target` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be readable like any written file
    try:
        yield tmp
        _fsync(tmp)  # the bytes reach the disk before the name points at them
        os.replace(tmp, target)
        _fsync(target.parent)  # and the rename itself survives a power cut
    finally:
        tmp.unlink(missing_ok=True)


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_cwd = -100
    result = renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # a file system without exchange: the two-rename swap below
    raise OSError(error, os.strerror(error), str(a))


def _recover(target: Path) -> None:
    """Undo what a writer killed mid-swap left (call with the target's lock held: no writer is running).

    A two-rename swap killed between its renames leaves the old folder in `.<name>.*.old/old` and no target:
    it is put back. Temporary folders of killed writers are removed.
    """
    for leftover in sorted(target.parent.glob(f".{target.name}.*.old")):
        if not target.exists() and (leftover / "old").exists():
            os.replace(leftover / "old", target)
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    """One writer per target folder at a time (a second waits): swaps never race, leftovers are dead."""
    # Kept out of the data folders (readers list them): one lock file per target path, in the temp folder.
    locks = Path(tempfile.gettempdir()) / "fashion-pipeline-locks"
    locks.mkdir(exist_ok=True)
    key = hashlib.sha256(os.fsencode(target.resolve())).hexdigest()[:32]
    with open(locks / f"{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it takes the place of `target` (old one removed after).

    The swap is one atomic exchange where the file system offers it; elsewhere two renames (old -> trash,
    new -> target), and a crash between them is repaired by the next write to the same target. Either way
    the target is never half-written, and the new files are on disk before they are swapped in.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target):
        _recover(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        try:
            yield tmp
            _fsync_tree(tmp)
            if target.exists() and _exchange(tmp, target):
                pass  # tmp now holds the old folder, removed below
            else:
                trash = None
                if target.exists():
                    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
                    os.replace(target, trash / "old")
                os.replace(tmp, target)
                if trash is not None:
                    shutil.rmtree(trash, ignore_errors=True)
            _fsync(target.parent)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under `folder`, before a rename or a link makes it reachable as complete."""
    _fsync_tree(Path(folder))


def replace_symlink(link: Path, points_to: str) -> None:
    """Make `link` a symlink to `points_to` in one rename: a reader sees the old target or the new, never none.

    The new link is made beside it under a temp name (`.<name>.<random>.tmp`, which a killed writer may leave
    for its caller to clean), renamed over it, and the folder fsynced so the switch survives a power cut.
    """
    link = Path(link)
    tmp = link.parent / f".{link.name}.{os.urandom(8).hex()}.tmp"
    os.symlink(points_to, tmp)
    try:
        os.replace(tmp, link)
    finally:
        if tmp.is_symlink():
            tmp.unlink()
    _fsync(link.parent)


def write_parquet(df: pd.DataFrame, target: Path) -> Path:
    with atomic_path(target) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(target)


def write_json(obj: Any, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    return Path(target)


def write_text(text: str, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)
