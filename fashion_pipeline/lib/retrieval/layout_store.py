"""Where a chosen vector layout lives: written by retrieval_projection, read by catalog_embeddings, carried by
the index (its projection file beside the category folders) and read back by every query-side user.

`data/retrieval/projection/` holds `layout.json` (the layout, the model version whose embedding it was fitted
on, the rule and split behind it), `projection.npz` when the layout uses one, and `selection.json` (every
candidate's validation figures). The index folder holds a copy of `projection.npz`, so the indexes and the
projection that made their vectors are swapped together.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashion_pipeline.lib.common.atomic import atomic_dir, write_json
from fashion_pipeline.lib.retrieval.layout import (
    DEFAULT_COLOUR_WEIGHT,
    Embedder,
    LayoutError,
    RetrievalEmbedder,
    VectorLayout,
    default_layout,
)
from fashion_pipeline.lib.retrieval.projection import PROJECTION_FILE, Projection

LAYOUT_FILE = "layout.json"
SELECTION_FILE = "selection.json"


@dataclass
class StoredLayout:
    layout: VectorLayout
    projection: Projection | None
    model_version: int | None  # the champion whose embedding the projection was fitted on (None: no projection)
    note: str  # how the layout was chosen, for metadata


def write_layout_dir(
    directory: Path,
    layout: VectorLayout,
    projection: Projection | None,
    model_version: int,
    note: str,
    selection: Mapping[str, Any] | None = None,
) -> Path:
    """Replace `directory` atomically with the layout, its projection and the selection behind it."""
    with atomic_dir(Path(directory)) as tmp:
        record = {"layout": layout.to_json(), "model_version": int(model_version), "note": note}
        write_json(record, tmp / LAYOUT_FILE)
        if projection is not None:
            projection.save(tmp / PROJECTION_FILE)
        if selection is not None:
            write_json(dict(selection), tmp / SELECTION_FILE)
    return Path(directory)


def read_layout_dir(directory: Path) -> StoredLayout | None:
    """The stored layout, or None when retrieval_projection has not written one."""
    path = Path(directory) / LAYOUT_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    layout = VectorLayout.from_json(record["layout"])
    projection = (
        Projection.load(Path(directory) / PROJECTION_FILE, layout.projection_id) if layout.uses_projection else None
    )
    return StoredLayout(layout, projection, record.get("model_version"), str(record.get("note", "")))


def catalog_layout(directory: Path, backbone: Embedder, colour_weight: float = DEFAULT_COLOUR_WEIGHT) -> StoredLayout:
    """The layout catalog_embeddings embeds with: the stored one, else the embedding and colour descriptor.

    A stored layout fitted on another champion's embedding is refused: its projection no longer fits.
    """
    stored = read_layout_dir(directory)
    if stored is None:
        layout = default_layout(int(backbone.embedding_dim), colour_weight)
        return StoredLayout(
            layout, None, None, f"no layout chosen by retrieval_projection: colour weight {colour_weight}"
        )
    if stored.layout.backbone_dim != int(backbone.embedding_dim) or (
        stored.layout.uses_projection and stored.model_version != int(backbone.version)
    ):
        raise LayoutError(
            f"the layout in {directory} was chosen for model version {stored.model_version} "
            f"({stored.layout.backbone_dim}-d), the champion is version {backbone.version} "
            f"({backbone.embedding_dim}-d): materialize retrieval_projection, then catalog_embeddings"
        )
    return stored


def copy_projection(source_dir: Path, layout: VectorLayout, index_dir: Path) -> None:
    """Put the projection the layout names beside the indexes (inside knn_index's atomic folder)."""
    if not layout.uses_projection:
        return
    Projection.load(Path(source_dir) / PROJECTION_FILE, layout.projection_id)  # refuses another projection
    shutil.copyfile(Path(source_dir) / PROJECTION_FILE, Path(index_dir) / PROJECTION_FILE)


def index_embedder(backbone: Embedder, layout: VectorLayout, index_dir: Path) -> RetrievalEmbedder:
    """The query-side embedder of indexes built with `layout`: the projection comes from the index folder."""
    projection = (
        Projection.load(Path(index_dir) / PROJECTION_FILE, layout.projection_id) if layout.uses_projection else None
    )
    return RetrievalEmbedder(backbone, layout, projection)
