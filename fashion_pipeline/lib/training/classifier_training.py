"""Training the garment classifier on the crops (the network is in classifier_model), tracked in MLflow.

The crops are decoded once and trained from memory when they fit (`IN_MEMORY_BYTES`), else streamed from
disk per batch; the best epoch's weights are kept, saved with their metadata, logged and registered.
"""

from __future__ import annotations

import hashlib
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
from fashion_pipeline.lib.common.images import load_image
from fashion_pipeline.lib.training import tracking
from fashion_pipeline.lib.training.classifier_model import (
    EMBEDDING_LAYER,
    MODEL_FILE,
    ClassifierSettings,
    build_model,
    prepare_image,
)

REGISTERED_MODEL = "garment-classifier"
GATE_METRIC = "accuracy"
MANIFEST_COLUMNS = ("crop_path", "split", "category")


# --- data ---------------------------------------------------------------------------------------------


def read_manifest(path: Path) -> pd.DataFrame:
    """The crops manifest, checked: required columns, both splits present, known categories only."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist: materialize the garment_crops asset first")
    manifest = pd.read_parquet(path)
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}")
    unknown = sorted(set(manifest["category"]) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"{path} has categories {unknown} outside {CATEGORIES}")
    for split in ("train", "validation"):
        if not (manifest["split"] == split).any():
            raise ValueError(f"{path} has no {split!r} crops")
    return manifest


def crops_data_version(manifest: pd.DataFrame) -> str:
    """A short hash of what the model learns from: split, category, file name and byte size of every crop
    (sizes, not contents, so hashing stays fast on the full dataset; a re-encoded crop changes its size)."""
    rows = manifest.assign(
        file=manifest["crop_path"].map(lambda p: Path(p).name),
        bytes=manifest["crop_path"].map(lambda p: Path(p).stat().st_size),
    )
    rows = rows[["split", "category", "file", "bytes"]].sort_values(["split", "category", "file"])
    return hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()[:16]


# Crops up to this many decoded bytes are trained from memory; past it they stream from disk in batches.
IN_MEMORY_BYTES = 4 * 1024**3


def load_crops(paths: Sequence[str], size: int) -> np.ndarray:
    """(N, size, size, 3) uint8: every crop decoded and prepared once."""
    images = np.zeros((len(paths), size, size, 3), np.uint8)
    for i, path in enumerate(paths):
        images[i] = prepare_image(load_image(path), size)
    return images


def pad_to_batches(
    count: int, batch_size: int, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights making `count` samples a whole number of batches.

    Every batch must have the same shape, because a new shape makes TensorFlow retrace the step (10+ s on
    CPU). With `rng` (training) the gap is filled with randomly repeated samples at weight 1; without it
    (evaluation) with copies at weight 0, so metrics stay exact.
    """
    missing = -count % batch_size if count else batch_size
    weights = np.ones(count + missing, np.float32)
    if rng is not None:
        extra = rng.choice(count, missing) if count else np.zeros(missing, np.int64)
    else:
        extra = np.resize(np.arange(max(count, 1)), missing)
        weights[count:] = 0.0
    return np.concatenate([np.arange(count), extra]).astype(np.int64), weights


def _streamed_batches(
    keras: Any, paths: Sequence[str], labels: np.ndarray, size: int, batch_size: int, train: bool, seed: int
) -> Any:
    """A Keras PyDataset of (images, labels, weights) decoded from disk per batch, for crops past memory.

    On the TensorFlow backend it runs as a tf.data generator, which pins glibc's mmap threshold at 128 KiB
    for the whole process (TensorFlow's ApplyPython311MemoryPatch): torch code in the same process then
    runs about 1.8x slower, so the small datasets of the embedded default are trained from memory instead.
    """

    class CropBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.on_epoch_end()

        def __len__(self) -> int:
            return len(self.order) // batch_size

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            chosen = slice(index * batch_size, (index + 1) * batch_size)
            indices = self.order[chosen]
            images = np.stack([prepare_image(load_image(paths[i]), size) for i in indices]).astype(np.float32)
            return images, labels[indices], self.weights[chosen]

        def on_epoch_end(self) -> None:
            self.order, self.weights = pad_to_batches(len(paths), batch_size, self.rng if train else None)
            if train:
                self.rng.shuffle(self.order)

    return CropBatches()


# --- training -----------------------------------------------------------------------------------------


@dataclass
class TrainedClassifier:
    model: Any  # keras.Model with the best validation weights
    model_dir: Path  # classifier.keras + metadata.json
    history: dict[str, list[float]]
    metrics: dict[str, float]  # accuracy, per-class precision/recall/f1 on the validation split
    confusion: np.ndarray  # (n_classes, n_classes), rows = true class
    best_epoch: int  # 1-based


def train_classifier(
    manifest: pd.DataFrame,
    settings: ClassifierSettings,
    model_dir: Path,
    on_epoch_end: Callable[[dict[str, float], int], None] | None = None,
) -> TrainedClassifier:
    """Fine-tune on the train crops with early stopping on validation accuracy; save the best model."""
    keras = frameworks.keras()
    keras.utils.set_random_seed(settings.seed)
    index = {c: i for i, c in enumerate(CATEGORIES)}
    train = manifest[manifest["split"] == "train"]
    validation = manifest[manifest["split"] == "validation"]
    train_labels = train["category"].map(index).to_numpy(np.int64)
    validation_labels = validation["category"].map(index).to_numpy(np.int64)
    size, batch = settings.input_size, settings.batch_size
    train_paths, validation_paths = list(train["crop_path"]), list(validation["crop_path"])
    in_memory = (len(train_paths) + len(validation_paths)) * size * size * 3 <= IN_MEMORY_BYTES
    if in_memory:
        rng = np.random.default_rng(settings.seed)
        train_order, _ = pad_to_batches(len(train_paths), batch, rng)
        validation_order, validation_weights = pad_to_batches(len(validation_paths), batch)
        train_images = load_crops(train_paths, size)[train_order]
        validation_images = load_crops(validation_paths, size)[validation_order]
        train_data = {"x": train_images, "y": train_labels[train_order], "batch_size": batch, "shuffle": True}
        validation_data = (validation_images, validation_labels[validation_order], validation_weights)
        steps_per_epoch = len(train_order) // batch
    else:
        train_data = {"x": _streamed_batches(keras, train_paths, train_labels, size, batch, True, settings.seed)}
        validation_data = _streamed_batches(keras, validation_paths, validation_labels, size, batch, False, 0)
        steps_per_epoch = len(train_data["x"])

    model = build_model(settings)
    schedule = keras.optimizers.schedules.CosineDecay(settings.learning_rate, settings.epochs * steps_per_epoch)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        weighted_metrics=["accuracy"],  # weighted: padding in the last validation batch counts 0
    )
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=settings.patience, restore_best_weights=True
    )
    callbacks = [early_stopping]
    if on_epoch_end is not None:
        callbacks.append(
            keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch_end(_epoch_metrics(logs), e + 1))
        )
    fit = model.fit(
        **train_data,
        validation_data=validation_data,
        validation_batch_size=batch if in_memory else None,
        epochs=settings.epochs,
        callbacks=callbacks,
        verbose=2,
    )
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    best_epoch = int(np.argmax(history["val_accuracy"])) + 1

    if in_memory:
        probabilities = model.predict(validation_images, batch_size=batch, verbose=0)
    else:
        probabilities = model.predict(validation_data, verbose=0)
    probabilities = probabilities[: len(validation_labels)]  # the padding comes last
    metrics, confusion = classification_metrics(validation_labels, probabilities.argmax(axis=1))
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(model_dir / MODEL_FILE)
    write_json(
        {
            "classes": list(CATEGORIES),
            "input_size": size,
            "embedding_dim": int(model.get_layer(EMBEDDING_LAYER).output.shape[-1]),
            "architecture": f"MobileNetV3{settings.architecture.capitalize()}",
            "pretrained": settings.pretrained,
            "model_file": MODEL_FILE,
            "embedding_layer": EMBEDDING_LAYER,
            "preprocessing": "RGB, scaled to fit and padded to a square (PAD_COLOUR), raw 0-255 pixels",
        },
        model_dir / "metadata.json",
    )
    return TrainedClassifier(model, model_dir, history, metrics, confusion, best_epoch)


def _epoch_metrics(logs: dict[str, float]) -> dict[str, float]:
    """Keras' epoch logs with training metrics prefixed `train_`, so `accuracy` stays the validation figure."""
    return {k if k.startswith("val_") or k == "learning_rate" else f"train_{k}": v for k, v in logs.items()}


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
    )


def _signature(size: int) -> Any:
    """(batch, size, size, 3) float32 0-255 RGB in, (batch, 5) class probabilities out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, size, size, 3), "image")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(CATEGORIES)), "category")]),
    )
