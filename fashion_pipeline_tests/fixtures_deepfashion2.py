"""Session fixtures: a tiny generated DeepFashion2 sample and the four dataset stages materialized on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashion_pipeline.lib.common.paths import DataPaths

TINY_IMAGES = 80
TINY_SEED = 7


def materialize_dataset_stages(data_root: Path, n_images: int = TINY_IMAGES, seed: int = TINY_SEED) -> DataPaths:
    """Run deepfashion2_sample -> yolo_dataset in-process on a fresh data root; small caps keep it fast."""
    import dagster as dg

    from fashion_pipeline.defs.deepfashion2 import assets
    from fashion_pipeline.defs.resources import DataPathsResource

    result = dg.materialize(
        [
            assets.deepfashion2_sample,
            assets.deepfashion2_annotations,
            assets.garment_items,
            assets.garment_crops,
            assets.yolo_dataset,
        ],
        resources={"paths": DataPathsResource(data_dir=str(data_root), df2_root="")},
        run_config={"ops": {"deepfashion2_sample": {"config": {"n_images": n_images, "seed": seed}}}},
    )
    assert result.success
    return DataPaths(root=data_root)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> DataPaths:
    """A tiny generated sample with annotations, items, crops and YOLO dataset materialized (read-only use)."""
    return materialize_dataset_stages(tmp_path_factory.mktemp("tiny-dataset") / "data")
