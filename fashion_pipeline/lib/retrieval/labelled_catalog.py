"""A labelled product catalog (a CSV with category, article type and colour per product image) and its features.

The CSV's columns are named in `CatalogColumns` (defaults: ../shared's fashion-product-catalog/catalog.csv,
`id,image,...,articleType,baseColour,...,target5`); images are paths relative to the CSV. A row without an
id, with an image that does not exist, or with a category outside the 5 is skipped and counted by reason.

The features of each product are the parts a vector layout is made of before weighting (lib/retrieval/
layout.py): the champion's embedding, the colour descriptor and the band descriptors, computed by the same
functions `RetrievalEmbedder.embed` uses. They are cached beside the projection keyed by the model version,
the colour settings and the image bytes, so the fit and the evaluation embed the 5,000 images once.

Protocols (each product searched among the other products of its category, lib/retrieval/catalog_metrics):

- `validation`: validation products as queries and as the gallery: none that the projections were fitted on,
  so the weights are chosen for products the layout never saw (new products, other shops);
- `report`: report products as queries, the whole catalog as the gallery (as the app searches);
- `report_held_out`: report products as queries, only validation and report products as the gallery (none
  that a projection was fitted on): how the layout does on products it never saw, in queries and gallery.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fashion_pipeline.lib.common.atomic import atomic_path
from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.common.images import ImageError, load_image
from fashion_pipeline.lib.retrieval import catalog_metrics as metrics
from fashion_pipeline.lib.retrieval import colour
from fashion_pipeline.lib.retrieval.layout import BACKBONE, COLOUR, Embedder, VectorLayout, image_parts

PROTOCOLS = {
    "validation": ({metrics.VALIDATION}, {metrics.VALIDATION}),
    "report": ({metrics.REPORT}, set(metrics.SPLITS)),
    "report_held_out": ({metrics.REPORT}, {metrics.VALIDATION, metrics.REPORT}),
}
BANDS = "bands"
FEATURE_PARTS = (BACKBONE, COLOUR, BANDS)


@dataclass(frozen=True)
class CatalogColumns:
    product_id: str = "id"
    image: str = "image"
    category: str = "target5"
    article_type: str = "articleType"
    colour: str = "baseColour"


def read_labelled_catalog(csv_path: Path, columns: CatalogColumns = CatalogColumns()) -> tuple[pd.DataFrame, Counter]:
    """(products, skipped by reason): `product_id, image_path, category, article_type, colour, colour_family`."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"labelled catalog {csv_path} does not exist")
    raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in vars(columns).values() if c not in raw.columns]
    if missing:
        raise ValueError(f"{csv_path} lacks the columns {missing} (has {list(raw.columns)}); set the column names")
    skipped: Counter = Counter()
    rows = []
    seen: set[str] = set()
    for record in raw.to_dict("records"):
        product_id, image = record[columns.product_id].strip(), record[columns.image].strip()
        category = record[columns.category].strip()
        path = (csv_path.parent / image).resolve()
        if not product_id or product_id in seen:
            skipped["missing_or_duplicate_id"] += 1
        elif category not in CATEGORIES:
            skipped["outside_categories"] += 1
        elif not image or not path.is_relative_to(csv_path.parent.resolve()) or not path.is_file():
            skipped["missing_image"] += 1
        else:
            seen.add(product_id)
            name = record[columns.colour].strip() or None
            rows.append(
                {
                    "product_id": product_id,
                    "image_path": str(path),
                    "category": category,
                    "article_type": record[columns.article_type].strip() or None,
                    "colour": name,
                    "colour_family": colour.colour_family(name),
                }
            )
    return pd.DataFrame(
        rows, columns=["product_id", "image_path", "category", "article_type", "colour", "colour_family"]
    ), skipped


def _cache_key(table: pd.DataFrame, model_version: int, settings: colour.ColourSettings) -> str:
    digest = hashlib.sha256(json.dumps({"model": int(model_version), "colour": settings.to_json()}).encode())
    for path in table["image_path"]:
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()


def catalog_features(
    table: pd.DataFrame,
    embedder: Embedder,
    cache: Path | None = None,
    settings: colour.ColourSettings = colour.DEFAULT_SETTINGS,
    batch_size: int = 64,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """({part: (N, D) rows} for FEATURE_PARTS, unreadable product_id -> why); the rows of the unreadable are zero.

    With `cache`, features stored there for the same model version, colour settings and image bytes are reused.
    """
    key = _cache_key(table, embedder.version, settings)
    if cache is not None and Path(cache).is_file():
        with np.load(cache, allow_pickle=False) as data:
            if str(data["key"]) == key:
                failed = json.loads(str(data["failed"]))
                return {part: data[part] for part in FEATURE_PARTS}, failed
    both = VectorLayout.with_weights(int(embedder.embedding_dim), {BACKBONE: 1.0, COLOUR: 1.0})  # colour parts
    n = len(table)
    features = {
        BACKBONE: np.zeros((n, int(embedder.embedding_dim)), np.float32),
        COLOUR: np.zeros((n, colour.DIMENSION), np.float32),
        BANDS: np.zeros((n, colour.BAND_DIMENSION), np.float32),
    }
    failed: dict[str, str] = {}
    paths = table["image_path"].tolist()
    for start in range(0, n, batch_size):
        images, rows = [], []
        for row in range(start, min(n, start + batch_size)):
            try:
                images.append(load_image(Path(paths[row])))
                rows.append(row)
            except ImageError as exc:
                failed[str(table["product_id"].iloc[row])] = str(exc)
        if not images:
            continue
        parts = image_parts(images, embedder.embed(images), both)
        features[BACKBONE][rows] = parts[BACKBONE]
        features[COLOUR][rows] = parts[COLOUR]
        features[BANDS][rows] = colour.band_descriptors(images, settings)
    if cache is not None:
        with atomic_path(Path(cache)) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, key=np.asarray(key), failed=np.asarray(json.dumps(failed)), **features)
    return features, failed


def protocol_masks(splits: np.ndarray, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, gallery rows) of a protocol of PROTOCOLS; every query is in the gallery."""
    queries, gallery = PROTOCOLS[protocol]
    query_mask = np.isin(splits, list(queries))
    return query_mask, query_mask | np.isin(splits, list(gallery))


def score_similarities(
    table: pd.DataFrame,
    similarity_of: callable,
    usable: np.ndarray,
    splits: np.ndarray,
    protocol: str,
    categories: Sequence[str],
    k: int = metrics.K,
) -> list[metrics.CategoryScores]:
    """Per category, same-type@k and same-colour@k of the protocol's queries.

    `similarity_of(rows)` gives the (len(rows), len(rows)) similarity of those catalog rows; `usable` marks
    the products whose features could be computed.
    """
    query_mask, gallery_mask = protocol_masks(splits, protocol)
    results = []
    for category in categories:
        rows = np.flatnonzero(gallery_mask & usable & (table["category"].to_numpy() == category))
        if len(rows) < 2:
            continue
        found = metrics.neighbours_by_similarity(similarity_of(rows), k)
        is_query = query_mask[rows]
        types = table["article_type"].to_numpy()[rows]
        families = table["colour_family"].to_numpy()[rows]
        type_precision = metrics.label_precision(found, types)
        colour_precision = metrics.label_precision(found, families)
        type_chance, colour_chance = metrics.chance_precision(types), metrics.chance_precision(families)
        results.append(
            metrics.CategoryScores(
                category=category,
                products=int(is_query.sum()),
                same_type=metrics.summarise(type_precision[is_query], type_chance[is_query]),
                same_colour=metrics.summarise(colour_precision[is_query], colour_chance[is_query]),
            )
        )
    return results


def score_vectors(
    table: pd.DataFrame,
    vectors: np.ndarray,
    usable: np.ndarray,
    splits: np.ndarray,
    protocol: str,
    categories: Sequence[str],
    k: int = metrics.K,
) -> list[metrics.CategoryScores]:
    """`score_similarities` with the cosine of `vectors` (N, D) unit rows, one per catalog row."""
    return score_similarities(
        table, lambda rows: vectors[rows] @ vectors[rows].T, usable, splits, protocol, categories, k
    )


def scores_json(scores: Sequence[metrics.CategoryScores]) -> Mapping[str, object]:
    return {s.category: s.to_json() for s in scores}
