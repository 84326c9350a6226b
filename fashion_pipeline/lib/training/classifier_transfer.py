"""Training the classifier from a pretrained backbone: the head on frozen features, then optional fine-tuning.

While the backbone is frozen it computes the same features for an image every epoch, so they are computed once
(and once more for the horizontally flipped image when `augment` is on) and the Dense head trains on the
cached vectors: seconds per epoch instead of minutes. The trained head's weights then go into the full model
(input -> [scaling] -> backbone -> `embedding` -> dropout -> `category`), which is what is saved and served.
Optionally the top backbone layers are then unfrozen and trained end to end at a low learning rate, batch norm
kept frozen; that phase is kept only when it beats the head's best validation accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fashion_pipeline.lib.common import frameworks
from fashion_pipeline.lib.common.images import load_image
from fashion_pipeline.lib.training.classifier_data import fit_data, pad_to_batches
from fashion_pipeline.lib.training.classifier_model import (
    EMBEDDING_LAYER,
    HEAD_LAYER,
    BuiltClassifier,
    ClassifierSettings,
    augmentation,
    prepare_image,
)

EpochCallback = Callable[[dict[str, float], int], None]


@dataclass
class TransferResult:
    history: dict[str, list[float]]  # per epoch: head epochs, then fine-tuning epochs
    probabilities: np.ndarray  # (n_validation, n_classes) of the kept model
    fine_tuned: bool  # whether the fine-tuning phase was kept


def pooled_features(
    feature_model: Any, paths: Sequence[str], size: int, resize: str, batch: int, flip: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, D) pooled backbone features of every crop, and of its mirror image when `flip`; one pass each."""
    order, _ = pad_to_batches(len(paths), batch)  # one batch shape, so the graph is traced once
    features, flipped = [], []
    for start in range(0, len(order), batch):
        images = np.stack([prepare_image(load_image(paths[i]), size, resize) for i in order[start : start + batch]])
        images = images.astype(np.float32)
        features.append(np.asarray(feature_model.predict_on_batch(images)))
        if flip:
            flipped.append(np.asarray(feature_model.predict_on_batch(images[:, :, ::-1])))
    count = len(paths)
    return np.concatenate(features)[:count], (np.concatenate(flipped)[:count] if flip else None)


def train_from_pretrained(
    built: BuiltClassifier,
    settings: ClassifierSettings,
    train: tuple[Sequence[str], np.ndarray],
    validation: tuple[Sequence[str], np.ndarray],
    on_epoch_end: EpochCallback | None = None,
) -> TransferResult:
    """Train `built.model`'s head on cached frozen features, then optionally fine-tune; best weights kept."""
    keras = frameworks.keras()
    model, size, batch = built.model, settings.input_size, settings.batch_size
    feature_model = keras.Model(model.inputs, model.get_layer(EMBEDDING_LAYER).output)
    (train_paths, train_labels), (validation_paths, validation_labels) = train, validation
    train_features, flipped = pooled_features(
        feature_model, train_paths, size, settings.resize, batch, flip=settings.augment
    )
    validation_features, _ = pooled_features(feature_model, validation_paths, size, settings.resize, batch)
    if flipped is not None:
        train_features = np.concatenate([train_features, flipped])
        train_labels = np.concatenate([train_labels, train_labels])

    head = _head(keras, train_features.shape[1], model.get_layer(HEAD_LAYER).units, settings.dropout)
    head.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    fit = head.fit(
        train_features,
        train_labels,
        batch_size=batch,
        epochs=settings.epochs,
        shuffle=True,
        validation_data=(validation_features, validation_labels),
        callbacks=_callbacks(keras, settings.patience, on_epoch_end, 0),
        verbose=2,
    )
    model.get_layer(HEAD_LAYER).set_weights(head.get_layer(HEAD_LAYER).get_weights())
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    # The head applied to the cached features is exactly the full model's forward pass (dropout is off).
    probabilities = head.predict(validation_features, batch_size=batch, verbose=0)
    if settings.fine_tune_epochs == 0:
        return TransferResult(history, probabilities, fine_tuned=False)
    return _fine_tune(keras, built, settings, train, validation, history, probabilities, on_epoch_end)


def _head(keras: Any, dimension: int, n_classes: int, dropout: float) -> Any:
    """The part of the classifier after `embedding`, on feature vectors; its Dense layer has the model's name."""
    inputs = keras.Input((dimension,), name=EMBEDDING_LAYER)
    x = keras.layers.Dropout(dropout)(inputs)
    return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax", name=HEAD_LAYER)(x))


def _callbacks(keras: Any, patience: int, on_epoch_end: EpochCallback | None, first_epoch: int) -> list[Any]:
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience, restore_best_weights=True)
    ]
    if on_epoch_end is not None:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda e, logs: on_epoch_end(epoch_metrics(logs), first_epoch + e + 1)
            )
        )
    return callbacks


def epoch_metrics(logs: dict[str, float]) -> dict[str, float]:
    """Keras' epoch logs with training metrics prefixed `train_`, so `accuracy` stays the validation figure."""
    return {k if k.startswith("val_") or k == "learning_rate" else f"train_{k}": v for k, v in logs.items()}


def _fine_tune(
    keras: Any,
    built: BuiltClassifier,
    settings: ClassifierSettings,
    train: tuple[Sequence[str], np.ndarray],
    validation: tuple[Sequence[str], np.ndarray],
    history: dict[str, list[float]],
    probabilities: np.ndarray,
    on_epoch_end: EpochCallback | None,
) -> TransferResult:
    model, backbone = built.model, built.backbone
    head_best = max(history["val_accuracy"])
    before = model.get_weights()
    backbone.trainable = True
    first_tuned = max(len(backbone.layers) - settings.fine_tune_layers, 0)
    for i, layer in enumerate(backbone.layers):
        # Batch norm stays frozen (inference mode): its statistics were fitted on ImageNet's millions of images.
        layer.trainable = i >= first_tuned and not isinstance(layer, keras.layers.BatchNormalization)
    data = fit_data(keras, train, validation, settings.input_size, settings.resize, settings.batch_size, settings.seed)
    # Augmentation wraps the model for training only, so the saved model stays input -> ... -> category.
    trained = model
    if settings.augment:
        inputs = keras.Input(model.input_shape[1:], name="image")
        trained = keras.Model(inputs, model(augmentation(keras)(inputs)))
    trained.compile(
        optimizer=keras.optimizers.Adam(settings.fine_tune_learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        weighted_metrics=["accuracy"],  # weighted: padding in the last validation batch counts 0
    )
    fit = trained.fit(
        **data.fit_kwargs,
        epochs=settings.fine_tune_epochs,
        callbacks=_callbacks(keras, settings.patience, on_epoch_end, len(history["val_accuracy"])),
        verbose=2,
    )
    backbone.trainable = False
    tuned = {k: [float(v) for v in values] for k, values in fit.history.items()}
    merged = {k: history.get(k, []) + tuned.get(k, []) for k in history.keys() | tuned.keys()}
    if max(tuned["val_accuracy"]) <= head_best:
        model.set_weights(before)  # fine-tuning did not beat the head alone: keep the head's best
        return TransferResult(merged, probabilities, fine_tuned=False)
    return TransferResult(merged, data.predict_validation(model), fine_tuned=True)
