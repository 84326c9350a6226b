"""The two models, each trained as one MLflow run and promoted to champion only through a blocking check."""

import enum
import tempfile
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from fashion_pipeline.defs.resources import DataPathsResource, MlflowResource
from fashion_pipeline.lib.training import classifier_model, classifier_training, detector_training, tracking, weights

GROUP = "training"
PROFILE_HELP = (
    "demo: the generated sample on 2 CPU cores in minutes (from scratch when no weights are found); real: real "
    "labelled photos on 2 CPU cores from pretrained weights; full: the original settings, real DF2 on a GPU."
)
UNSET = "empty = the profile's value"
WEIGHTS_DIR_HELP = f"Folder of pretrained weights files for pretrained='auto'; empty = ${weights.WEIGHTS_DIR_ENV}."
WEIGHTS_CHECK = "pretrained_weights_used"


class Profile(enum.Enum):
    demo = "demo"
    real = "real"
    full = "full"


class ClassifierConfig(dg.Config):
    profile: Profile = Field(default=Profile.demo, description=PROFILE_HELP)
    architecture: str | None = Field(
        default=None, description=f"'mobilenet_v2', 'mobilenet_v3_large' or 'mobilenet_v3_small'; {UNSET}."
    )
    pretrained: str | None = Field(
        default=None,
        description=(
            "'auto' (weights folder, Keras' cache or download, else random), 'imagenet' (Keras' cache or download), "
            f"'none' (random) or a local weights file; {UNSET}."
        ),
    )
    weights_dir: str | None = Field(default=None, description=f"{WEIGHTS_DIR_HELP} {UNSET}.")
    input_size: int | None = Field(default=None, description=f"Pixels per side; {UNSET}.")
    resize: str | None = Field(
        default=None, description=f"'pad' (fit and pad to a square) or 'crop' (fill, centre square); {UNSET}."
    )
    epochs: int | None = Field(
        default=None,
        description=f"Most epochs of the head on frozen features, or end to end from scratch; {UNSET}.",
    )
    fine_tune_epochs: int | None = Field(
        default=None, description=f"Epochs fine-tuning the top backbone layers after the head, 0 = none; {UNSET}."
    )
    fine_tune_layers: int | None = Field(default=None, description=f"Backbone layers unfrozen to fine-tune; {UNSET}.")
    fine_tune_learning_rate: float | None = Field(default=None, description=UNSET)
    batch_size: int | None = Field(default=None, description=UNSET)
    learning_rate: float | None = Field(default=None, description=UNSET)
    patience: int | None = Field(default=None, description=f"Epochs without improvement before stopping; {UNSET}.")
    min_accuracy: float | None = Field(default=None, description=f"Champion gate on validation accuracy; {UNSET}.")
    seed: int | None = Field(default=None, description=UNSET)

    def settings(self) -> classifier_model.ClassifierSettings:
        return classifier_model.settings_for(self.profile.value, **self.model_dump(exclude={"profile"}))


class DetectorConfig(dg.Config):
    profile: Profile = Field(default=Profile.demo, description=PROFILE_HELP)
    model: str | None = Field(
        default=None, description=f"Ultralytics model name (yolo11n, yolov5nu, ...), model yaml or .pt; {UNSET}."
    )
    pretrained: str | None = Field(
        default=None,
        description=(
            "'auto' (weights folder, Ultralytics' cache or download, else random), 'coco' (<model>.pt from "
            f"Ultralytics' cache or download), 'none' (random) or a local .pt file; {UNSET}."
        ),
    )
    weights_dir: str | None = Field(default=None, description=f"{WEIGHTS_DIR_HELP} {UNSET}.")
    freeze: int | None = Field(
        default=None, description=f"First layers kept frozen (10 = backbone), 0 = none; {UNSET}."
    )
    imgsz: int | None = Field(default=None, description=f"Training and serving image size (multiple of 32); {UNSET}.")
    epochs: int | None = Field(default=None, description=UNSET)
    batch: int | None = Field(default=None, description=UNSET)
    time_minutes: float | None = Field(
        default=None, description=f"Training time budget, 0 = none (ultralytics fits its schedule); {UNSET}."
    )
    optimizer: str | None = Field(default=None, description=f"'auto', 'AdamW', 'SGD', ...; {UNSET}.")
    lr0: float | None = Field(default=None, description=f"Initial learning rate (not with 'auto'); {UNSET}.")
    device: str | None = Field(default=None, description=f"'cpu', '0' for the first GPU, '' for auto; {UNSET}.")
    min_map50: float | None = Field(default=None, description=f"Champion gate on validation mAP50; {UNSET}.")
    seed: int | None = Field(default=None, description=UNSET)

    def settings(self) -> detector_training.DetectorSettings:
        return detector_training.settings_for(self.profile.value, **self.model_dump(exclude={"profile"}))


def _check_specs(asset: str, metric: str, setting: str, folder: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            "champion_gate",
            asset=asset,
            blocking=True,
            description=(
                f"Protects the app from a worse model: validation {metric} reaches `{setting}` and is not below "
                f"the current champion's; only then does the alias `champion` move to the new version and the "
                f"model get published to {folder}. If it fails, the previous champion keeps serving and the new "
                "version stays `candidate` in MLflow: compare the runs there, then train longer, with more data "
                "or pretrained weights."
            ),
        ),
        dg.AssetCheckSpec(
            WEIGHTS_CHECK,
            asset=asset,
            description=(
                "Warns when the model trained from random initialisation because no pretrained weights were "
                "found (`pretrained_source` says where it looked): set `weights_dir` or FASHION_WEIGHTS_DIR."
            ),
        ),
    ]


def _result(
    outcome: tracking.TrainingOutcome, decision: tracking.ChampionDecision, seconds: float, path: Path
) -> dg.MaterializeResult:
    per_class = "\n".join(f"| {k} | {v:.3f} |" for k, v in outcome.metrics.items())
    return dg.MaterializeResult(
        metadata={
            outcome.gate_metric: round(outcome.gate_value, 4),
            "metrics": dg.MetadataValue.md(f"| metric | value |\n|---|---|\n{per_class}"),
            "mlflow_run": dg.MetadataValue.url(outcome.run_url),
            "registered_version": outcome.version,
            "pretrained_source": outcome.pretrained_source,
            "training_seconds": round(seconds, 1),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="champion_gate",
                passed=decision.passed,
                description=decision.reason,
                metadata={
                    "threshold": decision.threshold,
                    "champion_before": decision.champion_before or 0,
                    "champion_after": decision.champion_after or 0,
                    "champion_path": dg.MetadataValue.path(str(path)),
                },
            ),
            dg.AssetCheckResult(
                check_name=WEIGHTS_CHECK,
                passed=weights.is_used(outcome.pretrained_source),
                severity=dg.AssetCheckSeverity.WARN,
                description=outcome.pretrained_source,
            ),
        ],
    )


@dg.asset(
    group_name=GROUP,
    pool="training",
    kinds={"tensorflow", "mlflow"},
    deps=[dg.AssetKey("garment_crops")],
    check_specs=_check_specs("garment_classifier", "accuracy", "min_accuracy", "data/models/classifier"),
)
def garment_classifier(
    config: ClassifierConfig, paths: DataPathsResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """MobileNet garment classifier and embedder trained on the crops (MLflow run + registered model)."""
    data = paths.get()
    settings = config.settings()
    target = tracking.TrackingTarget(mlflow.tracking_uri, mlflow.experiment_name)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="garment_classifier-") as work:
        outcome = classifier_training.train_and_log(
            data.crops_manifest, settings, target, Path(work), config.profile.value
        )
        decision = tracking.gate_champion(
            outcome, settings.min_accuracy, data.classifier_dir, {"profile": config.profile.value}
        )
    return _result(outcome, decision, time.monotonic() - started, data.classifier_dir)


@dg.asset(
    group_name=GROUP,
    pool="training",
    kinds={"pytorch", "onnx", "mlflow"},
    deps=[dg.AssetKey("yolo_dataset")],
    check_specs=_check_specs("garment_detector", "mAP50", "min_map50", "data/models/detector"),
)
def garment_detector(config: DetectorConfig, paths: DataPathsResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    """Ultralytics YOLO garment detector trained on the YOLO dataset, exported to ONNX (MLflow run + model)."""
    data = paths.get()
    settings = config.settings()
    target = tracking.TrackingTarget(mlflow.tracking_uri, mlflow.experiment_name)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="garment_detector-") as work:
        outcome = detector_training.train_and_log(
            data.yolo_data_yaml, settings, target, Path(work), config.profile.value
        )
        decision = tracking.gate_champion(
            outcome, settings.min_map50, data.detector_dir, {"profile": config.profile.value}
        )
    return _result(outcome, decision, time.monotonic() - started, data.detector_dir)
