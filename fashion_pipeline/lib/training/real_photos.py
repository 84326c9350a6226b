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

from fashion_pipeline.lib.common.images import load_image
from fashion_pipeline.lib.training.evaluation import Box, classify_photos, detect_photos, detection_metrics

EXAMPLES = 12  # photos drawn per model in the example grids
THUMB = 160
SHOWN_SCORE = 0.25  # detections drawn in the examples: the app's own confidence floor


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
    labelled = list(rows[["image_path", "category"]].itertuples(index=False, name=None))
    scored = classify_photos(embedder, labelled, batch_size)
    if not len(scored.labels):
        raise ValueError(f"{source}: none of its {len(labelled)} test photos could be read")
    metrics, confusion = classification_metrics(scored.labels, scored.predictions, embedder.classes)
    examples = []
    for path, truth, guess in list(zip(scored.paths, scored.labels, scored.predictions, strict=True))[:EXAMPLES]:
        verdict = "ok" if truth == guess else f"is {embedder.classes[truth]}"
        examples.append((_thumbnail(load_image(path)), f"{embedder.classes[guess]} ({verdict})"))
    return RealPhotoScores(
        source, len(scored.labels), metrics, embedder.classes, confusion, scored.unreadable, examples
    )


def score_detector(model_dir: Path, source: str, rows: pd.DataFrame, conf: float = 0.001) -> RealPhotoScores:
    """mAP50, mAP50-95 and per-class AP of the champion detector (predictions down to `conf`, as
    ultralytics validates)."""
    from PIL import ImageDraw

    from fashion_pipeline.lib.training.detector import load_detector

    detector = load_detector(model_dir)
    boxes = {
        path: [Box((r.x1, r.y1, r.x2, r.y2), r.category) for r in group.itertuples(index=False)]
        for path, group in rows.groupby("image_path", sort=True)
    }
    predictions, truths, paths, unreadable = detect_photos(detector, list(boxes), lambda path, *_: boxes[path], conf)
    if not truths:
        raise ValueError(f"{source}: none of its {len(boxes)} test photos could be read")
    result = detection_metrics(predictions, truths, detector.classes)
    metrics = {"mAP50": result["mAP50"], "mAP50-95": result["mAP50-95"]}
    for category, figures in result["per_class"].items():
        metrics[f"AP50_{category}"] = figures["AP50"]
        metrics[f"AP50-95_{category}"] = figures["AP50-95"]
    examples = []
    for path, predicted, truth in list(zip(paths, predictions, truths, strict=True))[:EXAMPLES]:
        drawn = load_image(path).convert("RGB")
        draw = ImageDraw.Draw(drawn)
        for box in truth:
            draw.rectangle(box.box, outline=(40, 170, 80), width=3)
        for box in (b for b in predicted if b.score >= SHOWN_SCORE):
            draw.rectangle(box.box, outline=(230, 60, 60), width=3)
            draw.text((box.box[0] + 3, box.box[1] + 2), box.category, fill=(230, 60, 60))
        examples.append((_thumbnail(drawn), "green truth, red found"))
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
