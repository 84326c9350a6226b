"""The models and the catalog the query benchmark (bench_query.py) times: trained champions or untrained
stand-ins of a profile's sizes, and a synthetic clustered catalog."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from fashion_pipeline.lib.common import frameworks
from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.retrieval import colour, knn
from fashion_pipeline.lib.retrieval.layout import (
    BACKBONE,
    COLOUR_CLASS,
    TYPE,
    RetrievalEmbedder,
    VectorLayout,
    default_layout,
    legacy_layout,
)
from fashion_pipeline.lib.retrieval.projection import Projection
from fashion_pipeline.lib.training import classifier_model, detector, detector_training

CATEGORY = "shirt"  # every synthetic product and fixed box is of this category
# Two garments per photo, as fractions of its width/height (x1, y1, x2, y2).
FIXED_BOXES = ((0.15, 0.10, 0.65, 0.55), (0.30, 0.45, 0.85, 0.95))
UNTRAINED_CONFIDENCE = 0.999  # untrained heads score everything ~0.5: keep NMS as light as a trained model's


@dataclass(frozen=True)
class Models:
    detector_dir: Path
    classifier_dir: Path
    yolo_weights: str  # what ultralytics' YOLO() loads for the baseline
    trained: bool


# --- models ---------------------------------------------------------------------------------------------
def build_untrained_models(profile: str, work: Path) -> Models:
    """yolo11n (5 classes) exported to ONNX and a MobileNetV3 classifier, random weights, no download."""
    detector_settings = detector_training.settings_for(profile, pretrained="none")
    classifier_settings = classifier_model.settings_for(profile, pretrained="none")
    frameworks.ultralytics()
    from ultralytics import YOLO

    cfg = yaml.safe_load((Path(sys.modules["ultralytics"].__file__).parent / "cfg/models/11/yolo11.yaml").read_text())
    cfg["nc"] = 5
    yaml_path = work / "yolo11n.yaml"  # the file name carries the scale: n
    yaml_path.write_text(yaml.safe_dump(cfg))
    detector_dir = work / "detector"
    detector_dir.mkdir()
    weights = detector_dir / detector_training.WEIGHTS_FILE
    YOLO(str(yaml_path)).save(str(weights))
    # Exported from the saved weights, so the ONNX file lands beside them and not in the working directory.
    exported = YOLO(str(weights)).export(
        format="onnx", imgsz=detector_settings.imgsz, simplify=True, device="cpu", verbose=False
    )
    if Path(exported).resolve() != (detector_dir / detector.ONNX_FILE).resolve():
        shutil.move(exported, detector_dir / detector.ONNX_FILE)
    metadata = {
        "classes": list(CATEGORIES),
        "input_size": detector_settings.imgsz,
        "model_file": detector.ONNX_FILE,
        "registered_version": 1,
    }
    (detector_dir / "metadata.json").write_text(json.dumps(metadata))

    classifier_dir = work / "classifier"
    classifier_dir.mkdir()
    model = classifier_model.build_model(classifier_settings)
    model.save(classifier_dir / classifier_model.MODEL_FILE)
    embedding_dim = int(model.get_layer(classifier_model.EMBEDDING_LAYER).output.shape[-1])
    metadata = {
        "classes": list(CATEGORIES),
        "input_size": classifier_settings.input_size,
        "embedding_dim": embedding_dim,
        "model_file": classifier_model.MODEL_FILE,
        "embedding_layer": classifier_model.EMBEDDING_LAYER,
        "registered_version": 1,
    }
    (classifier_dir / "metadata.json").write_text(json.dumps(metadata))
    return Models(detector_dir, classifier_dir, str(detector_dir / detector_training.WEIGHTS_FILE), trained=False)


def champion_models(paths: DataPaths) -> Models:
    for folder in (paths.detector_dir, paths.classifier_dir):
        if not (folder / "metadata.json").exists():
            raise SystemExit(f"--models data: {folder} has no metadata.json; materialize the models first")
    return Models(
        paths.detector_dir, paths.classifier_dir, str(paths.detector_dir / detector_training.WEIGHTS_FILE), True
    )


def retrieval_embedder(embedder, layout_name: str, seed: int) -> RetrievalEmbedder:
    """The champion's embedding in the chosen layout (see the module docstring)."""
    dim = int(embedder.embedding_dim)
    if layout_name == "embedding":
        return RetrievalEmbedder(embedder, legacy_layout(dim))
    if layout_name == "colour":
        return RetrievalEmbedder(embedder, default_layout(dim))
    rng = np.random.default_rng(seed)
    colour_inputs = dim + colour.DIMENSION + colour.BAND_DIMENSION
    projection = Projection(  # the shapes of the projections fitted on ../shared's catalog: 19 types, 12 families
        type_matrix=rng.standard_normal((dim, 18)).astype(np.float32),
        type_offset=np.zeros(18, np.float32),
        colour_matrix=rng.standard_normal((colour_inputs, 11)).astype(np.float32),
        colour_offset=np.zeros(11, np.float32),
        type_classes=np.asarray([f"type{i}" for i in range(19)]),
        colour_classes=np.asarray([f"family{i}" for i in range(12)]),
    )
    layout = VectorLayout.with_weights(dim, {BACKBONE: 0.1, TYPE: 0.4, COLOUR_CLASS: 0.5}, projection)
    return RetrievalEmbedder(embedder, layout, projection)


def fixed_boxes(width: int, height: int) -> list[tuple[float, float, float, float]]:
    return [(x1 * width, y1 * height, x2 * width, y2 * height) for x1, y1, x2, y2 in FIXED_BOXES]


class FixedBoxDetector:
    """The real detector network, then the two fixed garment boxes (untrained weights detect nothing)."""

    def __init__(self, inner: detector.GarmentDetector, confidence: float) -> None:
        self.inner = inner
        self.version = inner.version
        self.classes = inner.classes
        self.confidence = confidence

    def detect(self, image, conf: float = 0.25) -> list[detector.Detection]:
        self.inner.detect(image, conf=self.confidence)
        return [detector.Detection(box, CATEGORY, 0.9) for box in fixed_boxes(*image.size)]


# --- catalog --------------------------------------------------------------------------------------------
def synthetic_catalog(n: int, dimension: int, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    vectors = knn.clustered_unit_vectors(n, dimension, centres=max(10, n // 30), seed=seed)
    ids = [f"bench_shop:{i:07d}" for i in range(n)]
    rng = np.random.default_rng(seed)
    price = rng.uniform(5, 300, n).round(2)
    products = pd.DataFrame(
        {
            "product_id": ids,
            "site": "bench_shop",
            "name": [f"Shirt {i}" for i in range(n)],
            "url": [f"https://shop.example/p/{i}" for i in range(n)],
            "image_url": [f"https://shop.example/img/{i}.jpg" for i in range(n)],
            "image_path": "",
            "price": price,
            "currency": "USD",
            "price_usd": price,
            "category": CATEGORY,
        }
    )
    return vectors, products
