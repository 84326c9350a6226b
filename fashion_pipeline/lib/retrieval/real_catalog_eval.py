"""Retrieval scored on a real labelled catalog: the index's layout on the report split, and street-to-shop.

Catalog figures (lib/retrieval/labelled_catalog.py protocols `report` and `report_held_out`) are computed
for the index's layout and for the embedding alone (what the index held before layouts), from the same
features: `VectorLayout.vectors(project_parts(...))` is what `RetrievalEmbedder.embed` returns.

Street-to-shop: each labelled garment of the street test photos (the `labelled_photos` table's detector test
rows; the colorful-fashion photos in this repository) is cut as the app cuts it (`crop_box` with the
training crops' margin), embedded by the same `RetrievalEmbedder`, and searched over every product of the
labelled catalog. Category precision@k (lib/retrieval/catalog_metrics.street_precision) is reported
without a filter (the whole catalog) and with the detected category as the filter, as the app searches: the
champion detector runs on the photo and the detection matched to the garment (IoU >= 0.5, highest score
first) names the category searched; garments the detector missed are counted apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageOps

from fashion_pipeline.lib.common.images import ImageError, load_image
from fashion_pipeline.lib.deepfashion2.crops import CropSettings, crop_box
from fashion_pipeline.lib.retrieval import catalog_metrics as metrics
from fashion_pipeline.lib.retrieval.knn import exact_search
from fashion_pipeline.lib.retrieval.layout import RetrievalEmbedder
from fashion_pipeline.lib.retrieval.retrieval_metrics import select_query_detections

THUMB = 112
EXAMPLE_NEIGHBOURS = 5


@dataclass
class StreetResult:
    unfiltered: metrics.StreetScores
    filtered: metrics.StreetScores | None  # None without a detector
    found_by_detector: dict[str, int] = field(default_factory=dict)  # garments matched by a detection
    unreadable: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "whole_catalog": self.unfiltered.to_json(),
            "detected_category": None if self.filtered is None else self.filtered.to_json(),
            "found_by_detector": self.found_by_detector,
            "unreadable": self.unreadable[:20],
        }


def street_to_shop(
    photos: pd.DataFrame,
    embedder: RetrievalEmbedder,
    catalog_vectors: np.ndarray,
    catalog_categories: Sequence[str],
    detector: Any | None = None,
    detection_conf: float = 0.25,
    k: int = metrics.K,
) -> StreetResult:
    """Category precision@k of the labelled street garments in `photos` (rows of the labelled_photos table)."""
    categories = np.asarray(list(catalog_categories), dtype=object)
    margin = CropSettings().margin
    truths, crops, detected, unreadable = [], [], [], []
    for image_path, rows in photos.groupby("image_path", sort=True):
        try:
            image = load_image(image_path)
        except ImageError as exc:
            unreadable.append(f"{image_path}: {exc}")
            continue
        boxes = rows[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
        chosen: list[int | None] = [None] * len(rows)
        found = []
        if detector is not None:
            found = list(detector.detect(image, conf=detection_conf))
            det_boxes = np.asarray([d.box for d in found], np.float64).reshape(-1, 4)
            chosen = select_query_detections(boxes, det_boxes, np.asarray([d.score for d in found]))
        for (box, category), pick in zip(zip(boxes, rows["category"], strict=True), chosen, strict=True):
            crops.append(image.crop(crop_box(image, tuple(box), margin)))
            truths.append(str(category))
            detected.append(None if pick is None else found[pick].category)
    vectors = embedder.embed(crops) if crops else np.zeros((0, catalog_vectors.shape[1]), np.float32)
    _, positions = exact_search(catalog_vectors, vectors, k)
    unfiltered = metrics.street_precision(truths, _labels(categories, positions), categories)
    if detector is None:
        return StreetResult(unfiltered, None, unreadable=unreadable)
    neighbour_categories = np.full((len(truths), k), "", dtype=object)
    for category in sorted({d for d in detected if d is not None}):
        rows = [i for i, d in enumerate(detected) if d == category]
        members = np.flatnonzero(categories == category)
        if len(members) == 0:
            continue
        _, within = exact_search(catalog_vectors[members], vectors[rows], k)
        neighbour_categories[rows] = _labels(categories[members], within)
    matched = [i for i, d in enumerate(detected) if d is not None]
    filtered = metrics.street_precision(
        [truths[i] for i in matched], neighbour_categories[matched].reshape(len(matched), k), categories
    )
    found_by_detector = {c: sum(1 for t, d in zip(truths, detected, strict=True) if t == c and d) for c in set(truths)}
    return StreetResult(unfiltered, filtered, found_by_detector, unreadable)


def _labels(categories: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return np.where(positions >= 0, categories[np.maximum(positions, 0)], "")


def example_grid(table: pd.DataFrame, vectors: np.ndarray, queries: Sequence[int], gallery: np.ndarray) -> Image.Image:
    """One row per query: the query product, then its EXAMPLE_NEIGHBOURS nearest products of its category.

    Captions give the article type and colour; a neighbour's frame is green when both match the query's,
    orange when one does, red when neither.
    """
    rows = []
    for query in queries:
        same = np.flatnonzero(gallery & (table["category"].to_numpy() == table["category"].iloc[query]))
        same = same[same != query]
        _, found = exact_search(vectors[same], vectors[[query]], EXAMPLE_NEIGHBOURS)
        rows.append([query] + [int(same[p]) for p in found[0] if p >= 0])
    cell = THUMB + 28
    grid = Image.new("RGB", ((EXAMPLE_NEIGHBOURS + 1) * THUMB, max(1, len(rows)) * cell), "white")
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        query = table.iloc[row[0]]
        for c, position in enumerate(row):
            product = table.iloc[position]
            thumb = ImageOps.pad(
                load_image(product["image_path"]).convert("RGB"), (THUMB - 6, THUMB - 6), color="white"
            )
            matches = (product["article_type"] == query["article_type"]) + (
                product["colour_family"] is not None and product["colour_family"] == query["colour_family"]
            )
            frame = (40, 40, 40) if c == 0 else [(210, 50, 50), (230, 150, 30), (40, 160, 70)][int(matches)]
            x, y = c * THUMB, r * cell
            draw.rectangle((x + 1, y + 1, x + THUMB - 2, y + THUMB - 2), outline=frame, width=3)
            grid.paste(thumb, (x + 3, y + 3))
            draw.text((x + 3, y + THUMB), str(product["article_type"])[:18], fill="black")
            draw.text(
                (x + 3, y + THUMB + 12), ("query: " if c == 0 else "") + str(product["colour"])[:14], fill="black"
            )
    return grid
