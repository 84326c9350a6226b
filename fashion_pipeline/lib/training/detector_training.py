"""Training the garment detector: Ultralytics YOLO on the YOLO dataset, exported to ONNX, tracked in MLflow.

Training needs torch and ultralytics; serving does not (see detector: the exported ONNX graph runs with
onnxruntime).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from fashion_pipeline.lib.common import frameworks
from fashion_pipeline.lib.common.atomic import write_json
from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.training import tracking
from fashion_pipeline.lib.training.detector import ONNX_FILE

REGISTERED_MODEL = "garment-detector"
WEIGHTS_FILE = "detector.pt"
GATE_METRIC = "mAP50"


@dataclass(frozen=True)
class DetectorSettings:
    """Every setting of a detector training run (logged as MLflow params)."""

    model: str = "yolo11n"  # any Ultralytics detection model name (yolo11n, yolo11s, yolov8n, ...)
    pretrained: str = "coco"  # "coco" (<model>.pt, downloaded), "none" (<model>.yaml, random) or a .pt path
    imgsz: int = 640
    epochs: int = 100
    batch: int = 16
    patience: int = 20  # epochs without fitness improvement before early stopping
    time_minutes: float = 0.0  # > 0: stop after this long (ultralytics fits its schedule to the budget)
    close_mosaic: int = 10  # last epochs trained without mosaic augmentation
    warmup_epochs: float = 3.0  # learning-rate warm-up; a short run cannot spend 3 epochs on it
    optimizer: str = "auto"  # ultralytics' choice (SGD for long runs), or "AdamW", "SGD", ...
    lr0: float = 0.01  # initial learning rate; ignored by optimizer="auto"
    cache: bool = False  # keep the decoded, resized training images in RAM (small datasets)
    device: str = ""  # "" = a GPU when there is one, else "cpu"
    seed: int = 0
    min_map50: float = 0.5  # the champion gate: validation mAP50 a new model must reach

    def validate(self) -> DetectorSettings:
        if self.pretrained not in ("coco", "none") and not Path(self.pretrained).is_file():
            raise ValueError(f"pretrained={self.pretrained!r}: use 'coco', 'none' or the path of a local .pt file")
        if self.imgsz % 32:
            raise ValueError(f"imgsz={self.imgsz}: YOLO needs a multiple of 32")
        return self


PROFILES: dict[str, DetectorSettings] = {
    # The embedded default: the generated sample on 2 CPU cores, offline, about 5 minutes.
    "demo": DetectorSettings(
        pretrained="none",
        imgsz=128,  # per minute of CPU, 128 px learned faster than 160 px in our trials
        epochs=15,
        batch=16,
        patience=10,
        time_minutes=5.0,  # ultralytics fits the epochs and the LR schedule into this budget
        close_mosaic=3,
        warmup_epochs=1.0,
        optimizer="AdamW",
        lr0=0.01,  # from scratch, a high rate pays off in a short run (0.001 'auto' lagged far behind)
        cache=True,
        device="cpu",
        min_map50=0.30,
    ),
    # The original project's setting: real DeepFashion2 on a GPU, fine-tuned from COCO.
    "full": DetectorSettings(pretrained="coco", imgsz=640, epochs=100, batch=16, patience=20, min_map50=0.5),
}


def settings_for(profile: str, **overrides: Any) -> DetectorSettings:
    """The profile's settings with every non-None override applied."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}: use one of {sorted(PROFILES)}")
    return replace(PROFILES[profile], **{k: v for k, v in overrides.items() if v is not None}).validate()


# --- data ---------------------------------------------------------------------------------------------


def read_data_yaml(path: Path) -> dict[str, Any]:
    """data.yaml, checked: it exists, names the 5 categories in model order, and its folders exist."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist: materialize the yolo_dataset asset first")
    data = yaml.safe_load(Path(path).read_text())
    names = data.get("names")
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names or [])
    if tuple(names) != CATEGORIES:
        raise ValueError(f"{path} names {names}, expected {list(CATEGORIES)} in that order")
    for split in ("train", "val"):
        if not Path(data[split]).is_dir():
            raise FileNotFoundError(f"{path}: {split} folder {data[split]} does not exist")
    return data


def yolo_data_version(data_yaml: Path) -> str:
    """A short hash of what the detector learns from: every label file's content and every image's name
    and size (image bytes are not read, so hashing stays fast on the full dataset)."""
    data = read_data_yaml(data_yaml)
    digest = hashlib.sha256(json.dumps(data["names"], sort_keys=True).encode())
    for split in ("train", "val"):
        image_dir = Path(data[split])
        label_dir = image_dir.parent.parent / "labels" / image_dir.name
        for image in sorted(image_dir.iterdir()):
            digest.update(f"{split}/{image.name}:{image.stat().st_size}\n".encode())
            label = label_dir / f"{image.stem}.txt"
            digest.update(label.read_bytes() if label.exists() else b"<no label>")
    return digest.hexdigest()[:16]


# --- training -----------------------------------------------------------------------------------------


@dataclass
class TrainedDetector:
    model_dir: Path  # detector.onnx + detector.pt + metadata.json
    metrics: dict[str, float]  # mAP50, mAP50-95, precision, recall, AP50_<class>, AP50-95_<class>
    save_dir: Path  # ultralytics' run folder: results.csv and the plots
    epochs_run: int


def _weights_source(settings: DetectorSettings) -> str:
    if settings.pretrained == "none":
        return f"{settings.model}.yaml"
    if settings.pretrained == "coco":
        return f"{settings.model}.pt"
    return str(Path(settings.pretrained).resolve())


def _load_yolo(settings: DetectorSettings) -> Any:
    frameworks.ultralytics()
    from ultralytics import YOLO

    source = _weights_source(settings)
    if settings.pretrained != "coco":
        return YOLO(source)
    try:
        return YOLO(source)
    # ultralytics surfaces a failed download as FileNotFoundError, ConnectionError or a plain Exception.
    except Exception as exc:
        raise RuntimeError(
            f"pretrained='coco': loading {source} failed ({exc}); it is downloaded from GitHub on first use. "
            "Offline, set pretrained='none' (random initialisation from the model yaml) or "
            f"pretrained=<path to a local {source}>."
        ) from exc


def train_detector(
    data_yaml: Path,
    settings: DetectorSettings,
    work_dir: Path,
    on_epoch_end: Callable[[dict[str, float], int], None] | None = None,
) -> TrainedDetector:
    """Train YOLO on data.yaml, validate the best weights and export them to ONNX."""
    read_data_yaml(data_yaml)
    model = _load_yolo(settings)
    if on_epoch_end is not None:

        def log_epoch(trainer: Any) -> None:
            losses = trainer.label_loss_items(trainer.tloss, prefix="train")
            on_epoch_end({**losses, **trainer.metrics, **trainer.lr}, trainer.epoch + 1)

        model.add_callback("on_fit_epoch_end", log_epoch)
    model.train(
        data=str(Path(data_yaml).resolve()),
        epochs=settings.epochs,
        imgsz=settings.imgsz,
        batch=settings.batch,
        patience=settings.patience,
        time=settings.time_minutes / 60 if settings.time_minutes > 0 else None,
        close_mosaic=settings.close_mosaic,
        warmup_epochs=settings.warmup_epochs,
        optimizer=settings.optimizer,
        lr0=settings.lr0,
        cache="ram" if settings.cache else False,
        device=settings.device or None,
        seed=settings.seed,
        deterministic=True,
        project=str(Path(work_dir).resolve() / "ultralytics"),
        name="train",
        exist_ok=True,
        plots=True,
        verbose=False,
    )
    trainer = model.trainer
    box = trainer.validator.metrics.box
    metrics = {
        "mAP50": float(box.map50),
        "mAP50-95": float(box.map),
        "precision": float(box.mp),
        "recall": float(box.mr),
    }
    ap50 = dict.fromkeys(CATEGORIES, 0.0)  # a class without validation boxes scores 0
    ap = dict.fromkeys(CATEGORIES, 0.0)
    for i, class_id in enumerate(box.ap_class_index):
        ap50[CATEGORIES[int(class_id)]] = float(box.ap50[i])
        ap[CATEGORIES[int(class_id)]] = float(box.ap[i])
    metrics |= {f"AP50_{c}": v for c, v in ap50.items()} | {f"AP50-95_{c}": v for c, v in ap.items()}

    model_dir = Path(work_dir) / "detector"
    model_dir.mkdir(parents=True, exist_ok=True)
    best = Path(trainer.best)
    shutil.copy2(best, model_dir / WEIGHTS_FILE)
    exported = _load_yolo(replace(settings, pretrained=str(best))).export(
        format="onnx", imgsz=settings.imgsz, dynamic=False, simplify=True, device="cpu", verbose=False
    )
    shutil.copy2(exported, model_dir / ONNX_FILE)
    write_json(
        {
            "classes": list(CATEGORIES),
            "input_size": settings.imgsz,
            "model": settings.model,
            "pretrained": settings.pretrained,
            "model_file": ONNX_FILE,
            "weights_file": WEIGHTS_FILE,
        },
        model_dir / "metadata.json",
    )
    return TrainedDetector(model_dir, metrics, Path(trainer.save_dir), int(trainer.epoch) + 1)


def train_and_log(
    data_yaml: Path,
    settings: DetectorSettings,
    target: tracking.TrackingTarget,
    work_dir: Path,
    profile: str = "custom",
) -> tracking.TrainingOutcome:
    """Train on data.yaml as one MLflow run; log params, metrics, plots, weights and the registered model."""
    data_version = yolo_data_version(data_yaml)
    frameworks.ultralytics()
    import mlflow
    import mlflow.onnx
    import onnx

    with tracking.training_run(target, "garment_detector", {"model": REGISTERED_MODEL, "profile": profile}) as run:
        data = read_data_yaml(data_yaml)
        mlflow.log_params(
            {
                **asdict(settings),
                "profile": profile,
                "data_version": data_version,
                "train_images": sum(1 for _ in Path(data["train"]).iterdir()),
                "validation_images": sum(1 for _ in Path(data["val"]).iterdir()),
                "classes": ",".join(CATEGORIES),
            }
        )
        trained = train_detector(data_yaml, settings, work_dir, tracking.log_epoch)
        mlflow.log_metrics({**trained.metrics, "epochs_run": trained.epochs_run})
        for plot in sorted(trained.save_dir.glob("*.png")):
            mlflow.log_artifact(str(plot), "plots")
        for table in ("results.csv", "args.yaml"):
            if (trained.save_dir / table).exists():
                mlflow.log_artifact(str(trained.save_dir / table), "ultralytics")
        mlflow.log_artifact(str(trained.model_dir / WEIGHTS_FILE), "files")
        mlflow.log_artifact(str(trained.model_dir / "metadata.json"), "files")
        metadata = json.loads((trained.model_dir / "metadata.json").read_text())
        info = mlflow.onnx.log_model(
            onnx.load(str(trained.model_dir / ONNX_FILE)),
            name="model",
            pip_requirements=["onnxruntime", "onnx"],
            metadata=metadata,
            save_as_external_data=False,
        )
        version = tracking.register(info.model_uri, REGISTERED_MODEL, {"data_version": data_version})
        run_id, experiment_id = run.info.run_id, run.info.experiment_id
    key = ["mAP50", "mAP50-95", *(f"AP50_{c}" for c in CATEGORIES)]
    return tracking.TrainingOutcome(
        run_id=run_id,
        run_url=target.run_url(experiment_id, run_id),
        experiment_id=experiment_id,
        registered_model=REGISTERED_MODEL,
        version=version,
        gate_metric=GATE_METRIC,
        gate_value=trained.metrics[GATE_METRIC],
        metrics={k: trained.metrics[k] for k in key} | {"epochs_run": trained.epochs_run},
        model_dir=trained.model_dir,
        data_version=data_version,
    )
