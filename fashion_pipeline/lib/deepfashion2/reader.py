"""Read DeepFashion2 annotations (official per-image JSON or the COCO form) into one row per garment item.

The official layout is `<root>/{train,validation}/image/NNNNNN.jpg` + `annos/NNNNNN.json`; the COCO form is
what DeepFashion2's `deepfashion2_to_coco.py` writes (one JSON per split, `bbox` as [x, y, w, h], no
`source`). Broken input is skipped with a counted reason, never silently: see `MergeReport`.
Segmentation polygons and landmarks stay out of the table: they are most of the JSON's bytes and nothing
downstream (crops, YOLO boxes, retrieval) needs them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import imagesize
import orjson
import pandas as pd

from fashion_pipeline.lib.common.categories import DF2_CATEGORY_NAMES

SPLITS = ("train", "validation")
DF2_CATEGORY_IDS = frozenset(range(1, 14))

ANNOTATION_COLUMNS = [
    "image_id",
    "split",
    "source",
    "pair_id",
    "item_index",
    "category_id",
    "category_name",
    "style",
    "x1",
    "y1",
    "x2",
    "y2",
    "scale",
    "occlusion",
    "zoom_in",
    "viewpoint",
    "image_path",
    "image_width",
    "image_height",
]
_INT_COLUMNS = ["pair_id", "item_index", "category_id", "style", "scale", "occlusion", "zoom_in", "viewpoint"]
_BOX_COLUMNS = ["x1", "y1", "x2", "y2"]

# Below this many files the merge runs in this process: starting workers costs more than it saves.
_PARALLEL_MIN_FILES = 4_000
_CHUNK_FILES = 2_000


class DeepFashion2RootError(FileNotFoundError):
    """The configured DeepFashion2 folder is missing or holds no annotations."""


@dataclass
class MergeReport:
    """What the merge read and what it skipped, by reason (file-level and item-level reasons both count)."""

    files_read: int = 0
    items_kept: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> number of files or items skipped
    examples: dict[str, str] = field(default_factory=dict)  # reason -> one offending file, for the log

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def skipped_fraction(self) -> float:
        seen = self.items_kept + self.skipped_total
        return self.skipped_total / seen if seen else 0.0

    def add(self, other: MergeReport) -> None:
        self.files_read += other.files_read
        self.items_kept += other.items_kept
        self.skipped.update(other.skipped)
        for reason, example in other.examples.items():
            self.examples.setdefault(reason, example)

    def skip(self, reason: str, where: Path | str, count: int = 1) -> None:
        self.skipped[reason] += count
        self.examples.setdefault(reason, str(where))


def _empty_columns() -> dict[str, list]:
    return {name: [] for name in ANNOTATION_COLUMNS}


def _item_problem(item: dict, width: int, height: int) -> str | None:
    """Why an item cannot be used, or None when it is fine."""
    try:
        category_id = int(item["category_id"])
        x1, y1, x2, y2 = (float(v) for v in item["bounding_box"])
    except (KeyError, TypeError, ValueError):
        return "malformed_item"
    if category_id not in DF2_CATEGORY_IDS:
        return "unknown_category"
    if x2 <= x1 or y2 <= y1:
        return "box_zero_area"
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        return "box_outside_image"
    return None


def _append_item(
    columns: dict[str, list],
    item: dict,
    *,
    image_id: str,
    split: str,
    source: str,
    pair_id: int,
    item_index: int,
    image_path: str,
    width: int,
    height: int,
    box: Sequence[float],
) -> None:
    columns["image_id"].append(image_id)
    columns["split"].append(split)
    columns["source"].append(source)
    columns["pair_id"].append(pair_id)
    columns["item_index"].append(item_index)
    columns["category_id"].append(int(item["category_id"]))
    columns["category_name"].append(str(item.get("category_name", "")))
    columns["style"].append(int(item.get("style", 0)))
    for name, value in zip(_BOX_COLUMNS, box, strict=True):
        columns[name].append(float(value))
    for name in ("scale", "occlusion", "zoom_in", "viewpoint"):
        columns[name].append(int(item.get(name, 0)))
    columns["image_path"].append(image_path)
    columns["image_width"].append(width)
    columns["image_height"].append(height)


def _read_official_files(split: str, image_dir: str, anno_paths: Sequence[str]) -> tuple[pd.DataFrame, MergeReport]:
    """Parse a batch of per-image JSON files into a typed frame (runs in a worker process for large trees;
    a frame of numpy columns crosses the process boundary far faster than lists of Python objects)."""
    columns = _empty_columns()
    report = MergeReport()
    for anno_path in anno_paths:
        report.files_read += 1
        try:
            with open(anno_path, "rb") as handle:
                record = orjson.loads(handle.read())
            source = str(record["source"])
            pair_id = int(record["pair_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            report.skip("malformed_json", anno_path)
            continue
        item_keys = [key for key in record if key.startswith("item")]
        stem = os.path.splitext(os.path.basename(anno_path))[0]
        image_path = os.path.join(image_dir, stem + ".jpg")
        try:
            # imagesize reads only the header bytes: half the time of PIL's lazy open, which parses every
            # JPEG marker; at DeepFashion2's 224,000 files the size look-up is most of the merge.
            width, height = imagesize.get(image_path)
        except FileNotFoundError:
            report.skip("missing_image", anno_path, count=max(len(item_keys), 1))
            continue
        except (OSError, ValueError):
            width = height = -1
        if width <= 0 or height <= 0:
            reason = "unreadable_image" if os.path.exists(image_path) else "missing_image"
            report.skip(reason, image_path, count=max(len(item_keys), 1))
            continue
        for key in item_keys:
            item = record[key]
            problem = _item_problem(item, width, height) if isinstance(item, dict) else "malformed_item"
            if problem:
                report.skip(problem, f"{anno_path}:{key}")
                continue
            _append_item(
                columns,
                item,
                image_id=stem,
                split=split,
                source=source,
                pair_id=pair_id,
                item_index=int(key[4:] or 0),
                image_path=image_path,
                width=width,
                height=height,
                box=item["bounding_box"],
            )
            report.items_kept += 1
    return _frame(columns), report


def _frame(columns: dict[str, list]) -> pd.DataFrame:
    df = pd.DataFrame(columns, columns=ANNOTATION_COLUMNS)
    for name in _INT_COLUMNS:
        df[name] = df[name].astype("int32")
    for name in _BOX_COLUMNS:
        df[name] = df[name].astype("float32")
    df["image_width"] = df["image_width"].astype("int32")
    df["image_height"] = df["image_height"].astype("int32")
    for name in ("split", "source", "category_name"):
        df[name] = df[name].astype("category")
    return df


def _chunks(paths: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def _list_json(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(entry.path for entry in entries if entry.name.endswith(".json"))


def official_splits(root: Path) -> list[str]:
    """The splits under `root` that have an `annos` folder."""
    return [split for split in SPLITS if (root / split / "annos").is_dir()]


def read_official(root: Path, workers: int | None = None) -> tuple[pd.DataFrame, MergeReport]:
    """Merge every `<root>/<split>/annos/*.json` of both splits into one row per item."""
    root = Path(root)
    splits = official_splits(root)
    if not splits:
        raise DeepFashion2RootError(
            f"FASHION_DF2_ROOT={root} has no train/annos or validation/annos folder: point FASHION_DF2_ROOT at "
            "the DeepFashion2 folder (or unset it to use the generated sample)"
        )
    jobs = []
    for split in splits:
        files = _list_json(root / split / "annos")
        jobs += [(split, str(root / split / "image"), chunk) for chunk in _chunks(files, _CHUNK_FILES)]
    total_files = sum(len(chunk) for _, _, chunk in jobs)
    if total_files == 0:
        raise DeepFashion2RootError(f"FASHION_DF2_ROOT={root} has annos folders but no JSON files in them")
    workers = workers or os.cpu_count() or 1
    if workers > 1 and total_files >= _PARALLEL_MIN_FILES:
        # spawn, not fork: the caller may hold threads (Dagster, TensorFlow) that fork would copy half-locked.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_read_official_files, *zip(*jobs, strict=True)))
    else:
        results = [_read_official_files(*job) for job in jobs]
    report = MergeReport()
    frames = []
    for frame, part in results:
        report.add(part)
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True) if frames else _frame(_empty_columns())
    for name in ("split", "source", "category_name"):
        df[name] = df[name].astype(str).astype("category")
    return df, report


def read_coco(json_path: Path, image_dir: Path, split: str) -> tuple[pd.DataFrame, MergeReport]:
    """Read a COCO-style DeepFashion2 file (`deepfashion2_to_coco.py` output) into the same rows.

    That format drops `source`, `scale`, `occlusion`, `zoom_in` and `viewpoint`: they are written as
    "unknown" / 0. `item_index` numbers the items of an image in annotation order, from 1 as in `itemN`.
    """
    json_path, image_dir = Path(json_path), Path(image_dir)
    report = MergeReport(files_read=1)
    try:
        coco = orjson.loads(json_path.read_bytes())
        images = {int(image["id"]): image for image in coco["images"]}
        annotations = coco["annotations"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{json_path} is not a COCO-style DeepFashion2 file: {exc}") from exc
    columns = _empty_columns()
    items_per_image: Counter = Counter()
    for annotation in annotations:
        image = images.get(int(annotation.get("image_id", -1)))
        if image is None:
            report.skip("missing_image", f"{json_path}: annotation {annotation.get('id')}")
            continue
        image_path = image_dir / image["file_name"]
        if not image_path.exists():
            report.skip("missing_image", image_path)
            continue
        width, height = int(image["width"]), int(image["height"])
        try:
            x, y, w, h = (float(v) for v in annotation["bbox"])
        except (KeyError, TypeError, ValueError):
            report.skip("malformed_item", f"{json_path}: annotation {annotation.get('id')}")
            continue
        item = {**annotation, "bounding_box": [x, y, x + w, y + h]}
        problem = _item_problem(item, width, height)
        if problem:
            report.skip(problem, f"{json_path}: annotation {annotation.get('id')}")
            continue
        image_id = Path(image["file_name"]).stem
        items_per_image[image_id] += 1
        item["category_name"] = DF2_CATEGORY_NAMES.get(int(annotation["category_id"]), "")
        _append_item(
            columns,
            item,
            image_id=image_id,
            split=split,
            source="unknown",
            pair_id=int(annotation.get("pair_id", 0)),
            item_index=items_per_image[image_id],
            image_path=str(image_path),
            width=width,
            height=height,
            box=item["bounding_box"],
        )
        report.items_kept += 1
    return _frame(columns), report


def read_deepfashion2(root: Path, workers: int | None = None) -> tuple[pd.DataFrame, MergeReport]:
    """Read a DeepFashion2 folder in either form.

    Official layout when `<split>/annos/` exists; otherwise COCO files `<root>/<split>.json` (or one JSON
    inside `<root>/<split>/`) with images in `<root>/<split>/image/`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DeepFashion2RootError(
            f"FASHION_DF2_ROOT={root} does not exist: point it at the DeepFashion2 folder "
            "(or unset it to use the generated sample)"
        )
    if official_splits(root):
        return read_official(root, workers=workers)
    frames, report = [], MergeReport()
    for split in SPLITS:
        candidates = [root / f"{split}.json"]
        if (root / split).is_dir():
            candidates += sorted((root / split).glob("*.json"))
        json_path = next((path for path in candidates if path.is_file()), None)
        if json_path is None:
            continue
        image_dir = root / split / "image" if (root / split / "image").is_dir() else json_path.parent
        df, part = read_coco(json_path, image_dir, split)
        frames.append(df)
        report.add(part)
    if not frames:
        raise DeepFashion2RootError(
            f"FASHION_DF2_ROOT={root} holds no DeepFashion2 annotations: expected <split>/annos/*.json "
            "(official) or <split>.json (COCO form) for split train or validation"
        )
    df = pd.concat(frames, ignore_index=True)
    for name in ("split", "source", "category_name"):
        df[name] = df[name].astype(str).astype("category")
    return df, report


def with_categories(annotations: pd.DataFrame, to_category: dict[int, str]) -> pd.DataFrame:
    """Add the 5-way `category`; ids missing from the mapping get None (a check flags them)."""
    items = annotations.copy()
    items["category"] = items["category_id"].map(to_category)
    return items


def boxes_inside_images(df: pd.DataFrame) -> pd.Series:
    """True per row when the box has positive area and lies inside its image."""
    return (
        (df["x1"] >= 0)
        & (df["y1"] >= 0)
        & (df["x2"] <= df["image_width"])
        & (df["y2"] <= df["image_height"])
        & (df["x2"] > df["x1"])
        & (df["y2"] > df["y1"])
    )
