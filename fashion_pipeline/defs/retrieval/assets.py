"""Catalog embeddings -> one k-NN index per category (the evaluations are in evaluation.py and real_catalog.py)."""

from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from fashion_pipeline.defs.resources import DataPathsResource
from fashion_pipeline.defs.retrieval import loading
from fashion_pipeline.lib.catalog.catalog import absolute_image_paths
from fashion_pipeline.lib.common.atomic import atomic_dir
from fashion_pipeline.lib.retrieval import embeddings, index_checks, knn, layout_store, shrink_guard
from fashion_pipeline.lib.retrieval.layout import DEFAULT_COLOUR_WEIGHT, RetrievalEmbedder

GROUP = "retrieval"
UNIT_NORM_TOLERANCE = 1e-3


def _failures_md(failed: dict[str, str], limit: int = 20) -> str:
    lines = ["| product_id | why |", "|---|---|"]
    lines += [f"| {product_id} | {reason} |" for product_id, reason in list(failed.items())[:limit]]
    if len(failed) > limit:
        lines.append(f"| ... | {len(failed) - limit} more |")
    return "\n".join(lines)


# --- catalog_embeddings -------------------------------------------------------------------------------------


class EmbeddingConfig(dg.Config):
    batch_size: int = Field(default=64, description="Images per forward pass of the embedding model.")
    colour_weight: float = Field(
        default=DEFAULT_COLOUR_WEIGHT,
        description="Share of the cosine given to the colour descriptor when retrieval_projection chose no layout.",
    )
    max_lost_share: float = Field(
        default=shrink_guard.DEFAULT_MAX_LOST_SHARE,
        description="Share of the last embedded products that may lose their embedding while still in the catalog.",
    )


def _embedding_checks(
    table: pd.DataFrame,
    catalog: pd.DataFrame,
    stats: embeddings.EmbedStats,
    dimension: int,
    version: int,
    lost: str | None = None,
) -> list[dg.AssetCheckResult]:
    ids = table["product_id"]
    catalog_ids = set(catalog["product_id"].astype(str))
    unknown = sorted(set(ids) - catalog_ids)
    accounted = len(table) + len(stats.failed) == len(catalog_ids)
    matrix = embeddings.embedding_matrix(table) if len(table) else np.zeros((0, dimension), np.float32)
    finite = bool(np.isfinite(matrix).all())
    norms = np.linalg.norm(matrix, axis=1) if finite else np.zeros(0)
    worst = float(np.abs(norms - 1).max()) if len(norms) else 0.0
    versions = sorted({int(v) for v in table["model_version"]})
    return [
        dg.AssetCheckResult(
            check_name="one_row_per_product",
            passed=bool(not ids.duplicated().any() and not unknown and accounted),
            description="Each catalog product has exactly one row, or is listed as failed (image unreadable).",
            metadata={
                "rows": len(table),
                "catalog_products": len(catalog_ids),
                "failed_images": len(stats.failed),
                "duplicates": int(ids.duplicated().sum()),
                "not_in_catalog": dg.MetadataValue.json(unknown[:20]),
            },
        ),
        dg.AssetCheckResult(
            check_name="dimension_matches_model",
            passed=matrix.shape[1] == dimension and versions in ([], [version]),
            metadata={"dimension": int(matrix.shape[1]), "model_dimension": dimension, "versions": str(versions)},
        ),
        dg.AssetCheckResult(
            check_name="finite_unit_vectors",
            passed=finite and worst <= UNIT_NORM_TOLERANCE,
            metadata={"all_finite": finite, "max_norm_error": worst},
        ),
        dg.AssetCheckResult(
            check_name="catalog_not_lost",
            passed=lost is None,
            description=lost or "No more than the allowed share of the last embedded products lost its embedding.",
        ),
        dg.AssetCheckResult(
            check_name="all_images_embedded",
            passed=not stats.failed,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"{len(stats.failed)} products have no embedding (image missing or unreadable); they stay out "
                "of the index and are retried on the next run."
                if stats.failed
                else "Every catalog product's image was embedded."
            ),
            metadata={"failed": dg.MetadataValue.md(_failures_md(stats.failed))} if stats.failed else {},
        ),
    ]


@dg.asset(
    group_name=GROUP,
    pool="retrieval",
    kinds={"tensorflow", "parquet"},
    deps=[dg.AssetKey("product_catalog"), dg.AssetKey("garment_classifier"), dg.AssetKey("retrieval_projection")],
    # Follows every recrawl and every new champion (the catalog stage's automation sensor evaluates it).
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[
        dg.AssetCheckSpec(
            "one_row_per_product",
            asset="catalog_embeddings",
            blocking=True,
            description=(
                "Protects the indexes from duplicate or stale vectors: one embedding per catalog product (or the "
                "product listed as failed), none for products not in the catalog. If it fails, materialize catalog_embeddings again (it "
                "re-reads the catalog); if it fails again, the catalog changed during the run."
            ),
        ),
        dg.AssetCheckSpec(
            "dimension_matches_model",
            asset="catalog_embeddings",
            blocking=True,
            description=(
                "Protects the search from mixing models: every vector comes from one model version, the "
                "champion's, with its embedding size. If it fails, the champion changed while embedding: "
                "materialize catalog_embeddings again."
            ),
        ),
        dg.AssetCheckSpec(
            "finite_unit_vectors",
            asset="catalog_embeddings",
            blocking=True,
            description=(
                "Protects the cosine ranking: every vector is finite with length 1. NaN or zero vectors come "
                "from a broken model export: retrain or restore the champion classifier, then re-embed."
            ),
        ),
        dg.AssetCheckSpec(
            "catalog_not_lost",
            asset="catalog_embeddings",
            blocking=True,
            description=(
                "Protects the index from shrinking by accident: at most max_lost_share (5 %) of the products "
                "embedded last time may lose their embedding while the catalog still lists them. If it fails, "
                "catalog/images or the data root moved or became unreadable: restore it and materialize again."
            ),
        ),
        dg.AssetCheckSpec(
            "all_images_embedded",
            asset="catalog_embeddings",
            description=(
                "Warns (does not block) when some product images could not be read: those products cannot be "
                "found by photo. They are retried on the next run; if they keep failing, recrawl their site."
            ),
        ),
    ],
)
def catalog_embeddings(
    context: dg.AssetExecutionContext, config: EmbeddingConfig, paths: DataPathsResource
) -> dg.MaterializeResult:
    """Each catalog product's image embedded by the champion classifier; only new or changed images recomputed."""
    data = paths.get()
    catalog = loading.read_products(data.products)
    backbone = loading.load_embedder(data.classifier_dir)
    stored = layout_store.catalog_layout(data.projection_dir, backbone, config.colour_weight)
    embedder = RetrievalEmbedder(backbone, stored.layout, stored.projection)
    previous = None
    if data.embeddings.is_file():
        try:
            previous = embeddings.read_embeddings(data.embeddings)
        except (ValueError, OSError, pa.ArrowException) as exc:
            context.log.warning(f"{data.embeddings} is unreadable ({exc}); embedding every product again")
    # Catalog rows keep image paths relative to the data root.
    on_disk = absolute_image_paths(catalog, data.root)
    table, stats = embeddings.embed_catalog(on_disk, embedder, previous, batch_size=config.batch_size)
    lost = shrink_guard.shrink_problem(
        [] if previous is None else previous["product_id"],
        table["product_id"],
        catalog["product_id"],
        config.max_lost_share,
        "last embeddings",
    )
    embeddings.write_embeddings(table, data.embeddings, embedder.embedding_dim, stats.failed, embedder.layout)
    if stats.full_rebuild_reason:
        context.log.info(stats.full_rebuild_reason)
    return dg.MaterializeResult(
        metadata={
            "rows": len(table),
            "embedded_now": stats.embedded,
            "reused": stats.reused,
            "failed_images": len(stats.failed),
            "model_version": int(embedder.version),
            "layout": f"{embedder.layout.layout_id}: {embedder.layout.describe()}",
            "layout_chosen_by": stored.note,
            "path": dg.MetadataValue.path(str(data.embeddings)),
        },
        check_results=_embedding_checks(
            table, catalog, stats, int(embedder.embedding_dim), int(embedder.version), lost
        ),
    )


# --- knn_index ------------------------------------------------------------------------------------------------


class _KeepPreviousIndex(Exception):
    """Leaves the atomic swap without replacing the served indexes."""


class IndexConfig(dg.Config):
    backend: Literal["auto", "exact", "faiss-ivf", "faiss-ivfpq"] = Field(
        default="auto",
        description=f"auto: exact below {knn.APPROXIMATE_MIN_COUNT:,} products in a category, faiss IVF from there, "
        "IVF-PQ from compressed_min_count.",
    )
    nprobe: int = Field(default=knn.DEFAULT_NPROBE, description="IVF lists searched per query (faiss only).")
    compressed_min_count: int = Field(
        default=knn.COMPRESSED_MIN_COUNT,
        description="From this many products in a category, IVF-PQ: pq_bytes of memory per product instead of "
        "4 x the embedding size (the full vectors stay on disk for the exact re-rank).",
    )
    pq_bytes: int = Field(
        default=knn.knn_faiss.DEFAULT_PQ_BYTES, description="IVF-PQ code bytes per product; must divide the dimension."
    )
    max_lost_share: float = Field(
        default=shrink_guard.DEFAULT_MAX_LOST_SHARE,
        description="Share of the served index's products a rebuild may lose while the catalog still lists them.",
    )


@dg.asset(
    group_name=GROUP,
    pool="retrieval",
    kinds={"numpy", "faiss"},
    deps=[catalog_embeddings],
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[
        dg.AssetCheckSpec(
            "index_matches_catalog_and_model",
            asset="knn_index",
            blocking=True,
            description=(
                "Protects the app from answering with the wrong products: every index was built from the "
                "champion model's embeddings of exactly the catalog's products (blocking: a failing index never "
                "replaces the served one). If it fails, materialize catalog_embeddings, then knn_index."
            ),
        )
    ],
)
def knn_index(config: IndexConfig, paths: DataPathsResource) -> dg.MaterializeResult:
    """One cosine k-NN index per category over the catalog embeddings, stamped with the model version."""
    data = paths.get()
    table = embeddings.read_embeddings(data.embeddings)
    champion = loading.champion_metadata(data.classifier_dir)
    categorised = table[table["category"].notna()]
    manifests = []
    problems: list[str] = []
    try:
        with atomic_dir(data.index_dir) as tmp:
            for category, group in categorised.groupby("category", sort=True):
                if not str(category).replace("_", "").replace("-", "").isalnum():
                    raise ValueError(f"category {category!r} cannot name an index folder; fix categories.yaml")
                manifests.append(
                    knn.build_index(
                        embeddings.embedding_matrix(group),
                        group["product_id"].tolist(),
                        tmp / str(category),
                        category=str(category),
                        model_version=int(group["model_version"].max()),
                        backend=config.backend,
                        nprobe=config.nprobe,
                        compressed_min_count=config.compressed_min_count,
                        pq_bytes=config.pq_bytes,
                        layout=table.attrs["layout"],
                    )
                )
            layout_store.copy_projection(data.projection_dir, table.attrs["layout"], tmp)
            # Checked before the swap: indexes that disagree with the catalog or the champion never replace
            # the ones the app is serving.
            problems = index_checks.consistency_problems(
                tmp,
                table,
                loading.read_products(data.products),
                model_version=int(champion["registered_version"]),
                dimension=int(champion["embedding_dim"]),
                failed=list(table.attrs.get("failed", {})),
            )
            products = loading.read_products(data.products)["product_id"]
            lost = shrink_guard.shrink_problem(
                shrink_guard.served_product_ids(data.index_dir),
                categorised["product_id"],
                products,
                config.max_lost_share,
                "served index",
            )
            problems += [lost] if lost else []
            if problems:
                raise _KeepPreviousIndex
    except _KeepPreviousIndex:
        pass
    discarded = sum(m.count for m in manifests)
    if problems:
        # The metadata describes what the app serves: the kept indexes, not the discarded build.
        manifests = shrink_guard.served_manifests(data.index_dir)
    layout = f"{table.attrs['layout'].layout_id}: {table.attrs['layout'].describe()}"
    model_version = int(champion["registered_version"])
    if problems:
        layout = "; ".join(sorted({f"{m.vector_layout.layout_id}: {m.vector_layout.describe()}" for m in manifests}))
        model_version = max((int(m.model_version) for m in manifests), default=0)
    by_category = "\n".join(
        f"| {m.category} | {m.count} | {m.backend} | {m.params.get('bytes_per_vector', 4 * m.dimension):,.0f} | "
        f"{m.model_version} |"
        for m in manifests
    )
    return dg.MaterializeResult(
        metadata={
            "products": sum(m.count for m in manifests),
            "uncategorised": int(table["category"].isna().sum()),
            "by_category": dg.MetadataValue.md(
                "| category | products | backend | memory per product (bytes) | model version |\n|---|---|---|---|---|\n"
                + by_category
            ),
            "model_version": model_version,
            "layout": layout,
            "served": "the previous indexes (the new build was discarded)" if problems else "this build",
            "discarded_build_products": discarded if problems else 0,
            "path": dg.MetadataValue.path(str(data.index_dir)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="index_matches_catalog_and_model",
                passed=not problems,
                description=(
                    "; ".join(problems) + " (the previous indexes were kept)"
                    if problems
                    else "indexes, embeddings, catalog and champion agree"
                ),
                metadata={"problems": len(problems), "replaced_previous_index": not problems},
            )
        ],
    )
