"""The garment classifier's network: a Keras MobileNet backbone with a 5-way head, its settings and its input.

One network does both jobs. Its softmax head names the category of a crop; its pooled backbone output,
L2-normalised, is the embedding retrieval searches with. The pooled features sit before the layers that
only separate the 5 classes, so they still tell two shirts apart by colour, pattern and cut; after
normalisation a dot product is the cosine similarity the k-NN index ranks by.

Every model takes raw 0-255 RGB pixels: the scaling each backbone expects is a layer of the model itself, so
training, serving and embedding feed the same input. Training (classifier_training) and serving (embedder)
share `prepare_image`, so a crop is resized the same way at index time, at query time and in training.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from fashion_pipeline.lib.common import frameworks
from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.training import weights

MODEL_FILE = "classifier.keras"
EMBEDDING_LAYER = "embedding"
HEAD_LAYER = "category"
# Grey padding (about the ImageNet mean) so the bars added to make a crop square carry no class signal.
PAD_COLOUR = (124, 116, 104)
BATCH_NORM_MOMENTUM = 0.9
# Keras constructor of each backbone; MobileNetV2 is built at alpha 1.0 (the shared ImageNet file's width).
BACKBONES = {
    "mobilenet_v2": "MobileNetV2",
    "mobilenet_v3_large": "MobileNetV3Large",
    "mobilenet_v3_small": "MobileNetV3Small",
}
# How a crop becomes a square: "pad" scales it to fit and pads with PAD_COLOUR (the aspect ratio and the whole
# garment kept), "crop" scales it to fill and cuts the centre square (no bars; measured better on real photos).
RESIZE_MODES = ("pad", "crop")
DEFAULT_RESIZE = "pad"  # what models saved before the setting existed were trained with


@dataclass(frozen=True)
class ClassifierSettings:
    """Every setting of a classifier training run (logged as MLflow params)."""

    architecture: str = "mobilenet_v3_large"  # "mobilenet_v2", "mobilenet_v3_large" or "mobilenet_v3_small"
    # "auto" (weights folder, then Keras' cache or download, then none), "imagenet" (Keras' cache or download
    # only), "none" (random initialisation) or the path of a local weights file; see lib/training/weights.py
    pretrained: str = weights.AUTO
    weights_dir: str = ""  # folder of weights files for "auto"; empty = $FASHION_WEIGHTS_DIR (unset: skipped)
    input_size: int = 224  # pixels per side
    resize: str = DEFAULT_RESIZE  # "pad" or "crop" (RESIZE_MODES); stored with the model for serving
    # From pretrained weights: epochs of the head on the frozen backbone's cached features; from random
    # initialisation: epochs of end-to-end training.
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3  # the head's (pretrained) or the whole network's, cosine-decayed (from scratch)
    # After the head, optionally fine-tune the top `fine_tune_layers` backbone layers (batch norm stays frozen)
    # for `fine_tune_epochs` (0 = skip) at `fine_tune_learning_rate`; kept only if validation accuracy improves.
    fine_tune_layers: int = 40
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float = 1e-5
    patience: int = 5  # epochs without val_accuracy improvement before early stopping
    # > 0: end-to-end training stops after this long; after each epoch the cosine schedule is refitted to the
    # epochs that still fit, so a slow machine trains fewer epochs to the same end rather than overrunning.
    time_minutes: float = 0.0
    dropout: float = 0.2
    augment: bool = True  # horizontal flips on frozen features; flips, rotation, zoom, contrast end to end
    seed: int = 0
    min_accuracy: float = 0.85  # the champion gate: validation accuracy a new model must reach

    def validate(self) -> ClassifierSettings:
        if self.architecture not in BACKBONES:
            raise ValueError(f"architecture={self.architecture!r}: use one of {list(BACKBONES)}")
        if self.pretrained not in (weights.AUTO, "imagenet", weights.NONE) and not Path(self.pretrained).is_file():
            raise ValueError(
                f"pretrained={self.pretrained!r}: use 'auto', 'imagenet', 'none' or the path of a local weights file"
            )
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize={self.resize!r}: use one of {list(RESIZE_MODES)}")
        if self.input_size < 32:
            raise ValueError(f"input_size={self.input_size}: MobileNet needs at least 32 pixels")
        if self.time_minutes < 0:
            raise ValueError(f"time_minutes={self.time_minutes}: 0 (no budget) or more")
        if self.fine_tune_epochs < 0 or self.fine_tune_layers < 0:
            raise ValueError("fine_tune_epochs and fine_tune_layers must be >= 0")
        return self


PROFILES: dict[str, ClassifierSettings] = {
    # The embedded default: the generated sample on 2 CPU cores, a few minutes. Without weights (offline, no
    # weights folder) it trains from scratch, which the learning rate below is tuned for.
    "demo": ClassifierSettings(
        architecture="mobilenet_v3_small",
        input_size=128,
        epochs=15,
        batch_size=32,
        learning_rate=5e-3,  # from scratch: a high start, cosine-decayed to zero by the last epoch
        patience=4,
        # 15 epochs take about 4.3 min on 2 quiet cores and 6 min with one core busy elsewhere; the budget keeps
        # both trainings of the demo (with the detector's 5 min) within 10 minutes either way.
        time_minutes=3.5,
        min_accuracy=0.80,
    ),
    # Real labelled photos on 2 CPU cores: the head on frozen ImageNet MobileNetV2 features (measured on the
    # real validation split: crop 0.92-0.93 val accuracy, pad and stretch 0.89-0.91).
    "real": ClassifierSettings(
        architecture="mobilenet_v2",
        input_size=224,
        resize="crop",
        epochs=20,
        batch_size=32,
        learning_rate=1e-3,
        dropout=0.2,
        augment=True,
        fine_tune_epochs=0,
        patience=5,
        min_accuracy=0.85,
    ),
    # The original project's setting: real DeepFashion2 on a GPU, from ImageNet: the head on frozen features,
    # then the top 40 layers fine-tuned at a low rate.
    "full": ClassifierSettings(
        architecture="mobilenet_v3_large",
        input_size=224,
        epochs=30,
        batch_size=64,
        learning_rate=1e-3,
        fine_tune_layers=40,
        fine_tune_epochs=10,
        fine_tune_learning_rate=1e-5,
        patience=5,
        min_accuracy=0.85,
    ),
}


def settings_for(profile: str, **overrides: Any) -> ClassifierSettings:
    """The profile's settings with every non-None override applied."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}: use one of {sorted(PROFILES)}")
    return replace(PROFILES[profile], **{k: v for k, v in overrides.items() if v is not None}).validate()


def prepare_image(image: Image.Image, size: int, resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """RGB image -> (size, size, 3) uint8, made square as `resize` says ("pad" or "crop", RESIZE_MODES)."""
    image = image.convert("RGB")
    if resize == "pad":
        return np.asarray(ImageOps.pad(image, (size, size), Image.Resampling.BILINEAR, PAD_COLOUR))
    if resize == "crop":
        return np.asarray(ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR))
    raise ValueError(f"resize={resize!r}: use one of {list(RESIZE_MODES)}")


@dataclass
class BuiltClassifier:
    model: Any  # keras.Model: raw 0-255 pixels -> class probabilities; layer `embedding` is the pooled backbone
    backbone: Any  # the MobileNet inside it (frozen when pretrained)
    pretrained_source: str  # lib/training/weights.py: file:..., framework cache:..., downloaded or none: ...

    @property
    def pretrained(self) -> bool:
        return weights.is_used(self.pretrained_source)


def build_classifier(settings: ClassifierSettings, n_classes: int = len(CATEGORIES)) -> BuiltClassifier:
    """input -> [scaling] -> MobileNet backbone -> pooled `embedding` -> dropout -> softmax `category`.

    From pretrained weights the backbone comes frozen (its batch norm in inference mode) and the model carries
    no augmentation layers: training augments outside it. From random initialisation the augmentation layers
    are part of the model (inactive at inference), as end-to-end training wants.
    """
    keras = frameworks.keras()
    backbone, source = load_backbone(settings)
    pretrained = weights.is_used(source)
    if pretrained:
        backbone.trainable = False  # Keras 3: a non-trainable BatchNormalization runs in inference mode
    else:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                # MobileNetV3 ships momentum 0.999: its moving statistics need thousands of steps to settle, so
                # a short run evaluates with stale statistics and predicts one class. 0.9 settles in tens.
                layer.momentum = BATCH_NORM_MOMENTUM
    size = settings.input_size
    inputs = keras.Input((size, size, 3), name="image")
    x = augmentation(keras)(inputs) if settings.augment and not pretrained else inputs
    if settings.architecture == "mobilenet_v2":
        # MobileNetV2 wants [-1, 1] (keras.applications.mobilenet_v2.preprocess_input); the V3 models rescale
        # 0-255 themselves (include_preprocessing).
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocessing")(x)
    features = backbone(x)
    embedding = keras.layers.GlobalAveragePooling2D(name=EMBEDDING_LAYER)(features)
    x = keras.layers.Dropout(settings.dropout)(embedding)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name=HEAD_LAYER)(x)
    model = keras.Model(inputs, outputs, name=f"garment_classifier_{settings.architecture}")
    return BuiltClassifier(model, backbone, source)


def build_model(settings: ClassifierSettings, n_classes: int = len(CATEGORIES)) -> Any:
    """The classifier network alone (see build_classifier)."""
    return build_classifier(settings, n_classes).model


def augmentation(keras: Any) -> Any:
    """Random flips, rotation, zoom, contrast and brightness; active in training only, identity at inference."""
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomRotation(0.05, fill_mode="constant", fill_value=float(PAD_COLOUR[0])),
            keras.layers.RandomZoom((-0.1, 0.1), fill_mode="constant", fill_value=float(PAD_COLOUR[0])),
            keras.layers.RandomContrast(0.2, value_range=(0, 255)),
            keras.layers.RandomBrightness(0.15, value_range=(0, 255)),
        ],
        name="augmentation",
    )


def load_backbone(settings: ClassifierSettings) -> tuple[Any, str]:
    """The MobileNet backbone (no top, unpooled) and the source of its weights, in the `pretrained` order."""
    keras = frameworks.keras()
    name = BACKBONES[settings.architecture]
    constructor = getattr(keras.applications, name)
    kwargs: dict[str, Any] = {"input_shape": (settings.input_size, settings.input_size, 3), "include_top": False}
    if settings.architecture == "mobilenet_v2":
        kwargs["alpha"] = 1.0
    else:
        kwargs["include_preprocessing"] = True
    names = weights.CLASSIFIER_WEIGHT_FILES[settings.architecture]

    def from_framework() -> tuple[Any, str]:
        cached = weights.keras_cache_dir() / names[-1]  # Keras' own file name comes last
        if cached.is_file():
            return constructor(weights=str(cached), **kwargs), f"framework cache:{cached.resolve()}"
        with weights.socket_timeout(weights.DOWNLOAD_TIMEOUT_S):
            return constructor(weights="imagenet", **kwargs), "downloaded"

    return weights.load_pretrained(
        settings.pretrained,
        settings.weights_dir,
        names,
        framework_choice="imagenet",
        framework_label=f"Keras' ImageNet weights for {name}",
        loaders=weights.Loaders(
            from_file=lambda path: constructor(weights=str(path), **kwargs),
            from_framework=from_framework,
            from_scratch=lambda: constructor(weights=None, **kwargs),
        ),
    )
