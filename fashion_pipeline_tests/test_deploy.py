"""What can be checked of deploy/ without Docker or a cluster: the instance files against Dagster's instance schema,
the Helm values rendered as the chart renders its instance, the Definitions with the k8s executor, the MLflow
server's arguments against `mlflow server` itself, and the files agreeing with one another."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
# The top-level sections of the official chart's values (chart `dagster` 1.13.x): a misspelt section would be
# silently ignored by helm, so every key we set must be one of them.
CHART_SECTIONS = {
    "global", "nameOverride", "fullnameOverride", "rbacEnabled", "dagsterWebserver", "dagster-user-deployments",
    "postgresql", "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis", "flower",
    "ingress", "imagePullSecrets", "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon",
    "busybox", "migrate", "telemetry", "serviceAccount", "retention", "additionalInstanceConfig", "concurrency",
}  # fmt: skip


def values() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def k8s_documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if doc]


def env_of(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {entry["name"]: entry.get("value", entry.get("valueFrom")) for entry in entries}


def parse_instance(home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """dagster.yaml in `home` validated by Dagster's own loader (the one every Dagster process runs)."""
    from dagster._core.instance.config import dagster_instance_config

    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql+psycopg2://fashion:secret@127.0.0.1:5432/dagster")
    config, _custom_class = dagster_instance_config(str(home))
    return config


def chart_instance(chart: dict[str, Any]) -> dict[str, Any]:
    """The dagster.yaml the chart's configmap-instance template renders from these values."""
    pg = chart["postgresql"]
    postgres_db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg["postgresqlParams"],
        **({"scheme": pg["postgresqlScheme"]} if pg.get("postgresqlScheme") else {}),
    }

    def storage(module: str, cls: str) -> dict[str, Any]:
        return {"module": module, "class": cls, "config": {"postgres_db": postgres_db}}

    launcher = chart["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s = {re.sub(r"([A-Z])", r"_\1", k).lower(): v for k, v in launcher.get("runK8sConfig", {}).items()}
    concurrency = chart["concurrency"]
    runs, pools = concurrency["runs"], concurrency["pools"]
    return {
        "scheduler": {"module": "dagster.core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": storage("dagster_postgres.schedule_storage", "PostgresScheduleStorage"),
        "run_storage": storage("dagster_postgres.run_storage", "PostgresRunStorage"),
        "event_log_storage": storage("dagster_postgres.event_log", "PostgresEventLogStorage"),
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": {
                "load_incluster_config": launcher["loadInclusterConfig"],
                "job_namespace": launcher.get("jobNamespace") or "fashion",
                "image_pull_policy": launcher["imagePullPolicy"],
                "service_account_name": "fashion-dagster",
                "dagster_home": {"env": "DAGSTER_HOME"},
                "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
                "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
                "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}],
                **({"run_k8s_config": run_k8s} if run_k8s else {}),
            },
        },
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"},
        "concurrency": {
            "pools": {"granularity": pools["granularity"], "default_limit": pools["defaultLimit"]},
            "runs": {
                "max_concurrent_runs": runs["maxConcurrentRuns"],
                "tag_concurrency_limits": runs["tagConcurrencyLimits"],
            },
        },
        "run_monitoring": {
            "enabled": chart["dagsterDaemon"]["runMonitoring"]["enabled"],
            "start_timeout_seconds": chart["dagsterDaemon"]["runMonitoring"]["startTimeoutSeconds"],
            "poll_interval_seconds": chart["dagsterDaemon"]["runMonitoring"]["pollIntervalSeconds"],
        },
        "telemetry": {"enabled": chart["telemetry"]["enabled"]},
    }


def test_stack_instance_file_parses_against_the_instance_schema(tmp_path, monkeypatch) -> None:
    from dagster._core.instance.ref import InstanceRef

    from fashion_pipeline.commands.stack import write_instance

    write_instance(tmp_path)
    config = parse_instance(tmp_path, monkeypatch)
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"] == {"granularity": "run", "default_limit": 1}
    [site_limit] = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert site_limit == {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    assert config["telemetry"] == {"enabled": False}
    # Every storage is the Postgres one (runs, event logs, schedules), none left on SQLite.
    ref = InstanceRef.from_dir(str(tmp_path))
    assert ref.storage_data.class_name == "DagsterPostgresStorage"
    assert {ref.run_storage_data.module_name, ref.event_storage_data.module_name, ref.schedule_storage_data.module_name} == {"dagster_postgres"}  # fmt: skip


def test_helm_values_render_an_instance_that_dagster_accepts(tmp_path, monkeypatch) -> None:
    from dagster._config import validate_config
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    chart = values()
    assert set(chart) <= CHART_SECTIONS, f"not sections of the chart: {set(chart) - CHART_SECTIONS}"
    instance = chart_instance(chart)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    config = parse_instance(tmp_path, monkeypatch)
    for key, storage in [
        ("run_storage", PostgresRunStorage),
        ("event_log_storage", PostgresEventLogStorage),
        ("schedule_storage", PostgresScheduleStorage),
    ]:
        result = validate_config(storage.config_type(), config[key]["config"])
        assert result.success, (key, [e.message for e in result.errors])
    assert config[key]["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2"  # STACK.md trap 13
    # The same queue limits and pools as the one-machine stack.
    stack_concurrency = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["concurrency"]
    assert config["concurrency"]["pools"] == stack_concurrency["pools"]
    assert (
        config["concurrency"]["runs"]["tag_concurrency_limits"] == stack_concurrency["runs"]["tag_concurrency_limits"]
    )

    k8s = pytest.importorskip("dagster_k8s", reason="the optional extra `k8s` (dagster-k8s) is not installed")
    result = validate_config(k8s.K8sRunLauncher.config_type(), config["run_launcher"]["config"])
    assert result.success, [e.message for e in result.errors]


def test_helm_values_agree_with_the_image_and_the_manifests() -> None:
    chart = values()
    [deployment] = chart["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    assert args[0] == "-m" and importlib.util.find_spec(args[1]) is not None
    env = env_of(deployment["env"])
    assert env["FASHION_EXECUTOR"] == "k8s"
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]  # run and step pods get the env and volume
    [mount] = deployment["volumeMounts"]
    assert mount["mountPath"] == env["FASHION_DATA_DIR"]
    [volume] = deployment["volumes"]
    [claim] = k8s_documents("data-volume.yaml")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    service = next(doc for doc in k8s_documents("mlflow.yaml") if doc["kind"] == "Service")
    assert env["MLFLOW_TRACKING_URI"] == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert json.loads(re.search(r"^CMD (.+)$", dockerfile, re.M).group(1))[3:5] == args
    for line in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        assert all((REPO / source).exists() for source in line.split()), line
    ignored = set((DEPLOY / "Dockerfile.dockerignore").read_text().split())
    assert {"data", "mlruns", ".stack", ".dagster_home", ".venv"} <= ignored  # no data or local state baked in


def test_mlflow_server_settings_are_accepted_by_mlflow_server() -> None:
    from mlflow.cli import server

    deployment = next(doc for doc in k8s_documents("mlflow.yaml") if doc["kind"] == "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = env_of(container["env"])
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"  # STACK.md trap 14
    assert env["MLFLOW_BACKEND_STORE_URI"]["secretKeyRef"]["key"] == "uri"
    assert container["command"] == ["mlflow"] and container["args"][0] == "server"
    # Kubernetes expands $(VAR) from the container's env; the secret holds a postgresql+psycopg2:// URL.
    args = [a.replace("$(MLFLOW_BACKEND_STORE_URI)", "postgresql+psycopg2://u:p@db/mlflow") for a in container["args"]]
    context = server.make_context("server", args[1:])
    assert context.params["serve_artifacts"] is True
    assert context.params["artifacts_destination"] == "file:///mlflow-artifacts"
    assert context.params["port"] == container["ports"][0]["containerPort"]
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["artifacts"]
    assert context.params["artifacts_destination"].endswith(mount)


def test_definitions_load_with_the_k8s_executor() -> None:
    pytest.importorskip("dagster_k8s", reason="the optional extra `k8s` (dagster-k8s) is not installed")
    env = {**os.environ, "FASHION_EXECUTOR": "k8s"}
    # How the Helm chart's code server loads them: `dagster api grpc -m fashion_pipeline.definitions`.
    validate = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-m", "fashion_pipeline.definitions"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert validate.returncode == 0, validate.stdout[-2000:] + validate.stderr[-2000:]
    probe = """
import json, dagster as dg
from fashion_pipeline.definitions import defs
job = defs.resolve_implicit_global_asset_job_def()
run_config = {"execution": {"config": {"job_namespace": "fashion", "max_concurrent": 4,
    "per_step_k8s_config": {"garment_detector": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": 1}}}}}}}}
resolved = dg.validate_run_config(job, run_config)
print(json.dumps({"executor": job.executor_def.name, "execution": resolved["execution"]}))
"""
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["executor"] == "k8s"
    assert answer["execution"]["k8s"]["job_namespace"] == "fashion"


def test_an_unknown_executor_is_a_clear_error() -> None:
    from fashion_pipeline.definitions import executor_from_env

    with pytest.raises(ValueError, match="FASHION_EXECUTOR='celery' is not one of default, k8s"):
        executor_from_env("celery")
