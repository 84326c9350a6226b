"""The classifier's data: the crops manifest, its version hash, and crops as Keras training input.

The crops are decoded once and trained from memory when they fit (`IN_MEMORY_BYTES`), else streamed from
disk per batch. Every batch has one shape, because a new shape makes TensorFlow retrace its step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.common.images import load_image
from fashion_pipeline.lib.training.classifier_model import prepare_image

MANIFEST_COLUMNS = ("crop_path", "split", "category")
# Crops up to this many decoded bytes are trained from memory; past it they stream from disk in batches.
IN_MEMORY_BYTES = 4 * 1024**3


def read_manifest(path: Path) -> pd.DataFrame:
    """The crops manifest, checked: required columns, both splits present, known categories only."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist: materialize the garment_crops asset first")
    manifest = pd.read_parquet(path)
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}")
    unknown = sorted(set(manifest["category"]) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"{path} has categories {unknown} outside {CATEGORIES}")
    for split in ("train", "validation"):
        if not (manifest["split"] == split).any():
            raise ValueError(f"{path} has no {split!r} crops")
    return manifest


def crops_data_version(manifest: pd.DataFrame) -> str:
    """A short hash of what the model learns from: split, category, file name and byte size of every crop
    (sizes, not contents, so hashing stays fast on the full dataset; a re-encoded crop changes its size)."""
    rows = manifest.assign(
        file=manifest["crop_path"].map(lambda p: Path(p).name),
        bytes=manifest["crop_path"].map(lambda p: Path(p).stat().st_size),
    )
    rows = rows[["split", "category", "file", "bytes"]].sort_values(["split", "category", "file"])
    return hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()[:16]


def load_crops(paths: Sequence[str], size: int, resize: str) -> np.ndarray:
    """(N, size, size, 3) uint8: every crop decoded and prepared once."""
    images = np.zeros((len(paths), size, size, 3), np.uint8)
    for i, path in enumerate(paths):
        images[i] = prepare_image(load_image(path), size, resize)
    return images


def pad_to_batches(
    count: int, batch_size: int, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights making `count` samples a whole number of batches.

    Every batch must have the same shape, because a new shape makes TensorFlow retrace the step (10+ s on
    CPU). With `rng` (training) the gap is filled with randomly repeated samples at weight 1; without it
    (evaluation) with copies at weight 0, so metrics stay exact.
    """
    missing = -count % batch_size if count else batch_size
    weights = np.ones(count + missing, np.float32)
    if rng is not None:
        extra = rng.choice(count, missing) if count else np.zeros(missing, np.int64)
    else:
        extra = np.resize(np.arange(max(count, 1)), missing)
        weights[count:] = 0.0
    return np.concatenate([np.arange(count), extra]).astype(np.int64), weights


def streamed_batches(
    keras: Any,
    paths: Sequence[str],
    labels: np.ndarray,
    size: int,
    resize: str,
    batch_size: int,
    train: bool,
    seed: int,
) -> Any:
    """A Keras PyDataset of (images, labels, weights) decoded from disk per batch, for crops past memory.

    On the TensorFlow backend it runs as a tf.data generator, which pins glibc's mmap threshold at 128 KiB
    for the whole process (TensorFlow's ApplyPython311MemoryPatch): torch code in the same process then
    runs about 1.8x slower, so the small datasets of the embedded default are trained from memory instead.
    """

    class CropBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.on_epoch_end()

        def __len__(self) -> int:
            return len(self.order) // batch_size

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            chosen = slice(index * batch_size, (index + 1) * batch_size)
            indices = self.order[chosen]
            images = np.stack([prepare_image(load_image(paths[i]), size, resize) for i in indices])
            return images.astype(np.float32), labels[indices], self.weights[chosen]

        def on_epoch_end(self) -> None:
            self.order, self.weights = pad_to_batches(len(paths), batch_size, self.rng if train else None)
            if train:
                self.rng.shuffle(self.order)

    return CropBatches()


@dataclass
class FitData:
    """The crops as `model.fit` arguments, from memory or streamed, and how to predict the validation split."""

    fit_kwargs: dict[str, Any]  # x (+ y, batch_size, shuffle), validation_data, validation_batch_size
    steps_per_epoch: int
    predict_validation: Callable[[Any], np.ndarray]  # model -> (n_validation, n_classes) probabilities


def fit_data(
    keras: Any,
    train: tuple[Sequence[str], np.ndarray],
    validation: tuple[Sequence[str], np.ndarray],
    size: int,
    resize: str,
    batch: int,
    seed: int,
) -> FitData:
    """Training and validation crops (paths, labels) ready for `fit`, every batch of one shape."""
    (train_paths, train_labels), (validation_paths, validation_labels) = train, validation
    count = len(validation_labels)
    if (len(train_paths) + len(validation_paths)) * size * size * 3 <= IN_MEMORY_BYTES:
        train_order, _ = pad_to_batches(len(train_paths), batch, np.random.default_rng(seed))
        validation_order, validation_weights = pad_to_batches(len(validation_paths), batch)
        train_images = load_crops(train_paths, size, resize)[train_order]
        validation_images = load_crops(validation_paths, size, resize)[validation_order]
        return FitData(
            {
                "x": train_images,
                "y": train_labels[train_order],
                "batch_size": batch,
                "shuffle": True,
                "validation_data": (validation_images, validation_labels[validation_order], validation_weights),
                "validation_batch_size": batch,
            },
            len(train_order) // batch,
            # The padding comes last.
            lambda model: model.predict(validation_images, batch_size=batch, verbose=0)[:count],
        )
    train_batches = streamed_batches(keras, train_paths, train_labels, size, resize, batch, True, seed)
    validation_batches = streamed_batches(keras, validation_paths, validation_labels, size, resize, batch, False, 0)
    return FitData(
        {"x": train_batches, "validation_data": validation_batches},
        len(train_batches),
        lambda model: model.predict(validation_batches, verbose=0)[:count],
    )
