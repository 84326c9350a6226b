"""Read labelled photo sources into one table: a row per labelled garment, with its split and 5-way category.

Classifier photos show one garment: their box is the whole image. Detector photos carry one row per mapped
box. Bad input is never a crash and never dropped silently: each skip is counted under a reason, with
examples. Photo-level reasons: `missing_image`, `unreadable_image`, `no_label_folder`, `unknown_split`,
`duplicate_image_id`, `no_label_file`, `unreadable_label_file`, `no_garment_boxes` (every box of the photo
dropped); classifier photos also count `unknown_label` and `outside_categories` per photo, detector photos
count those and `malformed_label_line`, `empty_box` per box.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.common.images import ImageError, load_image
from fashion_pipeline.lib.photos.labels import images_under, read_class_mapping, read_ids
from fashion_pipeline.lib.photos.sources import SPLITS, TRAINVAL, PhotoSource, SplitInput

PHOTO_COLUMNS = [
    # `photo_source`, not `source`: the DeepFashion2 tables already use `source` for user/shop photos
    # (a documented contract), and the training tables carry both.
    "photo_source",
    "task",
    "split",
    "image_id",  # `<photo_source>/<file stem>`: unique across sources
    "image_path",
    "label",  # the source's own label (class folder, CSV label or YOLO class id)
    "category",
    "item_index",  # detector: the box's line in the label file (1-based); classifier: 1
    "x1",
    "y1",
    "x2",
    "y2",
    "image_width",
    "image_height",
    "sha256",  # of the image file's bytes: finds a test photo that reached training under another name
    "feeds_crops",  # the source's `crops` setting: its train/validation rows go into garment_crops
]
EXAMPLES_PER_REASON = 3
_BOX = ("x1", "y1", "x2", "y2")


@dataclass
class SourceReport:
    """What one source gave: photos kept and rows written, and what it skipped by reason (with examples)."""

    photos: int = 0
    rows: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, example: str, count: int = 1) -> None:
        self.skipped[reason] += count
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES_PER_REASON:
            shown.append(example)


@dataclass(frozen=True)
class _Candidate:
    split: str
    image_path: Path
    label: str | None = None  # classifier photos
    label_file: Path | None = None  # detector photos


def validation_share(stem: str) -> float:
    """A photo's stable place in [0, 1): a hash of its id, so a trainval photo keeps its split across runs."""
    return int.from_bytes(hashlib.sha256(stem.encode()).digest()[:8], "big") / 2**64


def _resolve_split(source: PhotoSource, split: str, stem: str) -> str | None:
    if split == TRAINVAL and source.validation_fraction is not None:
        return "validation" if validation_share(stem) < source.validation_fraction else "train"
    return split if split in SPLITS else None


def _restricted(images: list[Path], ids_file: Path | None, report: SourceReport, where: Path) -> list[Path]:
    if ids_file is None:
        return images
    wanted = read_ids(ids_file)
    by_stem = {p.stem: p for p in images}
    for missing in (i for i in wanted if i not in by_stem):
        report.skip("missing_image", f"{where}: id {missing} listed in {ids_file.name} has no image")
    return [by_stem[i] for i in wanted if i in by_stem]


def _csv_rows(path: Path, split: str | None, report: SourceReport) -> Iterator[_Candidate]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        needed = {"image", "label"} | ({"split"} if split is None else set())
        if not needed <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: needs the columns {sorted(needed)} (has {reader.fieldnames})")
        for line, row in enumerate(reader, start=2):
            image = path.parent / (row["image"] or "").strip()
            if not row["image"] or not image.is_file():
                report.skip("missing_image", f"{path}:{line}: {row['image']!r} not found")
                continue
            yield _Candidate(split or (row["split"] or "").strip(), image, label=(row["label"] or "").strip())


def _candidates(source: PhotoSource, entry: SplitInput, report: SourceReport) -> Iterator[_Candidate]:
    if source.format == "csv":
        # A source-level CSV (entry.split empty) names each photo's split in its own `split` column.
        yield from _csv_rows(entry.csv, entry.split or None, report)
    elif source.format == "class_folders":
        for image in _restricted(images_under(entry.folder), entry.ids, report, entry.folder):
            if image.parent == entry.folder:
                report.skip("no_label_folder", f"{image}: not inside a <label>/ folder")
                continue
            yield _Candidate(entry.split, image, label=image.parent.name)
    else:
        image_dir, label_dir = entry.folder / "images", entry.folder / "labels"
        if not image_dir.is_dir():
            raise FileNotFoundError(f"source {source.name!r}: {entry.folder} has no images/ folder (YOLO layout)")
        for image in _restricted(images_under(image_dir), entry.ids, report, entry.folder):
            label_file = (label_dir / image.relative_to(image_dir)).with_suffix(".txt")
            yield _Candidate(entry.split, image, label_file=label_file)


def _yolo_boxes(
    text: str, label_file: Path, width: int, height: int, mapping: dict[str, str | None], report: SourceReport
) -> list[tuple[int, str, str, tuple[float, float, float, float]]]:
    """(line number, class id, category, pixel box clipped to the image) for every usable line."""
    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{label_file}:{number}"
        try:
            xc, yc, w, h = (float(v) for v in parts[1:])
        except ValueError:
            report.skip("malformed_label_line", f"{where}: {line.strip()!r}")
            continue
        if not all(math.isfinite(v) for v in (xc, yc, w, h)):
            report.skip("malformed_label_line", f"{where}: {line.strip()!r}")
            continue
        if parts[0] not in mapping:
            report.skip("unknown_label", f"{where}: class {parts[0]} is not in the mapping")
            continue
        category = mapping[parts[0]]
        if category is None:
            report.skip("outside_categories", f"{where}: class {parts[0]}")
            continue
        x1, x2 = max(0.0, (xc - w / 2) * width), min(float(width), (xc + w / 2) * width)
        y1, y2 = max(0.0, (yc - h / 2) * height), min(float(height), (yc + h / 2) * height)
        if x2 <= x1 or y2 <= y1:
            report.skip("empty_box", f"{where}: no area inside the image")
            continue
        boxes.append((number, parts[0], category, (x1, y1, x2, y2)))
    return boxes


def _mapping(source: PhotoSource) -> dict[str, str | None]:
    if source.mapping is not None:
        return read_class_mapping(source.mapping, by_id=source.task == "detector")
    if source.task == "detector":
        return {str(i): c for i, c in enumerate(CATEGORIES)}
    return {c: c for c in CATEGORIES}


def read_source(source: PhotoSource) -> tuple[pd.DataFrame, SourceReport]:
    """All labelled garments of one source (columns `PHOTO_COLUMNS`) and what was skipped."""
    report = SourceReport()
    mapping = _mapping(source)
    rows: list[dict] = []
    seen: set[tuple[str, str]] = set()  # (split, stem): a stem twice in one split is ambiguous
    entries = source.splits or (SplitInput("", csv=source.csv),)
    for entry in entries:
        for candidate in _candidates(source, entry, report):
            stem = candidate.image_path.stem
            split = _resolve_split(source, candidate.split, stem)
            if split is None:
                report.skip("unknown_split", f"{candidate.image_path}: split {candidate.split!r}")
                continue
            if (split, stem) in seen:
                report.skip("duplicate_image_id", f"{candidate.image_path}: {stem} already read in {split}")
                continue
            seen.add((split, stem))
            rows += _photo_rows(source, candidate, split, mapping, report)
    table = pd.DataFrame(rows, columns=PHOTO_COLUMNS)
    report.photos = table["image_id"].nunique() if len(table) else 0
    report.rows = len(table)
    return table, report


def _photo_rows(
    source: PhotoSource, candidate: _Candidate, split: str, mapping: dict[str, str | None], report: SourceReport
) -> list[dict]:
    path = candidate.image_path
    if candidate.label is not None:  # classifier: the label decides before the image is decoded
        if candidate.label not in mapping:
            report.skip("unknown_label", f"{path}: label {candidate.label!r} is not in the mapping")
            return []
        if mapping[candidate.label] is None:
            report.skip("outside_categories", f"{path}: label {candidate.label!r}")
            return []
    else:
        if not candidate.label_file.is_file():
            report.skip("no_label_file", f"{path}: {candidate.label_file} does not exist")
            return []
        try:
            label_text = candidate.label_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            report.skip("unreadable_label_file", f"{candidate.label_file}: {exc}")
            return []
    try:
        data = path.read_bytes()
        image = load_image(data)
    except (OSError, ImageError) as exc:
        report.skip("unreadable_image", f"{path}: {exc}")
        return []
    width, height = image.size
    common = {
        "photo_source": source.name,
        "task": source.task,
        "split": split,
        "image_id": f"{source.name}/{path.stem}",
        "image_path": str(path),
        "image_width": width,
        "image_height": height,
        "sha256": hashlib.sha256(data).hexdigest(),
        "feeds_crops": source.crops,
    }
    if candidate.label is not None:
        box = dict(zip(_BOX, (0.0, 0.0, float(width), float(height)), strict=True))
        return [{**common, "label": candidate.label, "category": mapping[candidate.label], "item_index": 1, **box}]
    boxes = _yolo_boxes(label_text, candidate.label_file, width, height, mapping, report)
    if not boxes:
        report.skip("no_garment_boxes", f"{path}: no box of the 5 categories")
    return [
        {**common, "label": label, "category": category, "item_index": number, **dict(zip(_BOX, box, strict=True))}
        for number, label, category, box in boxes
    ]


def read_sources(sources: list[PhotoSource]) -> tuple[pd.DataFrame, dict[str, SourceReport]]:
    """Every source's rows in one table (stable order) and a report per source name."""
    tables, reports = [], {}
    for source in sources:
        table, reports[source.name] = read_source(source)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=PHOTO_COLUMNS)
    return table.astype({"item_index": "int64", "image_width": "int64", "image_height": "int64"}), reports


def counts_by_source(table: pd.DataFrame) -> pd.DataFrame:
    """Rows per photo_source, split and category (the metadata's counts table)."""
    return table.groupby(["photo_source", "split", "category"]).size().rename("count").reset_index()


def read_photo_table(path: Path) -> pd.DataFrame | None:
    """The labelled_photos table, or None where that asset was never materialized."""
    return pd.read_parquet(path) if Path(path).exists() else None
