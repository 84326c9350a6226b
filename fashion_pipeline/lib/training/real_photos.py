"""The champions scored on the test split of the labelled photo sources: what a shopper's photos get.

The rows come from the `labelled_photos` table (one row per labelled garment; classifier photos carry one
garment spanning the whole photo, detector photos one row per box). Test rows are never trained on (the
`no_test_photos` checks prove it), so these figures say how the models do on photos they have not seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fashion_pipeline.lib.common.images import ImageError, load_image
from fashion_pipeline.lib.training.evaluation import Box, detection_metrics

EXAMPLES = 12  # photos drawn per model in the example grids
THUMB = 160


@dataclass
class RealPhotoScores:
    """Scores of one model on one source's test photos, and a few examples to look at."""

    source: str
    images: int
    metrics: dict[str, float]  # accuracy, macro_f1 (classifier); mAP50, mAP50-95 (detector); per-class keys
    classes: tuple[str, ...]  # the model's classes, in its output order
    confusion: np.ndarray | None = None  # classifier only, rows = true class
    unreadable: list[str] = field(default_factory=list)
    examples: list[tuple[Any, str]] = field(default_factory=list)  # (PIL image, caption)


def evaluation_rows(photos: pd.DataFrame, task: str) -> dict[str, pd.DataFrame]:
    """The test-split rows of `task` ("classifier" or "detector") per photo source."""
    chosen = photos[(photos["split"] == "test") & (photos["task"] == task)]
    return {source: rows for source, rows in chosen.groupby("photo_source", sort=True)}


def score_classifier(model_dir: Path, source: str, rows: pd.DataFrame, batch_size: int = 32) -> RealPhotoScores:
    """Accuracy, macro F1, per-class figures and the confusion matrix of the champion classifier."""
    from fashion_pipeline.lib.training.classifier_training import classification_metrics
    from fashion_pipeline.lib.training.embedder import load_embedder

    embedder = load_embedder(model_dir)
    index = {c: i for i, c in enumerate(embedder.classes)}
    labels, predictions, unreadable, examples = [], [], [], []
    records = list(rows[["image_path", "category"]].itertuples(index=False))
    for start in range(0, len(records), batch_size):
        images, chunk = [], []
        for path, category in records[start : start + batch_size]:
            try:
                images.append(load_image(path))
            except ImageError as exc:
                unreadable.append(f"{path}: {exc}")
                continue
            chunk.append(index[category])
        if not images:
            continue
        predicted = embedder.classify(images, batch_size).argmax(axis=1)
        for image, truth, guess in zip(images, chunk, predicted, strict=True):
            if len(examples) < EXAMPLES:
                mark = "ok" if truth == guess else "WRONG"
                caption = f"{embedder.classes[guess]} ({mark}; is {embedder.classes[truth]})"
                examples.append((_thumbnail(image), caption))
        labels.extend(chunk)
        predictions.extend(predicted.tolist())
    if not labels:
        raise ValueError(f"{source}: none of its {len(records)} test photos could be read")
    metrics, confusion = classification_metrics(np.array(labels), np.array(predictions), embedder.classes)
    return RealPhotoScores(source, len(labels), metrics, embedder.classes, confusion, unreadable, examples)


def score_detector(model_dir: Path, source: str, rows: pd.DataFrame, conf: float = 0.001) -> RealPhotoScores:
    """mAP50, mAP50-95 and per-class AP of the champion detector (predictions down to `conf`, as
    ultralytics validates)."""
    from PIL import ImageDraw

    from fashion_pipeline.lib.training.detector import load_detector

    detector = load_detector(model_dir)
    predictions, truths, unreadable, examples = [], [], [], []
    for path, boxes in rows.groupby("image_path", sort=True):
        try:
            image = load_image(path)
        except ImageError as exc:
            unreadable.append(f"{path}: {exc}")
            continue
        truth = [Box((r.x1, r.y1, r.x2, r.y2), r.category) for r in boxes.itertuples(index=False)]
        found = detector.detect(image, conf=conf, max_detections=300)
        truths.append(truth)
        predictions.append([Box(d.box, d.category, d.score) for d in found])
        if len(examples) < EXAMPLES:
            drawn = image.convert("RGB")
            draw = ImageDraw.Draw(drawn)
            for box in truth:
                draw.rectangle(box.box, outline=(40, 170, 80), width=3)
            for detection in (d for d in found if d.score >= 0.25):
                draw.rectangle(detection.box, outline=(230, 60, 60), width=3)
                draw.text((detection.box[0] + 3, detection.box[1] + 2), detection.category, fill=(230, 60, 60))
            examples.append((_thumbnail(drawn), "green: truth, red: detected"))
    if not truths:
        raise ValueError(f"{source}: none of its test photos could be read")
    result = detection_metrics(predictions, truths, detector.classes)
    metrics = {"mAP50": result["mAP50"], "mAP50-95": result["mAP50-95"]}
    for category, figures in result["per_class"].items():
        metrics[f"AP50_{category}"] = figures["AP50"]
        metrics[f"AP50-95_{category}"] = figures["AP50-95"]
    return RealPhotoScores(source, len(truths), metrics, detector.classes, None, unreadable, examples)


def _thumbnail(image: Any) -> Any:
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMB, THUMB))
    return thumb


def examples_grid(examples: list[tuple[Any, str]], columns: int = 4) -> Any:
    """The example photos with their captions in one image (for MLflow and the asset's metadata)."""
    from PIL import Image, ImageDraw

    rows = max(1, -(-len(examples) // columns))
    cell_height = THUMB + 16
    grid = Image.new("RGB", (columns * THUMB, rows * cell_height), "white")
    draw = ImageDraw.Draw(grid)
    for i, (image, caption) in enumerate(examples):
        x, y = (i % columns) * THUMB, (i // columns) * cell_height
        grid.paste(image, (x + (THUMB - image.width) // 2, y))
        draw.text((x + 2, y + THUMB + 2), caption[:28], fill="black")
    return grid
