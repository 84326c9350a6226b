"""The champion classifier at serving time: embeddings and class probabilities for retrieval and the app."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fashion_pipeline.lib.common import frameworks
from fashion_pipeline.lib.training.classifier_model import DEFAULT_RESIZE, EMBEDDING_LAYER, MODEL_FILE, prepare_image


class GarmentEmbedder:
    """The champion classifier for retrieval and serving: embeddings and class probabilities, batched."""

    def __init__(self, model: Any, metadata: dict[str, Any]) -> None:
        keras = frameworks.keras()
        self.version: int = int(metadata.get("registered_version", 0))
        self.classes: tuple[str, ...] = tuple(metadata["classes"])
        self.input_size: int = int(metadata["input_size"])
        self.embedding_dim: int = int(metadata["embedding_dim"])
        # As in training: models saved before the setting existed were trained on padded crops.
        self.resize: str = str(metadata.get("resize", DEFAULT_RESIZE))
        self.metadata = metadata
        layer = metadata.get("embedding_layer", EMBEDDING_LAYER)
        # One forward pass gives both outputs; the augmentation layers are inactive at inference.
        self._model = keras.Model(model.inputs, [model.get_layer(layer).output, model.outputs[0]])

    def _forward(self, images: Sequence[Image.Image], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        if len(images) == 0:
            return np.zeros((0, self.embedding_dim), np.float32), np.zeros((0, len(self.classes)), np.float32)
        embeddings, probabilities = [], []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            x = np.stack([prepare_image(image, self.input_size, self.resize) for image in chunk]).astype(np.float32)
            features, probs = self._model.predict_on_batch(x)  # (B, D), (B, n_classes)
            embeddings.append(np.asarray(features, np.float32))
            probabilities.append(np.asarray(probs, np.float32))
        return np.concatenate(embeddings), np.concatenate(probabilities)

    def embed(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """(N, D) float32 rows of unit length: the pooled backbone output, L2-normalised."""
        return l2_normalise(self._forward(images, batch_size)[0])

    def classify(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """(N, n_classes) class probabilities in the order of `classes`."""
        return self._forward(images, batch_size)[1]

    def embed_and_classify(self, images: Sequence[Image.Image], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        features, probabilities = self._forward(images, batch_size)
        return l2_normalise(features), probabilities


def l2_normalise(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


def load_embedder(model_dir: Path) -> GarmentEmbedder:
    """Load the classifier saved in `model_dir` (classifier.keras + metadata.json)."""
    model_dir = Path(model_dir)
    metadata_file = model_dir / "metadata.json"
    if not metadata_file.exists():
        raise FileNotFoundError(
            f"{metadata_file} does not exist: materialize the garment_classifier asset (it publishes the "
            "champion model there)"
        )
    metadata = json.loads(metadata_file.read_text())
    keras = frameworks.keras()
    model = keras.models.load_model(model_dir / metadata.get("model_file", MODEL_FILE), compile=False)
    return GarmentEmbedder(model, metadata)
