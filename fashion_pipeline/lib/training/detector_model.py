"""The garment detector's starting network: an Ultralytics YOLO from the `pretrained` source (weights.py).

Ultralytics builds the 5-class model itself when training starts and copies into it every tensor of the
starting checkpoint whose name and shape match: the backbone and neck, and the head's box branch, while the
class branch (80 COCO classes) is new. `count_transferred` says how many tensors did arrive, so a run records
what it actually started from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fashion_pipeline.lib.common import frameworks
from fashion_pipeline.lib.training import weights

if TYPE_CHECKING:
    from fashion_pipeline.lib.training.detector_training import DetectorSettings


@dataclass
class StartingDetector:
    yolo: Any  # ultralytics.YOLO, ready to train
    pretrained_source: str  # file:..., framework cache:..., downloaded or none: ...
    checkpoint: Path | None  # the .pt its weights come from; None from random initialisation
    # Ultralytics' `pretrained=` training argument: the checkpoint to copy tensors from into the model built
    # from the yaml; True for a model loaded from its own checkpoint; False from random initialisation.
    train_pretrained: str | bool


def load_yolo(settings: DetectorSettings) -> StartingDetector:
    """The YOLO to train, from the source `settings.pretrained` names (and `settings.model`)."""
    frameworks.ultralytics()
    from ultralytics import YOLO

    if settings.model.endswith(".pt"):  # a checkpoint: its own weights are the start (validate() checked it)
        path = Path(settings.model).resolve()
        return StartingDetector(YOLO(str(path)), weights.file_source(path), path, True)
    name = settings.model_name
    architecture = settings.model if settings.model.endswith((".yaml", ".yml")) else f"{name}.yaml"
    checkpoints: list[Path] = []

    def from_file(path: Path) -> Any:
        # The model setting names the network, built for the dataset's classes when training starts; the
        # checkpoint's tensors are then copied in by name and shape (Ultralytics' `pretrained=<file>`).
        checkpoints.append(path.resolve())
        return YOLO(architecture)

    def from_framework() -> tuple[Any, str]:
        path, source = _framework_checkpoint(name)
        return from_file(path), source

    yolo, source = weights.load_pretrained(
        settings.pretrained,
        settings.weights_dir,
        weights.detector_weight_files(name),
        framework_choice="coco",
        framework_label=f"Ultralytics' COCO checkpoint {name}.pt",
        loaders=weights.Loaders(
            from_file=from_file, from_framework=from_framework, from_scratch=lambda: YOLO(architecture)
        ),
    )
    checkpoint = checkpoints[-1] if weights.is_used(source) else None
    return StartingDetector(yolo, source, checkpoint, str(checkpoint) if checkpoint else False)


def _framework_checkpoint(name: str) -> tuple[Path, str]:
    """`<name>.pt` from Ultralytics' cache (the working folder, then its weights_dir), else one download try
    into the working folder, where YOLO("<name>.pt") puts it.

    YOLO("<name>.pt") would retry a failed download for a minute and more; one attempt with Ultralytics' own
    30 s connect timeout fails fast on an unreachable network. Names outside Ultralytics' release assets are
    not looked up on GitHub at all (that request has no timeout).
    """
    from ultralytics.utils import SETTINGS
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

    file = f"{name}.pt"
    for cached in (Path(file), Path(SETTINGS["weights_dir"]) / file):
        if cached.is_file():
            return cached.resolve(), f"framework cache:{cached.resolve()}"
    if file not in GITHUB_ASSETS_NAMES:
        raise FileNotFoundError(f"{file} is not among Ultralytics' downloadable checkpoints")
    downloaded = Path(attempt_download_asset(file, retry=0))
    if not downloaded.is_file():
        raise FileNotFoundError(f"downloading {file} left no file at {downloaded}")
    return downloaded.resolve(), "downloaded"


def count_transferred(model: Any, checkpoint: Path) -> dict[str, int]:
    """How many of `model`'s tensors equal the checkpoint's (same name, shape and values), in all and in the
    backbone and neck (every layer before the detection head, the model's last layer)."""
    import torch
    from ultralytics.nn.tasks import load_checkpoint

    source = load_checkpoint(str(checkpoint))[0].state_dict()
    state = model.state_dict()
    head = f"model.{len(model.model) - 1}."
    counts = dict.fromkeys(("transferred", "total", "backbone_transferred", "backbone_total"), 0)
    for key, tensor in state.items():
        equal = key in source and source[key].shape == tensor.shape and torch.equal(source[key].to(tensor), tensor)
        in_backbone = not key.startswith(head)
        counts["total"] += 1
        counts["transferred"] += equal
        counts["backbone_total"] += in_backbone
        counts["backbone_transferred"] += equal and in_backbone
    return counts
