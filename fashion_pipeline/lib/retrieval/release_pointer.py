"""The pointer to the served release, its history, rollback and pruning (the releases are built in release.py).

`releases/current` is a relative symlink to a release folder's name, replaced in one `os.replace` of a
symlink made beside it: a reader sees the old name or the new one, never none. `releases/history.json` is
a stack of the releases switched to, so a rollback knows the previous one: a build or `rollback --to` pushes,
a plain rollback pops. The pointer is the truth: a history that a crash left behind it is mended on reading.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fashion_pipeline.lib.common.atomic import replace_symlink, write_json
from fashion_pipeline.lib.common.paths import DataPaths

log = logging.getLogger(__name__)

DEFAULT_KEEP = 3  # releases kept besides the current and the previous one
HISTORY_LIMIT = 100  # entries of the history stack kept (rollback needs only the top few)
MANIFEST_FILE = "manifest.json"


class ReleaseError(RuntimeError):
    """A release operation that cannot be done (no such release, nothing to roll back to, a folder swapped
    while it was released)."""


def current_release_id(paths: DataPaths) -> str | None:
    """The release the pointer names (one readlink: cheap enough to call between requests), None without one."""
    try:
        return os.readlink(paths.current_release)
    except FileNotFoundError:
        return None


@contextmanager
def locked(paths: DataPaths) -> Iterator[None]:
    """One release build, switch or rollback at a time (a second waits): leftovers found under it are dead."""
    paths.releases_dir.mkdir(parents=True, exist_ok=True)
    with open(paths.releases_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def remove_leftovers(paths: DataPaths) -> list[str]:
    """Build folders and pointer symlinks of killed runs (call with the lock held)."""
    removed = []
    for leftover in paths.releases_dir.glob(".*.tmp"):
        if leftover.is_symlink() or leftover.is_file():
            leftover.unlink()
        else:
            shutil.rmtree(leftover, ignore_errors=True)
        removed.append(leftover.name)
    return removed


def is_release(paths: DataPaths, release_id: str) -> bool:
    return bool(release_id) and "/" not in release_id and (paths.releases_dir / release_id / MANIFEST_FILE).is_file()


def release_ids(paths: DataPaths) -> list[str]:
    """Every complete release folder, oldest first (ids start with their UTC creation time)."""
    if not paths.releases_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in paths.releases_dir.iterdir()
        if not p.name.startswith(".") and not p.is_symlink() and is_release(paths, p.name)
    )


def read_history(paths: DataPaths) -> list[dict[str, Any]]:
    """The stack of switches, oldest first, mended to end with the release the pointer names."""
    stack: list[dict[str, Any]] = []
    if paths.release_history.is_file():
        try:
            stack = list(json.loads(paths.release_history.read_text()).get("stack", []))
        except (ValueError, AttributeError) as exc:
            log.warning("%s is unreadable (%s): starting a new history", paths.release_history, exc)
    current = current_release_id(paths)
    if current is None or (stack and stack[-1]["release_id"] == current):
        return stack
    # A crash between the pointer's switch and the history's write: the pointer wins.
    ids = [entry["release_id"] for entry in stack]
    if current in ids:
        return stack[: len(ids) - ids[::-1].index(current)]
    return [*stack, {"release_id": current, "switched_at": None, "how": "found"}]


def _write_history(paths: DataPaths, stack: list[dict[str, Any]]) -> None:
    write_json({"stack": stack[-HISTORY_LIMIT:]}, paths.release_history)


def _point_at(paths: DataPaths, release_id: str) -> None:
    replace_symlink(paths.current_release, release_id)  # relative: the data root may move


def switch(paths: DataPaths, release_id: str, how: str) -> None:
    """Point at `release_id` and push it on the history (call with the lock held)."""
    if not is_release(paths, release_id):
        raise ReleaseError(f"no release {release_id!r} in {paths.releases_dir}")
    stack = read_history(paths)
    _point_at(paths, release_id)
    stack.append({"release_id": release_id, "switched_at": datetime.now(UTC).isoformat(timespec="seconds"), "how": how})
    _write_history(paths, stack)
    log.info("serving release %s (%s)", release_id, how)


def previous_release_id(paths: DataPaths, stack: list[dict[str, Any]] | None = None) -> str | None:
    """The release served before the current one that still exists (what a plain rollback returns to)."""
    stack = read_history(paths) if stack is None else stack
    current = current_release_id(paths)
    for entry in reversed(stack[:-1]):
        if entry["release_id"] != current and is_release(paths, entry["release_id"]):
            return entry["release_id"]
    return None


def rollback(paths: DataPaths, to: str | None = None) -> tuple[str, str]:
    """Point at the previous release (or `to`); returns (from, to). The running app follows by its reload."""
    with locked(paths):
        current = current_release_id(paths)
        if current is None:
            raise ReleaseError(f"no current release in {paths.releases_dir}: materialize serving_release")
        stack = read_history(paths)
        if to is not None:
            if not is_release(paths, to):
                known = ", ".join(release_ids(paths)) or "none"
                raise ReleaseError(f"no release {to!r} in {paths.releases_dir} (releases: {known})")
            if to == current:
                raise ReleaseError(f"release {to} is already the current one")
            switch(paths, to, how="rollback --to")
            return current, to
        previous = previous_release_id(paths, stack)
        if previous is None:
            raise ReleaseError(f"no release before {current} to roll back to (`release list` shows them)")
        ids = [entry["release_id"] for entry in stack]
        # Pop down to the previous release: a second rollback goes one further back, not forth again.
        kept = stack[: len(ids) - ids[::-1].index(previous)]
        _point_at(paths, previous)
        _write_history(paths, kept)
        log.info("rolled back from release %s to %s", current, previous)
        return current, previous


def prune(paths: DataPaths, keep: int = DEFAULT_KEEP) -> list[str]:
    """Delete all but the newest `keep` releases; the current and the previous one are always kept."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    ids = release_ids(paths)
    protected = {current_release_id(paths), previous_release_id(paths)} | set(ids[-keep:])
    removed = [release_id for release_id in ids if release_id not in protected]
    for release_id in removed:
        shutil.rmtree(paths.releases_dir / release_id)
    if removed:
        log.info("pruned releases %s", ", ".join(removed))
    return removed


def list_releases(paths: DataPaths) -> list[dict[str, Any]]:
    """Each release, oldest first: its manifest's summary and whether it is the current or previous one."""
    current, previous = current_release_id(paths), previous_release_id(paths)
    rows = []
    for release_id in release_ids(paths):
        manifest = json.loads((paths.releases_dir / release_id / MANIFEST_FILE).read_text())
        models = manifest.get("models", {})
        rows.append(
            {
                "release_id": release_id,
                "created_at": manifest.get("created_at"),
                "classifier_version": models.get("classifier", {}).get("registered_version"),
                "detector_version": models.get("detector", {}).get("registered_version"),
                "products": manifest.get("catalog", {}).get("products"),
                "indexed": sum(manifest.get("index", {}).get("by_category", {}).values()),
                "current": release_id == current,
                "previous": release_id == previous,
            }
        )
    return rows
