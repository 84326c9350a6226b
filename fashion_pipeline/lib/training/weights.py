"""Pretrained weights without a model hub: where a model's starting weights come from, and a record of it.

`pretrained="auto"` (the default of both models) tries, in order:
  (a) a weights folder (setting `weights_dir`, else the env var FASHION_WEIGHTS_DIR; neither set = skipped) holding
      a file under one of the model's known names (ours, as in ../shared/weights/WEIGHTS.md, or the framework's);
  (b) the framework's own cache, else its download, bounded by a timeout so an unreachable network fails fast;
  (c) random initialisation.
The source actually used is a string logged as the MLflow param and metadata entry `pretrained_source`:
`file:<path> sha256:<hex>`, `framework cache:<path>`, `downloaded` or `none: <why>`. A training asset warns (its
`pretrained_weights_used` check) when it ended at (c). An explicit choice (the framework's name, 'imagenet' or
'coco', or a file path) that cannot be had is an error naming the setting; it never falls back.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

WEIGHTS_DIR_ENV = "FASHION_WEIGHTS_DIR"
AUTO = "auto"
NONE = "none"
# Seconds a weights download may wait on the network before failing (a network that drops packets hangs).
DOWNLOAD_TIMEOUT_S = 60
# A failure's message is kept to this length in the source string (an MLflow param value).
_WHY_CHARS = 300

# The classifier's backbones: the file names a weights folder may hold, ours first, then Keras' cache name.
CLASSIFIER_WEIGHT_FILES: dict[str, tuple[str, ...]] = {
    "mobilenet_v2": (
        "mobilenet_v2_1.00_224_imagenet_no_top.weights.h5",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    ),
    "mobilenet_v3_large": ("weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",),
    "mobilenet_v3_small": ("weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",),
}


def detector_weight_files(model_name: str) -> tuple[str, ...]:
    """A detector's file names in a weights folder: ours (`<model>_coco_backbone.pt`), then Ultralytics'."""
    return (f"{model_name}_coco_backbone.pt", f"{model_name}.pt")


def is_used(source: str) -> bool:
    """Whether a source string says the model started from pretrained weights."""
    return not source.startswith(f"{NONE}:")


def file_source(path: Path) -> str:
    """`file:<absolute path> sha256:<hex>`: which file, and exactly which bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"file:{Path(path).resolve()} sha256:{digest.hexdigest()}"


def weights_folder(weights_dir: str) -> Path | None:
    """The weights folder to look in: the setting, else FASHION_WEIGHTS_DIR; None when neither is set."""
    configured, name = (weights_dir, "weights_dir") if weights_dir else (os.environ.get(WEIGHTS_DIR_ENV, ""), None)
    if not configured:
        return None
    folder = Path(configured).expanduser()
    if not folder.is_dir():
        setting = f"weights_dir={weights_dir!r}" if name else f"{WEIGHTS_DIR_ENV}={configured}"
        raise ValueError(f"{setting} is not a folder: point it at a folder of weights files or leave it empty")
    return folder


def keras_cache_dir() -> Path:
    """The folder Keras downloads its application weights to (`$KERAS_HOME/models`, default ~/.keras/models)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Every new socket times out after `seconds` inside (urllib, which Keras downloads with, has none)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


T = TypeVar("T")


@dataclass(frozen=True)
class Loaders(Generic[T]):
    """How one model is made from each kind of source."""

    from_file: Callable[[Path], T]
    # The framework's cache or download: (model, source); raises when it has neither.
    from_framework: Callable[[], tuple[T, str]]
    from_scratch: Callable[[], T]


def load_pretrained(
    pretrained: str,
    weights_dir: str,
    names: Sequence[str],
    framework_choice: str,
    framework_label: str,
    loaders: Loaders[T],
) -> tuple[T, str]:
    """The model built from the source `pretrained` names, and the source string of what was used.

    `framework_choice` is the explicit name of step (b) ('imagenet', 'coco'); `framework_label` says what that
    step does, for messages ("Keras' ImageNet weights for MobileNetV2").
    """
    if pretrained == NONE:
        return loaders.from_scratch(), f"{NONE}: pretrained='none'"
    if pretrained not in (AUTO, framework_choice):
        path = Path(pretrained)
        if not path.is_file():
            raise ValueError(
                f"pretrained={pretrained!r} is not a file: use 'auto', '{framework_choice}', 'none' or a path"
            )
        return loaders.from_file(path), file_source(path)
    folder = None
    if pretrained == AUTO:
        folder = weights_folder(weights_dir)
        found = next((folder / name for name in names if folder and (folder / name).is_file()), None)
        if found is not None:
            return loaders.from_file(found), file_source(found)
    try:
        return loaders.from_framework()
    # The frameworks surface a failed download as a bare Exception (Keras' "URL fetch failure"), an OSError or a
    # ConnectionError; whichever it is, its message goes into the error or the `none:` source.
    except Exception as exc:
        why = f"{framework_label}: {type(exc).__name__}: {exc}"[:_WHY_CHARS]
        if pretrained != AUTO:
            raise RuntimeError(
                f"pretrained={pretrained!r}: {why}. Offline, set pretrained='auto' with weights_dir (or "
                f"{WEIGHTS_DIR_ENV}) pointing at a folder holding {' or '.join(names)}, pretrained=<path to a "
                "local weights file>, or pretrained='none' (random initialisation)."
            ) from exc
        looked = (
            f"no {' or '.join(names)} in {folder}"
            if folder
            else f"no weights folder (weights_dir and {WEIGHTS_DIR_ENV} unset)"
        )
        return loaders.from_scratch(), f"{NONE}: {looked}; {why}"
