"""Choosing the vector layout on a labelled catalog: fit the projections on `train`, pick weights on `validation`.

The candidates are every weighting of the four parts in steps of `step` (lib/retrieval/layout.py). On the
validation protocol (lib/retrieval/labelled_catalog.py) each is scored by same-type@k and same-colour@k per
category; the rule keeps the candidates whose same-type@k, in every category of `type_categories`, is at
least the embedding alone's minus `type_tolerance`, and of those takes the highest same-colour@k macro over
`colour_categories` (ties: the higher same-type@k macro). The embedding keeps at least
`min_backbone_weight`: the labels name type and colour, not the print, the cut or the fabric, which only the
embedding carries. The report split is never read here.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fashion_pipeline.lib.retrieval import catalog_metrics as metrics
from fashion_pipeline.lib.retrieval.labelled_catalog import BANDS, score_similarities
from fashion_pipeline.lib.retrieval.layout import BACKBONE, COLOUR, COLOUR_CLASS, PARTS, TYPE, VectorLayout
from fashion_pipeline.lib.retrieval.projection import Projection, fit_projection


@dataclass(frozen=True)
class SelectionSettings:
    type_categories: tuple[str, ...] = ("shirt", "short")
    colour_categories: tuple[str, ...] = ("shirt", "short", "outwear")
    type_tolerance: float = 0.0  # same-type@k may fall this far below the embedding alone's on validation
    min_backbone_weight: float = 0.1  # the embedding's least share of the cosine (print and cut live there)
    step: float = 0.1  # weight grid step
    k: int = metrics.K


@dataclass
class Candidate:
    weights: dict[str, float]
    same_type: dict[str, float]
    same_colour: dict[str, float]
    colour_macro: float
    type_macro: float
    keeps_type: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "weights": self.weights,
            "same_type": {c: round(v, 4) for c, v in self.same_type.items()},
            "same_colour": {c: round(v, 4) for c, v in self.same_colour.items()},
            "colour_macro": round(self.colour_macro, 4),
            "type_macro": round(self.type_macro, 4),
            "keeps_type": self.keeps_type,
        }


@dataclass
class Selection:
    chosen: Candidate
    baseline: Candidate  # the embedding alone
    candidates: list[Candidate] = field(default_factory=list)


def weight_grid(step: float, parts: Sequence[str] = PARTS) -> list[dict[str, float]]:
    """Every {part: weight} with weights in multiples of `step` summing to 1."""
    units = round(1 / step)
    if abs(units * step - 1) > 1e-9:
        raise ValueError(f"step {step} must divide 1")
    grid = []
    for combo in itertools.product(range(units + 1), repeat=len(parts)):
        if sum(combo) == units:
            grid.append({p: round(c * step, 6) for p, c in zip(parts, combo, strict=True) if c})
    return grid


def projected_features(features: Mapping[str, np.ndarray], projection: Projection) -> dict[str, np.ndarray]:
    """The four parts of every product (unit rows), the projections applied to the raw features."""
    return {
        BACKBONE: features[BACKBONE],
        TYPE: projection.project_type(features[BACKBONE]),
        COLOUR_CLASS: projection.project_colour(features[BACKBONE], features[COLOUR], features[BANDS]),
        COLOUR: features[COLOUR],
    }


def select_weights(
    table: pd.DataFrame,
    parts: Mapping[str, np.ndarray],
    usable: np.ndarray,
    splits: np.ndarray,
    settings: SelectionSettings = SelectionSettings(),
) -> Selection:
    """Score every candidate weighting on the validation protocol and apply the rule of the module docstring."""
    categories = tuple(dict.fromkeys(settings.type_categories + settings.colour_categories))
    units = {p: parts[p] / np.maximum(np.linalg.norm(parts[p], axis=1, keepdims=True), 1e-12) for p in PARTS}
    cache: dict[int, dict[str, np.ndarray]] = {}

    def part_similarities(rows: np.ndarray) -> dict[str, np.ndarray]:
        key = hash(rows.tobytes())
        if key not in cache:  # one category's gallery: the same rows for every candidate
            cache[key] = {p: units[p][rows] @ units[p][rows].T for p in PARTS}
        return cache[key]

    def score(weights: Mapping[str, float]) -> Candidate:
        def similarity(rows: np.ndarray) -> np.ndarray:
            matrices = part_similarities(rows)
            return sum(w * matrices[p] for p, w in weights.items())

        scores = score_similarities(table, similarity, usable, splits, "validation", categories, settings.k)
        by = {s.category: s for s in scores}
        same_type = {c: by[c].same_type.value for c in categories if c in by}
        same_colour = {c: by[c].same_colour.value for c in categories if c in by}
        return Candidate(
            weights=dict(weights),
            same_type=same_type,
            same_colour=same_colour,
            colour_macro=metrics.macro(scores, "same_colour", settings.colour_categories),
            type_macro=metrics.macro(scores, "same_type", settings.type_categories),
        )

    baseline = score({BACKBONE: 1.0})
    grid = [w for w in weight_grid(settings.step) if w.get(BACKBONE, 0.0) >= settings.min_backbone_weight - 1e-9]
    candidates = [score(w) for w in grid]
    for candidate in candidates:
        candidate.keeps_type = all(
            candidate.same_type.get(c, 0.0) >= baseline.same_type.get(c, 0.0) - settings.type_tolerance - 1e-9
            for c in settings.type_categories
            if c in baseline.same_type
        )
    eligible = [c for c in candidates if c.keeps_type] or [baseline]
    chosen = max(eligible, key=lambda c: (np.nan_to_num(c.colour_macro), np.nan_to_num(c.type_macro)))
    return Selection(chosen=chosen, baseline=baseline, candidates=candidates)


@dataclass
class FittedLayout:
    layout: VectorLayout
    projection: Projection | None
    selection: Selection


def fit_layout(
    table: pd.DataFrame,
    features: Mapping[str, np.ndarray],
    usable: np.ndarray,
    splits: np.ndarray,
    settings: SelectionSettings = SelectionSettings(),
) -> FittedLayout:
    """Projections fitted on the train split, weights chosen on the validation split, as one layout."""
    train = usable & (splits == metrics.TRAIN)
    projection = fit_projection(
        features[BACKBONE][train],
        features[COLOUR][train],
        features[BANDS][train],
        table["article_type"].to_numpy()[train],
        table["colour_family"].to_numpy()[train],
    )
    parts = projected_features(features, projection)
    selection = select_weights(table, parts, usable, splits, settings)
    layout = VectorLayout.with_weights(features[BACKBONE].shape[1], selection.chosen.weights, projection)
    return FittedLayout(layout, projection if layout.uses_projection else None, selection)
