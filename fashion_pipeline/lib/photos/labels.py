"""Reading a user's label files: the CSV mapping a source's labels onto the 5 categories, image folders,
and id lists. Shared by the `labelled_photos` stage and by `fashion-pipeline evaluate`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from fashion_pipeline.lib.common.categories import CATEGORIES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
# Column names accepted in a mapping CSV: the source class (name or id) and the target category.
SOURCE_COLUMNS = ("class10", "source_class", "class", "folder", "name")
SOURCE_ID_COLUMNS = ("source_class_id", "class_id", "id")
TARGET_COLUMNS = ("target5", "category", "target")


def _column(header: Sequence[str], options: Sequence[str], path: Path) -> str:
    for name in options:
        if name in header:
            return name
    raise ValueError(f"{path}: no column named any of {list(options)} (columns: {list(header)})")


def _target(value: str, path: Path) -> str | None:
    value = value.strip()
    if not value:
        return None
    if value not in CATEGORIES:
        raise ValueError(f"{path}: target {value!r} is not one of {CATEGORIES} (leave it empty to skip a class)")
    return value


def read_class_mapping(path: Path, by_id: bool = False) -> dict[str, str | None]:
    """Source class (name, or id with `by_id`) -> category or None, from a CSV; contradictions are errors."""
    path = Path(path)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path} has no rows")
    header = list(rows[0])
    source = _column(header, SOURCE_ID_COLUMNS if by_id else SOURCE_COLUMNS, path)
    target = _column(header, TARGET_COLUMNS, path)
    mapping: dict[str, str | None] = {}
    for row in rows:
        key, value = row[source].strip(), _target(row[target] or "", path)
        if key in mapping and mapping[key] != value:
            raise ValueError(f"{path}: class {key!r} maps to both {mapping[key]!r} and {value!r}")
        mapping[key] = value
    return mapping


def images_under(folder: Path) -> list[Path]:
    """Every image file below `folder` (by suffix, any depth), in a stable order."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_ids(path: Path) -> list[str]:
    """An id list: one image id (file name without suffix) a line; blank lines and `#` comments ignored."""
    ids = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(line)
    return ids
