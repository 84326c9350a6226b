"""A Keras callback that fits a cosine learning-rate schedule and the number of epochs to a time budget."""

from __future__ import annotations

import math
import time

from fashion_pipeline.lib.common import frameworks


def cosine_rate(initial: float, epoch: int, planned: int) -> float:
    """The learning rate of `epoch` (0-based) on a cosine from `initial` towards zero over `planned` epochs."""
    return initial * 0.5 * (1.0 + math.cos(math.pi * min(epoch, planned) / planned))


def epochs_that_fit(budget_s: float, elapsed_s: float, epochs_done: int, max_epochs: int) -> int:
    """How many epochs in all fit `budget_s` at the mean epoch time so far (at least those already done)."""
    if budget_s <= 0 or epochs_done == 0:
        return max_epochs
    per_epoch = elapsed_s / epochs_done
    return max(epochs_done, min(max_epochs, int(budget_s // per_epoch)))


def cosine_time_budget(initial_rate: float, max_epochs: int, budget_s: float):
    """Sets each epoch's learning rate on a cosine over the planned epochs and stops when they are done.

    Without a budget the plan is `max_epochs`. With one, the plan is refitted after every epoch to the epochs
    that fit at the mean epoch time so far, as Ultralytics' `time` does for the detector: the schedule still
    ends low, so a slow or busy machine trains fewer epochs of the same shape rather than overrunning or
    stopping at a high learning rate. (Built here rather than declared at module level because the Keras base class must not be imported at module
    import: lib/common/frameworks orders TensorFlow's import.)
    """
    keras = frameworks.keras()

    class _CosineTimeBudget(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.planned = max_epochs
            self._start = 0.0

        def on_train_begin(self, logs=None) -> None:
            self._start = time.perf_counter()

        def on_epoch_begin(self, epoch: int, logs=None) -> None:
            self.model.optimizer.learning_rate.assign(cosine_rate(initial_rate, epoch, self.planned))

        def on_epoch_end(self, epoch: int, logs=None) -> None:
            elapsed = time.perf_counter() - self._start
            self.planned = epochs_that_fit(budget_s, elapsed, epoch + 1, max_epochs)
            if epoch + 1 >= self.planned:
                self.model.stop_training = True

    return _CosineTimeBudget()
