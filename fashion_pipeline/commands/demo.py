"""`fashion-pipeline demo`: materialize every asset on the embedded default, then start the three UIs.

Runs are recorded in the project's Dagster instance (`DAGSTER_HOME`, default ./.dagster_home), so the
Dagster UI shows them afterwards; MLflow tracks to its SQLite store under ./mlruns.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# Only the demo shop can be crawled offline; real sites are crawled from the UI or the recrawl schedule.
DEFAULT_DEMO_SITES = "demo_shop"

# What a profile changes in the run: asset name -> its Dagster config. `demo` is every asset's default.
# `real` trains from pretrained weights (FASHION_WEIGHTS_DIR) on the labelled photo sources
# (FASHION_PHOTO_SOURCES, default photo_sources/real.yaml) without the generated sample, and crawls the
# shop built from a folder of real product photos.
PROFILES: dict[str, dict[str, dict]] = {
    "demo": {},
    "real": {
        "garment_crops": {"include_deepfashion2": False},
        "yolo_dataset": {"include_deepfashion2": False},
        "garment_classifier": {"profile": "real"},
        "garment_detector": {"profile": "real"},
    },
}
PROFILE_SITES = {"demo": DEFAULT_DEMO_SITES, "real": "real_products"}
REAL_SOURCES_FILE = Path(__file__).resolve().parents[2] / "photo_sources" / "real.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface the UIs listen on (default 127.0.0.1)")
    parser.add_argument("--dagster-port", type=int, default=3000)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--app-port", type=int, default=8000)
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="demo",
        help="demo: the generated sample and demo shop (default); real: pretrained weights, labelled real "
        "photos and a shop of real products (needs FASHION_WEIGHTS_DIR and FASHION_REAL_PHOTOS)",
    )
    parser.add_argument("--sites", default=os.environ.get("FASHION_DEMO_SITES"),
                        help="comma-separated catalog_raw partitions to crawl (default: the profile's shop)")  # fmt: skip
    parser.add_argument("--skip-materialize", action="store_true", help="only start the UIs on what exists")
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="train both models again even when champions exist (a worse model fails its champion_gate)",
    )
    parser.add_argument("--no-ui", action="store_true", help="materialize, then exit without starting the UIs")


# The project's Dagster instance settings: no telemetry, and no first-visit dialog asking for an email for
# dagster.io's newsletter (the same text as the Makefile's dagster-home target writes).
DAGSTER_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


def prepare_environment() -> Path:
    """Project-local Dagster home with telemetry off, and MLflow/Ultralytics kept offline."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # The MLflow UI otherwise starts 7 background job workers (about 270 MB each) that browsing never uses.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(".yolo_config").resolve()))
    Path("mlruns").mkdir(exist_ok=True)
    return home


# Assets that train a model: rerunning them cannot replace a better champion (the gate blocks), so a
# second `make demo` keeps the champions of its profile instead of spending ten minutes to fail the gate.
TRAINING_ASSETS = {"garment_classifier": "classifier_dir", "garment_detector": "detector_dir"}


def _champion_profile(model_dir: Path) -> str | None:
    """The profile the published champion in `model_dir` was trained with (None: no champion yet)."""
    metadata = model_dir / "metadata.json"
    if not metadata.exists():
        return None
    return json.loads(metadata.read_text()).get("profile", "demo")  # champions from before profiles: demo


def profile_config(profile: str, assets: list[str]) -> dict:
    """The run config of `profile` for the assets of one run (Dagster refuses config for assets not in it)."""
    return {"ops": {name: {"config": config} for name, config in PROFILES[profile].items() if name in assets}}


def materialize_all(sites: list[str], retrain: bool = False, profile: str = "demo") -> None:
    """Materialize the whole graph in dependency order, partitioned assets once per requested partition."""
    import dagster as dg

    from fashion_pipeline.commands.stack_runs import batches
    from fashion_pipeline.definitions import defs
    from fashion_pipeline.lib.common.paths import DataPaths

    data = DataPaths.from_env()
    keep = {name for name, folder in TRAINING_ASSETS.items() if _champion_profile(getattr(data, folder)) == profile}
    if keep and not retrain:
        print(f"==> keeping the existing champions ({', '.join(sorted(keep))}); --retrain trains again", flush=True)
    else:
        keep = set()

    instance = dg.DagsterInstance.get()
    graph = defs.resolve_asset_graph()
    job_assets = list(defs.assets or [])
    keys = {key for key in graph.get_all_asset_keys() if key.to_user_string() not in keep}
    # Jobs cannot mix partitioned and unpartitioned assets: the graph is cut where they alternate (dataset
    # and training; the crawl per site; the merged catalog; the embeddings per site; indexes and evaluations).
    for batch in batches(graph, keys):
        names = ", ".join(key.to_user_string() for key in batch)
        partitions = graph.get(batch[0]).partitions_def
        partition_keys = [None] if partitions is None else [s for s in sites if s in partitions.get_partition_keys()]
        for partition_key in partition_keys:
            label = f"{names}" + (f" [{partition_key}]" if partition_key else "")
            print(f"==> materializing {label}", flush=True)
            started = time.perf_counter()
            result = dg.materialize(
                job_assets,
                instance=instance,
                resources=defs.resources,
                selection=batch,
                partition_key=partition_key,
                run_config=profile_config(profile, [key.to_user_string() for key in batch]),
                raise_on_error=False,
            )
            done = {event.asset_key for event in result.get_asset_materialization_events()}
            # A failed blocking check skips what follows without failing the run: treat that as a failure too.
            skipped = [key.to_user_string() for key in batch if key not in done]
            for check in result.get_asset_check_evaluations():
                if not check.passed:
                    print(f"    check {check.asset_key.to_user_string()}:{check.check_name} did not pass", flush=True)
            if not result.success or skipped:
                raise SystemExit(
                    f"materializing {label} failed"
                    + (f" (not materialized: {', '.join(skipped)})" if skipped else "")
                    + ": see the run in the Dagster UI (make ui)"
                )
            print(f"    done in {time.perf_counter() - started:.0f} s", flush=True)


def _wait_for(url: str, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    return False


def mlflow_landing_url(ui_url: str, tracking_uri: str) -> str:
    """The training experiment's runs table with its headline metrics as columns, else the UI's home page.

    MLflow 3.17 opens in its GenAI view with the metrics hidden; `workflowType` picks the training view and
    `viewStateShareKey` the saved view that lib/training/tracking.py stores on the experiment.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from fashion_pipeline.lib.training.tracking import DEFAULT_EXPERIMENT, TRAINING_VIEW

    try:
        experiment = mlflow.MlflowClient(tracking_uri).get_experiment_by_name(DEFAULT_EXPERIMENT)
    except MlflowException:  # an unreadable store: the UI itself shows what is wrong
        return ui_url
    if experiment is None:
        return ui_url
    query = f"workflowType=machine_learning&viewStateShareKey={TRAINING_VIEW}"
    return f"{ui_url}/#/experiments/{experiment.experiment_id}/runs?{query}"


def start_services(args: argparse.Namespace) -> int:
    bin_dir = Path(sys.executable).parent
    mlruns = Path("mlruns").resolve()
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{mlruns / 'mlflow.db'}")
    services = {
        "Dagster UI": (
            [str(bin_dir / "dagster"), "dev", "-w", "workspace.yaml", "-h", args.host, "-p", str(args.dagster_port)],
            f"http://{args.host}:{args.dagster_port}",
        ),
        "MLflow UI": (
            [
                str(bin_dir / "mlflow"),
                "ui",
                "--backend-store-uri",
                tracking_uri,
                "--default-artifact-root",
                str(mlruns / "artifacts"),
                "--host",
                args.host,
                "--port",
                str(args.mlflow_port),
                "--workers",  # one person browsing: not the default 4 server processes
                "1",
            ],
            f"http://{args.host}:{args.mlflow_port}",
        ),
        "Shop app": (
            [str(bin_dir / "fashion-pipeline"), "serve", "--host", args.host, "--port", str(args.app_port)],
            f"http://{args.host}:{args.app_port}",
        ),
    }
    processes = {}
    try:
        for name, (command, _url) in services.items():
            # Own process group each, so Ctrl-C here stops every child (dagster dev has children of its own).
            processes[name] = subprocess.Popen(command, start_new_session=True)
        for name, (_command, url) in services.items():
            ready = _wait_for(url)
            shown = mlflow_landing_url(url, tracking_uri) if name == "MLflow UI" else url
            print(f"{name:>10}: {shown}" + ("" if ready else "  (not answering yet: see its log above)"), flush=True)
        print("Ctrl-C stops all three.", flush=True)
        while all(p.poll() is None for p in processes.values()):
            time.sleep(1)
        failed = [name for name, p in processes.items() if p.poll() is not None]
        print(f"stopped unexpectedly: {', '.join(failed)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def run(args: argparse.Namespace) -> int:
    prepare_environment()
    if args.profile == "real":
        os.environ.setdefault("FASHION_PHOTO_SOURCES", str(REAL_SOURCES_FILE))
    sites = args.sites or PROFILE_SITES[args.profile]
    if not args.skip_materialize:
        materialize_all([s.strip() for s in sites.split(",") if s.strip()], retrain=args.retrain, profile=args.profile)
    if args.no_ui:
        return 0
    return start_services(args)
