"""The one place that imports the deep-learning frameworks, in the order that does not crash.

`import tensorflow` followed by `import torchvision`/`ultralytics` segfaults (STACK.md trap 1), so every
module that needs TensorFlow or Keras gets it from here, which imports torch first.
"""

from __future__ import annotations

import os
from types import ModuleType

DEFAULT_THREADS = int(os.environ.get("FASHION_THREADS", str(min(2, os.cpu_count() or 1))))


def torch() -> ModuleType:
    import torch as _torch

    _torch.set_num_threads(DEFAULT_THREADS)
    return _torch


def tensorflow() -> ModuleType:
    torch()  # must be loaded before TensorFlow
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
