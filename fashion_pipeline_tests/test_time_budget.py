"""The classifier's time budget: the cosine schedule and the epoch count fitted to the time that is left."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fashion_pipeline.lib.common import frameworks
from fashion_pipeline.lib.training import time_budget
from fashion_pipeline.lib.training.classifier_model import settings_for


def test_cosine_starts_at_the_rate_and_ends_low():
    rates = [time_budget.cosine_rate(0.01, e, 10) for e in range(10)]
    assert rates[0] == pytest.approx(0.01)
    assert rates == sorted(rates, reverse=True)
    assert rates[-1] < 0.0003  # the last planned epoch trains at under 3 % of the start


def test_epochs_that_fit_the_budget():
    assert time_budget.epochs_that_fit(0, 100.0, 3, 15) == 15  # no budget: every epoch
    assert time_budget.epochs_that_fit(210.0, 20.0, 1, 15) == 10  # 20 s an epoch: 10 fit in 210 s
    assert time_budget.epochs_that_fit(210.0, 60.0, 2, 15) == 7  # slower than thought: the plan shrinks
    assert time_budget.epochs_that_fit(210.0, 300.0, 3, 15) == 3  # already over: stop after what is done
    assert time_budget.epochs_that_fit(9000.0, 20.0, 1, 15) == 15  # a fast machine never trains past the setting


def test_fit_stops_at_the_budget_with_the_schedule_refitted(monkeypatch):
    keras = frameworks.keras()
    clock = itertools.count(step=30.0)  # each reading of the clock 30 s later: 30 s an epoch, 5 fit in 150 s
    monkeypatch.setattr(time_budget.time, "perf_counter", lambda: next(clock))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    callback = time_budget.cosine_time_budget(0.01, max_epochs=15, budget_s=150.0)
    rates = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: seen.append(float(model.optimizer.learning_rate.numpy()))
    )
    seen: list[float] = []
    x, y = np.random.default_rng(0).normal(size=(8, 4)), np.array([0, 1] * 4)
    history = model.fit(x, y, epochs=15, callbacks=[callback, rates], verbose=0)
    assert len(history.history["loss"]) == callback.planned < 15  # stopped within the budget, not at 15
    assert seen[0] == pytest.approx(0.01)
    assert seen[-1] < 0.3 * seen[0]  # and the schedule had decayed by then


def test_the_demo_profile_has_a_budget_and_the_full_profile_none():
    assert 0 < settings_for("demo").time_minutes <= 5
    assert settings_for("full").time_minutes == 0
    with pytest.raises(ValueError, match="time_minutes"):
        settings_for("demo", time_minutes=-1)
