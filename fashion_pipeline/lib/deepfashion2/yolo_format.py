"""The detector's training set in the YOLO layout: images/, labels/ (class xc yc w h, normalised), data.yaml,
and a manifest (one row per box: where its image came from, `photo_source` and the image's sha256)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from fashion_pipeline.lib.photos.training_rows import DF2_PHOTO_SOURCE, file_stem

YOLO_SPLITS = {"train": "train", "validation": "val"}  # DeepFashion2 split -> YOLO folder name
MANIFEST_COLUMNS = ["yolo_split", "image_file", "image_id", "photo_source", "category", "sha256"]


@dataclass(frozen=True)
class YoloSettings:
    per_class_cap: int = 5_000  # instances per class and split; an image counts once it adds to any class
    seed: int = 0


@dataclass
class YoloReport:
    images: Counter  # yolo split -> images
    instances: Counter  # (yolo split, category) -> boxes
    manifest: pd.DataFrame  # MANIFEST_COLUMNS, one row per box


def select_images(items: pd.DataFrame, categories: tuple[str, ...], settings: YoloSettings) -> pd.DataFrame:
    """Items of a balanced subset of images: images are taken in a seeded random order while any of their
    classes is still under the cap, and then carry all their items (a label file must list every garment
    in the image, or the detector learns to ignore the unlisted ones)."""
    chosen = []
    for _split, split_items in items.groupby("split", observed=True, sort=True):
        counts: Counter = Counter()
        by_image = split_items.groupby("image_id", sort=True)
        order = pd.Series(list(by_image.groups)).sample(frac=1.0, random_state=settings.seed)
        for image_id in order:
            group = by_image.get_group(image_id)
            classes = group["category"].tolist()
            if any(counts[c] < settings.per_class_cap for c in classes):
                counts.update(classes)
                chosen.append(group)
    if not chosen:
        return items.iloc[:0]
    selected = pd.concat(chosen)
    unknown = set(selected["category"]) - set(categories)
    if unknown:
        raise ValueError(f"items with categories outside the class list {categories}: {sorted(unknown)}")
    return selected.sort_values(["split", "image_id", "item_index"]).reset_index(drop=True)


def label_lines(group: pd.DataFrame, categories: tuple[str, ...]) -> list[str]:
    """One `class xc yc w h` line per item, coordinates normalised to [0, 1]."""
    lines = []
    for row in group.itertuples(index=False):
        width, height = float(row.image_width), float(row.image_height)
        xc = (row.x1 + row.x2) / 2 / width
        yc = (row.y1 + row.y2) / 2 / height
        w = (row.x2 - row.x1) / width
        h = (row.y2 - row.y1) / height
        lines.append(f"{categories.index(row.category)} {xc:.6f} {yc:.6f} {w:.6f} {h:.6f}")
    return lines


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link the image (no extra disk); copy when source and target are on different filesystems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_yolo_dataset(
    selected: pd.DataFrame, out_dir: Path, categories: tuple[str, ...], final_dir: Path | None = None
) -> YoloReport:
    """Write images/, labels/ and data.yaml into `out_dir` and return the manifest; data.yaml names `final_dir`
    (absolute paths, since Ultralytics resolves relative ones against its own settings folder). Items without
    a `photo_source` are DeepFashion2's."""
    final_dir = Path(final_dir or out_dir).resolve()
    if "photo_source" not in selected:
        selected = selected.assign(photo_source=DF2_PHOTO_SOURCE)
    images: Counter = Counter()
    instances: Counter = Counter()
    rows = []
    for (split, image_id), group in selected.groupby(["split", "image_id"], observed=True, sort=True):
        yolo_split = YOLO_SPLITS[str(split)]
        image_dir = out_dir / "images" / yolo_split
        label_dir = out_dir / "labels" / yolo_split
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        source = Path(group["image_path"].iloc[0])
        image_file = image_dir / f"{file_stem(image_id)}{source.suffix}"
        _link_or_copy(source, image_file)
        (label_dir / f"{file_stem(image_id)}.txt").write_text("\n".join(label_lines(group, categories)) + "\n")
        sha256 = hashlib.sha256(image_file.read_bytes()).hexdigest()
        images[yolo_split] += 1
        for category, photo_source in zip(group["category"], group["photo_source"], strict=True):
            instances[(yolo_split, str(category))] += 1
            rows.append([yolo_split, image_file.name, str(image_id), str(photo_source), str(category), sha256])
    data = {
        "path": str(final_dir),
        "train": str(final_dir / "images" / "train"),
        "val": str(final_dir / "images" / "val"),
        "names": dict(enumerate(categories)),
    }
    (out_dir / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return YoloReport(images=images, instances=instances, manifest=pd.DataFrame(rows, columns=MANIFEST_COLUMNS))


@dataclass(frozen=True)
class LabelAudit:
    images: int
    label_files: int
    images_without_label: int
    labels_without_image: int
    boxes: int
    boxes_out_of_range: int


def audit_yolo_dataset(root: Path) -> LabelAudit:
    """Count images and label files per split and boxes whose normalised coordinates leave [0, 1]."""
    images = labels = without_label = without_image = boxes = out_of_range = 0
    for yolo_split in YOLO_SPLITS.values():
        image_stems = {p.stem for p in (root / "images" / yolo_split).glob("*") if p.is_file()}
        label_paths = {p.stem: p for p in (root / "labels" / yolo_split).glob("*.txt")}
        images += len(image_stems)
        labels += len(label_paths)
        without_label += len(image_stems - label_paths.keys())
        without_image += len(label_paths.keys() - image_stems)
        for path in label_paths.values():
            for line in path.read_text().split("\n"):
                if not line.strip():
                    continue
                boxes += 1
                _cls, *coords = line.split()
                xc, yc, w, h = (float(v) for v in coords)
                inside = all(0.0 <= v <= 1.0 for v in (xc, yc, w, h))
                inside &= xc - w / 2 >= -1e-6 and xc + w / 2 <= 1 + 1e-6
                inside &= yc - h / 2 >= -1e-6 and yc + h / 2 <= 1 + 1e-6
                out_of_range += not inside
    return LabelAudit(images, labels, without_label, without_image, boxes, out_of_range)
