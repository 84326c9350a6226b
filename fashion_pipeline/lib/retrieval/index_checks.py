"""Whether the k-NN indexes, the embeddings table, the catalog and the champion model agree (knn_index's check).

Indexes that disagree with any of them would answer with the wrong products or compare a query with vectors
made another way, so `knn_index` runs this before its new indexes replace the served ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fashion_pipeline.lib.retrieval.knn import METRIC, PRODUCT_IDS_FILE, IndexManifest, KnnIndexError, read_manifest
from fashion_pipeline.lib.retrieval.layout import LayoutError, VectorLayout


def _embeddings_layout(embeddings: pd.DataFrame, problems: list[str]) -> VectorLayout | None:
    """The one layout of the table's vectors; a problem when its rows disagree with each other or with it."""
    layout = embeddings.attrs.get("layout")
    row_layouts = sorted(set(embeddings["layout_id"].astype(str))) if "layout_id" in embeddings else []
    if len(row_layouts) > 1:
        problems.append(
            f"the embeddings mix vector layouts {row_layouts}: rematerialize catalog_embeddings (it re-embeds "
            "every product with one layout)"
        )
    if layout is not None and row_layouts and row_layouts != [layout.layout_id]:
        problems.append(
            f"the embeddings' rows carry layout(s) {row_layouts} but the file records {layout.layout_id}: "
            "rematerialize catalog_embeddings"
        )
    return layout


def _index_problems(
    where: str, manifest: IndexManifest, layout: VectorLayout | None, model_version: int, dimension: int
) -> list[str]:
    problems = []
    if manifest.model_version != int(model_version):
        problems.append(
            f"{where} was built from model version {manifest.model_version}, the champion is version "
            f"{model_version}: rematerialize catalog_embeddings and knn_index"
        )
    try:
        built = manifest.vector_layout
    except LayoutError as exc:
        return [*problems, f"{where}: {exc}"]
    if built.backbone_dim != int(dimension):
        problems.append(f"{where} has embedding dimension {built.backbone_dim}, the champion model {dimension}")
    if manifest.dimension != built.dimension:
        problems.append(f"{where} holds {manifest.dimension}-d vectors, its layout makes {built.dimension}-d ones")
    if layout is not None and built.layout_id != layout.layout_id:
        problems.append(
            f"{where} was built with vector layout {built.layout_id} ({built.describe()}), the embeddings have "
            f"{layout.layout_id} ({layout.describe()}): rematerialize knn_index"
        )
    if manifest.metric != METRIC:
        problems.append(f"{where} uses metric {manifest.metric!r}, not {METRIC!r}")
    return problems


def consistency_problems(
    index_dir: Path,
    embeddings: pd.DataFrame,
    catalog: pd.DataFrame,
    model_version: int,
    dimension: int,
    failed: Sequence[str] = (),
) -> list[str]:
    """Every way the indexes under `index_dir`, the embeddings table (its `attrs["layout"]` included), the
    catalog and the champion model (`model_version`, embedding `dimension`) disagree, as sentences naming what
    to rematerialize; [] when they agree.

    `failed`: catalog products that could not be embedded (unreadable image): expected to be missing.
    """
    problems: list[str] = []
    index_dir = Path(index_dir)
    versions = sorted({int(v) for v in embeddings["model_version"]})
    if versions and versions != [int(model_version)]:
        problems.append(
            f"embeddings come from model version(s) {versions}, the champion is version {model_version}: "
            "rematerialize catalog_embeddings"
        )
    layout = _embeddings_layout(embeddings, problems)
    categorised = embeddings[embeddings["category"].notna()]
    expected = {str(c): set(g["product_id"].astype(str)) for c, g in categorised.groupby("category")}
    found: dict[str, IndexManifest] = {}
    if index_dir.is_dir():
        for child in sorted(index_dir.iterdir()):
            if child.is_dir() and not child.name.startswith("."):
                try:
                    found[child.name] = read_manifest(child)
                except (FileNotFoundError, KnnIndexError, json.JSONDecodeError) as exc:
                    problems.append(f"{child}: unreadable index ({exc}): rematerialize knn_index")
    for category in sorted(set(expected) - set(found)):
        problems.append(f"no index for category {category!r} ({len(expected[category])} products)")
    for category, manifest in found.items():
        where = f"index {category!r}"
        if category not in expected:
            problems.append(f"{where} has no products in the embeddings table: rematerialize knn_index")
            continue
        if manifest.category != category:
            problems.append(f"{where}: manifest names category {manifest.category!r}")
        problems += _index_problems(where, manifest, layout, model_version, dimension)
        ids_path = index_dir / category / PRODUCT_IDS_FILE
        indexed = set(pd.read_parquet(ids_path)["product_id"].astype(str)) if ids_path.is_file() else set()
        if len(indexed) != manifest.count:
            problems.append(f"{where}: {len(indexed)} product ids but the manifest says {manifest.count}")
        if indexed != expected[category]:
            problems.append(
                f"{where} differs from the embeddings: {len(expected[category] - indexed)} products missing, "
                f"{len(indexed - expected[category])} extra: rematerialize knn_index"
            )
    failed_ids = set(map(str, failed))
    catalog_ids = {
        str(c): set(g["product_id"].astype(str)) for c, g in catalog[catalog["category"].notna()].groupby("category")
    }
    for category in sorted(set(catalog_ids) | set(expected)):
        in_catalog = catalog_ids.get(category, set())
        embedded = expected.get(category, set())
        not_covered = in_catalog - embedded - failed_ids
        gone = embedded - in_catalog
        if not_covered:
            problems.append(
                f"the catalog has {len(not_covered)} {category!r} products that are neither embedded nor "
                "known to have failed: rematerialize catalog_embeddings and knn_index"
            )
        if gone:
            problems.append(
                f"{len(gone)} embedded {category!r} products are no longer in the catalog (or changed "
                "category): rematerialize catalog_embeddings and knn_index"
            )
    return problems
