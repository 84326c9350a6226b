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
from fashion_pipeline.lib.training import tracking, weights
from fashion_pipeline.lib.training.detector import ONNX_FILE
from fashion_pipeline.lib.training.detector_model import count_transferred, load_yolo

REGISTERED_MODEL = "garment-detector"
WEIGHTS_FILE = "detector.pt"
GATE_METRIC = "mAP50"


@dataclass(frozen=True)
class DetectorSettings:
    """Every setting of a detector training run (logged as MLflow params)."""

    # An Ultralytics detection model name (yolo11n, yolov8s, yolov5nu, ...), a model yaml, or a .pt checkpoint
    # to start from (which then holds the starting weights itself).
    model: str = "yolo11n"
    # "auto" (weights folder, then Ultralytics' cache or download, then none), "coco" (<model>.pt from
    # Ultralytics' cache or download only), "none" (random, from the model yaml) or a local .pt; see weights.py
    pretrained: str = weights.AUTO
    weights_dir: str = ""  # folder of weights files for "auto"; empty = $FASHION_WEIGHTS_DIR (unset: skipped)
    imgsz: int = 640
    freeze: int = 0  # the first N model layers stay frozen (10 = yolov5nu's and yolo11n's backbone); 0 = none
    epochs: int = 100
    batch: int = 16
    patience: int = 20  # epochs without fitness improvement before early stopping
    time_minutes: float = 0.0  # > 0: stop after this long (ultralytics fits its schedule to the budget)
    close_mosaic: int = 10  # last epochs trained without mosaic augmentation
    # Validate after every epoch (early stopping, best-epoch choice) or only after the last one; the champion
    # gate's score is the final validation either way.
    validate_every_epoch: bool = True
    warmup_epochs: float = 3.0  # learning-rate warm-up; a short run cannot spend 3 epochs on it
    optimizer: str = "auto"  # ultralytics' choice (SGD for long runs), or "AdamW", "SGD", ...
    lr0: float = 0.01  # initial learning rate; ignored by optimizer="auto"
    cache: bool = False  # keep the decoded, resized training images in RAM (small datasets)
    device: str = ""  # "" = a GPU when there is one, else "cpu"
    seed: int = 0
    min_map50: float = 0.5  # the champion gate: validation mAP50 a new model must reach

    def validate(self) -> DetectorSettings:
        if self.pretrained not in (weights.AUTO, "coco", weights.NONE) and not Path(self.pretrained).is_file():
            raise ValueError(
                f"pretrained={self.pretrained!r}: use 'auto', 'coco', 'none' or the path of a local .pt file"
            )
        if self.model.endswith(".pt"):
            if not Path(self.model).is_file():
                raise ValueError(
                    f"model={self.model!r} is not a file: give a model name (e.g. yolo11n, yolov5nu) or yaml, "
                    "or the path of a local .pt checkpoint"
                )
            if self.pretrained != weights.AUTO:
                raise ValueError(
                    f"model={self.model!r} is a checkpoint and holds its own starting weights: leave "
                    f"pretrained='auto' (it is {self.pretrained!r}), or give a model name or yaml instead"
                )
        if self.imgsz % 32:
            raise ValueError(f"imgsz={self.imgsz}: YOLO needs a multiple of 32")
        if self.freeze < 0:
            raise ValueError(f"freeze={self.freeze}: the number of first layers to freeze, 0 or more")
        return self

    @property
    def model_name(self) -> str:
        """The model's name without folder or suffix: yolov5nu for yolov5nu, yolov5nu.yaml or a/yolov5nu.pt."""
        return Path(self.model).stem if self.model.endswith((".yaml", ".yml", ".pt")) else self.model


PROFILES: dict[str, DetectorSettings] = {
    # The embedded default: the generated sample on 2 CPU cores, about 5 minutes. Without weights (offline, no
    # weights folder) it trains from scratch, which the settings below are tuned for.
    "demo": DetectorSettings(
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
    # Real street photos on 2 CPU cores: YOLOv5nu from the COCO backbone (../shared/weights), backbone frozen
    # (under 2 min an epoch at 320 px; mAP50 about 0.70 after five epochs on photos of the same kind).
    "real": DetectorSettings(
        model="yolov5nu",
        imgsz=320,
        freeze=10,
        epochs=5,
        batch=16,
        patience=5,
        time_minutes=0.0,
        close_mosaic=2,
        # A 5-epoch run keeps improving to its last epoch (mAP50 0.44 -> 0.68 on validation, rising each epoch),
        # so per-epoch validation only costs time: about 20 s of each 160 s epoch on 2 cores.
        validate_every_epoch=False,
        warmup_epochs=1.0,
        optimizer="auto",
        cache=True,
        device="cpu",
        min_map50=0.5,
    ),
    # The original project's setting: real DeepFashion2 on a GPU, fine-tuned from COCO.
    "full": DetectorSettings(imgsz=640, epochs=100, batch=16, patience=20, min_map50=0.5),
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
    pretrained_source: str  # lib/training/weights.py: where the starting weights came from
    # Tensors of the 5-class model equal to the starting checkpoint's when training began ("421/427"), in all
    # and in the backbone and neck; empty from random initialisation.
    pretrained_tensors: str
    pretrained_backbone_tensors: str


def train_detector(
    data_yaml: Path,
    settings: DetectorSettings,
    work_dir: Path,
    on_epoch_end: Callable[[dict[str, float], int], None] | None = None,
) -> TrainedDetector:
    """Train YOLO on data.yaml, validate the best weights and export them to ONNX."""
    read_data_yaml(data_yaml)
    start = load_yolo(settings)
    model, transfer = start.yolo, {}
    if start.checkpoint is not None:
        # Counted once the trainer has built the 5-class model and copied the checkpoint in, before any step.
        checkpoint = start.checkpoint
        model.add_callback("on_pretrain_routine_end", lambda t: transfer.update(count_transferred(t.model, checkpoint)))
    if on_epoch_end is not None:

        def log_epoch(trainer: Any) -> None:
            losses = trainer.label_loss_items(trainer.tloss, prefix="train")
            on_epoch_end({**losses, **trainer.metrics, **trainer.lr}, trainer.epoch + 1)

        model.add_callback("on_fit_epoch_end", log_epoch)
    model.train(
        data=str(Path(data_yaml).resolve()),
        epochs=settings.epochs,
        imgsz=settings.imgsz,
        freeze=settings.freeze,
        pretrained=start.train_pretrained,
        batch=settings.batch,
        patience=settings.patience,
        time=settings.time_minutes / 60 if settings.time_minutes > 0 else None,
        close_mosaic=settings.close_mosaic,
        val=settings.validate_every_epoch,
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
    from ultralytics import YOLO  # loaded by load_yolo

    exported = YOLO(str(best)).export(
        format="onnx", imgsz=settings.imgsz, dynamic=False, simplify=True, device="cpu", verbose=False
    )
    shutil.copy2(exported, model_dir / ONNX_FILE)
    write_json(
        {
            "classes": list(CATEGORIES),
            "input_size": settings.imgsz,
            "model": settings.model,
            "pretrained": settings.pretrained,
            "pretrained_source": start.pretrained_source,
            **_transfer_fields(transfer),
            "model_file": ONNX_FILE,
            "weights_file": WEIGHTS_FILE,
        },
        model_dir / "metadata.json",
    )
    return TrainedDetector(
        model_dir,
        metrics,
        Path(trainer.save_dir),
        int(trainer.epoch) + 1,
        start.pretrained_source,
        **_transfer_fields(transfer),
    )


def _transfer_fields(transfer: dict[str, int]) -> dict[str, str]:
    if not transfer:
        return {"pretrained_tensors": "", "pretrained_backbone_tensors": ""}
    return {
        "pretrained_tensors": f"{transfer['transferred']}/{transfer['total']}",
        "pretrained_backbone_tensors": f"{transfer['backbone_transferred']}/{transfer['backbone_total']}",
    }


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
        transfer = {"pretrained_source": trained.pretrained_source}
        if trained.pretrained_tensors:
            transfer |= {
                "pretrained_tensors": trained.pretrained_tensors,
                "pretrained_backbone_tensors": trained.pretrained_backbone_tensors,
            }
        mlflow.log_params(transfer)
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
        pretrained_source=trained.pretrained_source,
    )
