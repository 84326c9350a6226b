"""The Dagster and MLflow UIs as `make demo` starts them, in Chromium: what a user lands on, and that nothing
leaves 127.0.0.1 (the browser's own requests and MLflow's telemetry worker included).

Each UI runs once for the module, as its own process on a free loopback port: the Dagster webserver over
this project's definitions (workspace.yaml, as `make ui`), and `mlflow ui` over a store holding the
experiment as training creates it, with a classifier and a detector run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fashion_pipeline.commands.demo import DAGSTER_YAML, mlflow_landing_url
from fashion_pipeline_tests.browser_support import (
    CI_MARKERS,
    BackgroundServer,
    chromium,
    free_port,
    net_log_urls,
    playwright_session,
    save_screenshot,
)

pytestmark = pytest.mark.browser

BIN = Path(sys.executable).parent
CLASSIFIER_METRICS = {"accuracy": 0.855, "macro_f1": 0.861, "f1_shirt": 0.91, "f1_dress": 0.78, "val_loss": 0.41}
DETECTOR_METRICS = {"mAP50": 0.658, "mAP50-95": 0.44, "AP50_shirt": 0.71, "AP50_dress": 0.52}
# A training process's view of the store: the experiment as lib/training/tracking.py creates it.
LOG_RUNS = f"""
import sys, mlflow
from fashion_pipeline.lib.training.tracking import TrackingTarget, configure
configure(TrackingTarget(sys.argv[1]))
with mlflow.start_run(run_name="garment_classifier"):
    mlflow.log_params({{"architecture": "small", "input_size": 128, "epochs": 15}})
    mlflow.log_metrics({CLASSIFIER_METRICS!r})
with mlflow.start_run(run_name="garment_detector"):
    mlflow.log_params({{"model": "yolo11n", "imgsz": 128}})
    mlflow.log_metrics({DETECTOR_METRICS!r})
"""
UI_TELEMETRY = "/ajax-api/3.0/mlflow/ui-telemetry"


def _environment(**extra: str) -> dict[str, str]:
    """This process's environment without the CI and test markers (see CI_MARKERS), plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if k not in CI_MARKERS}, **extra}


@pytest.fixture(scope="module")
def playwright():
    with playwright_session() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright, tmp_path_factory):
    with chromium(playwright, tmp_path_factory.mktemp("chromium-uis")) as handle:
        yield handle


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    root = tmp_path_factory.mktemp("dagster-ui")
    (root / "home").mkdir()
    (root / "home" / "dagster.yaml").write_text(DAGSTER_YAML)  # as make dagster-home and the demo write it
    port = free_port()
    command = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    env = _environment(DAGSTER_HOME=str(root / "home"), FASHION_DATA_DIR=str(root / "data"))
    server = BackgroundServer("dagster-webserver", command, env, root / "webserver.log", port).start("/server_info")
    try:
        _wait_for_code_location(server)
        yield server
    finally:
        server.stop()


def _wait_for_code_location(server: BackgroundServer, timeout_s: float = 120.0) -> None:
    """Until the definitions are loaded; their import error, if any, is the failure message."""
    query = (
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
        "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        data = httpx.post(f"{server.url}/graphql", json={"query": query}, timeout=10).json()["data"]
        entries = data["workspaceOrError"]["locationEntries"]
        if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
            errors = [
                e["locationOrLoadError"]
                for e in entries
                if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"
            ]
            assert not errors, f"the definitions did not load: {errors}"
            return
        time.sleep(0.5)
    raise AssertionError(f"the code location did not load within {timeout_s:.0f} s:\n{server.log_tail()}")


@pytest.fixture(scope="module")
def mlflow_ui(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-ui")
    tracking_uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    # The Makefile's and the demo's settings, and nothing that would switch telemetry off by other means.
    env = _environment(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    subprocess.run([sys.executable, "-c", LOG_RUNS, tracking_uri], env=env, check=True, capture_output=True)
    port = free_port()
    command = [
        str(BIN / "mlflow"), "ui", "--backend-store-uri", tracking_uri, "--default-artifact-root",
        str(root / "mlruns" / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    server = BackgroundServer("mlflow ui", command, env, root / "mlflow.log", port).start("/health")
    server.tracking_uri = tracking_uri
    try:
        yield server
    finally:
        server.stop()


# --- Dagster ---------------------------------------------------------------------------------------------
def test_dagster_asset_graph_shows_every_stage(browser, dagster_ui, tmp_path):
    page = browser.new_page()
    page.goto(f"{dagster_ui.url}/asset-groups")
    page.get_by_text("Global asset lineage").wait_for()
    page.get_by_text("retrieval", exact=True).last.wait_for()  # the groups are drawn
    assert page.get_by_role("button", name="Skip").count() == 0  # no newsletter dialog (nux: enabled: false)
    page.get_by_role("button", name="Hide navigation").click()
    page.locator("button:has([aria-label=panel_show_right])").last.click()  # and the list of groups
    # The graph's settings: the last cog on the page (the first is the navigation's Settings).
    page.locator("button:has([aria-label=settings])").last.click()
    page.get_by_role("menuitem", name="Expand all groups").click()
    page.keyboard.press("Escape")
    page.locator("button:has([aria-label=zoom_out])").click()  # expanded, the graph is a little too tall
    for asset in ("garment_items", "catalog_raw", "product_catalog", "garment_classifier", "knn_index"):
        page.get_by_text(asset, exact=True).first.wait_for()
    save_screenshot(page, "dagster-asset-graph", tmp_path)
    page.context.close()


def test_catalog_raw_says_why_it_needs_garment_items_and_which_sites_need_the_network(browser, dagster_ui):
    page = browser.new_page()
    page.goto(f"{dagster_ui.url}/assets/catalog_raw")
    description = page.get_by_text("One shop crawled by its Scrapy spider").locator("..")
    description.wait_for()
    text = description.inner_text()
    assert "generated from the DeepFashion2 shop photos in garment_items" in text
    assert "amazon and darveys crawl real web shops: they need the network" in text
    assert "--partition amazon" in text
    page.get_by_role("tab", name="Checks").click()
    page.get_by_text("Protects against products vanishing silently").wait_for()
    page.context.close()


# --- MLflow ----------------------------------------------------------------------------------------------
def test_mlflow_lands_on_the_training_runs_with_their_headline_metrics(browser, mlflow_ui, tmp_path):
    page = browser.new_page()
    page.goto(mlflow_landing_url(mlflow_ui.url, mlflow_ui.tracking_uri))
    page.get_by_role("heading", name="Runs").wait_for()  # the training view, not the GenAI overview
    if page.get_by_role("button", name="Close").count():  # the assistant panel opens on a first visit
        page.get_by_role("button", name="Close").first.click()
    headers = page.locator("[role=columnheader]")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[role=columnheader]')].some(h => h.textContent === 'mAP50')"
    )
    names = set(headers.all_inner_texts())
    assert {"accuracy", "macro_f1", "mAP50", "mAP50-95"} <= names
    assert not names & {"f1_shirt", "val_loss", "AP50_shirt"}  # the per-class metrics stay in the menu
    # The grid draws a run's pinned cells (name) and its scrolling cells (metrics) as two rows, one index.
    cells = page.evaluate(
        """() => [...document.querySelectorAll('[role=row][row-index]')].reduce((runs, row) => {
            const index = row.getAttribute('row-index');
            runs[index] = (runs[index] || []).concat(row.innerText.split('\\n'));
            return runs;
        }, {})"""
    )
    runs = {next(v for v in values if v.startswith("garment_")): values for values in cells.values()}
    assert {"0.855", "0.861"} <= set(runs["garment_classifier"])
    assert {"0.658", "0.44"} <= set(runs["garment_detector"])
    save_screenshot(page, "mlflow-runs", tmp_path)
    page.context.close()


def test_mlflow_ui_telemetry_is_switched_off_by_the_server(playwright, mlflow_ui, tmp_path):
    """The UI logs its events through a shared worker that asks the server first; the server says no.

    The Settings switch ("Enable telemetry") is the browser's own preference and stays On; what counts is
    the server's answer, set by MLFLOW_DISABLE_TELEMETRY=true (the Makefile's and the demo's setting).
    """
    with chromium(playwright, tmp_path) as own_browser:  # its own network log, read when it has closed
        page = own_browser.new_page()
        page.goto(mlflow_landing_url(mlflow_ui.url, mlflow_ui.tracking_uri))
        page.get_by_role("heading", name="Runs").wait_for()
        page.get_by_role("button", name="Columns").click()  # UI events the logger would record
        page.keyboard.press("Escape")
        page.goto(f"{mlflow_ui.url}/#/settings")
        label = page.get_by_text("Enable telemetry", exact=True)
        # The innermost block holding both the label and a switch is the setting's row.
        switch = page.locator("div", has=label).filter(has=page.get_by_role("switch")).last.get_by_role("switch")
        assert switch.get_attribute("aria-checked") == "true"  # the browser's preference: On by default
        config = page.evaluate(f"async () => (await fetch('{UI_TELEMETRY.lstrip('/')}')).json()")
        # Switching it off makes the worker send what it queued at once, instead of within 30 s.
        switch.click()
        page.wait_for_function("s => s.getAttribute('aria-checked') === 'false'", arg=switch.element_handle())
        page.wait_for_timeout(1000)
    assert config["disable_ui_telemetry"] is True and config["ui_rollout_percentage"] == 0
    worker_requests = [
        (method, url) for method, url in net_log_urls(tmp_path / "chromium-net-log.json") if UI_TELEMETRY in url
    ]
    assert ("GET", f"{mlflow_ui.url}{UI_TELEMETRY}") in worker_requests  # the worker asked ...
    assert [method for method, _ in worker_requests if method == "POST"] == []  # ... and sent nothing
    # Even records posted anyway are dropped by this server.
    record = {"event_name": "ui_event", "timestamp_ns": 1, "params": {}, "installation_id": "x", "session_id": "y"}
    answer = httpx.post(f"{mlflow_ui.url}{UI_TELEMETRY}", json={"records": [record]}, timeout=10).json()
    assert answer == {"status": "disabled"}
