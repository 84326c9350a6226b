"""Catalog embeddings -> one k-NN index per category -> retrieval evaluation (DeepFashion2 and the demo shop)."""

import json
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from fashion_pipeline.defs.resources import DataPathsResource, MlflowResource
from fashion_pipeline.lib.catalog.catalog import absolute_image_paths
from fashion_pipeline.lib.common.atomic import atomic_dir, write_json
from fashion_pipeline.lib.retrieval import embeddings, knn, retrieval_eval, retrieval_metrics
from fashion_pipeline.lib.training import tracking

GROUP = "retrieval"
UNIT_NORM_TOLERANCE = 1e-3
EVALUATION_FILE = "retrieval.json"


def _load_embedder(model_dir: Path) -> Any:
    from fashion_pipeline.lib.training.embedder import load_embedder

    return load_embedder(model_dir)


def _load_detector(model_dir: Path) -> Any:
    from fashion_pipeline.lib.training.detector import load_detector

    return load_detector(model_dir)


def _champion_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: materialize the garment_classifier asset")
    return json.loads(path.read_text())


def _read_products(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: materialize the product_catalog asset")
    return pd.read_parquet(path)


def _failures_md(failed: dict[str, str], limit: int = 20) -> str:
    lines = ["| product_id | why |", "|---|---|"]
    lines += [f"| {product_id} | {reason} |" for product_id, reason in list(failed.items())[:limit]]
    if len(failed) > limit:
        lines.append(f"| ... | {len(failed) - limit} more |")
    return "\n".join(lines)


# --- catalog_embeddings -------------------------------------------------------------------------------------


class EmbeddingConfig(dg.Config):
    batch_size: int = Field(default=64, description="Images per forward pass of the embedding model.")


def _embedding_checks(
    table: pd.DataFrame, catalog: pd.DataFrame, stats: embeddings.EmbedStats, dimension: int, version: int
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
    kinds={"tensorflow", "parquet"},
    deps=[dg.AssetKey("product_catalog"), dg.AssetKey("garment_classifier")],
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
    catalog = _read_products(data.products)
    embedder = _load_embedder(data.classifier_dir)
    previous = None
    if data.embeddings.is_file():
        try:
            previous = embeddings.read_embeddings(data.embeddings)
        except (ValueError, OSError, pa.ArrowException) as exc:
            context.log.warning(f"{data.embeddings} is unreadable ({exc}); embedding every product again")
    # Catalog rows keep image paths relative to the data root.
    on_disk = absolute_image_paths(catalog, data.root)
    table, stats = embeddings.embed_catalog(on_disk, embedder, previous, batch_size=config.batch_size)
    embeddings.write_embeddings(table, data.embeddings, embedder.embedding_dim, failed=stats.failed)
    if stats.full_rebuild_reason:
        context.log.info(stats.full_rebuild_reason)
    return dg.MaterializeResult(
        metadata={
            "rows": len(table),
            "embedded_now": stats.embedded,
            "reused": stats.reused,
            "failed_images": len(stats.failed),
            "model_version": int(embedder.version),
            "path": dg.MetadataValue.path(str(data.embeddings)),
        },
        check_results=_embedding_checks(table, catalog, stats, int(embedder.embedding_dim), int(embedder.version)),
    )


# --- knn_index ------------------------------------------------------------------------------------------------


class _KeepPreviousIndex(Exception):
    """Leaves the atomic swap without replacing the served indexes."""


class IndexConfig(dg.Config):
    backend: Literal["auto", "exact", "faiss-ivf"] = Field(
        default="auto",
        description=f"auto: exact below {knn.APPROXIMATE_MIN_COUNT:,} products in a category, faiss IVF from there.",
    )
    nprobe: int = Field(default=knn.DEFAULT_NPROBE, description="IVF lists searched per query (faiss-ivf only).")


@dg.asset(
    group_name=GROUP,
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
    champion = _champion_metadata(data.classifier_dir)
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
                    )
                )
            # Checked before the swap: indexes that disagree with the catalog or the champion never replace
            # the ones the app is serving.
            problems = knn.consistency_problems(
                tmp,
                table,
                _read_products(data.products),
                model_version=int(champion["registered_version"]),
                dimension=int(champion["embedding_dim"]),
                failed=list(table.attrs.get("failed", {})),
            )
            if problems:
                raise _KeepPreviousIndex
    except _KeepPreviousIndex:
        pass
    by_category = "\n".join(f"| {m.category} | {m.count} | {m.backend} | {m.model_version} |" for m in manifests)
    return dg.MaterializeResult(
        metadata={
            "products": sum(m.count for m in manifests),
            "uncategorised": int(table["category"].isna().sum()),
            "by_category": dg.MetadataValue.md(
                "| category | products | backend | model version |\n|---|---|---|---|\n" + by_category
            ),
            "model_version": int(champion["registered_version"]),
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


# --- retrieval_evaluation -----------------------------------------------------------------------------------


class EvaluationConfig(dg.Config):
    detection_conf: float = Field(default=0.25, description="Detector score threshold, as the app uses.")
    warn_below_consumer_top20: float = Field(
        default=0.3, description="The check warns when consumer-to-shop top-20 (detected boxes) is below this."
    )
    warn_below_exact_top10: float = Field(
        default=0.5, description="The check warns when demo-shop exact-product top-10 (detected) is below this."
    )
    batch_size: int = Field(default=64, description="Crops per forward pass of the embedding model.")


def _metrics_md(report: retrieval_eval.RetrievalReport) -> str:
    rows = []
    for task, ks in (("c2s", retrieval_metrics.CONSUMER_TO_SHOP_KS), ("exact", retrieval_eval.EXACT_PRODUCT_KS)):
        for boxes in ("gt", "detected"):
            values = [report.metrics.get(f"{task}_{boxes}_top{k}") for k in retrieval_metrics.CONSUMER_TO_SHOP_KS]
            if all(v is None for v in values):
                continue
            cells = [f"{v:.3f}" if v is not None else "" for v in values]
            chance = report.chance.get(f"{task}_{boxes}_top{max(ks)}")
            name = {"c2s": "consumer-to-shop", "exact": "exact product (demo shop)"}[task]
            rows.append(
                f"| {name} | {boxes} | " + " | ".join(cells) + f" | {'' if chance is None else f'{chance:.3f}'} |"
            )
    header = "| task | boxes | top-1 | top-5 | top-10 | top-20 | random ranking at the last k |\n|---|---|---|---|---|---|---|"
    return header + "\n" + "\n".join(rows)


@dg.asset(
    group_name=GROUP,
    kinds={"mlflow"},
    deps=[
        knn_index,
        dg.AssetKey("garment_items"),
        dg.AssetKey("garment_detector"),
        dg.AssetKey("garment_classifier"),
        dg.AssetKey("product_catalog"),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "retrieval_quality",
            asset="retrieval_evaluation",
            description=(
                "Warns when top-k accuracy falls below the thresholds set in the asset's config: the models "
                "still serve, but shoppers get worse matches. Compare the run with earlier ones in MLflow and "
                "retrain (more data, pretrained weights) before lowering a threshold."
            ),
        )
    ],
)
def retrieval_evaluation(
    config: EvaluationConfig, paths: DataPathsResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """Consumer-to-shop top-k on DeepFashion2 validation pairs and exact-product top-k on the demo shop."""
    data = paths.get()
    if not data.garment_items.is_file():
        raise FileNotFoundError(f"{data.garment_items} does not exist: materialize the garment_items asset")
    items = pd.read_parquet(data.garment_items)
    embedder = _load_embedder(data.classifier_dir)
    detector = _load_detector(data.detector_dir)
    indexes = knn.load_indexes(data.index_dir)
    stale = {c: i.manifest.model_version for c, i in indexes.items() if i.manifest.model_version != embedder.version}
    if stale:
        raise ValueError(
            f"indexes {stale} were built by another model version than the champion's {embedder.version}: "
            "rematerialize catalog_embeddings and knn_index"
        )
    report = retrieval_eval.evaluate_retrieval(
        items,
        embedder.embed,
        detector,
        products=_read_products(data.products),
        indexes=indexes,
        detection_conf=config.detection_conf,
        batch_size=config.batch_size,
    )
    params = {
        "embedding_model_version": int(embedder.version),
        "detector_model_version": int(getattr(detector, "version", 0)),
        "detection_conf": config.detection_conf,
        "protocol": "deepfashion2-consumer-to-shop; exact-product demo_shop",
    }
    result = {"params": params, **report.to_json()}
    write_json(result, data.evaluation_dir / EVALUATION_FILE)
    target = tracking.TrackingTarget(mlflow.tracking_uri, mlflow.experiment_name)
    with tracking.training_run(target, run_name="retrieval-evaluation", tags={"stage": "retrieval"}) as run:
        import mlflow as mlflow_lib

        mlflow_lib.log_params(params)
        mlflow_lib.log_metrics(
            {
                **report.metrics,
                **{f"chance_{name}": value for name, value in report.chance.items()},
                **{f"count_{name}": float(value) for name, value in report.counts.items()},
            }
        )
        mlflow_lib.log_dict(result, EVALUATION_FILE)
        run_url = target.run_url(run.info.experiment_id, run.info.run_id)

    c2s = report.metrics.get("c2s_detected_top20", 0.0)
    exact = report.metrics.get("exact_detected_top10")
    low = []
    if c2s < config.warn_below_consumer_top20:
        low.append(f"consumer-to-shop top-20 (detected) {c2s:.3f} < {config.warn_below_consumer_top20}")
    if exact is not None and exact < config.warn_below_exact_top10:
        low.append(f"exact-product top-10 (detected) {exact:.3f} < {config.warn_below_exact_top10}")
    if exact is None:
        low.append("no demo-shop product matches a validation user photo: exact-product top-k not measured")
    return dg.MaterializeResult(
        metadata={
            "metrics": dg.MetadataValue.md(_metrics_md(report)),
            "counts": dg.MetadataValue.json(report.counts),
            "c2s_detected_top20": round(c2s, 4),
            "mlflow_run": dg.MetadataValue.url(run_url),
            "path": dg.MetadataValue.path(str(data.evaluation_dir / EVALUATION_FILE)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="retrieval_quality",
                passed=not low,
                severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(low) if low else "top-k accuracy at or above the thresholds",
                metadata={
                    "c2s_detected_top20": round(c2s, 4),
                    "exact_detected_top10": round(exact, 4) if exact is not None else -1.0,
                },
            )
        ],
    )
