"""retrieval_evaluation: DeepFashion2 consumer-to-shop top-k and exact product on the demo shop."""

import dagster as dg
import pandas as pd
from pydantic import Field

from fashion_pipeline.defs.resources import DataPathsResource, MlflowResource
from fashion_pipeline.defs.retrieval import loading
from fashion_pipeline.defs.retrieval.assets import GROUP, knn_index
from fashion_pipeline.lib.common.atomic import write_json
from fashion_pipeline.lib.retrieval import knn, retrieval_eval, retrieval_metrics
from fashion_pipeline.lib.training import tracking

EVALUATION_FILE = "retrieval.json"


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
    pool="retrieval",
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
    detector = loading.load_detector(data.detector_dir)
    indexes = knn.load_indexes(data.index_dir)
    embedder = loading.index_embedder(data, indexes)
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
        products=loading.read_products(data.products),
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
