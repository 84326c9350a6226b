"""Retrieval evaluation: DeepFashion2 consumer-to-shop top-k, and exact product on the demo shop.

Protocol (DeepFashion2's README and evaluation/evaluation.md, on the validation split):

- Queries are consumer ("user") items with `style > 0` that have at least one shop item of the same
  `pair_id` and `style` (others cannot be answered and are counted apart). The gallery is every shop item
  of the split, style 0 included, searched as one gallery (no category filter), by cosine.
- A retrieved gallery item is a hit when it carries the query's (`pair_id`, `style`); top-k accuracy is the
  share of queries with a hit among the first k.
- Ground-truth boxes: queries and gallery are the annotated boxes.
- Detected boxes: the detector runs on every user and shop image. Each detection is assigned to the
  ground-truth item of its image it overlaps most, if IoU >= 0.5. A query item is represented by the
  highest-scoring detection assigned to it; with none (or one smaller than the app embeds, 8 px a side),
  it counts as missed (a miss at every k). The
  gallery is every detection on shop images; a detected gallery item is a hit for a query when its IoU
  with a ground-truth item of the query's pair and style in that image is >= 0.5.

Exact product on the demo shop: a validation user item whose product is for sale (a demo_shop product with
`sku = f"{pair_id:06d}-{style}-{category_id}"`) is a query; end to end, the user photo goes through the
detector, the query's detection is chosen as above, its crop is embedded and searched in the k-NN index of
the *detected* category (as the app does); a hit when the product is among the first k. The same is
reported with the ground-truth box searched in its true category, which separates detector from
embedding errors.

Crops are cut as the recommender cuts them (`crops.crop_box` with the training crops' margin), so the
figures are those of the app. The metrics themselves are in retrieval_metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from PIL import Image

from fashion_pipeline.lib.common.images import ImageError, load_image
from fashion_pipeline.lib.deepfashion2.crops import CropSettings, crop_box
from fashion_pipeline.lib.retrieval.knn import CategoryIndex, exact_search
from fashion_pipeline.lib.retrieval.retrieval_metrics import (
    CONSUMER_TO_SHOP_KS,
    IOU_THRESHOLD,
    chance_topk,
    iou_matrix,
    select_query_detections,
    topk_hits,
)

EXACT_PRODUCT_KS = (1, 5, 10)
DEMO_SHOP_SITE = "demo_shop"
MIN_CROP_SIDE = 8  # px; as the recommender's MIN_BOX_SIDE: smaller detections are never embedded

Box = tuple[float, float, float, float]


class Detector(Protocol):
    def detect(self, image: Image.Image, conf: float = ...) -> list[Any]: ...


# --- DeepFashion2 pairs and demo-shop targets --------------------------------------------------------------


def pair_key(pair_id: int, style: int) -> tuple[int, int]:
    return int(pair_id), int(style)


def demo_shop_sku(pair_id: int, style: int, category_id: int) -> str:
    return f"{int(pair_id):06d}-{int(style)}-{int(category_id)}"


def consumer_to_shop_split(items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(queries, gallery, unanswerable): validation user items with a shop match, all validation shop items.

    `unanswerable` counts user items with style > 0 whose pair and style has no shop item.
    """
    validation = items[items["split"] == "validation"]
    gallery = validation[validation["source"] == "shop"].reset_index(drop=True)
    shop_keys = {pair_key(p, s) for p, s in zip(gallery["pair_id"], gallery["style"], strict=True) if s > 0}
    users = validation[(validation["source"] == "user") & (validation["style"] > 0)]
    answerable = [pair_key(p, s) in shop_keys for p, s in zip(users["pair_id"], users["style"], strict=True)]
    queries = users[answerable].reset_index(drop=True)
    return queries, gallery, int(len(users) - len(queries))


def demo_shop_targets(items: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """Validation user items whose exact product is for sale in the demo shop, with its `product_id`."""
    shop = products[products["site"] == DEMO_SHOP_SITE]
    by_sku = dict(zip(shop["sku"].astype(str), shop["product_id"].astype(str), strict=True))
    users = items[(items["split"] == "validation") & (items["source"] == "user") & (items["style"] > 0)]
    skus = [
        demo_shop_sku(p, s, c) for p, s, c in zip(users["pair_id"], users["style"], users["category_id"], strict=True)
    ]
    targets = users.assign(product_id=[by_sku.get(sku) for sku in skus])
    return targets[targets["product_id"].notna()].reset_index(drop=True)


# --- embedding crops in batches ---------------------------------------------------------------------------


def crop_item(image: Image.Image, box: Box) -> Image.Image:
    """The box plus the classifier's training-crop margin, cut as the recommender cuts a detection."""
    return image.crop(crop_box(image, box, CropSettings().margin))


def large_enough(image: Image.Image, box: Box) -> bool:
    """Whether a detection is big enough for the app to embed it (it skips smaller ones the same way)."""
    x1, y1, x2, y2 = crop_box(image, box, CropSettings().margin)
    return x2 - x1 >= MIN_CROP_SIDE and y2 - y1 >= MIN_CROP_SIDE


@dataclass
class CropBatcher:
    """Collects crops under keys and embeds them `batch_size` at a time, so memory stays bounded."""

    embed: Callable[[list[Image.Image]], np.ndarray]
    batch_size: int = 64
    vectors: dict[Hashable, np.ndarray] = field(default_factory=dict)
    _keys: list[Hashable] = field(default_factory=list)
    _crops: list[Image.Image] = field(default_factory=list)

    def add(self, key: Hashable, crop: Image.Image) -> None:
        self._keys.append(key)
        self._crops.append(crop)
        if len(self._crops) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if self._crops:
            embedded = np.asarray(self.embed(self._crops), dtype=np.float32)
            self.vectors.update(zip(self._keys, embedded, strict=True))
            self._keys.clear()
            self._crops.clear()

    def matrix(self, keys: Sequence[Hashable]) -> np.ndarray:
        self.flush()
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.vectors[key] for key in keys]).astype(np.float32)


def _boxes(frame: pd.DataFrame) -> np.ndarray:
    return frame[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)


def _detection_arrays(detections: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray([d.score for d in detections], dtype=np.float64)
    return boxes, scores


# --- the evaluations --------------------------------------------------------------------------------------


@dataclass
class RetrievalReport:
    metrics: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)
    unreadable_images: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "counts": self.counts,
            "chance": self.chance,
            "unreadable_images": self.unreadable_images,
        }


def evaluate_retrieval(
    items: pd.DataFrame,
    embed: Callable[[list[Image.Image]], np.ndarray],
    detector: Detector | None,
    products: pd.DataFrame | None = None,
    indexes: dict[str, CategoryIndex] | None = None,
    detection_conf: float = 0.25,
    batch_size: int = 64,
) -> RetrievalReport:
    """Both evaluations in one pass over the validation images (each decoded and detected once).

    `items`: garment_items rows (any split; validation is used). Without a detector only the
    ground-truth-box figures are computed; without products and indexes, no exact-product figures.
    Metric names: `c2s_{gt,detected}_top{k}`, `exact_{gt,detected}_top{k}`.
    """
    queries, gallery, unanswerable = consumer_to_shop_split(items)
    targets = demo_shop_targets(items, products) if products is not None and indexes is not None else items.iloc[:0]
    report = RetrievalReport()
    report.counts.update(
        c2s_queries=len(queries), c2s_unanswerable=unanswerable, c2s_gallery_gt=len(gallery), exact_queries=0
    )
    batcher = CropBatcher(embed, batch_size=batch_size)
    gallery_detected_keys: list[frozenset] = []  # key sets of detected gallery items, in batcher order
    query_detected: dict[int, Hashable] = {}  # query row -> batcher key of its detection
    target_detected: dict[int, tuple[Hashable, str]] = {}  # target row -> (batcher key, detected category)

    validation = items[items["split"] == "validation"]
    wanted_images = set(queries["image_path"]) | set(gallery["image_path"]) | set(targets["image_path"])
    query_rows = queries.groupby("image_path").groups
    gallery_rows = gallery.groupby("image_path").groups
    target_rows = targets.groupby("image_path").groups if len(targets) else {}
    for image_path, image_items in validation[validation["image_path"].isin(wanted_images)].groupby(
        "image_path", sort=True
    ):
        try:
            image = load_image(image_path)
        except ImageError as exc:
            report.unreadable_images.append(f"{image_path}: {exc}")
            continue
        for row in query_rows.get(image_path, []):
            batcher.add(("q", int(row)), crop_item(image, tuple(_boxes(queries.loc[[row]])[0])))
        for row in gallery_rows.get(image_path, []):
            batcher.add(("g", int(row)), crop_item(image, tuple(_boxes(gallery.loc[[row]])[0])))
        for row in target_rows.get(image_path, []):
            batcher.add(("t", int(row)), crop_item(image, tuple(_boxes(targets.loc[[row]])[0])))
        if detector is None:
            continue
        detections = detector.detect(image, conf=detection_conf)
        det_boxes, det_scores = _detection_arrays(detections)
        if (image_items["source"] == "shop").all():
            gt_boxes = _boxes(image_items)
            ious = iou_matrix(det_boxes, gt_boxes)
            for d, detection in enumerate(detections):
                if not large_enough(image, detection.box):
                    continue
                keys = frozenset(
                    pair_key(p, s)
                    for p, s, overlap in zip(image_items["pair_id"], image_items["style"], ious[d], strict=True)
                    if s > 0 and overlap >= IOU_THRESHOLD
                )
                gallery_detected_keys.append(keys)
                batcher.add(("gd", len(gallery_detected_keys) - 1), crop_item(image, detection.box))
            continue
        # A user image: pick the detection standing for each of its items (queries and shop targets).
        chosen = select_query_detections(_boxes(image_items), det_boxes, det_scores)
        chosen_by_item = dict(zip(image_items["item_index"].astype(int), chosen, strict=True))
        for rows, frame, kind in (
            (query_rows.get(image_path, []), queries, "qd"),
            (target_rows.get(image_path, []), targets, "td"),
        ):
            for row in rows:
                d = chosen_by_item.get(int(frame.at[row, "item_index"]))
                if d is None or not large_enough(image, detections[d].box):
                    continue  # missed: no detection, or one too small to embed
                key = (kind, int(row))
                batcher.add(key, crop_item(image, detections[d].box))
                if kind == "qd":
                    query_detected[int(row)] = key
                else:
                    target_detected[int(row)] = (key, detections[d].category)

    _consumer_to_shop(report, batcher, queries, gallery, gallery_detected_keys, query_detected, detector)
    if len(targets) and indexes is not None:
        _exact_product(report, batcher, targets, target_detected, indexes, detector)
    return report


def _rank(gallery: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    if len(gallery) == 0 or len(queries) == 0:
        return np.full((len(queries), k), -1, dtype=np.int64)
    return exact_search(gallery, queries, k)[1]


def _consumer_to_shop(
    report: RetrievalReport,
    batcher: CropBatcher,
    queries: pd.DataFrame,
    gallery: pd.DataFrame,
    gallery_detected_keys: list[frozenset],
    query_detected: dict[int, Hashable],
    detector: Detector | None,
) -> None:
    k = max(CONSUMER_TO_SHOP_KS)
    batcher.flush()
    query_keys = [pair_key(p, s) for p, s in zip(queries["pair_id"], queries["style"], strict=True)]
    gallery_keys = [pair_key(p, s) for p, s in zip(gallery["pair_id"], gallery["style"], strict=True)]
    # Crops exist only for readable images: an unreadable query image is a miss, an unreadable gallery
    # image is simply not in the gallery.
    readable_q = [r for r in range(len(queries)) if ("q", r) in batcher.vectors]
    readable_g = [r for r in range(len(gallery)) if ("g", r) in batcher.vectors]
    found = _rank(batcher.matrix([("g", r) for r in readable_g]), batcher.matrix([("q", r) for r in readable_q]), k)
    to_gallery_row = np.asarray([*readable_g, -1])  # found == -1 picks the trailing -1
    ranked = np.full((len(queries), k), -1, dtype=np.int64)
    ranked[readable_q] = to_gallery_row[found]
    report.metrics.update({f"c2s_gt_{name}": v for name, v in topk_hits(query_keys, gallery_keys, ranked).items()})
    report.chance.update({f"c2s_gt_{name}": v for name, v in chance_topk(query_keys, gallery_keys).items()})
    if detector is None:
        return
    detected_rows = sorted(query_detected)
    ranked = np.full((len(queries), k), -1, dtype=np.int64)
    gallery_matrix = batcher.matrix([("gd", i) for i in range(len(gallery_detected_keys))])
    query_matrix = batcher.matrix([query_detected[r] for r in detected_rows])
    if detected_rows:
        ranked[detected_rows] = _rank(gallery_matrix, query_matrix, k)
    metrics = topk_hits(query_keys, gallery_detected_keys, ranked)
    report.metrics.update({f"c2s_detected_{name}": v for name, v in metrics.items()})
    report.chance.update(
        {f"c2s_detected_{name}": v for name, v in chance_topk(query_keys, gallery_detected_keys).items()}
    )
    report.counts.update(
        c2s_gallery_detected=len(gallery_detected_keys), c2s_detected_missed=len(queries) - len(detected_rows)
    )


def _search_category(indexes: dict[str, CategoryIndex], category: str, vector: np.ndarray, k: int) -> list[str]:
    index = indexes.get(category)
    if index is None:
        return []
    _, positions = index.search(vector[None, :], k)
    return [str(index.product_ids[p]) for p in positions[0] if p >= 0]


def _exact_product(
    report: RetrievalReport,
    batcher: CropBatcher,
    targets: pd.DataFrame,
    target_detected: dict[int, tuple[Hashable, str]],
    indexes: dict[str, CategoryIndex],
    detector: Detector | None,
) -> None:
    k = max(EXACT_PRODUCT_KS)
    batcher.flush()
    report.counts["exact_queries"] = len(targets)
    gt_first: list[float] = []
    det_first: list[float] = []
    for row, target in enumerate(targets.itertuples(index=False)):
        vector = batcher.vectors.get(("t", row))
        found = _search_category(indexes, target.category, vector, k) if vector is not None else []
        gt_first.append(found.index(target.product_id) if target.product_id in found else math.inf)
        if detector is not None:
            key, category = target_detected.get(row, (None, None))
            found = _search_category(indexes, category, batcher.vectors[key], k) if key is not None else []
            det_first.append(found.index(target.product_id) if target.product_id in found else math.inf)
    # A random ranking of the target's category finds its one product in the first k with P = k / size.
    sizes = [len(indexes[c]) if c in indexes else 0 for c in targets["category"]]
    for k_ in EXACT_PRODUCT_KS:
        report.chance[f"exact_gt_top{k_}"] = float(np.mean([min(k_, n) / n if n else 0.0 for n in sizes]))
    for k_ in EXACT_PRODUCT_KS:
        report.metrics[f"exact_gt_top{k_}"] = float(np.mean(np.asarray(gt_first) < k_)) if gt_first else 0.0
        if detector is not None:
            report.metrics[f"exact_detected_top{k_}"] = float(np.mean(np.asarray(det_first) < k_)) if det_first else 0.0
    if detector is not None:
        report.counts["exact_detected_missed"] = len(targets) - len(target_detected)
