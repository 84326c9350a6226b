"""Catalog embeddings: each product's image made into a retrieval vector, incrementally.

The vector is `RetrievalEmbedder.embed` (lib/retrieval/layout.py): the champion classifier's embedding
joined with a colour descriptor as the vector layout says; the layout is recorded in the file's metadata and
as `layout_id` on every row. A product is embedded again only when its image bytes changed (SHA-256 of the
file), the embedding model changed (version or dimension) or the layout changed; every other row is carried
over from the previous table. Products whose
image is missing or unreadable get no row and are returned in `EmbedStats.failed` with the reason, so the
caller reports them (they are retried on the next run).

Stored as Parquet with `embedding` a fixed-size list of float32, so a reader gets the (N, D) matrix back
without a pickle and without guessing the dimension.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from fashion_pipeline.lib.common.atomic import atomic_path
from fashion_pipeline.lib.common.images import ImageError, load_image
from fashion_pipeline.lib.retrieval.layout import VectorLayout, legacy_layout, read_layout

EMBEDDING_COLUMNS = ["product_id", "category", "model_version", "embedding", "image_sha256", "layout_id"]
_METADATA_KEY = "fashion_pipeline"


class Embedder(Protocol):
    """What `embed_catalog` needs: a `layout.RetrievalEmbedder` (which also has `layout`), or a bare embedder
    such as `lib.training.embedder.GarmentEmbedder`, whose vectors are the embedding-only layout."""

    version: int
    embedding_dim: int

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray: ...


@dataclass
class EmbedStats:
    products: int = 0  # catalog products seen
    embedded: int = 0  # computed in this run
    reused: int = 0  # carried over from the previous table
    removed: int = 0  # previous rows whose product left the catalog
    failed: dict[str, str] = field(default_factory=dict)  # product_id -> why it has no embedding
    full_rebuild_reason: str | None = None  # set when the previous table could not be reused at all


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_image_bytes(image_path: object) -> bytes:
    if image_path is None or (isinstance(image_path, float) and np.isnan(image_path)) or image_path == "":
        raise ImageError("no image file (download failed or no image URL)")
    path = Path(str(image_path))
    if not path.is_file():
        raise ImageError(f"image file missing: {path}")
    return path.read_bytes()


def layout_of(embedder: Embedder) -> VectorLayout:
    """The layout of the vectors `embedder.embed` returns."""
    return getattr(embedder, "layout", None) or legacy_layout(int(embedder.embedding_dim))


def _reusable(previous: pd.DataFrame | None, embedder: Embedder) -> tuple[dict[str, tuple], str | None]:
    """product_id -> (sha256, embedding) of previous rows made by this model and layout; and why none, if none."""
    if previous is None or previous.empty:
        return {}, None
    versions = sorted({int(v) for v in previous["model_version"]})
    dims = sorted({len(e) for e in previous["embedding"]})
    if versions != [int(embedder.version)] or dims != [int(embedder.embedding_dim)]:
        reason = (
            f"embedding model changed: previous rows from version(s) {versions} with dimension(s) {dims}, "
            f"now version {embedder.version} with dimension {embedder.embedding_dim}"
        )
        return {}, reason
    layouts = sorted(set(previous["layout_id"].astype(str)))
    layout = layout_of(embedder)
    if layouts != [layout.layout_id]:
        return (
            {},
            f"vector layout changed: previous rows made with {layouts}, now {layout.layout_id} ({layout.describe()})",
        )
    return {
        str(row.product_id): (row.image_sha256, row.embedding)
        for row in previous[["product_id", "image_sha256", "embedding"]].itertuples(index=False)
    }, None


def embed_catalog(
    products: pd.DataFrame,
    embedder: Embedder,
    previous: pd.DataFrame | None = None,
    batch_size: int = 64,
) -> tuple[pd.DataFrame, EmbedStats]:
    """One row per product with a readable image: `EMBEDDING_COLUMNS`, in catalog order.

    `products` needs `product_id`, `category` and `image_path`. Only new or changed images (by content
    hash) are embedded, in batches of `batch_size`, unless the embedder's version or dimension differs from
    `previous`'s, then all are.
    """
    duplicated = products["product_id"].astype(str).duplicated()
    if duplicated.any():
        examples = products.loc[duplicated, "product_id"].astype(str).unique()[:5].tolist()
        raise ValueError(f"the catalog has duplicate product_id values, e.g. {examples}")
    reusable, rebuild_reason = _reusable(previous, embedder)
    stats = EmbedStats(products=len(products), full_rebuild_reason=rebuild_reason)
    if previous is not None and not previous.empty:
        current = set(products["product_id"].astype(str))
        stats.removed = int((~previous["product_id"].astype(str).isin(current)).sum())

    embeddings: dict[str, np.ndarray] = {}
    hashes: dict[str, str] = {}
    pending_ids: list[str] = []
    pending_images: list[Image.Image] = []

    def flush() -> None:
        if not pending_images:
            return
        vectors = np.asarray(embedder.embed(pending_images), dtype=np.float32)
        if vectors.shape != (len(pending_images), embedder.embedding_dim):
            raise ValueError(
                f"embedder returned shape {vectors.shape} for {len(pending_images)} images, "
                f"expected ({len(pending_images)}, {embedder.embedding_dim})"
            )
        for product_id, vector in zip(pending_ids, vectors, strict=True):
            embeddings[product_id] = vector
        stats.embedded += len(pending_ids)
        pending_ids.clear()
        pending_images.clear()

    for row in products[["product_id", "image_path"]].itertuples(index=False):
        product_id = str(row.product_id)
        try:
            data = _read_image_bytes(row.image_path)
            digest = file_sha256(data)
            known = reusable.get(product_id)
            if known is not None and known[0] == digest:
                embeddings[product_id] = np.asarray(known[1], dtype=np.float32)
                hashes[product_id] = digest
                stats.reused += 1
                continue
            image = load_image(data)
        except ImageError as exc:
            stats.failed[product_id] = str(exc)
            continue
        hashes[product_id] = digest
        pending_ids.append(product_id)
        pending_images.append(image)
        if len(pending_images) >= batch_size:
            flush()
    flush()

    kept = products[products["product_id"].astype(str).isin(embeddings.keys())]
    ids = kept["product_id"].astype(str).tolist()
    table = pd.DataFrame(
        {
            "product_id": ids,
            "category": kept["category"].tolist(),  # None where the catalog could not tell
            "model_version": np.full(len(ids), int(embedder.version), dtype=np.int64),
            "embedding": [embeddings[p] for p in ids],
            "image_sha256": [hashes[p] for p in ids],
            "layout_id": layout_of(embedder).layout_id,
        },
        columns=EMBEDDING_COLUMNS,
    )
    table.attrs["layout"] = layout_of(embedder)
    return table, stats


def embedding_matrix(table: pd.DataFrame) -> np.ndarray:
    """The `embedding` column as one (N, D) float32 matrix."""
    if table.empty:
        return np.zeros((0, 0), dtype=np.float32)
    return np.ascontiguousarray(np.stack(table["embedding"].to_numpy()), dtype=np.float32)


def write_embeddings(
    table: pd.DataFrame,
    target: Path,
    dimension: int,
    failed: dict[str, str] | None = None,
    layout: VectorLayout | None = None,
) -> Path:
    """Atomically write the table with `embedding` as fixed_size_list<float32>[dimension].

    `failed` (product_id -> reason) and the vector `layout` (default: `table.attrs["layout"]`, else the
    embedding alone) travel in the file's metadata, so a reader (the knn_index check) can tell a product that
    could not be embedded from one the table has not caught up with, and knows how the vectors were made.
    """
    matrix = embedding_matrix(table) if len(table) else np.zeros((0, dimension), dtype=np.float32)
    if matrix.shape[1] != dimension:
        raise ValueError(f"embeddings have dimension {matrix.shape[1]}, expected {dimension}")
    layout = layout or table.attrs.get("layout") or legacy_layout(dimension)
    if layout.dimension != dimension:
        raise ValueError(f"the layout {layout.layout_id} makes {layout.dimension}-d vectors, the table has {dimension}")
    wrong = sorted(set(table["layout_id"].astype(str)) - {layout.layout_id}) if "layout_id" in table else []
    if wrong:
        raise ValueError(f"rows made with layout(s) {wrong} cannot be written as layout {layout.layout_id}")
    arrow = pa.table(
        {
            "product_id": pa.array(table["product_id"].astype(str).tolist(), pa.string()),
            "category": pa.array(table["category"], pa.string(), from_pandas=True),
            "model_version": pa.array(table["model_version"].astype("int64").tolist(), pa.int64()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), dimension),
            "image_sha256": pa.array(table["image_sha256"].astype(str).tolist(), pa.string()),
            "layout_id": pa.array([layout.layout_id] * len(table), pa.string()),
        }
    )
    metadata = {"dimension": dimension, "failed": dict(failed or {}), "layout": layout.to_json()}
    arrow = arrow.replace_schema_metadata({_METADATA_KEY: json.dumps(metadata)})
    with atomic_path(Path(target)) as tmp:
        pq.write_table(arrow, tmp)
    return Path(target)


def read_embeddings(path: Path) -> pd.DataFrame:
    """The table written by `write_embeddings`; `embedding` cells are float32 arrays.

    `table.attrs["failed"]` holds the products that could not be embedded (product_id -> reason) and
    `table.attrs["layout"]` the `VectorLayout` of the vectors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: materialize the catalog_embeddings asset")
    arrow = pq.read_table(path)
    missing = set(EMBEDDING_COLUMNS) - set(arrow.column_names)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}: rematerialize catalog_embeddings")
    column = arrow.column("embedding").combine_chunks()
    dimension = column.type.list_size if pa.types.is_fixed_size_list(column.type) else None
    table = arrow.drop(["embedding"]).to_pandas()
    if len(table) and dimension:
        flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        matrix = flat.reshape(len(table), dimension)
        table["embedding"] = list(matrix)
    else:
        table["embedding"] = [np.asarray(v, dtype=np.float32) for v in column.to_pylist()]
    table = table[EMBEDDING_COLUMNS]
    extra = json.loads((arrow.schema.metadata or {}).get(_METADATA_KEY.encode(), b"{}"))
    table.attrs["failed"] = dict(extra.get("failed", {}))
    table.attrs["layout"] = read_layout(extra.get("layout"), int(dimension or extra.get("dimension", 0) or 1))
    return table
