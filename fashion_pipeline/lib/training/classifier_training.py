"""Training the garment classifier on the crops (the network is in classifier_model), tracked in MLflow.

From pretrained weights the head trains on the frozen backbone's cached features, then optionally fine-tunes
(classifier_transfer); from random initialisation the whole network trains end to end. Either way the best
epoch's weights are kept, saved with their metadata, logged and registered.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fashion_pipeline.lib.common import frameworks
from fashion_pipeline.lib.common.atomic import write_json
from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.training import tracking
from fashion_pipeline.lib.training.classifier_data import crops_data_version, fit_data, read_manifest
from fashion_pipeline.lib.training.classifier_model import (
    BACKBONES,
    EMBEDDING_LAYER,
    MODEL_FILE,
    BuiltClassifier,
    ClassifierSettings,
    build_classifier,
)
from fashion_pipeline.lib.training.classifier_transfer import epoch_metrics, train_from_pretrained
from fashion_pipeline.lib.training.time_budget import cosine_time_budget

REGISTERED_MODEL = "garment-classifier"
GATE_METRIC = "accuracy"
RESIZE_DESCRIPTIONS = {
    "pad": "scaled to fit and padded to a square (PAD_COLOUR)",
    "crop": "scaled to fill and centre-cropped to a square",
}


@dataclass
class TrainedClassifier:
    model: Any  # keras.Model with the best validation weights
    model_dir: Path  # classifier.keras + metadata.json
    history: dict[str, list[float]]
    metrics: dict[str, float]  # accuracy, per-class precision/recall/f1 on the validation split
    confusion: np.ndarray  # (n_classes, n_classes), rows = true class
    best_epoch: int  # 1-based
    pretrained_source: str  # lib/training/weights.py: where the starting weights came from


def train_classifier(
    manifest: pd.DataFrame,
    settings: ClassifierSettings,
    model_dir: Path,
    on_epoch_end: Callable[[dict[str, float], int], None] | None = None,
) -> TrainedClassifier:
    """Train on the train crops with early stopping on validation accuracy; save the best model."""
    keras = frameworks.keras()
    keras.utils.set_random_seed(settings.seed)
    index = {c: i for i, c in enumerate(CATEGORIES)}
    splits = {}
    for split in ("train", "validation"):
        rows = manifest[manifest["split"] == split]
        splits[split] = (list(rows["crop_path"]), rows["category"].map(index).to_numpy(np.int64))
    validation_labels = splits["validation"][1]

    built = build_classifier(settings)
    if built.pretrained:
        result = train_from_pretrained(built, settings, splits["train"], splits["validation"], on_epoch_end)
        history, probabilities = result.history, result.probabilities
    else:
        history, probabilities = _train_end_to_end(built, settings, splits["train"], splits["validation"], on_epoch_end)
    model = built.model
    best_epoch = int(np.argmax(history["val_accuracy"])) + 1
    metrics, confusion = classification_metrics(validation_labels, probabilities.argmax(axis=1))
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(model_dir / MODEL_FILE)
    write_json(
        {
            "classes": list(CATEGORIES),
            "input_size": settings.input_size,
            "embedding_dim": int(model.get_layer(EMBEDDING_LAYER).output.shape[-1]),
            "architecture": BACKBONES[settings.architecture],
            "pretrained": settings.pretrained,
            "pretrained_source": built.pretrained_source,
            "resize": settings.resize,
            "model_file": MODEL_FILE,
            "embedding_layer": EMBEDDING_LAYER,
            "preprocessing": f"RGB, {RESIZE_DESCRIPTIONS[settings.resize]}, raw 0-255 pixels",
        },
        model_dir / "metadata.json",
    )
    return TrainedClassifier(model, model_dir, history, metrics, confusion, best_epoch, built.pretrained_source)


def _train_end_to_end(
    built: BuiltClassifier,
    settings: ClassifierSettings,
    train: tuple[Sequence[str], np.ndarray],
    validation: tuple[Sequence[str], np.ndarray],
    on_epoch_end: Callable[[dict[str, float], int], None] | None,
) -> tuple[dict[str, list[float]], np.ndarray]:
    """From random initialisation: every layer trains, learning rate cosine-decayed per epoch over the epochs that
    fit the time budget (all of them without one), best epoch restored."""
    keras = frameworks.keras()
    data = fit_data(keras, train, validation, settings.input_size, settings.resize, settings.batch_size, settings.seed)
    model = built.model
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        weighted_metrics=["accuracy"],  # weighted: padding in the last validation batch counts 0
    )
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=settings.patience, restore_best_weights=True
    )
    callbacks = [
        cosine_time_budget(settings.learning_rate, settings.epochs, settings.time_minutes * 60),
        early_stopping,
    ]
    if on_epoch_end is not None:
        callbacks.append(
            keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch_end(epoch_metrics(logs), e + 1))
        )
    fit = model.fit(**data.fit_kwargs, epochs=settings.epochs, callbacks=callbacks, verbose=2)
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    return history, data.predict_validation(model)


def classification_metrics(
    labels: np.ndarray, predictions: np.ndarray, classes: Sequence[str] = CATEGORIES
) -> tuple[dict[str, float], np.ndarray]:
    """Accuracy and per-class precision/recall/F1 (keys like `precision_shirt`), and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=ids, zero_division=0)
    metrics = {"accuracy": float(np.mean(labels == predictions)) if len(labels) else 0.0}
    for i, name in enumerate(classes):
        metrics[f"precision_{name}"] = float(precision[i])
        metrics[f"recall_{name}"] = float(recall[i])
        metrics[f"f1_{name}"] = float(f1[i])
        metrics[f"support_{name}"] = float(support[i])
    present = support > 0
    metrics["macro_f1"] = float(f1[present].mean()) if present.any() else 0.0
    return metrics, confusion_matrix(labels, predictions, labels=ids)


def train_and_log(
    manifest_path: Path,
    settings: ClassifierSettings,
    target: tracking.TrackingTarget,
    work_dir: Path,
    profile: str = "custom",
) -> tracking.TrainingOutcome:
    """Train on the crops manifest as one MLflow run; log params, metrics, plots and the registered model."""
    manifest = read_manifest(manifest_path)
    data_version = crops_data_version(manifest)
    keras = frameworks.keras()
    tf = frameworks.tensorflow()
    import mlflow
    import mlflow.keras  # imports TensorFlow, so only after frameworks.keras()

    with tracking.training_run(target, "garment_classifier", {"model": REGISTERED_MODEL, "profile": profile}) as run:
        counts = manifest.groupby("split").size()
        mlflow.log_params(
            {
                **asdict(settings),
                "profile": profile,
                "data_version": data_version,
                "train_crops": int(counts.get("train", 0)),
                "validation_crops": int(counts.get("validation", 0)),
                "classes": ",".join(CATEGORIES),
            }
        )
        trained = train_classifier(manifest, settings, work_dir / "classifier", tracking.log_epoch)
        mlflow.log_param("pretrained_source", trained.pretrained_source)
        mlflow.log_metrics({**trained.metrics, "best_epoch": trained.best_epoch})
        mlflow.log_figure(tracking.confusion_figure(trained.confusion, CATEGORIES), "plots/confusion_matrix.png")
        mlflow.log_figure(tracking.curves_figure(trained.history), "plots/training_curves.png")
        metadata = json.loads((trained.model_dir / "metadata.json").read_text())
        info = mlflow.keras.log_model(
            trained.model,
            name="model",
            signature=_signature(settings.input_size),
            # Passing the requirements skips MLflow's 25-30 s subprocess that infers them (STACK.md trap 6).
            pip_requirements=[f"keras=={keras.__version__}", f"tensorflow=={tf.__version__}"],
            metadata=metadata,
        )
        mlflow.log_artifact(str(trained.model_dir / "metadata.json"), "files")
        version = tracking.register(info.model_uri, REGISTERED_MODEL, {"data_version": data_version})
        run_id = run.info.run_id
        experiment_id = run.info.experiment_id
    key = ["accuracy", "macro_f1", *(f"f1_{c}" for c in CATEGORIES)]
    return tracking.TrainingOutcome(
        run_id=run_id,
        run_url=target.run_url(experiment_id, run_id),
        experiment_id=experiment_id,
        registered_model=REGISTERED_MODEL,
        version=version,
        gate_metric=GATE_METRIC,
        gate_value=trained.metrics[GATE_METRIC],
        metrics={k: trained.metrics[k] for k in key} | {"best_epoch": trained.best_epoch},
        model_dir=trained.model_dir,
        data_version=data_version,
        pretrained_source=trained.pretrained_source,
    )


def _signature(size: int) -> Any:
    """(batch, size, size, 3) float32 0-255 RGB in, (batch, 5) class probabilities out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, size, size, 3), "image")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(CATEGORIES)), "category")]),
    )
