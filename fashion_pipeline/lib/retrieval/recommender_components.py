"""What the recommender is built from: its components' interfaces and the catalog aligned with each index.

The detector, embedder and k-NN indexes are implemented in lib/training/detector.py, lib/training/embedder.py
and lib/retrieval/knn.py; the recommender needs only what these interfaces name. `check_index_versions`
refuses indexes built by another embedding model than the one loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from PIL import Image

from fashion_pipeline.lib.retrieval.colour import colour_family
from fashion_pipeline.lib.retrieval.query import Query, Recommendation, RecommenderError

# The columns the answer needs from products.parquet (DESIGN.md catalog contract).
PRODUCT_COLUMNS = ("product_id", "site", "name", "url", "image_url", "image_path", "price", "currency")
PRODUCT_COLUMNS_OPTIONAL = ("price_usd", "category", "colour")


# --- the components' interfaces -------------------------------------------------------------------------
class Detection(Protocol):
    box: tuple[float, float, float, float]
    category: str
    score: float


class Detector(Protocol):
    version: int

    def detect(self, image: Image.Image, conf: float = 0.25) -> Sequence[Detection]: ...


class Embedder(Protocol):
    version: int
    embedding_dim: int

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray: ...


class SearchIndex(Protocol):
    manifest: Any  # knn.IndexManifest: category, model_version, count, dimension, metric, backend
    product_ids: np.ndarray

    # `allowed` (bool, one per row): only those rows may be returned (knn.CategoryIndex.search).
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


# --- the catalog, aligned with each index ---------------------------------------------------------------
@dataclass
class CategoryCatalog:
    """One category's index with the catalog columns aligned to its rows (row i = index row i)."""

    index: SearchIndex
    known: np.ndarray  # bool (N,): the product is still in the catalog
    positions: np.ndarray  # int (N,): row in the products table, -1 where unknown
    price_usd: np.ndarray  # float (N,), NaN where unknown
    site: np.ndarray  # object (N,)

    def allowed(self, query: Query) -> np.ndarray:
        mask = self.known.copy()
        if query.site is not None:
            mask &= self.site == query.site
        if query.max_price_usd is not None:
            # NaN (no USD price known) compares False: such products cannot prove they are within budget.
            mask &= self.price_usd <= query.max_price_usd
        return mask


@dataclass
class Products:
    table: pd.DataFrame
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.columns = {name: self.table[name].to_numpy() for name in self.table.columns}

    def record(self, position: int, score: float) -> Recommendation:
        column = self.columns
        return Recommendation(
            product_id=str(column["product_id"][position]),
            name=str(column["name"][position]),
            price=_number(column["price"][position]),
            currency=text_or_none(column["currency"][position]),
            price_usd=_number(column["price_usd"][position]),
            site=str(column["site"][position]),
            url=str(column["url"][position]),
            image_url=text_or_none(column["image_url"][position]),
            score=round(float(score), 4),
            colour_family=colour_family(column["colour"][position]),
        )


def _number(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    return round(float(value), 2)


def text_or_none(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def read_products(path: Path) -> pd.DataFrame:
    """The catalog columns the recommender needs, from products.parquet."""
    if not path.exists():
        raise RecommenderError(f"no product catalog at {path}: materialize the product_catalog asset first")
    return prepare_products(pd.read_parquet(path), source=str(path))


def prepare_products(table: pd.DataFrame, source: str = "the product catalog") -> pd.DataFrame:
    """The answer's columns only, one row per product_id (the last wins); optional columns filled in."""
    missing = [c for c in PRODUCT_COLUMNS if c not in table.columns]
    if missing:
        raise RecommenderError(f"{source} lacks columns {missing}: rematerialize the product_catalog asset")
    table = table.copy()
    for column in PRODUCT_COLUMNS_OPTIONAL:
        if column not in table.columns:
            table[column] = np.nan
    table = table[list(PRODUCT_COLUMNS + PRODUCT_COLUMNS_OPTIONAL)]
    return table.drop_duplicates("product_id", keep="last").reset_index(drop=True)


def check_index_versions(
    indexes: Mapping[str, SearchIndex], embedder: Embedder, embeddings_versions: set[int] | None = None
) -> None:
    """Refuse indexes built from another embedding model than the one loaded, naming the asset to redo.

    `embeddings_versions` (the model versions in the sites' catalog_embeddings files, when known) decides whether
    only the index is stale (rematerialize knn_index) or the embeddings too (catalog_embeddings first).
    """
    if not indexes:
        raise RecommenderError("no k-NN index found: materialize the catalog_embeddings and knn_index assets")
    stale = {
        category: index.manifest.model_version
        for category, index in indexes.items()
        if int(index.manifest.model_version) != int(embedder.version)
    }
    if stale:
        built = ", ".join(f"{c} (version {v})" for c, v in sorted(stale.items()))
        if embeddings_versions is not None and embeddings_versions == {int(embedder.version)}:
            redo = "rematerialize the knn_index asset"
        else:
            redo = "rematerialize the catalog_embeddings asset, then knn_index"
        raise RecommenderError(
            f"the k-NN indexes for {built} were built with another garment-classifier version than the "
            f"loaded champion (version {embedder.version}): {redo}"
        )
    wrong_dimension = {
        c: i.manifest.dimension for c, i in indexes.items() if int(i.manifest.dimension) != embedder.embedding_dim
    }
    if wrong_dimension:
        raise RecommenderError(
            f"the k-NN indexes {wrong_dimension} do not have the embedder's dimension "
            f"{embedder.embedding_dim}: rematerialize the catalog_embeddings asset, then knn_index"
        )
