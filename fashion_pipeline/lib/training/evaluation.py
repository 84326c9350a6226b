"""Scoring the champion models on a labelled folder a user brings (never used for training).

Classifier: a class-folder tree (`<folder>/**/<class name>/<image>`) and a CSV mapping each class name onto
the 5 categories. Detector: a YOLO folder (`images/**`, `labels/**` with `class xc yc w h` lines) and a CSV
mapping each class id onto the 5 categories. Classes mapped to nothing (hats, shoes, bags) are left out:
their images are skipped by the classifier and their boxes are not ground truth for the detector.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.common.images import ImageError, load_image
from fashion_pipeline.lib.photos.labels import images_under, read_class_mapping

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
DEFAULT_CLASSIFIER_MAPPING = "labels_5class.csv"
DEFAULT_DETECTOR_MAPPING = "class_map_5class.csv"


# --- classifier ---------------------------------------------------------------------------------------


def evaluate_classifier(
    model_dir: Path, folder: Path, mapping_csv: Path | None = None, batch_size: int = 32
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix of the classifier on `folder`.

    The class of an image is the name of the folder holding it; `mapping_csv` (default
    `<folder>/labels_5class.csv`; without one, folder names must be the categories themselves) maps it.
    """
    from fashion_pipeline.lib.training.classifier_training import classification_metrics
    from fashion_pipeline.lib.training.embedder import load_embedder

    folder = Path(folder)
    mapping_csv = mapping_csv or _default(folder, DEFAULT_CLASSIFIER_MAPPING)
    mapping = read_class_mapping(mapping_csv) if mapping_csv else {c: c for c in CATEGORIES}
    labelled: list[tuple[Path, str]] = []
    outside: dict[str, int] = {}
    for image in images_under(folder):
        category = mapping.get(image.parent.name)
        if category is None:
            outside[image.parent.name] = outside.get(image.parent.name, 0) + 1
        else:
            labelled.append((image, category))
    if not labelled:
        raise ValueError(f"{folder} has no images in class folders mapped onto {CATEGORIES} by {mapping_csv}")

    embedder = load_embedder(model_dir)
    scored = classify_photos(embedder, labelled, batch_size)
    labels, predictions, unreadable = scored.labels, scored.predictions, scored.unreadable
    metrics, confusion = classification_metrics(np.array(labels), np.array(predictions), embedder.classes)
    return {
        "model": {"dir": str(model_dir), "registered_version": embedder.version},
        "folder": str(folder),
        "mapping": str(mapping_csv) if mapping_csv else "identity",
        "images": len(labels),
        "skipped_outside_categories": outside,
        "unreadable": unreadable,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "per_class": {
            c: {k: metrics[f"{k}_{c}"] for k in ("precision", "recall", "f1", "support")} for c in embedder.classes
        },
        "confusion_matrix": {"classes": list(embedder.classes), "rows_true": confusion.tolist()},
    }


@dataclass
class ClassifiedPhotos:
    labels: np.ndarray  # true class index per readable photo, in the model's class order
    predictions: np.ndarray  # predicted class index, same order
    paths: list[Path | str]  # the readable photos, same order
    unreadable: list[str]  # "<path>: <why>"


def classify_photos(
    embedder: Any, labelled: Sequence[tuple[Path | str, str]], batch_size: int = 32
) -> ClassifiedPhotos:
    """The classifier's prediction for each (photo, category); unreadable photos are listed, not fatal."""
    index = {c: i for i, c in enumerate(embedder.classes)}
    labels, predictions, paths, unreadable = [], [], [], []
    for start in range(0, len(labelled), batch_size):
        images = []
        for path, category in labelled[start : start + batch_size]:
            try:
                images.append(load_image(path))
            except ImageError as exc:
                unreadable.append(f"{path}: {exc}")
                continue
            labels.append(index[category])
            paths.append(path)
        if images:
            predictions.extend(embedder.classify(images, batch_size).argmax(axis=1).tolist())
    return ClassifiedPhotos(np.array(labels, np.int64), np.array(predictions, np.int64), paths, unreadable)


def _default(folder: Path, name: str) -> Path | None:
    return folder / name if (folder / name).is_file() else None


# --- detector -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 pixels
    category: str
    score: float = 1.0


def read_yolo_labels(label_file: Path, width: int, height: int, mapping: dict[str, str | None]) -> list[Box]:
    """Ground-truth boxes of one image in pixels; classes mapped to None are dropped."""
    boxes = []
    if not label_file.exists():
        return boxes
    for line in label_file.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] not in mapping:
            raise ValueError(f"{label_file}: class id {parts[0]} is not in the class map")
        category = mapping[parts[0]]
        if category is None:
            continue
        xc, yc, w, h = (float(v) for v in parts[1:5])
        boxes.append(
            Box(((xc - w / 2) * width, (yc - h / 2) * height, (xc + w / 2) * width, (yc + h / 2) * height), category)
        )
    return boxes


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of boxes a (N, 4) and b (M, 4), x1 y1 x2 y2."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return overlap / np.maximum(area_a[:, None] + area_b[None, :] - overlap, 1e-9)


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope, 101-point interpolated (COCO and ultralytics)."""
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.concatenate(([1.0], precision, [0.0]))
    precision = np.flip(np.maximum.accumulate(np.flip(precision)))
    points = np.linspace(0, 1, 101)
    return float(np.trapezoid(np.interp(points, recall, precision), points))


def detection_metrics(
    predictions: Sequence[Sequence[Box]],
    truths: Sequence[Sequence[Box]],
    classes: Sequence[str] = CATEGORIES,
    report_conf: float = 0.25,
) -> dict[str, Any]:
    """mAP50, mAP50-95 and per-class AP, precision and recall (at score >= report_conf, IoU 0.5).

    Predictions of an image are matched best score first, each to the unmatched ground-truth box of its
    class with the highest IoU above the threshold. Classes without ground truth are left out of the means.
    """
    per_class: dict[str, dict[str, float]] = {}
    for category in classes:
        scores: list[float] = []
        hits: list[np.ndarray] = []  # (n_thresholds,) per prediction
        n_truth = 0
        for predicted, truth in zip(predictions, truths, strict=True):
            mine = sorted((p for p in predicted if p.category == category), key=lambda p: -p.score)
            gt = np.array([t.box for t in truth if t.category == category], np.float64).reshape(-1, 4)
            n_truth += len(gt)
            if not mine:
                continue
            iou = box_iou(np.array([p.box for p in mine], np.float64), gt) if len(gt) else None
            taken = np.zeros((len(IOU_THRESHOLDS), len(gt)), bool)
            for i, prediction in enumerate(mine):
                hit = np.zeros(len(IOU_THRESHOLDS), bool)
                if iou is not None:
                    for t, threshold in enumerate(IOU_THRESHOLDS):
                        candidates = np.where((iou[i] >= threshold) & ~taken[t], iou[i], -1.0)
                        best = int(candidates.argmax())
                        if candidates[best] >= 0:
                            taken[t, best] = True
                            hit[t] = True
                scores.append(prediction.score)
                hits.append(hit)
        if n_truth == 0:
            continue
        order = np.argsort(-np.array(scores)) if scores else np.zeros(0, int)
        tp = np.array(hits, bool).reshape(-1, len(IOU_THRESHOLDS))[order]
        sorted_scores = np.array(scores)[order]
        true_positives = np.cumsum(tp, axis=0)
        false_positives = np.cumsum(~tp, axis=0)
        recall = true_positives / n_truth
        precision = true_positives / np.maximum(true_positives + false_positives, 1)
        ap = [average_precision(recall[:, t], precision[:, t]) for t in range(len(IOU_THRESHOLDS))]
        confident = int((sorted_scores >= report_conf).sum())
        per_class[category] = {
            "AP50": ap[0],
            "AP50-95": float(np.mean(ap)),
            "precision": float(precision[confident - 1, 0]) if confident else 0.0,
            "recall": float(recall[confident - 1, 0]) if confident else 0.0,
            "boxes": n_truth,
        }
    present = list(per_class.values())
    return {
        "mAP50": float(np.mean([c["AP50"] for c in present])) if present else 0.0,
        "mAP50-95": float(np.mean([c["AP50-95"] for c in present])) if present else 0.0,
        "per_class": per_class,
    }


def evaluate_detector(
    model_dir: Path, folder: Path, mapping_csv: Path | None = None, conf: float = 0.001
) -> dict[str, Any]:
    """mAP50, mAP50-95 and per-class AP/precision/recall of the detector on a YOLO-format folder.

    `folder` holds `images/` and `labels/` (same relative paths, .txt); `mapping_csv` (default
    `<folder>/class_map_5class.csv`; without one, class ids are the categories in model order) maps class
    ids onto the categories. Predictions down to `conf` count, as in ultralytics' validation.
    """
    from fashion_pipeline.lib.training.detector import load_detector

    folder = Path(folder)
    image_dir, label_dir = folder / "images", folder / "labels"
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise FileNotFoundError(f"{folder} must hold images/ and labels/ (YOLO layout)")
    mapping_csv = mapping_csv or _default(folder, DEFAULT_DETECTOR_MAPPING)
    mapping = (
        read_class_mapping(mapping_csv, by_id=True) if mapping_csv else {str(i): c for i, c in enumerate(CATEGORIES)}
    )
    detector = load_detector(model_dir)

    def truth(path: Path, width: int, height: int) -> list[Box]:
        label_file = (label_dir / path.relative_to(image_dir)).with_suffix(".txt")
        return read_yolo_labels(label_file, width, height, mapping)

    predictions, truths, _paths, unreadable = detect_photos(detector, images_under(image_dir), truth, conf)
    if not truths:
        raise ValueError(f"{image_dir} holds no readable images")
    metrics = detection_metrics(predictions, truths, detector.classes)
    return {
        "model": {"dir": str(model_dir), "registered_version": detector.version, "input_size": detector.input_size},
        "folder": str(folder),
        "mapping": str(mapping_csv) if mapping_csv else "identity",
        "images": len(truths),
        "unreadable": unreadable,
        **metrics,
    }


def detect_photos(
    detector: Any,
    photos: Sequence[Path | str],
    truth: Callable[[Any, int, int], list[Box]],
    conf: float = 0.001,
) -> tuple[list[list[Box]], list[list[Box]], list[Path | str], list[str]]:
    """Predicted and true boxes per readable photo (`truth(path, width, height)` gives the latter), the
    readable photos and the unreadable ones ("<path>: <why>"). Predictions down to `conf` count, as in
    ultralytics' validation."""
    predictions, truths, paths, unreadable = [], [], [], []
    for path in photos:
        try:
            image = load_image(path)
        except ImageError as exc:
            unreadable.append(f"{path}: {exc}")
            continue
        truths.append(truth(path, image.width, image.height))
        found = detector.detect(image, conf=conf, max_detections=300)
        predictions.append([Box(d.box, d.category, d.score) for d in found])
        paths.append(path)
    return predictions, truths, paths, unreadable


def format_report(results: dict[str, dict[str, Any]]) -> str:
    """Readable tables of `evaluate_*` results keyed by model ("classifier", "detector")."""
    lines: list[str] = []
    if "classifier" in results:
        r = results["classifier"]
        lines += [
            f"classifier v{r['model']['registered_version']} on {r['folder']} ({r['images']} images)",
            f"  accuracy {r['accuracy']:.3f}   macro F1 {r['macro_f1']:.3f}",
            f"  {'class':<10}{'precision':>10}{'recall':>8}{'f1':>7}{'images':>8}",
        ]
        for name, c in r["per_class"].items():
            lines.append(f"  {name:<10}{c['precision']:>10.3f}{c['recall']:>8.3f}{c['f1']:>7.3f}{int(c['support']):>8}")
        matrix = r["confusion_matrix"]
        lines.append("  confusion (rows true, columns predicted): " + " ".join(matrix["classes"]))
        for name, row in zip(matrix["classes"], matrix["rows_true"], strict=True):
            lines.append(f"    {name:<10}" + "".join(f"{v:>7}" for v in row))
    if "detector" in results:
        r = results["detector"]
        lines += [
            f"detector v{r['model']['registered_version']} on {r['folder']} ({r['images']} images)",
            f"  mAP50 {r['mAP50']:.3f}   mAP50-95 {r['mAP50-95']:.3f}",
            f"  {'class':<10}{'AP50':>7}{'AP50-95':>9}{'P@.25':>7}{'R@.25':>7}{'boxes':>7}",
        ]
        for name, c in r["per_class"].items():
            lines.append(
                f"  {name:<10}{c['AP50']:>7.3f}{c['AP50-95']:>9.3f}{c['precision']:>7.3f}{c['recall']:>7.3f}"
                f"{c['boxes']:>7}"
            )
    return "\n".join(lines)
