"""Two small linear projections fitted on a labelled catalog: one that separates article types, one colours.

Frozen ImageNet features find the garment type but mix up close types (T-shirts and tops, jeans and
trousers) and ignore colour. Linear discriminant analysis (scikit-learn, shrinkage chosen by Ledoit-Wolf)
fitted on the labelled products of the catalog's *train* split gives two low-dimensional views:

- `type`: the embedding projected onto the directions that separate article types (18-d for the 19 types
  of ../shared's catalog);
- `colour_class`: the embedding, the whole-image colour descriptor and the colour of three horizontal
  bands (lib/retrieval/colour.py) projected onto the directions that separate colour families (11-d). The
  bands let it learn that the colour of a T-shirt worn by a model is in the upper part of the picture.

Each projection is a matrix and an offset (`x @ matrix + offset`, exactly what LDA's transform computes),
saved as `.npz` without pickle; its `projection_id` is a digest of the arrays, written into the vector
layout, so an index built with one projection never meets queries projected by another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashion_pipeline.lib.common.atomic import atomic_path

PROJECTION_FILE = "projection.npz"
_ARRAYS = ("type_matrix", "type_offset", "colour_matrix", "colour_offset", "type_classes", "colour_classes")


class ProjectionError(ValueError):
    """A projection file that is missing, unreadable or not the one a layout names."""


def unit_rows(rows: np.ndarray) -> np.ndarray:
    rows = np.atleast_2d(np.asarray(rows, np.float32))
    return (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True, eq=False)
class Projection:
    type_matrix: np.ndarray  # (backbone_dim, type_dim)
    type_offset: np.ndarray  # (type_dim,)
    colour_matrix: np.ndarray  # (backbone_dim + colour dims + band dims, colour_dim)
    colour_offset: np.ndarray  # (colour_dim,)
    type_classes: np.ndarray  # the article types it was fitted on (str)
    colour_classes: np.ndarray  # the colour families it was fitted on (str)

    @property
    def backbone_dim(self) -> int:
        return int(self.type_matrix.shape[0])

    @property
    def type_dim(self) -> int:
        return int(self.type_matrix.shape[1])

    @property
    def colour_dim(self) -> int:
        return int(self.colour_matrix.shape[1])

    @property
    def projection_id(self) -> str:
        digest = hashlib.sha256()
        for name in _ARRAYS:
            array = np.ascontiguousarray(getattr(self, name))
            digest.update(
                name.encode()
                + str(array.shape).encode()
                + array.astype(str if array.dtype.kind == "U" else np.float32).tobytes()
            )
        return digest.hexdigest()[:16]

    def project_type(self, backbone: np.ndarray) -> np.ndarray:
        """(N, type_dim) unit rows from unit embeddings."""
        return unit_rows(np.asarray(backbone, np.float32) @ self.type_matrix + self.type_offset)

    def project_colour(self, backbone: np.ndarray, colours: np.ndarray, bands: np.ndarray) -> np.ndarray:
        """(N, colour_dim) unit rows from unit embeddings, colour descriptors and band descriptors."""
        joined = np.hstack([np.asarray(backbone, np.float32), colours, bands]).astype(np.float32)
        if joined.shape[1] != self.colour_matrix.shape[0]:
            raise ProjectionError(
                f"colour projection takes {self.colour_matrix.shape[0]} features, got {joined.shape[1]}"
            )
        return unit_rows(joined @ self.colour_matrix + self.colour_offset)

    def save(self, target: Path) -> Path:
        with atomic_path(Path(target)) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **{name: getattr(self, name) for name in _ARRAYS})
        return Path(target)

    @classmethod
    def load(cls, path: Path, expected_id: str | None = None) -> Projection:
        path = Path(path)
        if not path.is_file():
            raise ProjectionError(
                f"{path} is missing: materialize retrieval_projection, then catalog_embeddings and knn_index"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                projection = cls(**{name: data[name] for name in _ARRAYS})
        except (OSError, KeyError, ValueError) as exc:
            raise ProjectionError(f"{path} is not a projection file ({exc}): materialize retrieval_projection") from exc
        if expected_id is not None and projection.projection_id != expected_id:
            raise ProjectionError(
                f"{path} holds projection {projection.projection_id}, the vectors were made with {expected_id}: "
                "rematerialize catalog_embeddings and knn_index"
            )
        return projection


def _linear_map(lda, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """LDA's transform as `x @ matrix + offset` (its transform is affine, whatever the solver)."""
    offset = lda.transform(np.zeros((1, n_features)))[0]
    matrix = lda.transform(np.eye(n_features)) - offset
    return matrix.astype(np.float32), offset.astype(np.float32)


def fit_projection(
    backbone: np.ndarray,
    colours: np.ndarray,
    bands: np.ndarray,
    types: Sequence[object],
    families: Sequence[object],
) -> Projection:
    """LDA projections fitted on labelled products (rows without a label are left out of that projection)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    types_array = np.asarray([t if isinstance(t, str) else "" for t in types], dtype=object)
    families_array = np.asarray([f if isinstance(f, str) else "" for f in families], dtype=object)
    with_type, with_family = types_array != "", families_array != ""
    for name, known in (("article type", types_array[with_type]), ("colour family", families_array[with_family])):
        if len(set(known)) < 2:
            raise ValueError(f"fitting a projection needs at least two {name}s among the labelled products")
    backbone = np.asarray(backbone, np.float64)
    colour_input = np.hstack([backbone, colours, bands])
    # Ledoit-Wolf shrinkage: ~1,300 features from a few thousand products would overfit a plain LDA.
    type_lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(
        backbone[with_type], types_array[with_type]
    )
    colour_lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(
        colour_input[with_family], families_array[with_family]
    )
    type_matrix, type_offset = _linear_map(type_lda, backbone.shape[1])
    colour_matrix, colour_offset = _linear_map(colour_lda, colour_input.shape[1])
    return Projection(
        type_matrix=type_matrix,
        type_offset=type_offset,
        colour_matrix=colour_matrix,
        colour_offset=colour_offset,
        type_classes=np.asarray([str(c) for c in type_lda.classes_]),
        colour_classes=np.asarray([str(c) for c in colour_lda.classes_]),
    )
