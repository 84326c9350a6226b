"""Where every file of the pipeline lives: one path helper for assets, CLI, crawler and server."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CATEGORIES_FILE = Path(__file__).resolve().parents[2] / "categories.yaml"


def default_data_dir() -> Path:
    return Path(os.environ.get("FASHION_DATA_DIR", "data")).resolve()


def default_mlflow_uri() -> str:
    """`MLFLOW_TRACKING_URI`, else a SQLite store under ./mlruns (the file store is deprecated in MLflow 3)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path('mlruns').resolve() / 'mlflow.db'}"


@dataclass(frozen=True)
class DataPaths:
    """All materialized files, relative to one data root (`FASHION_DATA_DIR`, default ./data).

    `df2_root` is the DeepFashion2 folder (`FASHION_DF2_ROOT`); empty means the generated sample.
    """

    root: Path
    df2_root_setting: str = ""

    @classmethod
    def from_env(cls) -> DataPaths:
        return cls(root=default_data_dir(), df2_root_setting=os.environ.get("FASHION_DF2_ROOT", ""))

    # --- DeepFashion2 ---------------------------------------------------------------------------------
    @property
    def deepfashion2_sample(self) -> Path:
        return self.root / "deepfashion2_sample"

    @property
    def df2_root(self) -> Path:
        return Path(self.df2_root_setting).resolve() if self.df2_root_setting else self.deepfashion2_sample

    @property
    def deepfashion2_dir(self) -> Path:
        return self.root / "deepfashion2"

    @property
    def annotations(self) -> Path:
        return self.deepfashion2_dir / "annotations.parquet"

    @property
    def garment_items(self) -> Path:
        return self.deepfashion2_dir / "garment_items.parquet"

    @property
    def crops_dir(self) -> Path:
        return self.root / "crops"

    @property
    def crops_manifest(self) -> Path:
        return self.crops_dir / "manifest.parquet"

    @property
    def yolo_dir(self) -> Path:
        return self.root / "yolo"

    @property
    def yolo_data_yaml(self) -> Path:
        return self.yolo_dir / "data.yaml"

    @property
    def yolo_manifest(self) -> Path:
        return self.yolo_dir / "manifest.parquet"

    # --- labelled photos (FASHION_PHOTO_SOURCES) ------------------------------------------------------
    @property
    def labelled_photos(self) -> Path:
        return self.root / "photos" / "labelled_photos.parquet"

    # --- models ---------------------------------------------------------------------------------------
    @property
    def classifier_dir(self) -> Path:
        return self.root / "models" / "classifier"

    @property
    def detector_dir(self) -> Path:
        return self.root / "models" / "detector"

    # --- catalog --------------------------------------------------------------------------------------
    @property
    def demo_shop_dir(self) -> Path:
        return self.root / "demo_shop"

    @property
    def catalog_dir(self) -> Path:
        return self.root / "catalog"

    @property
    def catalog_raw_dir(self) -> Path:
        return self.catalog_dir / "raw"

    @property
    def catalog_images_dir(self) -> Path:
        return self.catalog_dir / "images"

    @property
    def products(self) -> Path:
        return self.catalog_dir / "products.parquet"

    # --- retrieval ------------------------------------------------------------------------------------
    @property
    def embeddings_dir(self) -> Path:
        """catalog_embeddings: one `<site>.parquet` per site partition (lib/retrieval/site_embeddings.py)."""
        return self.root / "embeddings" / "sites"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    @property
    def projection_dir(self) -> Path:
        """retrieval_projection: the vector layout, its fitted projection and the choice behind them."""
        return self.root / "retrieval" / "projection"

    @property
    def labelled_catalog_features(self) -> Path:
        """The labelled catalog's features, cached for retrieval_projection and real_retrieval_evaluation."""
        return self.root / "retrieval" / "labelled_catalog_features.npz"

    # --- serving releases (lib/retrieval/release.py) --------------------------------------------------
    @property
    def releases_dir(self) -> Path:
        """serving_release: one folder per release (models, indexes, catalog snapshot, manifest.json)."""
        return self.root / "releases"

    @property
    def current_release(self) -> Path:
        """The symlink naming the release the app serves, switched atomically."""
        return self.releases_dir / "current"

    @property
    def release_history(self) -> Path:
        """The releases switched to, newest last: what a rollback returns to."""
        return self.releases_dir / "history.json"
