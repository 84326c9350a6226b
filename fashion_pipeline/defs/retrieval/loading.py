"""What the retrieval assets load: the champion models, the catalog, and the query-side embedder of the indexes.

Called through this module (`loading.load_embedder(...)`), so tests can stand in for the models in one place.
"""

import json
from pathlib import Path
from typing import Any

import pandas as pd

from fashion_pipeline.lib.retrieval import knn, layout_store
from fashion_pipeline.lib.retrieval.layout import RetrievalEmbedder


def load_embedder(model_dir: Path) -> Any:
    from fashion_pipeline.lib.training.embedder import load_embedder

    return load_embedder(model_dir)


def load_detector(model_dir: Path) -> Any:
    from fashion_pipeline.lib.training.detector import load_detector

    return load_detector(model_dir)


def index_embedder(data: Any, indexes: dict[str, knn.CategoryIndex]) -> RetrievalEmbedder:
    """The champion's embedding made into the indexes' vectors (their layout and projection), for queries."""
    if not indexes:
        raise FileNotFoundError(f"no index under {data.index_dir}: materialize knn_index")
    layout = next(iter(indexes.values())).layout  # load_indexes refuses indexes of different layouts
    return layout_store.index_embedder(load_embedder(data.classifier_dir), layout, data.index_dir)


def champion_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: materialize the garment_classifier asset")
    return json.loads(path.read_text())


def read_products(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: materialize the product_catalog asset")
    return pd.read_parquet(path)
