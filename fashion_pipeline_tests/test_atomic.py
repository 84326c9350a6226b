"""Atomic writes survive a crash: files and folders reach the disk before the rename, a folder swap killed
between its renames is repaired by the next write, and killed writers' temporary folders are cleaned."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fashion_pipeline.lib.common import atomic


def _folder(path: Path, text: str) -> None:
    path.mkdir(parents=True)
    (path / "data.txt").write_text(text)


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_file_and_its_folder_are_flushed_before_and_after_the_rename(tmp_path: Path, monkeypatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = atomic._fsync, atomic.os.replace
    monkeypatch.setattr(atomic, "_fsync", lambda path: events.append(f"fsync {Path(path).name}") or real_fsync(path))
    monkeypatch.setattr(
        atomic.os, "replace", lambda a, b: events.append(f"rename -> {Path(b).name}") or real_replace(a, b)
    )
    atomic.write_text("hello", tmp_path / "out.txt")
    assert events[0].startswith("fsync .out.txt.") and events[1:] == ["rename -> out.txt", f"fsync {tmp_path.name}"]
    assert (tmp_path / "out.txt").read_text() == "hello"


def test_a_folder_swap_replaces_the_target_and_leaves_nothing_behind(tmp_path: Path) -> None:
    _folder(tmp_path / "index", "old")
    with atomic.atomic_dir(tmp_path / "index") as tmp:
        (tmp / "data.txt").write_text("new")
    assert (tmp_path / "index" / "data.txt").read_text() == "new"
    assert _visible(tmp_path) == ["index"]


KILLED_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
from fashion_pipeline.lib.common import atomic

atomic._exchange = lambda a, b: False  # the two-rename swap, as on a file system without exchange
real_replace = os.replace
def replace(src, dst):
    if Path(dst).name == "index":  # the second rename: the old folder is already in the trash
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
atomic.os.replace = replace
with atomic.atomic_dir(Path(sys.argv[1]) / "index") as tmp:
    (tmp / "data.txt").write_text("new")
"""


def test_a_swap_killed_between_its_renames_is_repaired_by_the_next_write(tmp_path: Path) -> None:
    _folder(tmp_path / "index", "old")
    killed = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_RENAMES, str(tmp_path)], check=False)
    assert killed.returncode == -9
    assert not (tmp_path / "index").exists()  # the crash window the repair is for
    assert any(name.endswith(".old") for name in _visible(tmp_path))

    # The next write to the same folder fails, yet first puts the old folder back and cleans up.
    with pytest.raises(RuntimeError, match="rebuild failed"), atomic.atomic_dir(tmp_path / "index"):
        raise RuntimeError("rebuild failed")
    assert (tmp_path / "index" / "data.txt").read_text() == "old"
    assert _visible(tmp_path) == ["index"]


def test_temporary_folders_of_killed_writers_are_removed(tmp_path: Path) -> None:
    _folder(tmp_path / "index", "old")
    _folder(tmp_path / ".index.abc123.tmp", "half-written")  # a writer killed before its swap
    _folder(tmp_path / ".other.abc123.tmp", "another target's, maybe in use")
    with atomic.atomic_dir(tmp_path / "index") as tmp:
        (tmp / "data.txt").write_text("new")
    assert _visible(tmp_path) == [".other.abc123.tmp", "index"]
