"""The classifier trained against the stack's MLflow tracking server (PostgreSQL backend, proxied artifacts).

The server is started with the same command `make stack` uses; everything is read back over its REST API,
as another machine of a team would see it, and in the database behind it.
"""

from __future__ import annotations

import os

import httpx
import sqlalchemy as sa

from fashion_pipeline.commands.postgres import free_port
from fashion_pipeline.commands.stack import QUIET_ENVIRONMENT, http_ok, mlflow_server_command, start_process, stop_group
from fashion_pipeline.commands.stack import wait_until as wait_for
from fashion_pipeline_tests.fixtures_training import (
    CLASSIFIER_TINY,
    make_training_root,
    materialize_training,
    run_id_of,
)

MODEL = "garment-classifier"


def test_classifier_tracked_and_registered_on_an_mlflow_server_backed_by_postgres(
    throwaway_postgres, tiny_dataset, tmp_path, network_attempts
) -> None:
    throwaway_postgres.create_database("mlflow_test")
    artifacts, log = tmp_path / "artifacts", tmp_path / "mlflow.log"
    port = free_port()
    command = mlflow_server_command(throwaway_postgres.url("mlflow_test"), artifacts, "127.0.0.1", port)
    server = start_process(command, {**QUIET_ENVIRONMENT, **os.environ}, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_ok(f"{base}/health"), "the MLflow server", 180, server, log)
        paths = make_training_root(tiny_dataset, tmp_path / "data")
        result = materialize_training(paths, base, "garment_classifier", {**CLASSIFIER_TINY, "min_accuracy": 0.0})
        assert result.success
        run_id = run_id_of(result, "garment_classifier")

        api = httpx.Client(base_url=f"{base}/api/2.0/mlflow", timeout=60)
        run = api.get("/runs/get", params={"run_id": run_id}).raise_for_status().json()["run"]
        assert run["info"]["status"] == "FINISHED"
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["architecture"] == "mobilenet_v3_small" and params["input_size"] == "64"
        assert 0.0 <= {m["key"]: m["value"] for m in run["data"]["metrics"]}["accuracy"] <= 1.0
        # The model went up through the server (mlflow-artifacts:/), into its --artifacts-destination.
        assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:/")
        listed = api.get("/artifacts/list", params={"run_id": run_id}).raise_for_status().json()
        assert listed.get("files"), "the run has no artifacts on the server"
        assert any(artifacts.rglob("MLmodel")), f"no model files under {artifacts}"

        champion = (
            api.get("/registered-models/alias", params={"name": MODEL, "alias": "champion"})
            .raise_for_status()
            .json()["model_version"]
        )
        assert champion["run_id"] == run_id
        version = (
            api.get("/model-versions/get", params={"name": MODEL, "version": champion["version"]})
            .raise_for_status()
            .json()["model_version"]
        )
        assert version["status"] == "READY"
        assert {"champion", "candidate"} <= set(version.get("aliases", []))
    finally:
        stop_group(server.pid)

    engine = sa.create_engine(throwaway_postgres.url("mlflow_test"))
    with engine.connect() as db:
        assert (
            db.execute(sa.text("SELECT status FROM runs WHERE run_uuid = :id"), {"id": run_id}).scalar_one()
            == "FINISHED"
        )
        aliases = db.execute(sa.text("SELECT alias FROM registered_model_aliases WHERE name = :n"), {"n": MODEL})
        assert "champion" in set(aliases.scalars())
    engine.dispose()
    assert network_attempts() == []
