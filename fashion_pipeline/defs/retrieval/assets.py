"""Every site's catalog embeddings -> one k-NN index per category (catalog_embeddings is in catalog_embeddings.py,
the evaluations in evaluation.py and real_catalog.py)."""

from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from fashion_pipeline.defs.catalog.assets import catalog_follows_crawls, site_partitions
from fashion_pipeline.defs.resources import DataPathsResource
from fashion_pipeline.defs.retrieval import loading
from fashion_pipeline.defs.retrieval.catalog_embeddings import GROUP, catalog_embeddings
from fashion_pipeline.lib.common.atomic import atomic_dir
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.retrieval import embeddings, index_checks, knn, layout_store, shrink_guard, site_embeddings

__all__ = ["GROUP", "catalog_embeddings", "knn_index"]


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
    deps=[catalog_embeddings],  # every site partition (AllPartitionMapping)
    # Rebuilt after any site's embeddings update, once none is in progress; like product_catalog, not held
    # back by sites that were never crawled (their partitions stay missing).
    automation_condition=catalog_follows_crawls,
    check_specs=[
        dg.AssetCheckSpec(
            "index_matches_catalog_and_model",
            asset="knn_index",
            blocking=True,
            description=(
                "Protects the app from answering with the wrong products: every index was built from the "
                "champion model's embeddings of exactly the catalog's products (blocking: a failing index never "
                "replaces the served one), and every site's embeddings were made alike. If it fails, materialize "
                "catalog_embeddings (for the sites the description names), then knn_index."
            ),
        )
    ],
)
def knn_index(context: dg.AssetExecutionContext, config: IndexConfig, paths: DataPathsResource) -> dg.MaterializeResult:
    """One cosine k-NN index per category over every site's catalog embeddings, stamped with the model version."""
    data = paths.get()
    sites = site_partitions.get_partition_keys()
    tables = site_embeddings.read_site_tables(data.embeddings_dir, sites)
    if not tables:
        raise dg.Failure(
            f"no site's embeddings under {data.embeddings_dir}: materialize catalog_embeddings for a crawled site"
        )
    for name in site_embeddings.unread_files(data.embeddings_dir, sites):
        context.log.warning(f"{data.embeddings_dir / name} belongs to no site in crawl/sites.yaml: not indexed")
    champion = loading.champion_metadata(data.classifier_dir)
    model_version = int(champion["registered_version"])
    products = loading.read_products(data.products)
    # Sites whose partition never ran contribute nothing; the catalog is held against the sites that have one.
    embedded_catalog = products[products["site"].astype(str).isin(tables)]
    problems = site_embeddings.disagreements(tables, model_version)
    table = None if problems else site_embeddings.combine(tables)
    manifests = (
        [] if table is None else _build_indexes(data, table, embedded_catalog, products, champion, config, problems)
    )
    discarded = sum(m.count for m in manifests)
    if problems:
        # The metadata describes what the app serves: the kept indexes, not the discarded build.
        manifests = shrink_guard.served_manifests(data.index_dir)
        layout = "; ".join(sorted({f"{m.vector_layout.layout_id}: {m.vector_layout.describe()}" for m in manifests}))
        model_version = max((int(m.model_version) for m in manifests), default=0)
    else:
        layout = f"{table.attrs['layout'].layout_id}: {table.attrs['layout'].describe()}"
    by_category = "\n".join(
        f"| {m.category} | {m.count} | {m.backend} | {m.params.get('bytes_per_vector', 4 * m.dimension):,.0f} | "
        f"{m.model_version} |"
        for m in manifests
    )
    return dg.MaterializeResult(
        metadata={
            "products": sum(m.count for m in manifests),
            "uncategorised": sum(int(t["category"].isna().sum()) for t in tables.values()),
            "by_category": dg.MetadataValue.md(
                "| category | products | backend | memory per product (bytes) | model version |\n|---|---|---|---|---|\n"
                + by_category
            ),
            "by_site": _by_site(tables, products),
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


def _build_indexes(
    data: DataPaths,
    table: pd.DataFrame,
    catalog: pd.DataFrame,
    products: pd.DataFrame,
    champion: dict,
    config: IndexConfig,
    problems: list[str],
) -> list[knn.IndexManifest]:
    """Build every category's index into a new folder that replaces the served one only if it passes the checks;
    what disagrees is appended to `problems` (and the served indexes stay)."""
    categorised = table[table["category"].notna()]
    manifests = []
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
            problems += index_checks.consistency_problems(
                tmp,
                table,
                catalog,
                model_version=int(champion["registered_version"]),
                dimension=int(champion["embedding_dim"]),
                failed=list(table.attrs.get("failed", {})),
            )
            lost = shrink_guard.shrink_problem(
                shrink_guard.served_product_ids(data.index_dir),
                categorised["product_id"],
                products["product_id"],
                config.max_lost_share,
                "served index",
            )
            problems += [lost] if lost else []
            if problems:
                raise _KeepPreviousIndex
    except _KeepPreviousIndex:
        pass
    return manifests


def _by_site(tables: dict[str, pd.DataFrame], products: pd.DataFrame) -> dg.MetadataValue:
    """Products indexed per site, and the catalog's sites that have no embeddings yet (not searchable)."""
    in_catalog = products["site"].astype(str).value_counts()
    rows = [
        f"| {site} | {len(table)} | {'/'.join(str(v) for v in sorted(set(table['model_version'])))} |"
        for site, table in tables.items()
    ]
    rows += [
        f"| {site} | 0 of {count} (catalog_embeddings not materialized) | |"
        for site, count in in_catalog.items()
        if site not in tables
    ]
    return dg.MetadataValue.md("| site | products | model version |\n|---|---|---|\n" + "\n".join(rows))
