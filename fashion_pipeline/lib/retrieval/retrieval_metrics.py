"""The retrieval protocol's metrics: top-k accuracy, its random-ranking level, and detections matched to items.

The protocol that uses them (queries, gallery, what counts as a hit) is described in retrieval_eval.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence

import numpy as np

CONSUMER_TO_SHOP_KS = (1, 5, 10, 20)
IOU_THRESHOLD = 0.5


def _key_set(key: Hashable | Iterable[Hashable] | None) -> frozenset:
    if key is None:
        return frozenset()
    if isinstance(key, set | frozenset):
        return frozenset(key)
    return frozenset([key])


def topk_hits(
    query_keys: Sequence[Hashable],
    gallery_keys: Sequence[Hashable | frozenset | None],
    ranked: np.ndarray,
    ks: Sequence[int] = CONSUMER_TO_SHOP_KS,
) -> dict[str, float]:
    """Top-k accuracy: the share of queries whose first k ranked gallery items include a match.

    `ranked[q]` lists gallery positions best first (-1 = nothing, e.g. a missed query); gallery item `g`
    matches query `q` when `query_keys[q]` equals `gallery_keys[g]` or is in it (a set of keys, for a
    detected box that overlaps several items). Returns {"top1": ..., "top5": ...}; 0.0 for no queries.
    """
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or ranked.shape[0] != len(query_keys):
        raise ValueError(f"ranked must be ({len(query_keys)}, K), got {ranked.shape}")
    if max(ks) > ranked.shape[1]:
        raise ValueError(f"top-{max(ks)} asked but only {ranked.shape[1]} ranked per query")
    gallery_sets = [_key_set(key) for key in gallery_keys]
    first_hit = np.full(len(query_keys), np.inf)
    for q, key in enumerate(query_keys):
        for rank, position in enumerate(ranked[q]):
            if position >= 0 and key in gallery_sets[position]:
                first_hit[q] = rank
                break
    if len(query_keys) == 0:
        return {f"top{k}": 0.0 for k in ks}
    return {f"top{k}": float(np.mean(first_hit < k)) for k in ks}


def chance_topk(
    query_keys: Sequence[Hashable],
    gallery_keys: Sequence[Hashable | frozenset | None],
    ks: Sequence[int] = CONSUMER_TO_SHOP_KS,
) -> dict[str, float]:
    """Expected top-k accuracy of a random ranking of the whole gallery: the floor a model must beat."""
    size = len(gallery_keys)
    counts: dict[Hashable, int] = {}
    for key in gallery_keys:
        for k in _key_set(key):
            counts[k] = counts.get(k, 0) + 1
    result = {}
    for k in ks:
        miss_by_matches: dict[int, float] = {}  # P(no match in the first k) depends only on the match count
        probabilities = []
        for key in query_keys:
            matches = counts.get(key, 0)
            if matches not in miss_by_matches:
                # Drawing k of `size` without replacement: C(size - matches, k) / C(size, k) draws miss.
                miss_by_matches[matches] = (
                    math.comb(size - matches, k) / math.comb(size, k) if size >= k else float(matches == 0)
                )
            probabilities.append(1.0 - miss_by_matches[matches])
        result[f"top{k}"] = float(np.mean(probabilities)) if probabilities else 0.0
    return result


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(A, B) intersection over union of x1,y1,x2,y2 boxes."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def select_query_detections(
    gt_boxes: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray, iou_threshold: float = IOU_THRESHOLD
) -> list[int | None]:
    """For each ground-truth item, the index of the detection that stands for it (DeepFashion2 protocol).

    Each detection goes to the ground-truth item it overlaps most if that IoU >= threshold; each item takes
    its highest-scoring detection; None when no detection was assigned to it (a missed query).
    """
    chosen: list[int | None] = [None] * len(gt_boxes)
    if len(gt_boxes) == 0 or len(det_boxes) == 0:
        return chosen
    ious = iou_matrix(det_boxes, gt_boxes)  # (D, G)
    best_gt = ious.argmax(axis=1)
    for d in np.argsort(-np.asarray(det_scores), kind="stable"):
        g = int(best_gt[d])
        if ious[d, g] >= iou_threshold and chosen[g] is None:
            chosen[g] = int(d)
    return chosen
