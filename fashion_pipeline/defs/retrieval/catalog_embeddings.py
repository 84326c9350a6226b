"""catalog_embeddings: each site's catalog products made into retrieval vectors, one partition per site.

A site's partition follows its own recrawl (not every other site's) and every new champion; knn_index
(assets.py) reads every site's file.
"""

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from fashion_pipeline.defs.catalog.assets import site_partitions
from fashion_pipeline.defs.resources import DataPathsResource
from fashion_pipeline.defs.retrieval import loading
from fashion_pipeline.lib.catalog.catalog import absolute_image_paths
from fashion_pipeline.lib.retrieval import embeddings, layout_store, shrink_guard, site_embeddings
from fashion_pipeline.lib.retrieval.layout import DEFAULT_COLOUR_WEIGHT, RetrievalEmbedder

GROUP = "retrieval"
UNIT_NORM_TOLERANCE = 1e-3


def _failures_md(failed: dict[str, str], limit: int = 20) -> str:
    lines = ["| product_id | why |", "|---|---|"]
    lines += [f"| {product_id} | {reason} |" for product_id, reason in list(failed.items())[:limit]]
    if len(failed) > limit:
        lines.append(f"| ... | {len(failed) - limit} more |")
    return "\n".join(lines)


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


def _dep_updated(key: str) -> dg.AutomationCondition:
    """The dependency `key` updated since the previous evaluation (by a run that did not also make the target).

    asset_matches rather than any_deps_match(...).allow(key): Dagster keys a since() condition's cursor by the
    names of its operators, and any_deps_match's leaves out the selection, so since() conditions over two
    different dependencies would share one cursor (seen: the site condition never fired).
    """
    return dg.AutomationCondition.asset_matches(
        key, dg.AutomationCondition.newly_updated() & ~dg.AutomationCondition.executed_with_root_target()
    )


# Plain eager() would re-embed every crawled site whenever product_catalog merges any one site's crawl (the
# catalog is one unpartitioned parent of every partition). A site's partition runs instead when its own crawl
# has reached the catalog: its catalog_images updated since the partition last ran, and product_catalog
# merged after that. A new champion arrives through retrieval_projection, which refits after every champion
# (the layout is tied to the champion's version), and re-embeds every site; a new site partition runs once
# its crawl exists. Never-crawled sites have missing catalog_images, so nothing runs for them.
site_crawl_merged = _dep_updated("catalog_images").since_last_handled() & _dep_updated("product_catalog").since(
    _dep_updated("catalog_images")
)
embeddings_follow_crawls_and_champion = (
    (
        dg.AutomationCondition.newly_missing().since_last_handled()
        | site_crawl_merged
        | _dep_updated("retrieval_projection").since_last_handled()
    )
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("follows its site's crawl and the champion")


@dg.asset(
    group_name=GROUP,
    # No pool: each partition writes its own site's file, so sites embed in parallel; the run queue's one run
    # per `dagster/partition` value keeps two runs off the same site (deploy/dagster.yaml).
    kinds={"tensorflow", "parquet"},
    partitions_def=site_partitions,
    deps=[
        dg.AssetKey("product_catalog"),
        dg.AssetKey("catalog_images"),
        dg.AssetKey("garment_classifier"),
        dg.AssetKey("retrieval_projection"),
    ],
    # Evaluated by the catalog stage's automation sensor.
    automation_condition=embeddings_follow_crawls_and_champion,
    check_specs=[
        dg.AssetCheckSpec(
            "one_row_per_product",
            asset="catalog_embeddings",
            blocking=True,
            description=(
                "Protects the indexes from duplicate or stale vectors: one embedding per catalog product of the "
                "partition's site (or the product listed as failed), none for products not in the catalog. If it "
                "fails, materialize the site's catalog_embeddings again (it re-reads the catalog); if it fails "
                "again, the catalog changed during the run."
            ),
        ),
        dg.AssetCheckSpec(
            "dimension_matches_model",
            asset="catalog_embeddings",
            blocking=True,
            description=(
                "Protects the search from mixing models: every vector comes from one model version, the "
                "champion's, with its embedding size. If it fails, the champion changed while embedding: "
                "materialize the site's catalog_embeddings again."
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
                "Protects the index from shrinking by accident: at most max_lost_share (5 %) of the site's "
                "products embedded last time may lose their embedding while the catalog still lists them. If it fails, "
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
    """One shop's catalog products embedded by the champion classifier; only new or changed images recomputed.

    One partition per site in crawl/sites.yaml, each written to embeddings/sites/<site>.parquet: a recrawl
    re-embeds its own site only, and sites embed in parallel.
    """
    data, site = paths.get(), context.partition_key
    everything = loading.read_products(data.products)
    catalog = everything[everything["site"].astype(str) == site]
    target = site_embeddings.site_file(data.embeddings_dir, site)
    backbone = loading.load_embedder(data.classifier_dir)
    stored = layout_store.catalog_layout(data.projection_dir, backbone, config.colour_weight)
    embedder = RetrievalEmbedder(backbone, stored.layout, stored.projection)
    previous = None
    if target.is_file():
        try:
            previous = embeddings.read_embeddings(target)
        except (ValueError, OSError, pa.ArrowException) as exc:
            context.log.warning(f"{target} is unreadable ({exc}); embedding every product of {site} again")
    # Catalog rows keep image paths relative to the data root.
    on_disk = absolute_image_paths(catalog, data.root)
    table, stats = embeddings.embed_catalog(on_disk, embedder, previous, batch_size=config.batch_size)
    lost = shrink_guard.shrink_problem(
        [] if previous is None else previous["product_id"],
        table["product_id"],
        catalog["product_id"],
        config.max_lost_share,
        f"last embeddings of {site}",
    )
    embeddings.write_embeddings(table, target, embedder.embedding_dim, stats.failed, embedder.layout)
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
            "path": dg.MetadataValue.path(str(target)),
        },
        check_results=_embedding_checks(
            table, catalog, stats, int(embedder.embedding_dim), int(embedder.version), lost
        ),
    )
