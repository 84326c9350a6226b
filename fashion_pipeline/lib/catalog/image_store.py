"""Product images stored by the SHA-256 of their bytes, and the garbage collection of unreferenced ones.

`catalog/images/sha256/<first two hex digits>/<sha256>.jpg`: the same photo behind two URLs (or behind the
demo shop's URL on another port) is one file, written once, atomically, never rewritten in place. Catalog
rows record the path relative to the data root.

Nothing is deleted while anything may still use it: `collect_garbage` keeps a ledger of when each image
file was last referenced by a catalog row (catalog/images/references.parquet) and deletes only files no
row has referenced for `retention_days`. A file the ledger has never seen (a crawl writing right now, an
older layout) counts from its modification time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from fashion_pipeline.lib.common.atomic import atomic_path, write_parquet

STORE_FOLDER = "sha256"
REFERENCES_FILE = "references.parquet"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif"})
DEFAULT_RETENTION_DAYS = 7


def store_dir(catalog_images_dir: Path) -> Path:
    return Path(catalog_images_dir) / STORE_FOLDER


def content_path(data: bytes, suffix: str = ".jpg") -> str:
    """Where bytes are stored, relative to the store: `ab/abcdef....jpg`."""
    digest = hashlib.sha256(data).hexdigest()
    return f"{digest[:2]}/{digest}{suffix}"


def store_bytes(store: Path, relative: str, data: bytes) -> bool:
    """Write `data` at `store/relative` unless it is there already; True when written.

    The name is the content's hash, so an existing file already holds these bytes: it is left as it is
    (a server may be reading it) and only its modification time is renewed, which IMAGES_EXPIRES reads.
    """
    target = Path(store) / relative
    if target.is_file():
        os.utime(target)
        return False
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return True


def resolve(image_path: object, data_root: Path) -> Path | None:
    """A row's image path (relative to the data root, or absolute) as a path on disk; None when empty."""
    if not isinstance(image_path, str) or not image_path:
        return None
    return Path(data_root) / image_path  # an absolute path stays as it is


@dataclass(frozen=True)
class GarbageReport:
    files_kept: int
    bytes_kept: int
    files_deleted: int
    bytes_freed: int


def _image_files(images_dir: Path) -> Iterable[Path]:
    for path in Path(images_dir).rglob("*"):
        # Names starting with "." are atomic writes in progress.
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file():
            yield path


def collect_garbage(
    images_dir: Path,
    data_root: Path,
    referenced: Iterable[object],
    *,
    retention_days: float = DEFAULT_RETENTION_DAYS,
    now: datetime | None = None,
) -> GarbageReport:
    """Delete image files under `images_dir` that no row has referenced for `retention_days`.

    `referenced` are the image paths of every row that may be served or embedded now (the catalog and the
    sites' published rows), relative to `data_root` or absolute.
    """
    now = now or datetime.now(UTC)
    data_root = Path(data_root).resolve()
    ledger_path = Path(images_dir) / REFERENCES_FILE
    ledger: dict[str, datetime] = {}
    if ledger_path.is_file():
        table = pd.read_parquet(ledger_path)
        ledger = dict(zip(table["path"], pd.to_datetime(table["last_referenced"], utc=True), strict=True))
    for image_path in referenced:
        path = resolve(image_path, data_root)
        if path is not None:
            ledger[os.path.relpath(path, data_root)] = now
    cutoff = now - timedelta(days=retention_days)
    kept = kept_bytes = deleted = freed = 0
    present = set()
    for path in _image_files(images_dir):
        relative = os.path.relpath(path, data_root)
        stat = path.stat()
        last = ledger.setdefault(relative, datetime.fromtimestamp(stat.st_mtime, UTC))
        if last < cutoff:
            path.unlink(missing_ok=True)
            deleted, freed = deleted + 1, freed + stat.st_size
            continue
        present.add(relative)
        kept, kept_bytes = kept + 1, kept_bytes + stat.st_size
    rows = sorted((p, t) for p, t in ledger.items() if p in present)
    write_parquet(pd.DataFrame(rows, columns=["path", "last_referenced"]), ledger_path)
    return GarbageReport(files_kept=kept, bytes_kept=kept_bytes, files_deleted=deleted, bytes_freed=freed)
