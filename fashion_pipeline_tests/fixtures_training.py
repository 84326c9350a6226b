"""Fixtures for the training tests: both models trained once on the tiny dataset, offline, in-process."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline_tests.network_guard import recorded_attempts

# One epoch on a handful of small images: enough to exercise every step, not to learn anything. From random
# initialisation, as the demo profile offline (test_training_pretrained covers pretrained="auto").
CLASSIFIER_TINY = {
    "architecture": "mobilenet_v3_small",
    "pretrained": "none",
    "input_size": 64,
    "epochs": 1,
    "batch_size": 16,
}
DETECTOR_TINY = {"pretrained": "none", "imgsz": 64, "epochs": 1, "batch": 8, "time_minutes": 0.0}


def make_training_root(dataset: DataPaths, root: Path) -> DataPaths:
    """A data root of its own (models get published here) over the tiny dataset's crops and YOLO files.

    The crops are linked (the manifest holds absolute paths); the YOLO folder is copied, because
    ultralytics writes label caches beside the labels and the shared dataset is read-only.
    """
    root.mkdir(parents=True)
    (root / "crops").symlink_to(dataset.crops_dir, target_is_directory=True)
    shutil.copytree(dataset.yolo_dir, root / "yolo")
    data_yaml = root / "yolo" / "data.yaml"
    data = yaml.safe_load(data_yaml.read_text())
    data |= {"path": str(root / "yolo"), "train": str(root / "yolo/images/train"), "val": str(root / "yolo/images/val")}
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return DataPaths(root=root)


def materialize_training(
    paths: DataPaths, tracking_uri: str, asset_name: str, config: dict[str, Any] | None = None
) -> Any:
    """Materialize one training asset in-process; returns the Dagster result (failures not raised)."""
    import dagster as dg

    from fashion_pipeline.defs.resources import DataPathsResource, MlflowResource
    from fashion_pipeline.defs.training import assets

    asset = {"garment_classifier": assets.garment_classifier, "garment_detector": assets.garment_detector}[asset_name]
    return dg.materialize(
        [asset],
        resources={
            "paths": DataPathsResource(data_dir=str(paths.root), df2_root=""),
            "mlflow": MlflowResource(tracking_uri=tracking_uri),
        },
        run_config={"ops": {asset_name: {"config": config or {}}}},
        raise_on_error=False,
    )


def materialization_metadata(result: Any, asset_name: str) -> dict[str, Any]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == asset_name]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def run_id_of(result: Any, asset_name: str) -> str:
    return materialization_metadata(result, asset_name)["mlflow_run"].rstrip("/").rsplit("/", 1)[-1]


@dataclass
class TrainedModels:
    paths: DataPaths
    tracking_uri: str
    detector_result: Any
    classifier_result: Any
    network_attempts: list[str]
    runs_after_training: list[Any]  # MLflow runs of the experiment right after both trainings
    active_run_after: Any
    autolog_enabled_after: list[str]  # MLflow autologging integrations left switched on


@pytest.fixture(scope="session")
def trained_models(tiny_dataset: DataPaths, tmp_path_factory: pytest.TempPathFactory) -> TrainedModels:
    """Detector, then classifier (the order in which YOLO's autolog used to catch Keras), both promoted."""
    import mlflow

    base = tmp_path_factory.mktemp("training")
    paths = make_training_root(tiny_dataset, base / "data")
    tracking_uri = f"sqlite:///{base / 'mlruns' / 'mlflow.db'}"
    with recorded_attempts() as attempts:
        detector_result = materialize_training(
            paths, tracking_uri, "garment_detector", {**DETECTOR_TINY, "min_map50": 0.0}
        )
        classifier_result = materialize_training(
            paths, tracking_uri, "garment_classifier", {**CLASSIFIER_TINY, "min_accuracy": 0.0}
        )
    from mlflow.utils.autologging_utils import AUTOLOGGING_INTEGRATIONS, autologging_is_disabled

    autolog_on = [name for name in AUTOLOGGING_INTEGRATIONS if not autologging_is_disabled(name)]
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    experiment = client.get_experiment_by_name("fashion-pipeline")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return TrainedModels(
        paths, tracking_uri, detector_result, classifier_result, attempts, runs, mlflow.active_run(), autolog_on
    )
