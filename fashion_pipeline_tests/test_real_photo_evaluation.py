"""real_photo_evaluation: the champions scored on the sources' test photos, as the `evaluate` command scores."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
import yaml

from fashion_pipeline_tests.fixtures_training import TrainedModels, materialization_metadata


def _test_sources(trained: TrainedModels, root: Path) -> Path:
    """A class-folder source and a YOLO source whose test splits are the tiny dataset's validation files."""
    classes = root / "garments" / "test"
    for category in ("shirt", "short", "dress"):
        for crop in sorted((trained.paths.crops_dir / "validation" / category).glob("*.jpg"))[:3]:
            (classes / category).mkdir(parents=True, exist_ok=True)
            shutil.copy(crop, classes / category / crop.name)
    street = root / "street"
    shutil.copytree(trained.paths.yolo_dir / "images" / "val", street / "images")
    shutil.copytree(trained.paths.yolo_dir / "labels" / "val", street / "labels")
    identity = "".join(f"{c},{c}\n" for c in ("shirt", "outwear", "short", "skirt", "dress"))
    (root / "garments.csv").write_text("class,target5\n" + identity)
    ids = "".join(f"{i},{c},{c}\n" for i, c in enumerate(("shirt", "outwear", "short", "skirt", "dress")))
    (root / "street.csv").write_text("source_class_id,source_class,target5\n" + ids)
    sources = {
        "sources": [
            {
                "name": "garments",
                "task": "classifier",
                "format": "class_folders",
                "mapping": "garments.csv",
                "splits": {"test": {"folder": "garments/test"}},
            },
            {
                "name": "street",
                "task": "detector",
                "format": "yolo",
                "mapping": "street.csv",
                "splits": {"test": {"folder": "street"}},
            },
        ]
    }
    path = root / "sources.yaml"
    path.write_text(yaml.safe_dump(sources, sort_keys=False))
    return path


def _materialize(trained: TrainedModels, sources_file: str, config: dict | None = None):
    import dagster as dg

    from fashion_pipeline.defs.photos.assets import labelled_photos
    from fashion_pipeline.defs.resources import DataPathsResource, MlflowResource
    from fashion_pipeline.defs.training.real_photo_evaluation import real_photo_evaluation

    return dg.materialize(
        [labelled_photos, real_photo_evaluation],
        resources={
            "paths": DataPathsResource(data_dir=str(trained.paths.root), df2_root=""),
            "mlflow": MlflowResource(tracking_uri=trained.tracking_uri),
        },
        run_config={
            "ops": {
                "labelled_photos": {"config": {"sources_file": sources_file}},
                "real_photo_evaluation": {"config": config or {}},
            }
        },
    )


def _check(result):
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "good_on_real_photos"]
    return check


def test_scores_match_the_evaluate_command_and_are_logged(trained_models: TrainedModels, tmp_path: Path) -> None:
    from fashion_pipeline.lib.training.evaluation import evaluate_classifier, evaluate_detector

    sources_file = _test_sources(trained_models, tmp_path)
    result = _materialize(trained_models, str(sources_file), {"min_accuracy": 0.0, "min_map50": 0.0})

    metadata = materialization_metadata(result, "real_photo_evaluation")
    by_folder_classifier = evaluate_classifier(
        trained_models.paths.classifier_dir, tmp_path / "garments", tmp_path / "garments.csv"
    )
    by_folder_detector = evaluate_detector(
        trained_models.paths.detector_dir, tmp_path / "street", tmp_path / "street.csv"
    )
    assert by_folder_classifier["images"] == 9
    assert metadata["classifier_garments_accuracy"] == pytest.approx(by_folder_classifier["accuracy"], abs=1e-4)
    assert metadata["detector_street_mAP50"] == pytest.approx(by_folder_detector["mAP50"], abs=1e-4)
    assert _check(result).passed

    mlflow.set_tracking_uri(trained_models.tracking_uri)
    run_id = metadata["mlflow_run"].rstrip("/").rsplit("/", 1)[-1]
    run = mlflow.get_run(run_id)
    assert run.data.metrics["classifier.garments.photos"] == 9
    assert run.data.metrics["detector.street.mAP50"] == pytest.approx(by_folder_detector["mAP50"], abs=1e-4)
    artifacts = {
        a.path for folder in ("plots", "examples") for a in mlflow.MlflowClient().list_artifacts(run_id, folder)
    }
    assert {
        "plots/classifier.garments.confusion_matrix.png",
        "examples/classifier.garments.png",
        "examples/detector.street.png",
    } <= artifacts


def test_warns_below_the_thresholds_and_without_test_photos(trained_models: TrainedModels, tmp_path: Path) -> None:
    import dagster as dg

    sources_file = _test_sources(trained_models, tmp_path)
    check = _check(_materialize(trained_models, str(sources_file), {"min_accuracy": 1.01}))
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert "classifier garments: accuracy" in check.description

    empty = tmp_path / "none.yaml"
    empty.write_text("sources: []\n")
    check = _check(_materialize(trained_models, str(empty)))
    assert not check.passed
    assert "no labelled test photos" in check.description
