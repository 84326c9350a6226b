"""Retrieval quality on a labelled product catalog: does a product's top k share its type and its colour?

Protocol (as the app searches): each labelled product is a query searched among the *other* products of its
own category (shirt among shirts) by cosine; same-type@k is the share of its k nearest neighbours with the
query's article type (e.g. Jeans among trousers, shorts and leggings), same-colour@k the share with the
query's colour family (lib/retrieval/colour.py). Queries without the label are left out of that metric; a
neighbour without it counts as a miss. Each is reported beside its random level: the share a random draw of
neighbours would give, (matches - 1) / (others) per query, averaged.

The catalog is split by product id (a hash, so a product keeps its split across runs and machines) into
three parts that never share a product: `train` (the projections are fitted on it), `validation` (the
layout's weights are chosen on it) and `report` (the figures are reported on it).

Street-to-shop: labelled garment crops from street photos searched over the whole catalog; category
precision@k is the share of the k neighbours in the crop's true category, macro-averaged over categories,
beside the class prior (each category's share of the catalog, macro-averaged the same way).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

K = 10
TRAIN, VALIDATION, REPORT = "train", "validation", "report"
SPLITS = (TRAIN, VALIDATION, REPORT)


def split_of(product_ids: Sequence[object], train_fraction: float, validation_fraction: float) -> np.ndarray:
    """TRAIN, VALIDATION or REPORT per product from a hash of its id: stable, and no product is in two splits."""
    if train_fraction < 0 or validation_fraction <= 0 or train_fraction + validation_fraction >= 1:
        raise ValueError(
            f"train_fraction {train_fraction} and validation_fraction {validation_fraction} must leave a report split"
        )
    shares = np.asarray(
        [int.from_bytes(hashlib.sha256(str(p).encode()).digest()[:8], "big") / 2**64 for p in product_ids]
    )
    return np.where(
        shares < train_fraction, TRAIN, np.where(shares < train_fraction + validation_fraction, VALIDATION, REPORT)
    )


def neighbours_by_similarity(similarity: np.ndarray, k: int = K) -> np.ndarray:
    """(N, min(k, N-1)) positions of each row's most similar *other* rows, best first, from an (N, N) matrix."""
    n = similarity.shape[0]
    take = min(k, n - 1)
    if take <= 0:
        return np.zeros((n, 0), np.int64)
    scores = np.array(similarity, dtype=np.float32, copy=True)
    np.fill_diagonal(scores, -np.inf)  # a product is never its own neighbour
    top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def label_precision(neighbour_positions: np.ndarray, labels: Sequence[object]) -> np.ndarray:
    """Per query, the share of its neighbours carrying its label; NaN for a query without a label."""
    values = pd.Series(list(labels), dtype=object)
    known = values.notna().to_numpy()
    codes = pd.factorize(values)[0]  # -1 for missing
    if neighbour_positions.shape[1] == 0:
        return np.full(len(values), np.nan)
    same = (codes[neighbour_positions] == codes[:, None]) & (codes[neighbour_positions] >= 0)
    return np.where(known, same.mean(axis=1), np.nan)


def chance_precision(labels: Sequence[object]) -> np.ndarray:
    """Per query, the expected share for random neighbours: (products with its label - 1) / (products - 1)."""
    values = pd.Series(list(labels), dtype=object)
    n = len(values)
    counts = values.map(values.value_counts())
    if n < 2:
        return np.full(n, np.nan)
    return np.where(values.notna(), (counts.fillna(1).to_numpy(np.float64) - 1) / (n - 1), np.nan)


@dataclass(frozen=True)
class LabelScore:
    value: float  # mean precision@k over the queries with a label
    chance: float  # its random level
    queries: int

    def to_json(self) -> dict[str, float | int]:
        return {"value": round(self.value, 4), "chance": round(self.chance, 4), "queries": self.queries}


def summarise(precision: np.ndarray, chance: np.ndarray) -> LabelScore:
    """The mean precision and chance over the queries with a label (NaN precision = no label)."""
    known = ~np.isnan(precision)
    if not known.any():
        return LabelScore(float("nan"), float("nan"), 0)
    return LabelScore(float(precision[known].mean()), float(chance[known].mean()), int(known.sum()))


@dataclass(frozen=True)
class CategoryScores:
    category: str
    products: int
    same_type: LabelScore
    same_colour: LabelScore

    def to_json(self) -> dict[str, object]:
        return {
            "products": self.products,
            "same_type": self.same_type.to_json(),
            "same_colour": self.same_colour.to_json(),
        }


def macro(scores: Sequence[CategoryScores], metric: str, categories: Sequence[str]) -> float:
    """The mean of `metric` ("same_type" or "same_colour") over `categories` that have queries for it."""
    values = [getattr(s, metric).value for s in scores if s.category in categories and getattr(s, metric).queries]
    return float(np.mean(values)) if values else float("nan")


@dataclass(frozen=True)
class StreetScores:
    """Category precision@k of street crops over the whole catalog, per true category and macro."""

    per_category: dict[str, float]
    prior: dict[str, float]  # each category's share of the catalog searched
    crops: dict[str, int]

    @property
    def macro(self) -> float:
        return float(np.mean(list(self.per_category.values()))) if self.per_category else float("nan")

    @property
    def macro_prior(self) -> float:
        return float(np.mean([self.prior[c] for c in self.per_category])) if self.per_category else float("nan")

    def to_json(self) -> dict[str, object]:
        return {
            "macro": round(self.macro, 4),
            "macro_prior": round(self.macro_prior, 4),
            "per_category": {c: round(v, 4) for c, v in self.per_category.items()},
            "prior": {c: round(v, 4) for c, v in self.prior.items()},
            "crops": self.crops,
        }


def street_precision(
    crop_categories: Sequence[str], neighbour_categories: np.ndarray, catalog_categories: Sequence[str]
) -> StreetScores:
    """`neighbour_categories[i]`: the categories of crop i's k neighbours ("" where fewer were found)."""
    truth = np.asarray(list(crop_categories), dtype=object)
    found = np.asarray(neighbour_categories, dtype=object)
    catalog = pd.Series(list(catalog_categories), dtype=object)
    share = (catalog.value_counts() / max(len(catalog), 1)).to_dict()
    per_category, crops = {}, {}
    for category in sorted(set(truth)):
        rows = truth == category
        per_category[category] = float((found[rows] == category).mean()) if found.shape[1] else 0.0
        crops[category] = int(rows.sum())
    return StreetScores(per_category, {c: float(share.get(c, 0.0)) for c in per_category}, crops)
