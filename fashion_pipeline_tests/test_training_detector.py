"""The garment detector: one tiny training run, tracked and exported; the ONNX serving path; the gate."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline_tests.fixtures_training import (
    DETECTOR_TINY,
    TrainedModels,
    materialization_metadata,
    materialize_training,
    run_id_of,
)


def test_training_run_is_tracked_exported_and_promoted(trained_models: TrainedModels) -> None:
    result = trained_models.detector_result
    assert result.success
    client = mlflow.MlflowClient(trained_models.tracking_uri, registry_uri=trained_models.tracking_uri)
    run = client.get_run(run_id_of(result, "garment_detector"))

    assert run.info.status == "FINISHED"
    assert run.data.params["model"] == "yolo11n"
    assert run.data.params["imgsz"] == "64"
    assert run.data.params["pretrained"] == "none"
    assert len(run.data.params["data_version"]) == 16
    assert {"mAP50", "mAP50-95", *(f"AP50_{c}" for c in CATEGORIES)} <= set(run.data.metrics)
    assert client.get_metric_history(run.info.run_id, "metrics/mAP50")[0].step == 1
    assert client.get_metric_history(run.info.run_id, "train/box_loss")
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/results.png"} <= plots
    files = {a.path for a in client.list_artifacts(run.info.run_id, "files")}
    assert {"files/detector.pt", "files/metadata.json"} <= files

    version = client.get_model_version_by_alias("garment-detector", "champion")
    assert version.run_id == run.info.run_id
    assert materialization_metadata(result, "garment_detector")["registered_version"] == int(version.version)

    model_dir = trained_models.paths.detector_dir
    assert {p.name for p in model_dir.iterdir()} == {"detector.onnx", "detector.pt", "metadata.json"}
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["mlflow_run_id"] == run.info.run_id
    assert metadata["registered_model"] == "garment-detector"
    assert metadata["registered_version"] == int(version.version)
    assert metadata["classes"] == list(CATEGORIES)
    assert metadata["input_size"] == 64


def test_published_onnx_model_detects_without_torch(trained_models: TrainedModels) -> None:
    from fashion_pipeline.lib.training.detector import Detection, load_detector

    detector = load_detector(trained_models.paths.detector_dir)
    assert detector.classes == CATEGORIES
    image = Image.open(next((trained_models.paths.yolo_dir / "images" / "val").iterdir())).convert("RGB")
    # An untrained model scores low: a tiny threshold still exercises decoding, NMS and rescaling.
    detections = detector.detect(image, conf=1e-6, max_detections=20)
    assert detections == detector.detect(image, conf=1e-6, max_detections=20)
    assert 0 < len(detections) <= 20
    for detection in detections:
        assert isinstance(detection, Detection)
        x1, y1, x2, y2 = detection.box
        assert 0 <= x1 <= x2 <= image.width
        assert 0 <= y1 <= y2 <= image.height
        assert detection.category in CATEGORIES
    assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)


def _constant_onnx(path: Path, size: int, rows: list[list[float]]) -> None:
    """An ONNX model ignoring its input and returning fixed YOLO rows (xc, yc, w, h, 5 class scores)."""
    import onnx
    from onnx import TensorProto, helper

    output = np.array(rows, np.float32).T[None]  # (1, 9, anchors)
    image = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])
    result = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))
    constant = helper.make_node(
        "Constant",
        [],
        ["output0"],
        value=helper.make_tensor("rows", TensorProto.FLOAT, output.shape, output.flatten().tolist()),
    )
    graph = helper.make_graph([constant], "constant", [image], [result])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_detections_are_mapped_back_through_the_letterbox(tmp_path: Path) -> None:
    from fashion_pipeline.lib.training.detector import load_detector

    # A 200x100 photo letterboxed into 64x64: scale 0.32, 16 px of grey above and below.
    _constant_onnx(
        tmp_path / "detector.onnx",
        64,
        [
            [32, 32, 32, 16, 0.9, 0, 0, 0, 0],  # a shirt in the middle
            [33, 32, 32, 16, 0.8, 0, 0, 0, 0],  # the same shirt again: suppressed
            [33, 32, 32, 16, 0, 0, 0, 0.7, 0],  # same place, other class: kept
            [10, 20, 4, 4, 0, 0.1, 0, 0, 0],  # below the confidence threshold
        ],
    )
    (tmp_path / "metadata.json").write_text(
        json.dumps({"classes": list(CATEGORIES), "input_size": 64, "registered_version": 3})
    )
    detector = load_detector(tmp_path)
    detections = detector.detect(Image.new("RGB", (200, 100)), conf=0.25)

    assert detector.version == 3
    assert [(d.category, round(d.score, 2)) for d in detections] == [("shirt", 0.9), ("skirt", 0.7)]
    np.testing.assert_allclose(detections[0].box, (50, 25, 150, 75), atol=1e-4)


def test_gate_below_threshold_keeps_the_champion(trained_models: TrainedModels) -> None:
    client = mlflow.MlflowClient(trained_models.tracking_uri, registry_uri=trained_models.tracking_uri)
    champion_before = int(client.get_model_version_by_alias("garment-detector", "champion").version)
    published = (trained_models.paths.detector_dir / "metadata.json").read_text()

    result = materialize_training(
        trained_models.paths, trained_models.tracking_uri, "garment_detector", {**DETECTOR_TINY, "min_map50": 1.01}
    )

    assert not result.success  # a failed blocking check fails the step, so nothing downstream runs
    [check] = [e for e in result.get_asset_check_evaluations() if e.asset_check_key.name == "champion_gate"]
    assert not check.passed
    assert "below the threshold 1.0100" in check.description
    candidate = client.get_model_version_by_alias("garment-detector", "candidate")
    assert int(candidate.version) == materialization_metadata(result, "garment_detector")["registered_version"]
    assert int(candidate.version) != champion_before
    assert int(client.get_model_version_by_alias("garment-detector", "champion").version) == champion_before
    assert (trained_models.paths.detector_dir / "metadata.json").read_text() == published
    assert client.get_run(run_id_of(result, "garment_detector")).info.status == "FINISHED"


def test_unknown_settings_are_clear_errors() -> None:
    from fashion_pipeline.lib.training import classifier_model, detector_training

    with pytest.raises(ValueError, match=r"pretrained='weights\.h5': use 'auto', 'imagenet', 'none'"):
        classifier_model.settings_for("demo", pretrained="weights.h5")
    with pytest.raises(ValueError, match=r"pretrained='best\.pt': use 'auto', 'coco', 'none'"):
        detector_training.settings_for("demo", pretrained="best.pt")
    with pytest.raises(ValueError, match="imgsz=100: YOLO needs a multiple of 32"):
        detector_training.settings_for("demo", imgsz=100)
    with pytest.raises(ValueError, match="profile='fast'"):
        detector_training.settings_for("fast")
