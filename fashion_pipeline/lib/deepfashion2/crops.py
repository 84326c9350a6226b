"""The balanced crop dataset the classifier is trained on: one JPEG per garment item, capped per class.

Items are DeepFashion2's and, beside them, labelled photos (`photo_source` names where each came from).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fashion_pipeline.lib.common.images import ImageError, load_image
from fashion_pipeline.lib.photos.training_rows import DF2_PHOTO_SOURCE, file_stem

MANIFEST_COLUMNS = [
    "crop_path",
    "split",
    "category",
    "category_id",
    "image_id",
    "item_index",
    "source",
    "pair_id",
    "style",
    "width",
    "height",
    "photo_source",
    "sha256",  # of the source photo's bytes: the no_test_photos check compares it with every test photo
]


@dataclass(frozen=True)
class CropSettings:
    train_cap: int = 7_500  # per category, as the original project balanced its crops
    validation_cap: int = 2_250
    margin: float = 0.05  # extra context around the box, as a fraction of its width/height
    min_size: int = 24  # items whose box is smaller than this (px, either side) are left out
    max_side: int = 320  # crops are downscaled to this longest side; the classifier never needs more
    seed: int = 0
    jpeg_quality: int = 92


@dataclass
class CropReport:
    written: int = 0
    left_out: Counter = field(default_factory=Counter)  # reason -> items not cropped


def select_balanced(items: pd.DataFrame, settings: CropSettings) -> tuple[pd.DataFrame, Counter]:
    """Items to crop: at most the cap per (split, category), drawn at random with the seed; too-small left out."""
    left_out: Counter = Counter()
    width = items["x2"] - items["x1"]
    height = items["y2"] - items["y1"]
    big_enough = (width >= settings.min_size) & (height >= settings.min_size)
    left_out["smaller_than_min_size"] = int((~big_enough).sum())
    candidates = items[big_enough]
    chosen = []
    for (split, _category), group in candidates.groupby(["split", "category"], observed=True, sort=True):
        cap = settings.train_cap if split == "train" else settings.validation_cap
        if len(group) > cap:
            left_out["over_class_cap"] += len(group) - cap
            group = group.sample(n=cap, random_state=settings.seed)
        chosen.append(group)
    selected = pd.concat(chosen) if chosen else candidates.iloc[:0]
    return selected.sort_values(["split", "image_id", "item_index"]).reset_index(drop=True), left_out


def crop_box(image: Image.Image, box: tuple[float, float, float, float], margin: float) -> tuple[int, int, int, int]:
    """The item's box widened by `margin` on each side, clipped to the image, as integer pixels."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    return (
        max(0, int(np.floor(x1 - dx))),
        max(0, int(np.floor(y1 - dy))),
        min(image.width, int(np.ceil(x2 + dx))),
        min(image.height, int(np.ceil(y2 + dy))),
    )


def crop_file_name(row) -> str:
    return f"{file_stem(row.image_id)}_{int(row.item_index)}.jpg"


def write_crops(
    selected: pd.DataFrame, out_dir: Path, settings: CropSettings, final_dir: Path | None = None
) -> tuple[pd.DataFrame, CropReport]:
    """Write one crop per selected item under `out_dir/<split>/<category>/`; returns the manifest.

    `out_dir` may be a temporary folder that the caller renames to `final_dir` afterwards (atomic swap):
    the manifest records the paths under `final_dir`. Each source image is read and decoded once for all its
    items. Items without a `photo_source` are DeepFashion2's.
    """
    final_dir = Path(final_dir or out_dir)
    if "photo_source" not in selected:
        selected = selected.assign(photo_source=DF2_PHOTO_SOURCE)
    report = CropReport()
    rows = []
    for image_path, group in selected.groupby("image_path", sort=True):
        try:
            data = Path(image_path).read_bytes()
            image = load_image(data)
        except (OSError, ImageError):
            report.left_out["unreadable_image"] += len(group)
            continue
        sha256 = hashlib.sha256(data).hexdigest()
        for row in group.itertuples(index=False):
            crop = image.crop(crop_box(image, (row.x1, row.y1, row.x2, row.y2), settings.margin))
            crop.thumbnail((settings.max_side, settings.max_side), Image.Resampling.BILINEAR)
            relative = Path(str(row.split), str(row.category), crop_file_name(row))
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            crop.save(target, quality=settings.jpeg_quality)
            rows.append(
                {
                    "crop_path": str(final_dir / relative),
                    "split": str(row.split),
                    "category": str(row.category),
                    "category_id": int(row.category_id),
                    "image_id": str(row.image_id),
                    "item_index": int(row.item_index),
                    "source": str(row.source),
                    "pair_id": int(row.pair_id),
                    "style": int(row.style),
                    "width": crop.width,
                    "height": crop.height,
                    "photo_source": str(row.photo_source),
                    "sha256": sha256,
                }
            )
            report.written += 1
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    return manifest, report
