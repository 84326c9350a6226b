"""Measure the category rules (lib/retrieval/category_rule.py) on labelled validation photos, to choose one.

Only `validation` rows of the `labelled_photos` table are read (the split each source defines: its own
validation folder, or a hash of the photo id for a trainval folder); test photos and the seed demo photos
never take part in the choice. Two kinds of photos, the two the app meets:

- street photos with boxes (detector sources): every detection the champion detector makes at the app's
  confidence that overlaps a labelled garment (IoU >= 0.5) is one observation, its truth that garment's
  category; detections on nothing labelled have no truth and are left out;
- single-garment photos (classifier sources): the app's main garment, its first (highest-scoring)
  detection, is one observation, its truth the photo's label; a photo with no detection is an observation
  of the whole-photo fallback.

Each observation keeps the detector's category and score and the classifier's probabilities on the crop
(as the app crops: the box widened by the crops' margin), so every rule and threshold is scored from one
pass of the models (`collect`, then `score_rules`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from PIL import Image

from fashion_pipeline.lib.common.images import ImageError, load_image
from fashion_pipeline.lib.deepfashion2.crops import CropSettings, crop_box
from fashion_pipeline.lib.retrieval.category_rule import CategoryRule, class_probabilities, decide, whole_photo

MATCH_IOU = 0.5
THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.30, 1.0, 0.05))


class Detector(Protocol):
    def detect(self, image: Image.Image, conf: float = 0.25) -> Sequence[Any]: ...


class Classifier(Protocol):
    classes: tuple[str, ...]

    def classify(self, images: Sequence[Image.Image]) -> np.ndarray: ...


@dataclass
class BoxObservation:
    """A detection with a known truth: one garment the app would show and search."""

    kind: str  # "street" (a detection matched to a labelled box) or "single" (a single-garment photo's main box)
    image_id: str
    truth: str
    detected: str
    score: float
    probabilities: dict[str, float]


@dataclass
class Observations:
    boxes: list[BoxObservation] = field(default_factory=list)
    # single-garment photos without any detection: (image_id, truth, classifier probabilities on the whole photo)
    undetected: list[tuple[str, str, dict[str, float]]] = field(default_factory=list)
    unreadable: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "boxes": [asdict(b) for b in self.boxes],
            "undetected": [list(u) for u in self.undetected],
            "unreadable": self.unreadable,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Observations:
        return cls(
            boxes=[BoxObservation(**b) for b in raw["boxes"]],
            undetected=[(str(i), str(t), dict(p)) for i, t, p in raw["undetected"]],
            unreadable=int(raw.get("unreadable", 0)),
        )


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    overlap = max(width, 0.0) * max(height, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


def validation_photos(table: pd.DataFrame) -> pd.DataFrame:
    """The `labelled_photos` rows of the validation split only: what the rule may be chosen on."""
    return table[table["split"] == "validation"]


def collect(
    table: pd.DataFrame, detector: Detector, classifier: Classifier, conf: float = 0.25, max_side: int | None = None
) -> Observations:
    """Run the champions once over the validation photos of `table` (a `labelled_photos` table)."""
    observations = Observations()
    margin = CropSettings().margin  # as the app crops a detection
    for (task, image_id), rows in validation_photos(table).groupby(["task", "image_id"], sort=True):
        try:
            image = load_image(rows["image_path"].iloc[0], max_side=max_side).convert("RGB")
        except ImageError:
            observations.unreadable += 1  # counted; one bad file does not stop the measurement
            continue
        # Boxes in the table refer to the stored photo; a downscaled decode scales them alike.
        scale = image.width / float(rows["image_width"].iloc[0])
        detections = sorted(detector.detect(image, conf=conf), key=lambda d: d.score, reverse=True)
        crops = [image.crop(crop_box(image, d.box, margin)) for d in detections]
        if task == "classifier":
            # A single-garment photo: its main box, or, with none, the whole photo (the app's fallback).
            probabilities = classifier.classify(crops[:1] or [image])
            read = class_probabilities(classifier.classes, probabilities[0])
            truth = str(rows["category"].iloc[0])
            if detections:
                first = detections[0]
                observations.boxes.append(
                    BoxObservation("single", image_id, truth, first.category, float(first.score), read)
                )
            else:
                observations.undetected.append((image_id, truth, read))
            continue
        if not detections:
            continue
        per_crop = [class_probabilities(classifier.classes, row) for row in classifier.classify(crops)]
        truths = [
            (tuple(float(v) * scale for v in box), str(category))
            for *box, category in rows[["x1", "y1", "x2", "y2", "category"]].itertuples(index=False)
        ]
        for detection, probs in zip(detections, per_crop, strict=True):
            overlaps = [iou(detection.box, box) for box, _ in truths]
            best = int(np.argmax(overlaps))
            if overlaps[best] >= MATCH_IOU:
                observations.boxes.append(
                    BoxObservation(
                        "street", image_id, truths[best][1], detection.category, float(detection.score), probs
                    )
                )
    return observations


def box_accuracy(boxes: Iterable[BoxObservation], rule: CategoryRule) -> tuple[float, int]:
    """The share of boxes the rule names rightly, and how many boxes."""
    right = [decide(b.detected, b.score, b.probabilities, rule).category == b.truth for b in boxes]
    return (float(np.mean(right)) if right else float("nan")), len(right)


def candidate_rules(thresholds: Sequence[float] = THRESHOLDS) -> list[CategoryRule]:
    rules = [CategoryRule("detector"), CategoryRule("classifier"), CategoryRule("product")]
    return rules + [CategoryRule("classifier_above", min_probability=t) for t in thresholds]


def score_rules(observations: Observations, rules: Sequence[CategoryRule] | None = None) -> pd.DataFrame:
    """One row per rule: box accuracy on street detections, on single photos' main box, and their mean."""
    rows = []
    for rule in rules or candidate_rules():
        street, n_street = box_accuracy((b for b in observations.boxes if b.kind == "street"), rule)
        single, n_single = box_accuracy((b for b in observations.boxes if b.kind == "single"), rule)
        rows.append(
            {
                "rule": rule.kind,
                "min_probability": rule.min_probability if rule.kind == "classifier_above" else None,
                "street_accuracy": street,
                "street_boxes": n_street,
                "single_accuracy": single,
                "single_photos": n_single,
                # Each kind of photo weighs the same: the app meets both, in no known proportion.
                "mean_accuracy": float(np.nanmean([street, single])),
            }
        )
    return pd.DataFrame(rows)


def score_whole_photo(observations: Observations, thresholds: Sequence[float] = THRESHOLDS) -> pd.DataFrame:
    """Per threshold, on single-garment photos with no detection: answered right, answered wrong, unanswered."""
    rows = []
    for threshold in thresholds:
        rule = CategoryRule(whole_photo_min_probability=threshold)
        answers = [(whole_photo(p, rule), truth) for _, truth, p in observations.undetected]
        right = sum(a is not None and a.category == truth for a, truth in answers)
        wrong = sum(a is not None and a.category != truth for a, truth in answers)
        rows.append(
            {
                "whole_photo_min_probability": threshold,
                "right": right,
                "wrong": wrong,
                "unanswered": len(answers) - right - wrong,
                # A wrong category shows wrong products, no answer shows none: count one against the other.
                "net": right - wrong,
            }
        )
    return pd.DataFrame(rows)


def choose(rules: pd.DataFrame, whole: pd.DataFrame) -> CategoryRule:
    """The best mean box accuracy (ties: the simpler rule, then the higher threshold), and the whole-photo
    threshold with the best net (ties: the higher threshold, the more careful one)."""
    order = {"detector": 0, "classifier": 1, "product": 2, "classifier_above": 3}
    ranked = rules.assign(
        _order=rules["rule"].map(order), _t=-rules["min_probability"].fillna(0).astype(float)
    ).sort_values(["mean_accuracy", "_order", "_t"], ascending=[False, True, True], kind="stable")
    best = ranked.iloc[0]
    whole_best = 1.0
    if len(whole) and whole["net"].max() > 0:
        whole_best = float(
            whole.sort_values(["net", "whole_photo_min_probability"], ascending=[False, False]).iloc[0][
                "whole_photo_min_probability"
            ]
        )
    return CategoryRule(
        str(best["rule"]),
        min_probability=float(best["min_probability"]) if best["rule"] == "classifier_above" else 0.6,
        whole_photo_min_probability=whole_best,
    )
