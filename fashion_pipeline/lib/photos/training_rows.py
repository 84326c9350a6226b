"""DeepFashion2 items and labelled photos as one set of training rows, and the proof that no test photo
reached training.

garment_crops takes DeepFashion2 items plus the train/validation rows of every source with `crops: true`
(classifier photos whole, detector photos box by box); yolo_dataset takes DeepFashion2 items plus the
train/validation rows of detector sources. A test row never becomes a training row.
"""

from __future__ import annotations

import pandas as pd

DF2_PHOTO_SOURCE = "deepfashion2"  # the photo_source of DeepFashion2 items in the crops and YOLO manifests
TRAINING_SPLITS = ("train", "validation")
_PHOTO_DEFAULTS = {
    "source": "unknown",  # DeepFashion2's user/shop; a labelled photo is neither
    "pair_id": 0,  # no consumer-to-shop pair
    "style": 0,
    "category_id": 0,  # DeepFashion2's 13-way id (1-13); 0 = not a DeepFashion2 item
}
_ROW_COLUMNS = [
    "image_id",
    "split",
    "photo_source",
    "source",
    "pair_id",
    "style",
    "item_index",
    "category_id",
    "category",
    "x1",
    "y1",
    "x2",
    "y2",
    "image_path",
    "image_width",
    "image_height",
]


def file_stem(image_id: str) -> str:
    """An image id as a flat file name: photo ids are `<source>/<stem>`, files sit in one folder per class."""
    return str(image_id).replace("/", "__")


def training_rows(items: pd.DataFrame | None, photos: pd.DataFrame, use: str) -> pd.DataFrame:
    """DeepFashion2 items (None: left out) and the photo rows for `use` ("crops" or "detector") in one frame."""
    if use not in ("crops", "detector"):
        raise ValueError(f"use must be 'crops' or 'detector', not {use!r}")
    wanted = photos["feeds_crops"].astype(bool) if use == "crops" else photos["task"] == "detector"
    chosen = photos[wanted & photos["split"].isin(TRAINING_SPLITS)]
    photo_rows = chosen.assign(**_PHOTO_DEFAULTS)[_ROW_COLUMNS]
    df2_rows = items.assign(photo_source=DF2_PHOTO_SOURCE)[_ROW_COLUMNS] if items is not None else photo_rows[:0]
    frames = [f for f in (df2_rows, photo_rows) if len(f)]  # concat warns on empty frames
    rows = pd.concat(frames, ignore_index=True) if frames else photo_rows
    # Categoricals from the DeepFashion2 table and strings from the photos concatenate as objects; the
    # selection below groups by them, so make the types plain and equal.
    return rows.astype({"split": str, "category": str, "source": str, "image_id": str, "image_path": str})


def find_test_leaks(photos: pd.DataFrame, trained: pd.DataFrame) -> list[dict[str, str]]:
    """Test photos that reached training: the same (photo_source, image_id) as a trained image, or the same
    file bytes (sha256) under any name or source. `trained` has photo_source, image_id and sha256."""
    test = photos[photos["split"] == "test"].drop_duplicates(["photo_source", "image_id", "sha256"])
    trained = trained.drop_duplicates(["photo_source", "image_id", "sha256"])
    ids = set(zip(trained["photo_source"].astype(str), trained["image_id"].astype(str), strict=True))
    by_hash = {
        sha: (source, image_id)
        for sha, source, image_id in zip(trained["sha256"], trained["photo_source"], trained["image_id"], strict=True)
    }
    leaks = []
    for row in test.itertuples(index=False):
        if (row.photo_source, row.image_id) in ids:
            match, (source, image_id) = "same id", (row.photo_source, row.image_id)
        elif row.sha256 in by_hash:
            match, (source, image_id) = "same bytes", by_hash[row.sha256]
        else:
            continue
        leaks.append(
            {
                "test_photo": row.image_id,
                "image_path": row.image_path,
                "match": match,
                "training_source": str(source),
                "training_image": str(image_id),
            }
        )
    return leaks
