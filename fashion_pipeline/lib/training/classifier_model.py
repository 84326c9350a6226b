"""The garment classifier's network: Keras MobileNetV3 with a 5-way head, its settings and its input.

One network does both jobs. Its softmax head names the category of a crop; its pooled backbone output,
L2-normalised, is the embedding retrieval searches with. The pooled features sit before the layers that
only separate the 5 classes, so they still tell two shirts apart by colour, pattern and cut; after
normalisation a dot product is the cosine similarity the k-NN index ranks by.

Training (classifier_training) and serving (embedder) share `prepare_image`, so a crop is resized and
padded the same way at index time, at query time and in training.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from fashion_pipeline.lib.common import frameworks
from fashion_pipeline.lib.common.categories import CATEGORIES

MODEL_FILE = "classifier.keras"
EMBEDDING_LAYER = "embedding"
# Grey padding (about the ImageNet mean) so the bars added to make a crop square carry no class signal.
PAD_COLOUR = (124, 116, 104)
# Seconds to wait for the ImageNet weights download before failing (a network that drops packets hangs).
DOWNLOAD_TIMEOUT_S = 60
BATCH_NORM_MOMENTUM = 0.9


@dataclass(frozen=True)
class ClassifierSettings:
    """Every setting of a classifier training run (logged as MLflow params)."""

    architecture: str = "large"  # "large" (as the original project) or "small" (about 3x faster)
    pretrained: str = "imagenet"  # "imagenet", "none" (random init, offline), or a local .h5 weights file
    input_size: int = 224  # pixels per side
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-4
    patience: int = 5  # epochs without val_accuracy improvement before early stopping
    dropout: float = 0.2
    augment: bool = True
    seed: int = 0
    min_accuracy: float = 0.85  # the champion gate: validation accuracy a new model must reach

    def validate(self) -> ClassifierSettings:
        if self.architecture not in ("large", "small"):
            raise ValueError(f"architecture={self.architecture!r}: use 'large' or 'small'")
        if self.pretrained not in ("imagenet", "none") and not Path(self.pretrained).is_file():
            raise ValueError(
                f"pretrained={self.pretrained!r}: use 'imagenet', 'none' or the path of a local weights file"
            )
        if self.input_size < 32:
            raise ValueError(f"input_size={self.input_size}: MobileNetV3 needs at least 32 pixels")
        return self


PROFILES: dict[str, ClassifierSettings] = {
    # The embedded default: the generated sample on 2 CPU cores, offline, a few minutes.
    "demo": ClassifierSettings(
        architecture="small",
        pretrained="none",
        input_size=128,
        epochs=15,
        batch_size=32,
        learning_rate=5e-3,  # from scratch: a high start, cosine-decayed to zero by the last epoch
        patience=4,
        min_accuracy=0.80,
    ),
    # The original project's setting: real DeepFashion2 on a GPU, fine-tuned from ImageNet.
    "full": ClassifierSettings(
        architecture="large",
        pretrained="imagenet",
        input_size=224,
        epochs=30,
        batch_size=64,
        learning_rate=1e-4,
        patience=5,
        min_accuracy=0.85,
    ),
}


def settings_for(profile: str, **overrides: Any) -> ClassifierSettings:
    """The profile's settings with every non-None override applied."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}: use one of {sorted(PROFILES)}")
    return replace(PROFILES[profile], **{k: v for k, v in overrides.items() if v is not None}).validate()


def prepare_image(image: Image.Image, size: int) -> np.ndarray:
    """RGB image -> (size, size, 3) uint8: scaled to fit, padded to a square (aspect ratio kept)."""
    return np.asarray(ImageOps.pad(image.convert("RGB"), (size, size), Image.Resampling.BILINEAR, PAD_COLOUR))


def build_model(settings: ClassifierSettings, n_classes: int = len(CATEGORIES)) -> Any:
    """MobileNetV3 backbone -> pooled `embedding` -> dropout -> softmax over the categories.

    The backbone rescales 0-255 RGB itself (include_preprocessing), so callers feed raw pixels.
    """
    keras = frameworks.keras()
    size = settings.input_size
    constructor = (
        keras.applications.MobileNetV3Large if settings.architecture == "large" else keras.applications.MobileNetV3Small
    )
    weights = None if settings.pretrained == "none" else settings.pretrained
    backbone = _load_backbone(constructor, weights, size)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # MobileNetV3 ships momentum 0.999: its moving statistics need thousands of steps to settle, so
            # a short run evaluates with stale statistics and predicts one class. 0.9 settles in tens.
            layer.momentum = BATCH_NORM_MOMENTUM
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    if settings.augment:
        # Only active in training: at inference these layers pass the image through unchanged.
        x = keras.Sequential(
            [
                keras.layers.RandomFlip("horizontal"),
                keras.layers.RandomRotation(0.05, fill_mode="constant", fill_value=float(PAD_COLOUR[0])),
                keras.layers.RandomZoom((-0.1, 0.1), fill_mode="constant", fill_value=float(PAD_COLOUR[0])),
                keras.layers.RandomContrast(0.2, value_range=(0, 255)),
                keras.layers.RandomBrightness(0.15, value_range=(0, 255)),
            ],
            name="augmentation",
        )(x)
    features = backbone(x)
    embedding = keras.layers.GlobalAveragePooling2D(name=EMBEDDING_LAYER)(features)
    x = keras.layers.Dropout(settings.dropout)(embedding)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="category")(x)
    return keras.Model(inputs, outputs, name=f"garment_classifier_mobilenetv3{settings.architecture}")


def _load_backbone(constructor: Callable[..., Any], weights: str | None, size: int) -> Any:
    kwargs = {"input_shape": (size, size, 3), "include_top": False, "include_preprocessing": True}
    if weights != "imagenet":
        return constructor(weights=weights, **kwargs)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return constructor(weights="imagenet", **kwargs)
    # keras.utils.get_file raises a bare Exception ("URL fetch failure ...") when the download fails.
    except Exception as exc:
        raise RuntimeError(
            f"pretrained='imagenet': downloading the ImageNet weights for {constructor.__name__} failed ({exc}). "
            "Offline, set pretrained='none' (random initialisation) or pretrained=<path to a local weights "
            "file>, e.g. one copied from ~/.keras/models on a machine with network."
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)
