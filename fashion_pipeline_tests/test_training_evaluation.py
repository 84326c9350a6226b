"""Scoring models on a labelled folder: the mAP arithmetic, the mapping files, and the evaluate command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fashion_pipeline.lib.training.evaluation import Box, detection_metrics, read_class_mapping
from fashion_pipeline_tests.fixtures_training import TrainedModels


def test_perfect_detections_score_one_and_a_confident_false_positive_costs() -> None:
    truth = [[Box((0, 0, 10, 10), "shirt"), Box((20, 20, 40, 40), "dress")], [Box((5, 5, 15, 25), "shirt")]]
    perfect = [[Box(t.box, t.category, 0.9) for t in image] for image in truth]
    metrics = detection_metrics(perfect, truth)
    # 0.995, not 1: the 101-point interpolation ends at precision 0, exactly as ultralytics computes it.
    assert metrics["mAP50"] == pytest.approx(0.995)
    assert metrics["mAP50-95"] == pytest.approx(0.995)
    assert set(metrics["per_class"]) == {"shirt", "dress"}  # classes without boxes are left out of the mean
    assert metrics["per_class"]["shirt"]["boxes"] == 2

    # A shirt where there is none, more confident than the real ones: precision 1/2 at the first hit.
    with_false_positive = [[*perfect[0], Box((60, 60, 80, 80), "shirt", 0.95)], perfect[1]]
    shirt = detection_metrics(with_false_positive, truth)["per_class"]["shirt"]
    assert shirt["AP50"] == pytest.approx(0.67, abs=0.01)
    assert shirt["precision"] == pytest.approx(2 / 3)
    assert shirt["recall"] == pytest.approx(1.0)

    # A box at IoU 0.62 counts at the thresholds 0.5, 0.55 and 0.6, not at 0.65 to 0.95.
    loose = [[Box((0, 0, 10, 10), "dress", 0.9)]]
    dress = detection_metrics(loose, [[Box((0, 0, 10, 6.2), "dress")]])["per_class"]["dress"]
    assert dress["AP50"] == pytest.approx(0.995)
    assert dress["AP50-95"] == pytest.approx(0.3 * 0.995)


def test_mapping_files_of_both_formats(real_data: Path, tmp_path: Path) -> None:
    folders = read_class_mapping(real_data / "clothing-dataset-small" / "labels_5class.csv")
    assert folders == {
        "dress": "dress",
        "longsleeve": "shirt",
        "outwear": "outwear",
        "pants": "short",
        "shirt": "shirt",
        "shorts": "short",
        "skirt": "skirt",
        "t-shirt": "shirt",
    }
    ids = read_class_mapping(real_data / "colorful-fashion-yolo" / "class_map_5class.csv", by_id=True)
    assert ids["2"] == "outwear" and ids["4"] == "short" and ids["8"] is None

    bad = tmp_path / "bad.csv"
    bad.write_text("class,target5\njeans,trousers\n")
    with pytest.raises(ValueError, match="target 'trousers' is not one of"):
        read_class_mapping(bad)


def _user_folders(trained: TrainedModels, root: Path) -> tuple[Path, Path]:
    """A class-folder tree named the user's way (plus a class outside the 5) and a YOLO folder whose
    class ids differ from the model's, each with its mapping CSV."""
    classes = root / "photos"
    names = {"shirt": "tee", "short": "jeans", "dress": "dress"}
    for category, folder in names.items():
        for crop in sorted((trained.paths.crops_dir / "validation" / category).glob("*.jpg"))[:2]:
            (classes / "test" / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(crop, classes / "test" / folder / crop.name)
    (classes / "test" / "hat").mkdir()
    shutil.copy(crop, classes / "test" / "hat" / "hat.jpg")
    (classes / "labels_5class.csv").write_text(
        "image,class10,target5\nx,tee,shirt\nx,jeans,short\nx,dress,dress\nx,hat,\n"
    )

    yolo = root / "street"
    source = trained.paths.yolo_dir
    shutil.copytree(source / "images" / "val", yolo / "images")
    (yolo / "labels").mkdir()
    for label in (source / "labels" / "val").glob("*.txt"):
        # Model class k becomes source id k + 1; source id 0 is a bag outside the 5 categories.
        lines = [
            f"{int(line.split()[0]) + 1} {' '.join(line.split()[1:])}" for line in label.read_text().split("\n") if line
        ]
        (yolo / "labels" / label.name).write_text("\n".join([*lines, "0 0.5 0.5 0.1 0.1"]) + "\n")
    (yolo / "class_map_5class.csv").write_text(
        "source_class_id,source_class,target5\n0,bag,\n1,top,shirt\n2,jacket,outwear\n3,pants,short\n"
        "4,skirt,skirt\n5,dress,dress\n"
    )
    return classes, yolo


def test_evaluate_command_scores_the_champions(
    trained_models: TrainedModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fashion_pipeline.cli import main

    classes, yolo = _user_folders(trained_models, tmp_path)
    monkeypatch.setenv("FASHION_DATA_DIR", str(trained_models.paths.root))
    out = tmp_path / "results.json"

    assert (
        main(["evaluate", "--classifier-folder", str(classes), "--detector-folder", str(yolo), "--json", str(out)]) == 0
    )

    results = json.loads(out.read_text())
    classifier = results["classifier"]
    assert classifier["images"] == 6
    assert classifier["skipped_outside_categories"] == {"hat": 1}
    assert {c: v["support"] for c, v in classifier["per_class"].items()} == {
        "shirt": 2,
        "outwear": 0,
        "short": 2,
        "skirt": 0,
        "dress": 2,
    }
    assert sum(map(sum, classifier["confusion_matrix"]["rows_true"])) == 6
    detector = results["detector"]
    val_labels = list((trained_models.paths.yolo_dir / "labels" / "val").glob("*.txt"))
    assert detector["images"] == len(val_labels)
    boxes = sum(len([line for line in p.read_text().split("\n") if line]) for p in val_labels)
    assert sum(c["boxes"] for c in detector["per_class"].values()) == boxes  # the bags are not ground truth
    assert 0.0 <= detector["mAP50"] <= 1.0


def test_evaluate_reads_the_real_folders(trained_models: TrainedModels, real_data: Path) -> None:
    """The staged real photos parse with their own mapping files (figures are meaningless for a tiny model)."""
    from fashion_pipeline.lib.training.evaluation import evaluate_classifier, evaluate_detector

    classifier = evaluate_classifier(trained_models.paths.classifier_dir, real_data / "clothing-dataset-small")
    assert classifier["images"] == 287
    assert {c: v["support"] for c, v in classifier["per_class"].items()} == {
        "shirt": 150,
        "outwear": 38,
        "short": 72,
        "skirt": 12,
        "dress": 15,
    }
    detector = evaluate_detector(trained_models.paths.detector_dir, real_data / "colorful-fashion-yolo")
    assert detector["images"] == 200
    assert {c: v["boxes"] for c, v in detector["per_class"].items()} == {
        "shirt": 135,
        "outwear": 65,
        "short": 83,
        "skirt": 66,
        "dress": 50,
    }


def test_evaluate_without_folders_says_what_to_give(capsys: pytest.CaptureFixture[str]) -> None:
    from fashion_pipeline.cli import main

    assert main(["evaluate"]) == 2
    assert "--classifier-folder" in capsys.readouterr().out
