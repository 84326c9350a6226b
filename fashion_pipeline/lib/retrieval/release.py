"""Serving releases: what the app serves, built, checked and switched in as one piece.

A release is a folder `releases/<release_id>/` laid out like the data root for the files the app loads:
`models/classifier/`, `models/detector/`, `index/` and `catalog/products.parquet`, hard-linked from the data
root (each is written once through a temporary name and a rename and never rewritten in place, so a link is
a snapshot; a copy where the file system has no hard links), with a `manifest.json`. Product images are
referenced, not copied: `catalog/images/` stores each photo under the hash of its bytes and never rewrites one.

The app serves the release the `releases/current` symlink names; a build moves it only once the whole
release is written and checked (release_pointer.py: the switch, the history, rollback and pruning).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from fashion_pipeline.lib.common.atomic import fsync_tree, write_json
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.retrieval import knn
from fashion_pipeline.lib.retrieval import release_pointer as pointer
from fashion_pipeline.lib.retrieval.query import RecommenderError
from fashion_pipeline.lib.retrieval.release_pointer import MANIFEST_FILE, ReleaseError

log = logging.getLogger(__name__)

# A folder being released may be swapped by its asset meanwhile; the snapshot is taken again this often.
SNAPSHOT_ATTEMPTS = 3
IMAGES_NOTE = (
    "product images are referenced in the data root's catalog/images (content-addressed by sha256, never "
    "rewritten), not copied; product_catalog deletes a file only after image_retention_days without any "
    "catalog row naming it, so a release that old may miss the images of products dropped since"
)

# (release folder) -> Recommender; raises RecommenderError (or the loaders' errors) when it cannot serve.
Loader = Callable[[DataPaths, Path], Any]


@dataclass
class BuildOutcome:
    """What a build did: switched to a new release, found the current one unchanged, or was refused."""

    status: str  # "released", "unchanged" or "refused"
    release_id: str  # the new release, or the one still served
    manifest: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    served: str | None = None  # the release the pointer names after the build

    @property
    def switched(self) -> bool:
        return self.status == "released"


def served_parts(paths: DataPaths) -> dict[str, Path]:
    """What a release holds: its path inside the release (as in the data root) -> the source in the data root."""
    parts = {paths.classifier_dir, paths.detector_dir, paths.index_dir, paths.products}
    return {p.relative_to(paths.root).as_posix(): p for p in sorted(parts)}


def _identity(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns


def _link_or_copy(source: Path, target: Path) -> bool:
    """Hard-link `source` to `target` (True), or copy it where the file system cannot link (False)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return True
    except OSError:  # another file system, or one without hard links (EXDEV, EPERM, ENOTSUP)
        shutil.copy2(source, target)
        return False


def _visible_files(folder: Path) -> list[Path]:
    # Dot names are writers' temporary files and folders (lib/common/atomic.py), never part of what is served.
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )


def _snapshot(source: Path, target: Path) -> dict[str, int]:
    """Link every file of `source` (a file or folder) under `target`; retried when `source` was swapped."""
    if not source.exists():
        raise ReleaseError(f"{source} does not exist: materialize the asset that writes it first")
    for _ in range(SNAPSHOT_ATTEMPTS):
        before = _identity(source)
        counts = {"linked": 0, "copied": 0}
        files = [source] if source.is_file() else _visible_files(source)
        for file in files:
            linked = _link_or_copy(file, target if file == source else target / file.relative_to(source))
            counts["linked" if linked else "copied"] += 1
        # A swapped folder is another inode: files of the old and the new one may have been mixed.
        if source.exists() and _identity(source) == before:
            return counts
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    raise ReleaseError(f"{source} was replaced while it was being released, {SNAPSHOT_ATTEMPTS} times: try again")


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _model_summary(folder: Path) -> dict[str, Any]:
    metadata = json.loads((folder / "metadata.json").read_text()) if (folder / "metadata.json").is_file() else {}
    keys = ("registered_model", "registered_version", "mlflow_run_id", "profile", "data_version")
    return {key: metadata.get(key) for key in keys}


def describe(folder: Path, paths: DataPaths, stored: dict[str, int], now: datetime) -> dict[str, Any]:
    """The manifest of a built release folder but its id: versions, counts, and the sha256 of every file."""
    served = DataPaths(root=folder)
    files = {
        p.relative_to(folder).as_posix(): {"sha256": _sha256(p), "bytes": p.stat().st_size}
        for p in _visible_files(folder)
        if p.name != MANIFEST_FILE or p.parent != folder
    }
    manifests = {m.category: m for m in (knn.read_manifest(d) for d in _index_folders(served.index_dir))}
    products = pd.read_parquet(served.products)
    # A catalog without these columns is refused by the load check, which names the asset to rematerialize.
    with_image = products.get("image_path", pd.Series(dtype=object)).dropna().astype(str)
    # Relative to the data root (as product_catalog writes them) or, in older rows, to catalog/images.
    present = sum(any((base / p).is_file() for base in (paths.root, paths.catalog_images_dir)) for p in with_image if p)
    return {
        "created_at": now.isoformat(timespec="milliseconds"),
        "content_sha256": content_digest(files),
        "models": {
            "classifier": _model_summary(served.classifier_dir),
            "detector": _model_summary(served.detector_dir),
        },
        "index": {
            "layout_ids": sorted({m.vector_layout.layout_id for m in manifests.values()}),
            # The version of the embeddings each index was built from (knn_index stamps it).
            "model_versions": sorted({int(m.model_version) for m in manifests.values()}),
            "by_category": {c: int(m.count) for c, m in sorted(manifests.items())},
            "backends": {c: m.backend for c, m in sorted(manifests.items())},
        },
        "catalog": {
            "products": len(products),
            "by_site": {
                str(s): int(n)
                for s, n in products.get("site", pd.Series(dtype=object)).value_counts().sort_index().items()
            },
        },
        "referenced": {
            "catalog/images": IMAGES_NOTE,
            "product_images": {"named": len(with_image), "present_when_built": present},
        },
        "stored": stored,
        "files": files,
    }


def content_digest(files: dict[str, dict[str, Any]]) -> str:
    """One hash of what a release serves: equal digests serve the same bytes."""
    lines = "".join(f"{name}\0{entry['sha256']}\n" for name, entry in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def _index_folders(index_dir: Path) -> list[Path]:
    if not index_dir.is_dir():
        return []
    return [d for d in sorted(index_dir.iterdir()) if d.is_dir() and (d / knn.MANIFEST_FILE).is_file()]


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise ReleaseError(f"{folder} is not a release (no {MANIFEST_FILE})")
    return json.loads(path.read_text())


def release_problems(folder: Path, manifest: dict[str, Any], paths: DataPaths, load: Loader) -> list[str]:
    """Why the built release may not be served (empty: it may): versions agree, and it loads as the app does.

    Each index is stamped with the model version of the embeddings it was built from (knn_index, whose own
    blocking check compares those embeddings with the champion), so comparing the stamps with the champion
    in the release is comparing the embeddings' versions with the model served beside them.
    """
    problems = []
    classifier = manifest["models"]["classifier"].get("registered_version")
    index_versions = manifest["index"]["model_versions"]
    if classifier is None:
        problems.append("models/classifier has no registered_version: materialize garment_classifier")
    elif index_versions != [int(classifier)]:
        problems.append(
            f"the k-NN indexes were built from garment-classifier version(s) {index_versions}, the champion is "
            f"version {classifier}: materialize catalog_embeddings, then knn_index"
        )
    if not manifest["index"]["by_category"]:
        problems.append("the release has no k-NN index: materialize catalog_embeddings and knn_index")
    if problems:
        return problems  # loading would only fail the same way, slower
    try:
        load(paths, folder)  # what the app does with it: models, indexes and catalog load and agree
    except RecommenderError as exc:
        problems.append(f"the app cannot load it: {exc}")
    return problems


def new_release_id(now: datetime, digest: str) -> str:
    """Sorts by creation time (to the millisecond: builds take the lock in turn), then names the content."""
    return f"{now.strftime('%Y%m%dT%H%M%S')}.{now.microsecond // 1000:03d}Z-{digest[:8]}"


@contextmanager
def _build_folder(releases: Path) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix=".build.", suffix=".tmp", dir=releases))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # gone once renamed into place; else a refused build


def build_release(
    paths: DataPaths, load: Loader, keep: int = pointer.DEFAULT_KEEP, now: datetime | None = None
) -> BuildOutcome:
    """Snapshot the served files, write the manifest, check the result, and only then switch the pointer.

    A refused or failed build leaves the pointer, the history and every release folder as they were.
    """
    now = now or datetime.now(UTC)
    releases = paths.releases_dir
    releases.mkdir(parents=True, exist_ok=True)
    with pointer.locked(paths):
        pointer.remove_leftovers(paths)  # before this build's own temporary folder exists
        return _build_locked(paths, load, keep, now)


def _build_locked(paths: DataPaths, load: Loader, keep: int, now: datetime) -> BuildOutcome:
    releases = paths.releases_dir
    with _build_folder(releases) as folder:
        stored = {"linked": 0, "copied": 0}
        for relative, source in served_parts(paths).items():
            for key, count in _snapshot(source, folder / relative).items():
                stored[key] += count
        described = describe(folder, paths, stored, now)
        current = pointer.current_release_id(paths)
        if current is not None and _current_digest(paths, current) == described["content_sha256"]:
            return BuildOutcome("unchanged", current, read_manifest(releases / current), served=current)
        release_id = new_release_id(now, described["content_sha256"])
        manifest = {"release_id": release_id, **described}
        write_json(manifest, folder / MANIFEST_FILE)
        problems = release_problems(folder, manifest, paths, load)
        if problems:
            log.warning("release refused, %s still served: %s", current, "; ".join(problems))
            return BuildOutcome("refused", current or "", manifest, problems=problems, served=current)
        target = releases / release_id
        if target.exists():
            raise ReleaseError(f"{target} already exists: a release of the same content in the same millisecond")
        fsync_tree(folder)  # the links are on disk before the pointer can name them
        os.replace(folder, target)
        pointer.switch(paths, release_id, how="release")
        pruned = pointer.prune(paths, keep)
        return BuildOutcome("released", release_id, manifest, pruned=pruned, served=release_id)


def _current_digest(paths: DataPaths, release_id: str) -> str | None:
    try:
        return read_manifest(paths.releases_dir / release_id).get("content_sha256")
    except (ReleaseError, OSError, ValueError):
        return None  # a damaged current release: build a new one rather than trust it
