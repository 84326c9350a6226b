"""The champions scored on real photos they never saw: the test splits of the labelled photo sources."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from fashion_pipeline.defs.resources import DataPathsResource, MlflowResource
from fashion_pipeline.lib.common.previews import image_md
from fashion_pipeline.lib.training import real_photos, tracking

GROUP = "training"


class RealPhotoEvaluationConfig(dg.Config):
    min_accuracy: float = Field(default=0.85, description="Classifier accuracy below which the check warns.")
    min_map50: float = Field(default=0.5, description="Detector mAP50 below which the check warns.")


@dg.asset(
    group_name=GROUP,
    pool="training",
    kinds={"mlflow"},
    deps=[dg.AssetKey("garment_classifier"), dg.AssetKey("garment_detector"), dg.AssetKey("labelled_photos")],
    check_specs=[
        dg.AssetCheckSpec(
            "good_on_real_photos",
            asset="real_photo_evaluation",
            description=(
                "Warns when the champion classifier's accuracy or the champion detector's mAP50 on the real "
                "test photos is below its threshold, or when there were no labelled test photos to score "
                "(set FASHION_PHOTO_SOURCES). The champions keep serving: retrain with more or better data."
            ),
        )
    ],
)
def real_photo_evaluation(
    config: RealPhotoEvaluationConfig, paths: DataPathsResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """The champion classifier and detector scored on the test split of each labelled photo source."""
    data = paths.get()
    photos = pd.read_parquet(data.labelled_photos)
    scored: list[tuple[str, real_photos.RealPhotoScores]] = []
    for source, rows in real_photos.evaluation_rows(photos, "classifier").items():
        scored.append(("classifier", real_photos.score_classifier(data.classifier_dir, source, rows)))
    for source, rows in real_photos.evaluation_rows(photos, "detector").items():
        scored.append(("detector", real_photos.score_detector(data.detector_dir, source, rows)))

    target = tracking.TrackingTarget(mlflow.tracking_uri, mlflow.experiment_name)
    run_url = _log_to_mlflow(target, scored, data)
    headline = {"classifier": ("accuracy", config.min_accuracy), "detector": ("mAP50", config.min_map50)}
    below = [
        f"{model} {score.source}: {headline[model][0]} {score.metrics[headline[model][0]]:.3f} < {headline[model][1]}"
        for model, score in scored
        if score.metrics[headline[model][0]] < headline[model][1]
    ]
    table = "\n".join(
        f"| {model} | {score.source} | {score.images} | "
        + ", ".join(
            f"{k} {score.metrics[k]:.3f}" for k in ("accuracy", "macro_f1", "mAP50", "mAP50-95") if k in score.metrics
        )
        + " |"
        for model, score in scored
    )
    metadata: dict = {
        "scores": dg.MetadataValue.md("| model | source | photos | scores |\n|---|---|---|---|\n" + table),
        "mlflow_run": dg.MetadataValue.url(run_url),
    }
    for model, score in scored:
        metadata[f"{model}_{score.source}_{headline[model][0]}"] = round(score.metrics[headline[model][0]], 4)
        metadata[f"{model}_{score.source}_examples"] = dg.MetadataValue.md(
            image_md(real_photos.examples_grid(score.examples), f"{model} on {score.source}")
        )
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name="good_on_real_photos",
                passed=bool(scored) and not below,
                severity=dg.AssetCheckSeverity.WARN,
                description="no labelled test photos: set FASHION_PHOTO_SOURCES"
                if not scored
                else ("; ".join(below) or "every score reaches its threshold"),
            )
        ],
    )


def _log_to_mlflow(target: tracking.TrackingTarget, scored: list, data) -> str:
    """One MLflow run with every score (`<model>.<source>.<metric>`), confusion matrices and example grids."""
    import mlflow

    versions = {}
    for model, folder in (("classifier", data.classifier_dir), ("detector", data.detector_dir)):
        metadata_file = Path(folder) / "metadata.json"
        if metadata_file.exists():
            versions[f"{model}_version"] = json.loads(metadata_file.read_text()).get("registered_version", 0)
    with tracking.training_run(target, "real_photo_evaluation", {"kind": "evaluation"}) as run:
        mlflow.log_params({**versions, "sources": ",".join(sorted({s.source for _, s in scored})) or "none"})
        for model, score in scored:
            prefix = f"{model}.{score.source}"
            mlflow.log_metrics(
                {f"{prefix}.{k}": v for k, v in score.metrics.items()} | {f"{prefix}.photos": score.images}
            )
            if score.confusion is not None:
                figure = tracking.confusion_figure(score.confusion, score.classes, f"{score.source} (test photos)")
                mlflow.log_figure(figure, f"plots/{prefix}.confusion_matrix.png")
            mlflow.log_image(real_photos.examples_grid(score.examples), artifact_file=f"examples/{prefix}.png")
        return target.run_url(run.info.experiment_id, run.info.run_id)
