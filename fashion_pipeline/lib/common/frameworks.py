"""The one place that imports the deep-learning frameworks, in the order that does not crash.

`import tensorflow` followed by `import torchvision`/`ultralytics` segfaults (STACK.md trap 1), so every
module that needs TensorFlow or Keras gets it from here, which imports torch first.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType

DEFAULT_THREADS = int(os.environ.get("FASHION_THREADS", str(min(2, os.cpu_count() or 1))))


def torch() -> ModuleType:
    import torch as _torch

    _torch.set_num_threads(DEFAULT_THREADS)
    return _torch


def tensorflow() -> ModuleType:
    torch()  # must be loaded before TensorFlow
    # torch._dynamo imports triton lazily (ultralytics and torchvision trigger it); triton loaded after
    # TensorFlow segfaults even when torch itself came first, so load it now while it is still safe.
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(DEFAULT_THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process: the first setting stands
    return tf


def keras() -> ModuleType:
    tensorflow()
    import keras as _keras

    return _keras


def ultralytics() -> ModuleType:
    """Ultralytics with every network reach turned off (STACK.md trap 3) and its MLflow callback disabled.

    Our own code logs YOLO runs to MLflow; ultralytics' callback would start a second run and switch on a
    global `mlflow.autolog()` that later logs Keras training as stray runs (trap 4).
    """
    torch()
    # Read by ultralytics at import time, so they must be set before the first import.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(".yolo_config").resolve()))
    font = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics" / "Arial.ttf"
    if not font.exists():
        # The font check runs even with plots=False and downloads Arial.ttf when missing.
        import matplotlib

        font.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", font)
    import ultralytics as _ultralytics
    from PIL import Image
    from ultralytics.utils import SETTINGS, patches

    # Ultralytics replaces PIL.Image.open process-wide with a wrapper that, on any unidentified file, tries
    # to pip-install pi-heif: a network reach, and a ModuleNotFoundError instead of PIL's error for bad uploads.
    Image.open = patches._image_open

    # No usage analytics, and none of the logger integrations (each would reach a service of its own).
    off = dict.fromkeys(("sync", "mlflow", "clearml", "comet", "dvc", "raytune", "tensorboard", "wandb"), False)
    if any(SETTINGS.get(key) for key in off):
        SETTINGS.update(off)
    return _ultralytics
