"""What one vector in the index is made of, and the one function that makes it at index and at query time.

A retrieval vector joins up to four unit parts, each scaled by the square root of its weight (weights sum
to 1), so the cosine the index ranks by is the weighted sum of the parts' cosines:

- `backbone`: the champion classifier's embedding (the pooled backbone output; finds the garment type);
- `type`: that embedding through the article-type projection (lib/retrieval/projection.py);
- `colour_class`: embedding and colour descriptors through the colour-family projection;
- `colour`: the colour descriptor itself (lib/retrieval/colour.py), which ImageNet features ignore.

    v = [sqrt(w_backbone) * backbone, sqrt(w_type) * type, sqrt(w_colour_class) * colour_class, sqrt(w_colour) * colour]

A part of weight 0 is left out of the vector. The weights are chosen on the validation split of a labelled
catalog (lib/retrieval/projection_fit.py); without one the index uses DEFAULT_COLOUR_WEIGHT. The embedding
alone (weight 1 on `backbone`) is the layout of indexes built before layouts existed.

The layout is written with the embeddings (Parquet metadata and a `layout_id` per row) and with every index
(its manifest, the projection file beside the indexes); `knn_index`, `load_indexes` and the recommender
refuse vectors whose layout differs from the one they expect. `RetrievalEmbedder.embed` is the only way
vectors are made: `catalog_embeddings`, the evaluations and the app all call it (or `VectorLayout.vectors`
on the parts it computed, which is what `embed` does).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from fashion_pipeline.lib.retrieval import colour
from fashion_pipeline.lib.retrieval.projection import Projection, unit_rows

LAYOUT_FORMAT = 1
BACKBONE, TYPE, COLOUR_CLASS, COLOUR = "backbone", "type", "colour_class", "colour"
PARTS = (BACKBONE, TYPE, COLOUR_CLASS, COLOUR)
PROJECTED = (TYPE, COLOUR_CLASS)
# The colour weight of the index when no labelled catalog chose a layout: the highest colour@10 on the
# validation split of ../shared's product catalog (frozen MobileNetV2 ImageNet features) that keeps
# same-type@10 within 0.01 of the embedding alone (README, Retrieval).
DEFAULT_COLOUR_WEIGHT = 0.1


class LayoutError(ValueError):
    """Vectors, indexes or a query made with different layouts; the message says what to rematerialize."""


class Embedder(Protocol):
    """The champion classifier's embedding (lib/training/embedder.py GarmentEmbedder): unit rows."""

    version: int
    embedding_dim: int

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray: ...


@dataclass(frozen=True)
class VectorLayout:
    backbone_dim: int
    weights: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)  # in PARTS order, summing to 1
    colour_settings: colour.ColourSettings = field(default_factory=colour.ColourSettings)
    projection_id: str | None = None  # lib/retrieval/projection.py; needed when `type` or `colour_class` is used
    type_dim: int = 0
    colour_class_dim: int = 0

    def __post_init__(self) -> None:
        if len(self.weights) != len(PARTS) or min(self.weights) < 0 or abs(sum(self.weights) - 1) > 1e-6:
            raise LayoutError(f"weights {self.weights} must be {len(PARTS)} non-negative shares summing to 1")
        if self.backbone_dim < 1:
            raise LayoutError(f"backbone_dim must be positive, got {self.backbone_dim}")
        if any(self.weight(p) > 0 for p in PROJECTED) and not (
            self.projection_id and self.type_dim and self.colour_class_dim
        ):
            raise LayoutError("a layout with projected parts needs the projection's id and dimensions")

    @classmethod
    def with_weights(
        cls, backbone_dim: int, weights: Mapping[str, float], projection: Projection | None = None, **kwargs: Any
    ) -> VectorLayout:
        """A layout from {part: weight} (normalised to sum 1); `projection` when a projected part is used."""
        unknown = set(weights) - set(PARTS)
        if unknown:
            raise LayoutError(f"unknown layout parts {sorted(unknown)}; use {list(PARTS)}")
        total = sum(weights.values())
        shares = tuple(round(float(weights.get(p, 0.0)) / total, 6) for p in PARTS)
        shares = (round(1.0 - sum(shares[1:]), 6), *shares[1:])
        uses_projection = projection is not None and any(weights.get(p, 0) > 0 for p in PROJECTED)
        return cls(
            backbone_dim=backbone_dim,
            weights=shares,
            projection_id=projection.projection_id if uses_projection else None,
            type_dim=projection.type_dim if uses_projection else 0,
            colour_class_dim=projection.colour_dim if uses_projection else 0,
            **kwargs,
        )

    def weight(self, part: str) -> float:
        return self.weights[PARTS.index(part)]

    def part_dims(self) -> dict[str, int]:
        """{part: dimension} of the parts present in the vector, in vector order."""
        dims = {
            BACKBONE: self.backbone_dim,
            TYPE: self.type_dim,
            COLOUR_CLASS: self.colour_class_dim,
            COLOUR: colour.DIMENSION,
        }
        return {p: dims[p] for p in PARTS if self.weight(p) > 0}

    @property
    def dimension(self) -> int:
        return sum(self.part_dims().values())

    @property
    def uses_projection(self) -> bool:
        return any(self.weight(p) > 0 for p in PROJECTED)

    @property
    def needs_colour(self) -> bool:
        return self.weight(COLOUR) > 0 or self.weight(COLOUR_CLASS) > 0

    def to_json(self) -> dict[str, Any]:
        parts = [{"name": p, "dimension": d, "weight": self.weight(p)} for p, d in self.part_dims().items()]
        body: dict[str, Any] = {"format": LAYOUT_FORMAT, "dimension": self.dimension, "parts": parts}
        if self.needs_colour:
            body["colour"] = {
                "settings": self.colour_settings.to_json(),
                "prototypes": [[family, list(rgb)] for family, rgb in colour.PROTOTYPES],
                "bands": [list(band) for band in colour.BANDS],
            }
        if self.uses_projection:
            body["projection_id"] = self.projection_id
        return {**body, "layout_id": _digest(body)}

    @property
    def layout_id(self) -> str:
        return self.to_json()["layout_id"]

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> VectorLayout:
        """The layout a manifest or embeddings file recorded; refuses one this code would not make alike."""
        try:
            dims = {part["name"]: int(part["dimension"]) for part in raw["parts"]}
            weights = {part["name"]: float(part["weight"]) for part in raw["parts"]}
            settings = (
                colour.ColourSettings(**raw["colour"]["settings"]) if "colour" in raw else colour.ColourSettings()
            )
            layout = cls(
                backbone_dim=dims[BACKBONE] if BACKBONE in dims else int(raw["backbone_dim"]),
                weights=tuple(weights.get(p, 0.0) for p in PARTS),
                colour_settings=settings,
                projection_id=raw.get("projection_id"),
                type_dim=dims.get(TYPE, 0),
                colour_class_dim=dims.get(COLOUR_CLASS, 0),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LayoutError(f"unreadable vector layout {dict(raw)!r}: {exc}") from exc
        if layout.layout_id != raw.get("layout_id"):
            raise LayoutError(
                f"the recorded layout {raw.get('layout_id')} cannot be reproduced by this code (it makes "
                f"{layout.layout_id}: other colour prototypes or format): rematerialize catalog_embeddings and knn_index"
            )
        return layout

    def describe(self) -> str:
        parts = " + ".join(f"{p} {d}-d x {self.weight(p):.2f}" for p, d in self.part_dims().items())
        return f"{parts} ({self.dimension} floats, {self.dimension * 4} bytes)"

    # --- making and reading vectors ---------------------------------------------------------------------
    def vectors(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N, dimension) unit rows from the parts ({part: unit rows}; only the parts of weight > 0 are read)."""
        blocks = []
        for part, dim in self.part_dims().items():
            if part not in parts:
                raise LayoutError(f"the layout has a {part!r} part but none was computed")
            block = unit_rows(parts[part])
            if block.shape[1] != dim:
                raise LayoutError(f"{part} rows have dimension {block.shape[1]}, the layout {dim}")
            blocks.append(np.sqrt(self.weight(part)) * block)
        return np.hstack(blocks).astype(np.float32)

    def part(self, vectors: np.ndarray, name: str) -> np.ndarray | None:
        """One part of vectors of this layout (unit rows), or None when the layout leaves it out."""
        dims = self.part_dims()
        if name not in dims:
            return None
        start = sum(d for p, d in dims.items() if PARTS.index(p) < PARTS.index(name))
        return unit_rows(np.atleast_2d(np.asarray(vectors, np.float32))[:, start : start + dims[name]])


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def legacy_layout(dimension: int) -> VectorLayout:
    """The layout of vectors recorded without one: the classifier's embedding alone."""
    return VectorLayout(backbone_dim=int(dimension))


def read_layout(raw: Mapping[str, Any] | None, dimension: int) -> VectorLayout:
    """A recorded layout (manifest or embeddings metadata), or the embedding-only layout where none was."""
    return legacy_layout(dimension) if not raw else VectorLayout.from_json(raw)


def default_layout(backbone_dim: int, colour_weight: float = DEFAULT_COLOUR_WEIGHT) -> VectorLayout:
    """The layout without a fitted projection: the embedding and the colour descriptor."""
    return VectorLayout.with_weights(backbone_dim, {BACKBONE: 1 - colour_weight, COLOUR: colour_weight})


def image_parts(images: Sequence[Image.Image], backbone: np.ndarray, layout: VectorLayout) -> dict[str, np.ndarray]:
    """The pixel-level parts the layout needs besides the embedding: colour and band descriptors."""
    parts = {BACKBONE: np.asarray(backbone, np.float32)}
    if layout.needs_colour:
        parts[COLOUR] = colour.colour_descriptors(images, layout.colour_settings)
    if layout.weight(COLOUR_CLASS) > 0:
        parts["bands"] = colour.band_descriptors(images, layout.colour_settings)
    return parts


def project_parts(
    parts: Mapping[str, np.ndarray], layout: VectorLayout, projection: Projection | None
) -> dict[str, np.ndarray]:
    """`parts` plus the projected ones the layout uses (`type`, `colour_class`)."""
    result = dict(parts)
    if not layout.uses_projection:
        return result
    if projection is None or projection.projection_id != layout.projection_id:
        raise LayoutError(
            f"the layout needs projection {layout.projection_id}, "
            f"got {None if projection is None else projection.projection_id}: rematerialize knn_index"
        )
    if layout.weight(TYPE) > 0:
        result[TYPE] = projection.project_type(parts[BACKBONE])
    if layout.weight(COLOUR_CLASS) > 0:
        result[COLOUR_CLASS] = projection.project_colour(parts[BACKBONE], parts[COLOUR], parts["bands"])
    return result


class RetrievalEmbedder:
    """The champion's embedding joined with the other parts as `layout` says: the index's vectors."""

    def __init__(self, backbone: Embedder, layout: VectorLayout, projection: Projection | None = None) -> None:
        if int(backbone.embedding_dim) != layout.backbone_dim:
            raise LayoutError(
                f"the champion classifier embeds in {backbone.embedding_dim} dimensions, the layout expects "
                f"{layout.backbone_dim}: rematerialize catalog_embeddings and knn_index"
            )
        if layout.uses_projection and (projection is None or projection.projection_id != layout.projection_id):
            raise LayoutError(f"the layout {layout.layout_id} needs projection {layout.projection_id}")
        self.backbone = backbone
        self.layout = layout
        self.projection = projection
        self.version = int(backbone.version)
        self.embedding_dim = layout.dimension

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, layout.dimension) unit rows: what the index stores for a product and searches with for a crop."""
        return self.embed_with_colours(images)[0]

    def embed_with_colours(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """`embed`'s vectors and each image's colour descriptor (computed once when the layout uses it)."""
        vectors, colours, _ = self._embed(images, classify=False)
        return vectors, colours

    @property
    def classes(self) -> tuple[str, ...]:
        """The champion's classes, in the order of `embed_classify`'s probabilities; () when it does not classify."""
        if not hasattr(self.backbone, "embed_and_classify"):
            return ()
        return tuple(getattr(self.backbone, "classes", ()))

    def embed_classify(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """`embed_with_colours` and the champion's class probabilities (N, len(classes)) from the same forward
        pass (lib/training/embedder.py `embed_and_classify`); None when the backbone only embeds."""
        return self._embed(images, classify=bool(self.classes))

    def _embed(self, images: Sequence[Image.Image], classify: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if len(images) == 0:
            empty = np.zeros((0, len(self.classes)), np.float32) if classify else None
            return np.zeros((0, self.embedding_dim), np.float32), np.zeros((0, colour.DIMENSION), np.float32), empty
        probabilities = None
        if classify:
            backbone, probabilities = self.backbone.embed_and_classify(images)  # type: ignore[attr-defined]
            probabilities = np.asarray(probabilities, np.float32)
        else:
            backbone = self.backbone.embed(images)
        parts = image_parts(images, np.asarray(backbone, np.float32), self.layout)
        vectors = self.layout.vectors(project_parts(parts, self.layout, self.projection))
        colours = parts[COLOUR] if COLOUR in parts else colour.colour_descriptors(images, self.layout.colour_settings)
        return vectors, colours, probabilities
