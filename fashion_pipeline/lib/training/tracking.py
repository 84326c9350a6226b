"""MLflow for the training stage: experiment set-up, runs that always end, the registry and the champion gate.

Every training run lands in one experiment (`fashion-pipeline`). The SQLite store keeps its artifacts next to
it (`mlruns/artifacts`), not in MLflow's default `./mlartifacts` of whatever folder the process started in.
A new model version gets the alias `candidate`; `champion` moves to it only through `gate_champion`, which
also publishes the champion's files to the folder retrieval and serving read.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fashion_pipeline.lib.common.atomic import atomic_dir, write_json

CANDIDATE = "candidate"
CHAMPION = "champion"
DEFAULT_EXPERIMENT = "fashion-pipeline"
# Where `make mlflow` serves the UI; run links in asset metadata point there for a local (SQLite) store.
DEFAULT_UI_URL = "http://127.0.0.1:5000"

_HOST_TAG = "fashion_pipeline.host"
_PID_TAG = "fashion_pipeline.pid"
# What the MLflow UI (3.17) shows for the experiment: the classic training view rather than the GenAI one,
# and a saved view of the runs table ("Views" menu; `?viewStateShareKey=training-metrics` opens it) whose
# columns are the headline metrics, which the table's default columns leave out.
TRAINING_VIEW = "training-metrics"
HEADLINE_METRICS = ("accuracy", "macro_f1", "mAP50", "mAP50-95")


def experiment_tags(now_ms: int) -> dict[str, str]:
    """The experiment's UI tags: its kind, and the saved runs-table view (MLflow's own tag formats)."""
    state = {"selectedColumns": [f"metrics.`{m}`" for m in HEADLINE_METRICS]}
    view = {"name": "Training metrics", "createdAt": now_ms, "updatedAt": now_ms, "state": json.dumps(state)}
    return {
        "mlflow.experimentKind": "custom_model_development",
        f"mlflow.sharedViewState.{TRAINING_VIEW}": json.dumps(view),
    }


@dataclass(frozen=True)
class TrackingTarget:
    """Where runs go: an MLflow tracking URI and an experiment name."""

    tracking_uri: str
    experiment_name: str = DEFAULT_EXPERIMENT

    @property
    def ui_url(self) -> str:
        if self.tracking_uri.startswith(("http://", "https://")):
            return self.tracking_uri.rstrip("/")
        return os.environ.get("MLFLOW_UI_URL", DEFAULT_UI_URL).rstrip("/")

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training run produced: its MLflow run, registered version and the files to publish."""

    run_id: str
    run_url: str
    experiment_id: str
    registered_model: str
    version: int
    gate_metric: str  # the validation metric the champion gate compares
    gate_value: float
    metrics: dict[str, float]  # key metrics for the asset's metadata
    model_dir: Path  # model files + metadata.json, ready to publish
    data_version: str
    # Where the starting weights came from (lib/training/weights.py); "none: ..." = random initialisation.
    pretrained_source: str = ""


@dataclass(frozen=True)
class ChampionDecision:
    passed: bool
    reason: str
    metric: str
    value: float
    threshold: float
    champion_before: int | None  # the champion's version before this decision
    champion_value: float | None
    champion_after: int | None


def artifact_root(tracking_uri: str) -> str | None:
    """`mlruns/artifacts` beside a SQLite store; None (the server decides) for anything else."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    database = Path(tracking_uri[len(prefix) :])
    return (database.parent / "artifacts").resolve().as_uri()


def configure(target: TrackingTarget) -> str:
    """Point MLflow at `target`, creating the experiment (with its artifact folder) if needed; its id."""
    import mlflow
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if target.tracking_uri.startswith("sqlite:///"):
        Path(target.tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(target.tracking_uri)
    mlflow.set_registry_uri(target.tracking_uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(target.experiment_name)
    tags = experiment_tags(int(time.time() * 1000))
    if experiment is None:
        try:
            experiment_id = client.create_experiment(
                target.experiment_name, artifact_location=artifact_root(target.tracking_uri), tags=tags
            )
        except MlflowException:
            # Another process created it between our lookup and create.
            experiment_id = client.get_experiment_by_name(target.experiment_name).experiment_id
    else:
        experiment_id = experiment.experiment_id
        for key, value in tags.items():  # an experiment made before these tags existed gets them once
            if key not in experiment.tags:
                client.set_experiment_tag(experiment_id, key, value)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def end_orphaned_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the runs this machine left RUNNING from a process that no longer exists (e.g. kill -9)."""
    import mlflow

    client = mlflow.MlflowClient()
    host = socket.gethostname()
    ended = []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        tags = run.data.tags
        if tags.get(_HOST_TAG) != host or not tags.get(_PID_TAG, "").isdigit():
            continue
        if not _process_alive(int(tags[_PID_TAG])):
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
    return ended


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def training_run(target: TrackingTarget, run_name: str, tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """An MLflow run that always ends: FINISHED on success, FAILED on an error, KILLED on interrupt."""
    import mlflow

    experiment_id = configure(target)
    end_orphaned_runs(experiment_id)
    all_tags = {_HOST_TAG: socket.gethostname(), _PID_TAG: str(os.getpid()), **(tags or {})}
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=all_tags)
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        mlflow.end_run(status=status)


def log_epoch(metrics: Mapping[str, float], epoch: int) -> None:
    """Per-epoch metrics of the active run; names are made MLflow-safe (no parentheses)."""
    import mlflow

    clean = {}
    for name, value in metrics.items():
        if value is None:
            continue
        key = name.replace("(B)", "").replace("(", "").replace(")", "")
        clean[key] = float(value)
    mlflow.log_metrics(clean, step=epoch)


def register(model_uri: str, name: str, tags: Mapping[str, str] | None = None) -> int:
    """Register `model_uri` (a logged model's `info.model_uri`) under `name`, alias it `candidate`."""
    import mlflow

    version = mlflow.register_model(model_uri, name, tags=dict(tags or {}))
    mlflow.MlflowClient().set_registered_model_alias(name, CANDIDATE, version.version)
    return int(version.version)


def champion(name: str, metric: str) -> tuple[int | None, float | None, str | None]:
    """(version, value of `metric` in its run, the data version it was trained and validated on) for the
    current champion of `name`, or (None, None, None)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None, None, None  # no registered model or no champion yet
    value = client.get_run(version.run_id).data.metrics.get(metric) if version.run_id else None
    return int(version.version), value, version.tags.get("data_version")


def gate_champion(
    outcome: TrainingOutcome, threshold: float, publish_to: Path, extra_metadata: Mapping[str, Any] | None = None
) -> ChampionDecision:
    """Make `outcome` the champion if it reaches `threshold` and is not worse than the current champion.

    On promotion the model files are published to `publish_to` in one swap (with metadata.json naming the
    run and version) and the alias `champion` moves; otherwise both stay where they were.
    """
    import mlflow

    champion_version, champion_value, champion_data = champion(outcome.registered_model, outcome.gate_metric)
    value = outcome.gate_value
    name = outcome.gate_metric
    # Scores on different validation data do not compare (e.g. a champion of the generated sample against a
    # model validated on real photos): then the threshold alone decides.
    comparable = champion_value is not None and champion_data in (None, outcome.data_version)
    if value < threshold:
        passed = False
        reason = f"{name} {value:.4f} is below the threshold {threshold:.4f}"
    elif comparable and champion_version != outcome.version and value < champion_value:
        passed = False
        reason = f"{name} {value:.4f} is worse than champion v{champion_version} ({champion_value:.4f})"
    else:
        passed = True
        if champion_value is None:
            against = "no champion yet"
        elif comparable:
            against = f"champion v{champion_version} had {champion_value:.4f}"
        else:
            against = f"champion v{champion_version} was validated on other data ({champion_data}), so not compared"
        reason = f"{name} {value:.4f} >= threshold {threshold:.4f}; {against}"
    client = mlflow.MlflowClient()
    if passed:
        publish(outcome, publish_to, extra_metadata)
        client.set_registered_model_alias(outcome.registered_model, CHAMPION, str(outcome.version))
    # The verdict on the version itself, so the registry UI says why it is (not) the champion.
    client.set_model_version_tag(outcome.registered_model, str(outcome.version), "champion_gate", reason)
    return ChampionDecision(
        passed=passed,
        reason=reason,
        metric=name,
        value=value,
        threshold=threshold,
        champion_before=champion_version,
        champion_value=champion_value,
        champion_after=outcome.version if passed else champion_version,
    )


def publish(outcome: TrainingOutcome, target: Path, extra_metadata: Mapping[str, Any] | None = None) -> Path:
    """Copy the model files to `target` in one swap, with metadata.json naming the run and version."""
    import json

    metadata = json.loads((outcome.model_dir / "metadata.json").read_text())
    metadata.update(
        {
            "mlflow_run_id": outcome.run_id,
            "registered_model": outcome.registered_model,
            "registered_version": outcome.version,
            "data_version": outcome.data_version,
            **(extra_metadata or {}),
        }
    )
    with atomic_dir(target) as tmp:
        for source in outcome.model_dir.iterdir():
            if source.name != "metadata.json" and source.is_file():
                shutil.copy2(source, tmp / source.name)
        write_json(metadata, tmp / "metadata.json")
    return target


def confusion_figure(matrix: Any, classes: Sequence[str], title: str = "Validation confusion matrix") -> Any:
    """A matplotlib Figure of a confusion matrix (rows: true class, columns: predicted), counts annotated."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 4.5), dpi=100)
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    peak = max(int(matrix.max()), 1)
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > peak / 2 else "black"
        axes.text(column, row, str(int(count)), ha="center", va="center", color=colour, fontsize=8)
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    return figure


def curves_figure(history: Mapping[str, Sequence[float]]) -> Any:
    """Loss and accuracy per epoch, train and validation side by side."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.5), dpi=100)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if key in history:
                axes.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=label)
        axes.set_xlabel("epoch")
        axes.set_title(metric)
        axes.legend()
    figure.tight_layout()
    return figure
