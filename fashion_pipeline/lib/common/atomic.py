"""Atomic writes: write beside the target, then rename, so an interrupted run keeps the last good output."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import fnmatch
import glob
import hashlib
import json
import os
import shutil
import signal
import stat
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


# --- the fault suite's seam ---------------------------------------------------------------------------
# fashion_pipeline_tests/test_kill_faults.py SIGKILLs real materializations at the moments of a write where a
# crash could lose or leave something (a temp written but not renamed, between a swap's two renames, swapped
# but not cleaned up, a release's pointer moved but not recorded) to prove that none does. It sets
# FASHION_FAULT_KILL=<point>@<target name glob> in the run's environment; unset (always, outside that suite) a
# fault point costs one environment lookup and does nothing.
FAULT_KILL_ENV = "FASHION_FAULT_KILL"


def _fault_armed(point: str, target: Path) -> bool:
    spec = os.environ.get(FAULT_KILL_ENV)
    if not spec:
        return False
    wanted, _, name = spec.partition("@")
    return wanted == point and fnmatch.fnmatchcase(target.name, name or "*")


def fault_point(point: str, target: Path) -> None:
    """SIGKILL this process here when FASHION_FAULT_KILL names `point` and `target` (test-only, see above)."""
    if _fault_armed(point, target):
        os.kill(os.getpid(), signal.SIGKILL)


# --- files ---------------------------------------------------------------------------------------------
def _temp_prefix(target: Path) -> str:
    return f".{target.name}."


def _claimed_temp_file(target: Path) -> tuple[int, Path]:
    """A new temp file beside `target`, flock-ed for as long as the returned descriptor stays open.

    The lock marks it as a live writer's: the kernel drops it when the writer ends, even by SIGKILL, so a
    temp file nobody holds is a killed writer's and may go.
    """
    while True:
        fd, name = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:
            return fd, Path(name)
        os.close(fd)  # removed as dead between its creation and the lock: take another name


def _remove_dead_temp_files(target: Path) -> None:
    """Remove temp files of `target`'s killed writers (those no live writer holds locked)."""
    for name in glob.glob(glob.escape(_temp_prefix(target)) + "*.tmp", root_dir=target.parent, include_hidden=True):
        leftover = target.parent / name
        try:
            fd = os.open(leftover, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # gone meanwhile, or not a file of ours (a folder, a link)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer's
            leftover.unlink(missing_ok=True)
        finally:
            os.close(fd)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary file path in the target's folder; on success it replaces `target` in one rename.

    Temp files that killed writers left beside `target` are removed first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temp_files(target)
    fd, tmp = _claimed_temp_file(target)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; outputs are meant to be readable like any written file
        yield tmp
        _fsync(tmp)  # the bytes reach the disk before the name points at them
        fault_point("atomic_path:before_rename", target)
        os.replace(tmp, target)
        _fsync(target.parent)  # and the rename itself survives a power cut
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)  # releases the claim on the temp file


# --- folders -------------------------------------------------------------------------------------------
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
    prefix = glob.escape(_temp_prefix(target))
    for name in sorted(glob.glob(prefix + "*.old", root_dir=target.parent, include_hidden=True)):
        leftover = target.parent / name
        if not target.exists() and (leftover / "old").exists():
            os.replace(leftover / "old", target)
        shutil.rmtree(leftover, ignore_errors=True)
    for name in glob.glob(prefix + "*.tmp", root_dir=target.parent, include_hidden=True):
        if (target.parent / name).is_dir():
            shutil.rmtree(target.parent / name, ignore_errors=True)


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
    new -> target), and a crash between them is repaired by the next write to the same target.
    Either way the target is never half-written, and the new files are on disk before they are swapped in.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target):
        _recover(target)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        try:
            yield tmp
            _fsync_tree(tmp)
            fault_point("atomic_dir:before_swap", target)
            # A kill asked for between the renames needs the two-rename swap: the only one with that moment.
            two_renames = _fault_armed("atomic_dir:between_renames", target)
            trash = None
            if target.exists() and not two_renames and _exchange(tmp, target):
                trash = tmp  # it now holds the old folder
            else:
                if target.exists():
                    trash = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".old", dir=target.parent))
                    os.replace(target, trash / "old")
                    fault_point("atomic_dir:between_renames", target)
                os.replace(tmp, target)
            _fsync(target.parent)
            fault_point("atomic_dir:after_swap", target)
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under `folder`, before a rename or a link makes it reachable as complete."""
    _fsync_tree(Path(folder))
    fault_point("fsync_tree:done", Path(folder))  # the caller's rename comes next (a release build's folder)


def replace_symlink(link: Path, points_to: str) -> None:
    """Make `link` a symlink to `points_to` in one rename: a reader sees the old target or the new, never none.

    The new link is made beside it under a temp name (`.<name>.<random>.tmp`, which a killed writer may leave
    for its caller to clean), renamed over it, and the folder fsynced so the switch survives a power cut.
    """
    link = Path(link)
    tmp = link.parent / f".{link.name}.{os.urandom(8).hex()}.tmp"
    os.symlink(points_to, tmp)
    try:
        fault_point("replace_symlink:before_rename", link)
        os.replace(tmp, link)
    finally:
        if tmp.is_symlink():
            tmp.unlink()
    _fsync(link.parent)
    fault_point("replace_symlink:after_rename", link)  # switched; what the caller records next is not


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
