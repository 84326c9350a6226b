"""The one Definitions object: every stage's definitions plus the shared resources and executor.

The executor is a run setting. By default a run executes in one process: a Python start per step costs more
than the small steps of the embedded default (STACK.md trap 10). A run launched with
`execution: {config: {multiprocess: {max_concurrent: N}}}` runs each step in its own process instead, so the
classifier and the detector train side by side on a machine with the cores for it. `FASHION_EXECUTOR=k8s`
(set by the Helm deployment, deploy/helm/values.yaml) runs every step in its own Kubernetes pod through
dagster-k8s's `k8s_job_executor` (the optional extra `k8s`).
"""

import os

import dagster as dg

from fashion_pipeline.defs import catalog, deepfashion2, photos, retrieval, training
from fashion_pipeline.defs.resources import DataPathsResource, MlflowResource

# Dagster's own multi_or_in_process_executor with its default flipped to in-process; the run's config chooses.
in_process_or_multiprocess_executor = dg.multi_or_in_process_executor.configured(
    lambda config: config,
    config_schema=dg.Field(
        dg.multi_or_in_process_executor.config_schema.as_field().config_type, default_value={"in_process": {}}
    ),
)

EXECUTORS = ("default", "k8s")


def executor_from_env(name: str | None = None) -> dg.ExecutorDefinition:
    """The executor named by `FASHION_EXECUTOR` (`default`: in-process unless the run asks for multiprocess)."""
    name = name or os.environ.get("FASHION_EXECUTOR", "default")
    if name == "default":
        return in_process_or_multiprocess_executor
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise ImportError("FASHION_EXECUTOR=k8s needs dagster-k8s: pip install 'fashion-pipeline[k8s]'") from exc
        return k8s_job_executor
    raise ValueError(f"FASHION_EXECUTOR={name!r} is not one of {', '.join(EXECUTORS)}")


defs = dg.Definitions.merge(
    deepfashion2.defs,
    photos.defs,
    training.defs,
    catalog.defs,
    retrieval.defs,
    dg.Definitions(
        resources={"paths": DataPathsResource(), "mlflow": MlflowResource()},
        executor=executor_from_env(),
    ),
)
