"""Resources shared by every stage: where the files live and where MLflow tracks runs."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from fashion_pipeline.lib.common.paths import DataPaths, default_data_dir, default_mlflow_uri


class DataPathsResource(dg.ConfigurableResource):
    """The data root (`FASHION_DATA_DIR`) and the DeepFashion2 folder (`FASHION_DF2_ROOT`, empty = sample)."""

    data_dir: str = Field(default_factory=lambda: str(default_data_dir()))
    df2_root: str = Field(default_factory=lambda: os.environ.get("FASHION_DF2_ROOT", ""))

    def get(self) -> DataPaths:
        return DataPaths(root=Path(self.data_dir).resolve(), df2_root_setting=self.df2_root)


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking server and experiment (`MLFLOW_TRACKING_URI`, default SQLite under ./mlruns)."""

    tracking_uri: str = Field(default_factory=default_mlflow_uri)
    experiment_name: str = "fashion-pipeline"
