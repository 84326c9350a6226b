"""Pretrained weights without a hub: the `auto` order and its record, the backbones, the resize mode, and both
models trained from the real weights in ../shared/weights (WEIGHTS.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from PIL import Image

from fashion_pipeline.lib.common import frameworks
from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.common.images import load_image
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.training import classifier_model, detector_training, weights
from fashion_pipeline_tests.fixtures_training import (
    TrainedModels,
    make_training_root,
    materialization_metadata,
    materialize_training,
    run_id_of,
)
from fashion_pipeline_tests.network_guard import recorded_attempts

V2_FILE = "mobilenet_v2_1.00_224_imagenet_no_top.weights.h5"
V2_SHA256 = "d1a8dbb4a817a18c42e9136fff72b622bac0b4571dc224129e6a6b5cac188404"
YOLO_FILE = "yolov5nu_coco_backbone.pt"
YOLO_SHA256 = "f44acdbcdb6673849953e644d0e7d061a2ca9db41c00ad12381ed5cbaffe9f1c"
V3_SMALL_KERAS_NAME = "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"


# --- helpers ------------------------------------------------------------------------------------------


@pytest.fixture
def offline_keras(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Keras cache folder, and Keras' downloader failing as it does offline (without any network reach)."""
    frameworks.keras()  # torch before TensorFlow (STACK.md trap 1)
    from keras.src.utils import file_utils

    cache = tmp_path / "keras-cache"
    cache.mkdir()
    monkeypatch.setattr(weights, "keras_cache_dir", lambda: cache)

    def unreachable(fname: str, origin: str, *args: Any, **kwargs: Any) -> str:
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", unreachable)
    return cache


def _legacy_v3_small_weights(path: Path, seed: int) -> list[np.ndarray]:
    """A MobileNetV3Small backbone file in Keras' own cache format (HDF5 by layer), with seeded random weights."""
    keras = frameworks.keras()
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None, include_preprocessing=True
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    return model.get_weights()


def _small(architecture: str = "mobilenet_v3_small", **overrides: Any) -> classifier_model.ClassifierSettings:
    return classifier_model.settings_for("demo", architecture=architecture, input_size=32, **overrides)


def _same_weights(model: Any, expected: list[np.ndarray]) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(model.get_weights(), expected, strict=True))


# --- the auto order -----------------------------------------------------------------------------------


def test_auto_takes_the_weights_folder_then_the_keras_cache_then_random(
    offline_keras: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "weights"
    in_folder = _legacy_v3_small_weights(folder / V3_SMALL_KERAS_NAME, seed=1)
    in_cache = _legacy_v3_small_weights(offline_keras / V3_SMALL_KERAS_NAME, seed=2)

    # (a) the weights folder, by setting and by environment variable: the file and its exact bytes recorded.
    backbone, source = classifier_model.load_backbone(_small(weights_dir=str(folder)))
    assert source == weights.file_source(folder / V3_SMALL_KERAS_NAME)
    assert source.startswith(f"file:{folder / V3_SMALL_KERAS_NAME} sha256:")
    assert _same_weights(backbone, in_folder)
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(folder))
    assert classifier_model.load_backbone(_small())[1] == source
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV)

    # (b) nothing in the folder: Keras' own cache.
    (folder / V3_SMALL_KERAS_NAME).unlink()
    backbone, source = classifier_model.load_backbone(_small(weights_dir=str(folder)))
    assert source == f"framework cache:{offline_keras / V3_SMALL_KERAS_NAME}"
    assert _same_weights(backbone, in_cache)

    # (c) nothing cached and the download fails: random initialisation, saying where it looked and why.
    (offline_keras / V3_SMALL_KERAS_NAME).unlink()
    backbone, source = classifier_model.load_backbone(_small(weights_dir=str(folder)))
    assert source.startswith(
        f"none: no {V3_SMALL_KERAS_NAME} in {folder}; Keras' ImageNet weights for MobileNetV3Small"
    )
    assert "URL fetch failure" in source
    assert not weights.is_used(source)
    assert not _same_weights(backbone, in_cache)
    source = classifier_model.load_backbone(_small())[1]
    assert source.startswith("none: no weights folder (weights_dir and FASHION_WEIGHTS_DIR unset); Keras'")
    assert classifier_model.load_backbone(_small(pretrained="none"))[1] == "none: pretrained='none'"


def test_auto_gives_up_on_an_unreachable_network_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real download paths of both frameworks, against a network that refuses every connection."""
    from fashion_pipeline.lib.training.detector_model import _framework_checkpoint

    monkeypatch.setattr(weights, "keras_cache_dir", lambda: tmp_path)  # nothing cached
    with recorded_attempts() as attempts:
        source = classifier_model.load_backbone(_small(architecture="mobilenet_v3_large"))[1]
        with pytest.raises(ConnectionError, match=r"Download failure for .*yolo11n\.pt"):
            _framework_checkpoint("yolo11n")
    assert source.startswith("none: no weights folder")
    assert "MobileNetV3Large" in source
    assert any("storage.googleapis.com" in a for a in attempts)  # Keras' ImageNet files
    assert any("github.com" in a for a in attempts)  # Ultralytics' release assets
    assert not Path("yolo11n.pt").exists()


def test_explicit_choices_that_cannot_be_had_are_errors_naming_the_setting(offline_keras: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"pretrained='imagenet': Keras' ImageNet weights for MobileNetV3Small"):
        classifier_model.load_backbone(_small(pretrained="imagenet"))
    with pytest.raises(ValueError, match=r"weights_dir='/no/such/folder' is not a folder"):
        classifier_model.load_backbone(_small(weights_dir="/no/such/folder"))
    with pytest.raises(ValueError, match=r"architecture='small': use one of \['mobilenet_v2', "):
        classifier_model.settings_for("demo", architecture="small")
    with pytest.raises(ValueError, match=r"resize='stretch': use one of \['pad', 'crop'\]"):
        classifier_model.settings_for("real", resize="stretch")

    with pytest.raises(RuntimeError, match=r"pretrained='coco': Ultralytics' COCO checkpoint mymodel\.pt"):
        from fashion_pipeline.lib.training.detector_model import load_yolo

        load_yolo(detector_training.settings_for("demo", model="mymodel", pretrained="coco"))
    with pytest.raises(ValueError, match=r"model='missing\.pt' is not a file"):
        detector_training.settings_for("demo", model="missing.pt")
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"")
    with pytest.raises(ValueError, match=r"holds its own starting weights: leave pretrained='auto'"):
        detector_training.settings_for("demo", model=str(checkpoint), pretrained="none")
    with pytest.raises(ValueError, match="freeze=-1"):
        detector_training.settings_for("demo", freeze=-1)


def test_the_real_profiles_reach_the_dagster_config() -> None:
    from fashion_pipeline.defs.training import assets

    classifier = assets.ClassifierConfig(profile=assets.Profile.real, weights_dir="/w").settings()
    assert (classifier.architecture, classifier.resize, classifier.pretrained) == ("mobilenet_v2", "crop", "auto")
    assert (classifier.input_size, classifier.epochs, classifier.fine_tune_epochs, classifier.weights_dir) == (
        224,
        20,
        0,
        "/w",
    )
    detector = assets.DetectorConfig(profile=assets.Profile.real, freeze=3).settings()
    assert (detector.model, detector.pretrained, detector.imgsz, detector.freeze) == ("yolov5nu", "auto", 320, 3)
    assert {p.pretrained for p in classifier_model.PROFILES.values()} == {"auto"}
    assert {p.pretrained for p in detector_training.PROFILES.values()} == {"auto"}


# --- backbones and resizing ---------------------------------------------------------------------------


def test_mobilenet_v2_from_the_shared_file_matches_keras_reference(shared_weights: Path) -> None:
    """Our model (scaling inside, raw pixels in) gives the pooled features of Keras' MobileNetV2 fed
    `preprocess_input` images, with the same file loaded."""
    keras = frameworks.keras()
    file = shared_weights / V2_FILE
    settings = classifier_model.settings_for("real", pretrained=str(file), input_size=96)
    built = classifier_model.build_classifier(settings)
    assert built.pretrained_source == f"file:{file.resolve()} sha256:{V2_SHA256}"
    features = keras.Model(built.model.inputs, built.model.get_layer("embedding").output)

    reference = keras.applications.MobileNetV2(include_top=False, weights=None, pooling="avg", input_shape=(96, 96, 3))
    reference.load_weights(file)
    images = np.random.default_rng(0).integers(0, 256, (4, 96, 96, 3)).astype(np.float32)
    expected = reference.predict(keras.applications.mobilenet_v2.preprocess_input(images.copy()), verbose=0)
    ours = features.predict(images, verbose=0)
    assert ours.shape == (4, 1280)
    assert np.abs(expected).max() > 0.5  # real features, not zeros
    # Rescaling computes x * (1/127.5) - 1 where preprocess_input computes x / 127.5 - 1: float rounding only.
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    assert not built.backbone.trainable  # frozen: the head trains on its cached features


def test_resize_modes() -> None:
    image = Image.new("RGB", (40, 20), (200, 0, 0))
    padded = classifier_model.prepare_image(image, 20)
    cropped = classifier_model.prepare_image(image, 20, "crop")
    assert padded.shape == cropped.shape == (20, 20, 3)
    assert tuple(padded[0, 10]) == classifier_model.PAD_COLOUR  # bars above and below the wide image
    assert tuple(padded[10, 10]) == (200, 0, 0)
    assert (cropped == (200, 0, 0)).all()  # the centre square, no bars


# --- both models trained from the shared weights ----------------------------------------------------------


@dataclass
class TrainedFromShared:
    paths: DataPaths
    tracking_uri: str
    weights_dir: Path
    classifier_result: Any
    detector_result: Any
    network_attempts: list[str]


@pytest.fixture(scope="module")
def trained_from_shared(
    tiny_dataset: DataPaths, shared_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrainedFromShared]:
    """Both models trained once through their assets with pretrained='auto' and a weights folder holding the
    shared files (linked, never copied), on a data root and MLflow store of their own."""
    base = tmp_path_factory.mktemp("pretrained")
    paths = make_training_root(tiny_dataset, base / "data")
    folder = base / "weights"
    folder.mkdir()
    for name in (V2_FILE, YOLO_FILE):
        (folder / name).symlink_to(shared_weights / name)
    tracking_uri = f"sqlite:///{base / 'mlruns' / 'mlflow.db'}"
    with recorded_attempts() as attempts:
        classifier = materialize_training(
            paths,
            tracking_uri,
            "garment_classifier",
            {
                "profile": "real",
                "weights_dir": str(folder),
                "input_size": 96,
                "epochs": 3,
                "batch_size": 16,
                "fine_tune_epochs": 1,  # exercises the fine-tuning phase too
                "fine_tune_layers": 10,
                "min_accuracy": 0.0,
            },
        )
        detector = materialize_training(
            paths,
            tracking_uri,
            "garment_detector",
            {"profile": "real", "weights_dir": str(folder), "imgsz": 64, "epochs": 1, "batch": 8, "min_map50": 0.0},
        )
    yield TrainedFromShared(paths, tracking_uri, folder, classifier, detector, attempts)


def _recorded_source(result: Any, asset: str, tracking_uri: str, model_dir: Path) -> tuple[Any, str, Any]:
    """The MLflow run, pretrained source and weights check of one materialization, once the MLflow param, the
    asset metadata, the published metadata.json and the (warning) check all say the same source."""
    assert result.success
    run = mlflow.MlflowClient(tracking_uri).get_run(run_id_of(result, asset))
    source = run.data.params["pretrained_source"]
    assert materialization_metadata(result, asset)["pretrained_source"] == source
    assert json.loads((model_dir / "metadata.json").read_text())["pretrained_source"] == source
    [check] = [e for e in result.get_asset_check_evaluations() if e.asset_check_key.name == "pretrained_weights_used"]
    assert check.severity.value == "WARN"
    assert check.description == source
    return run, source, check


def test_classifier_from_the_shared_file_records_its_source(trained_from_shared: TrainedFromShared) -> None:
    model_dir = trained_from_shared.paths.classifier_dir
    run, source, check = _recorded_source(
        trained_from_shared.classifier_result, "garment_classifier", trained_from_shared.tracking_uri, model_dir
    )
    assert source == f"file:{(trained_from_shared.weights_dir / V2_FILE).resolve()} sha256:{V2_SHA256}"
    assert check.passed
    assert run.data.params["architecture"] == "mobilenet_v2"
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["architecture"] == "MobileNetV2"
    assert metadata["resize"] == "crop"
    # 3 head epochs on cached features, then 1 fine-tuning epoch, each logged in turn.
    client = mlflow.MlflowClient(trained_from_shared.tracking_uri)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2, 3, 4]
    assert trained_from_shared.network_attempts == []


def test_published_v2_classifier_embeds_1280_unit_vectors_with_its_resize(
    trained_from_shared: TrainedFromShared,
) -> None:
    from fashion_pipeline.lib.training.embedder import GarmentEmbedder, load_embedder

    model_dir = trained_from_shared.paths.classifier_dir
    embedder = load_embedder(model_dir)
    assert embedder.resize == "crop"
    crops = sorted((trained_from_shared.paths.crops_dir / "validation").glob("*/*.jpg"))[:3]
    images = [load_image(p) for p in crops] + [Image.new("RGB", (90, 30), (30, 140, 60))]
    vectors = embedder.embed(images)
    assert vectors.shape == (4, 1280)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)

    # The served input is the centre crop the model was trained on, not a padded square.
    keras = frameworks.keras()
    model = keras.models.load_model(model_dir / classifier_model.MODEL_FILE, compile=False)
    pooled = keras.Model(model.inputs, model.get_layer("embedding").output)
    wide = images[-1]
    for mode, same in (("crop", True), ("pad", False)):
        x = classifier_model.prepare_image(wide, 96, mode)[None].astype(np.float32)
        reference = pooled.predict(x, verbose=0)[0]
        close = np.allclose(vectors[-1], reference / np.linalg.norm(reference), atol=1e-5)
        assert close == same, mode

    # Metadata written before the setting existed means padded crops.
    old = {k: v for k, v in embedder.metadata.items() if k != "resize"}
    assert GarmentEmbedder(model, old).resize == "pad"
    probabilities = embedder.classify(images)
    assert probabilities.shape == (4, len(CATEGORIES))


def test_detector_from_the_shared_checkpoint_keeps_its_backbone(trained_from_shared: TrainedFromShared) -> None:
    import torch

    run, source, check = _recorded_source(
        trained_from_shared.detector_result,
        "garment_detector",
        trained_from_shared.tracking_uri,
        trained_from_shared.paths.detector_dir,
    )
    assert source == f"file:{(trained_from_shared.weights_dir / YOLO_FILE).resolve()} sha256:{YOLO_SHA256}"
    assert check.passed
    assert run.data.params["model"] == "yolov5nu"
    assert run.data.params["freeze"] == "10"
    # When training began, every backbone and neck tensor of the checkpoint (342, as WEIGHTS.md says) was in the
    # 5-class model, and so were 79 of the head's: the box branch and the class branch's first convolutions
    # match in shape; only the 6 tensors of the 80-class output convolutions are new.
    assert run.data.params["pretrained_backbone_tensors"] == "342/342"
    assert run.data.params["pretrained_tensors"] == "421/427"
    metadata = json.loads((trained_from_shared.paths.detector_dir / "metadata.json").read_text())
    assert metadata["pretrained_tensors"] == "421/427"

    # freeze=10: the backbone (layers 0-9) left training as it came in, the rest trained.
    from ultralytics.nn.tasks import load_checkpoint

    start = load_checkpoint(str(trained_from_shared.weights_dir / YOLO_FILE))[0].state_dict()
    trained = load_checkpoint(str(trained_from_shared.paths.detector_dir / "detector.pt"))[0].state_dict()
    frozen = [k for k in start if int(k.split(".")[1]) < 10 and not k.endswith("num_batches_tracked")]
    assert frozen and all(torch.allclose(trained[k], start[k], atol=1e-3) for k in frozen)
    neck = [k for k in start if 10 <= int(k.split(".")[1]) < 24 and k.endswith(".weight")]
    assert any(not torch.allclose(trained[k], start[k], atol=1e-3) for k in neck)

    from fashion_pipeline.lib.training.detector import load_detector

    detector = load_detector(trained_from_shared.paths.detector_dir)
    image = Image.open(next((trained_from_shared.paths.yolo_dir / "images" / "val").iterdir())).convert("RGB")
    assert detector.detect(image, conf=1e-6, max_detections=5)


def test_models_trained_without_weights_warn_without_blocking(trained_models: TrainedModels) -> None:
    """The session's tiny models start from random weights: each run says so and its asset warns, not fails."""
    for asset, folder in (
        ("garment_classifier", trained_models.paths.classifier_dir),
        ("garment_detector", trained_models.paths.detector_dir),
    ):
        result = getattr(trained_models, f"{asset.removeprefix('garment_')}_result")
        run, source, check = _recorded_source(result, asset, trained_models.tracking_uri, folder)
        assert source == "none: pretrained='none'"
        assert not check.passed
    assert "pretrained_tensors" not in run.data.params  # nothing was transferred
